//! The store's Redis function library: every store operation that reads and then writes, or
//! writes more than one key, is one function of it (written in Lua), so Redis runs it
//! atomically and a failure leaves nothing half-written.
//!
//! The library ([`Library`]) is loaded with `FUNCTION LOAD` (Redis 7.0+) and its functions
//! are called with `FCALL`. Redis compiles the library and runs its top level once, at load: the
//! shared helpers of the prelude (`src/lua/prelude.lua`) are defined then, not on every call
//! (as an `EVAL` script that carries them must), which was half or more of a small script's
//! cost.
//!
//! Functions that touch users, requests, nodes or timers start with `enter(ARGV[1])`, which
//! sets the key prefix the helpers build key names from (see the key map in the crate docs):
//! one library serves every prefix, and Redis never runs two functions at once, so the
//! library-level variables it sets are the current call's. The room hot path
//! ([`Function::Append`]) names its keys in `KEYS`, all under the room's hash tag. (Reading
//! history needs no function: `MULTI`, `EXISTS`, `XRANGE`, `EXEC` in one round trip.)
//!
//! The Lua lives in `src/lua/`: the prelude and one file per function, the function's body
//! (it runs as `function(KEYS, ARGV) <body> end`), each declared once in [`Function`]. A file
//! opens with its contract (the `ARGV`/`KEYS` it takes and what it returns) as `--` lines up
//! to the first empty line; that header is for the reader and is left out of the library, so
//! the code Redis loads, and its version, change with the code only.
//!
//! The library and its functions are named after a hash of the code (`chat_<hash>`,
//! `chat_<hash>_<operation>`), so nodes of different versions sharing a Redis each call their
//! own. Redis keeps functions across commands but not across a restart without persistence or
//! a `FUNCTION FLUSH`: a call answered "Function not found" loads the library and is retried.
//!
//! Times are the caller's: every logical check compares the caller's `now` with the caller's
//! deadlines. Redis's clock (`TIME`) is only used to set key expiry a margin after the later of
//! the deadline and the server's now, so data is freed even if no node runs, and a caller clock
//! that is behind (tests with a manual clock) never makes a key vanish early. Timestamps are
//! stored as the decimal text the caller sent and compared with `tonumber` (exact below 2^53).

use redis::Script;

/// Declares [`Function`] from one list: each function's variant, its name in Lua (also its
/// file, `src/lua/<name>.lua`), and `keyed` when it names all its keys in `KEYS` (the others
/// begin with `enter(ARGV[1])`).
macro_rules! functions {
    ($($variant:ident = $name:literal $(, $keyed:ident)?;)*) => {
        /// A function of the library, in the order the library registers them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Function {
            $(
                #[doc = concat!("`", $name, "`: see `src/lua/", $name, ".lua`.")]
                $variant,
            )*
        }

        impl Function {
            /// Every function, in declaration order (so `ALL[f as usize] == f`).
            pub(crate) const ALL: &[Function] = &[$(Function::$variant),*];

            /// The operation's name in Lua (`chat_<tag>_<name>` in Redis) and of its file.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Function::$variant => $name,)*
                }
            }

            /// The function's body: its file without the header.
            const fn body(self) -> &'static str {
                match self {
                    $(Function::$variant => const {
                        without_header(include_str!(concat!("lua/", $name, ".lua")))
                    },)*
                }
            }

            /// Whether all its keys are in `KEYS`; if not, it begins with `enter(ARGV[1])`.
            const fn keyed(self) -> bool {
                match self {
                    $(Function::$variant => functions!(@keyed $($keyed)?),)*
                }
            }
        }
    };
    (@keyed) => { false };
    (@keyed keyed) => { true };
}

functions! {
    CreateSession = "create_session";
    Session = "session";
    Touch = "touch";
    AddConn = "add_conn";
    RemoveConn = "remove_conn";
    Presence = "presence";
    GoOffline = "go_offline";
    OnlinePage = "online_page";
    Reap = "reap";
    RemoveNode = "remove_node";
    SendRequest = "send_request";
    Accept = "accept";
    RemoveRequest = "remove_request";
    Requests = "requests";
    RoomsOf = "rooms_of";
    DeleteRoom = "delete_room";
    EndSession = "end_session";
    DueTimers = "due_timers";
    FinishTimer = "finish_timer";
    Notify = "notify";
    DueNotifications = "due_notifications";
    AckNotification = "ack_notification";
    RetryNotification = "retry_notification";
    Block = "block";
    Unblock = "unblock";
    Hidden = "hidden";
    Decline = "decline";
    Append = "append", keyed;
    AppendBurst = "append_burst", keyed;
    MarkRead = "mark_read", keyed;
    RoomOverview = "room_overview", keyed;
    OpenRoom = "open_room", keyed;
    CloseRoom = "close_room", keyed;
}

/// Shared helpers, defined once when the library loads.
const PRELUDE: &str = without_header(include_str!("lua/prelude.lua"));

/// A Lua file's code: the file from its first empty line on, without the header before it
/// (which must be `--` lines). Evaluated at compile time, so a file that does not open with a
/// header and an empty line fails the build.
const fn without_header(file: &'static str) -> &'static str {
    let b = file.as_bytes();
    let mut i = 0;
    loop {
        // `i` is at the start of a header line.
        if i + 1 >= b.len() || b[i] != b'-' || b[i + 1] != b'-' {
            panic!("a Lua file must begin with `--` lines, then an empty line");
        }
        while i < b.len() && b[i] != b'\n' {
            i += 1;
        }
        i += 1;
        if i < b.len() && b[i] == b'\n' {
            return file.split_at(i).1;
        }
    }
}

/// Stands for the version hash in the library's source until it is known.
const TAG: &str = "@TAG@";

/// The function library: its source (for `FUNCTION LOAD`) and the name of each function in
/// Redis (for `FCALL`).
pub(crate) struct Library {
    pub code: String,
    /// `chat_<tag>_<name>`, indexed by [`Function`].
    names: Vec<String>,
}

impl Library {
    /// The library for one Redis, or for a cluster (`cluster`): there the room hot path
    /// publishes with `SPUBLISH` (sharded pub/sub: the message stays in the room's shard), which
    /// also gives the cluster's library its own version.
    ///
    /// `format` is the bus format the hot path's publish writes (see `bus`'s format versions):
    /// from 2 on its message payload opens with `<format>:`.
    pub(crate) fn new(cluster: bool, format: u8) -> Library {
        let mut code = format!(
            "#!lua name=chat_{TAG}\n{PRELUDE}\nlocal function reg(name, f) \
             redis.register_function('chat_{TAG}_' .. name, f) end\n"
        );
        for &f in Function::ALL {
            let (name, body) = (f.name(), f.body());
            let enter = if f.keyed() { "" } else { "enter(ARGV[1])\n" };
            code.push_str(&format!(
                "reg('{name}', function(KEYS, ARGV)\n{enter}{body}end)\n"
            ));
        }
        if cluster {
            code = code.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'");
        }
        if format >= 2 {
            const V1: &str = "id .. '|' .. entry)";
            debug_assert!(code.contains(V1));
            code = code.replace(V1, &format!("'{format}:' .. id .. '|' .. entry)"));
        }
        // The version: a hash of the code itself (SHA1, as Redis names scripts).
        let tag = Script::new(&code).get_hash()[..16].to_owned();
        let code = code.replace(TAG, &tag);
        let names = Function::ALL
            .iter()
            .map(|f| format!("chat_{tag}_{}", f.name()))
            .collect();
        Library { code, names }
    }

    /// The name to `FCALL` `function` by: `chat_<tag>_<name>`.
    pub(crate) fn name(&self, function: Function) -> &str {
        &self.names[function as usize]
    }
}

#[cfg(test)]
mod tests {
    /// The ACL list of the crate (what an operator grants a Redis user) names every command
    /// the function library calls.
    #[test]
    fn acl_commands_cover_the_library() {
        let lib = super::Library::new(false, crate::bus::FORMAT);
        let granted: Vec<&str> = crate::ACL_COMMANDS.split_whitespace().collect();
        let mut called: Vec<String> = lib
            .code
            .split("redis.call('")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .map(str::to_lowercase)
            .collect();
        called.sort();
        called.dedup();
        assert!(called.len() > 10, "{called:?}");
        for c in &called {
            assert!(
                granted.contains(&format!("+{c}").as_str()),
                "{c} is not in ACL_COMMANDS"
            );
        }
    }

    use super::*;

    #[test]
    fn every_operation_has_its_function_and_the_tag_is_filled_in() {
        let lib = Library::new(false, crate::bus::FORMAT);
        assert!(!lib.code.contains(TAG));
        assert!(lib.code.starts_with("#!lua name=chat_"));
        for (i, &f) in Function::ALL.iter().enumerate() {
            assert_eq!(f as usize, i);
            let name = f.name();
            assert_eq!(
                lib.code.matches(&format!("reg('{name}', function")).count(),
                1,
                "{name}"
            );
            let full = lib.name(f);
            assert!(full.starts_with("chat_") && full.ends_with(&format!("_{name}")));
        }
        // The same code, the same names: nodes of one version share the library.
        assert_eq!(
            Library::new(false, crate::bus::FORMAT).name(Function::Append),
            lib.name(Function::Append)
        );
        // The cluster's library publishes with SPUBLISH, and is a version of its own.
        let cluster = Library::new(true, crate::bus::FORMAT);
        assert!(cluster.code.contains("redis.call('SPUBLISH'"));
        assert!(!cluster.code.contains("redis.call('PUBLISH'"));
        assert_ne!(cluster.name(Function::Append), lib.name(Function::Append));
        // The bus format is part of the code: version 1's publish is the bare `<id>|<entry>`.
        assert!(lib.code.contains("'2:' .. id .. '|' .. entry)"));
        let v1 = Library::new(false, 1);
        assert!(
            v1.code
                .contains("redis.call('PUBLISH', channel, id .. '|' .. entry)")
        );
        assert_ne!(v1.name(Function::Append), lib.name(Function::Append));
    }

    /// Every file of `src/lua/` is the prelude or a declared function: none is forgotten.
    #[test]
    fn every_lua_file_is_in_the_library() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lua");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("read src/lua")
            .map(|e| {
                e.expect("a src/lua entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let mut declared: Vec<String> = Function::ALL
            .iter()
            .map(|f| f.name())
            .chain(["prelude"])
            .map(|n| format!("{n}.lua"))
            .collect();
        declared.sort();
        assert_eq!(files, declared);
    }

    /// Writes the library to `$CHAT_LIBRARY_OUT`, for `perf/callgrind.sh`.
    #[test]
    #[ignore = "a tool, run by perf/callgrind.sh"]
    fn write_library() {
        let path = std::env::var("CHAT_LIBRARY_OUT").expect("CHAT_LIBRARY_OUT");
        std::fs::write(path, Library::new(false, crate::bus::FORMAT).code)
            .expect("write the library");
    }
}
