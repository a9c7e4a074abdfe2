//! The pages, as two people use them, in a real browser: Debian's headless Chromium driven
//! over WebDriver (`chromium` and `chromium-driver` must be installed; the test fails, never
//! skips, without them) against real `chat-server` processes.
//!
//! Two people, A (Asha) and B (Ben), each in a browser of their own, sign in with their names,
//! see each other, A sends a request by typing B's number, B sees it live with a badge and
//! accepts, both land in the chatroom, talk (ten messages each way, typing shown, a message of
//! markup shown as text), A reloads and keeps the history, B leaves and A sees B offline within
//! the presence grace plus a second, A writes while B is away and B's chat list shows it
//! unread with its text, B opens the chat and A sees "Seen" under it, A ends the chat for
//! both, and B's next request is blocked by A from the request itself. On the
//! in-memory store the server then restarts and both pages say so and offer to sign in again
//! with the number kept. On Redis the two people use two nodes and B's node is restarted in
//! the middle of the chat: the pages reconnect and nothing typed is lost or doubled.
//!
//! Each step is saved as screenshots under `target/browser/<store>/` (desktop and 390 px wide,
//! both people). Run alone with `cargo test -p chat-tests --test browser`.

mod driver;
mod proxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chat_tests::{App, Backend, Server, bounded};
use serde_json::json;

use crate::driver::{Browser, Driver};
use crate::proxy::Proxy;

/// The presence grace the servers run with.
const GRACE_SECS: u64 = 2;

const A_NAME: &str = "Asha Rao";
const A_TYPED: &str = "+1 415 555 0101";
const A_PHONE: &str = "+14155550101";
const B_NAME: &str = "Ben Okafor";
const B_PHONE: &str = "+14155550102";
/// How A types B's number: with the punctuation people use.
const B_TYPED_BY_A: &str = "+1 (415) 555-0102";

/// A message that would run script if a page ever rendered it as markup.
const MARKUP: &str = "<img src=x onerror=\"document.body.dataset.pwned='img'\">\
<script>document.body.dataset.pwned='script'</script><b>not bold</b> & &amp;";

/// Who says what, in order: ten lines each, in runs of one to three (so messages group).
/// On Redis, lines 10..16 are typed while B's node is down.
const TALK: [(Who, &str); 20] = [
    (Who::A, "Hi Ben!"),
    (Who::A, "How was the trip to Lisbon?"),
    (Who::B, "Hey Asha"),
    (Who::B, "It was wonderful, thanks! Too much walking though"),
    (
        Who::A,
        "I saw the photos you posted, the one of the tram going up the hill at sunset is my favourite by far.",
    ),
    (
        Who::B,
        "Thank you! I nearly missed it, the tram came round the corner just as I got my camera out.",
    ),
    (Who::B, "Lucky timing"),
    (Who::A, "Are you free on Saturday?"),
    (Who::A, "There's a new ramen place near the station"),
    (Who::B, "yes"),
    (Who::B, "Saturday works"),
    (Who::A, "7pm?"),
    (Who::B, "Oh nice, I've been wanting to try it"),
    (Who::A, "ok"),
    (Who::B, "7 is perfect"),
    (Who::A, "Great, I'll book a table for two."),
    (Who::A, "Café Tóquio is the name, by the way"),
    (Who::B, "Thanks!"),
    (Who::B, "See you then"),
    (Who::A, "Bye for now"),
];
/// What A writes while B is away.
const AWAY_LINE: &str = "Are you still there?";
/// A short and a long line of A's, to check that bubbles are sized to their text.
const SHORT: &str = "ok";
const LONG: &str = "I saw the photos you posted, the one of the tram going up the hill at sunset is my favourite by far.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    A,
    B,
}

/// The two test variants share one machine's two cores: they run one after the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn memory_two_people_chat_in_chromium() {
    let _turn = ONE_AT_A_TIME.lock().await;
    bounded(scenario(Backend::Memory)).await
}

#[tokio::test]
async fn redis_two_nodes_and_a_restart_in_chromium() {
    let _turn = ONE_AT_A_TIME.lock().await;
    bounded(scenario(Backend::Redis)).await
}

/// `target/browser`, next to the test executable's profile directory.
fn shots_root() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("browser")
}

/// Numbered screenshot steps of one variant, both people, both widths.
struct Shots {
    dir: PathBuf,
    step: u32,
}

impl Shots {
    fn new(variant: &str) -> Shots {
        let dir = shots_root().join(variant);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        Shots { dir, step: 0 }
    }

    /// Screenshots of each of `browsers` for the next step, called `name`.
    async fn take(&mut self, name: &str, browsers: &[&Browser]) {
        self.step += 1;
        let name = format!("{:02}-{name}", self.step);
        for b in browsers {
            b.screenshots(&self.dir, &name).await;
        }
    }
}

/// The chat-server flags of this test: the contract's presence grace, short; on Redis, a
/// node that dies is found dead in 3 s (so the people it served are not counted online for
/// long after it, which would hide the grace the test measures).
fn flags(backend: Backend) -> Vec<String> {
    let mut flags = vec!["--presence-grace-secs".into(), GRACE_SECS.to_string()];
    if backend == Backend::Redis {
        flags.extend(["--node-ttl-secs".into(), "3".into()]);
    }
    flags
}

async fn scenario(backend: Backend) {
    let started = Instant::now();
    let variant = match backend {
        Backend::Memory => "memory",
        Backend::Redis => "redis",
        Backend::RedisCluster => "redis-cluster",
    };
    let mut shots = Shots::new(variant);
    let flags = flags(backend);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut app = App::start(backend, &flag_refs).await;
    // On Redis, B uses a second node; a proxy in front of each node keeps the browsers'
    // origins while a node restarts.
    let mut node_b: Option<Server> = match backend {
        Backend::Memory => None,
        Backend::Redis | Backend::RedisCluster => Some(app.another_node().await),
    };
    let proxy_a = Proxy::start(app.server.addr).await;
    let proxy_b = match &node_b {
        Some(n) => Proxy::start(n.addr).await,
        None => Proxy::start(app.server.addr).await,
    };

    let driver = Driver::start().await;
    let a = driver.browser("a-asha", &proxy_a.base(), &shots.dir).await;
    let b = driver.browser("b-ben", &proxy_b.base(), &shots.dir).await;
    let both = [&a, &b];

    // 1. A new person sees the sign-in form: no connection state before signing in.
    for p in both {
        p.open("/").await;
        p.wait_shown("#reg-phone").await;
        assert!(
            p.eval("return document.getElementById('conn-banner').hidden", &[])
                .await
                .as_bool()
                .unwrap_or(false),
            "{}: a connection banner before signing in",
            p.who
        );
    }
    // An invalid number is explained next to the field, in people's words.
    a.type_into("#reg-name", A_NAME).await;
    a.type_into("#reg-phone", "12").await;
    a.click("#reg-submit").await;
    a.wait(
        "a human sentence about the number, next to the form",
        "const e = document.getElementById('reg-error'); \
         return !e.hidden && e.textContent.includes('look like a phone number') \
           && document.getElementById('reg-phone').getAttribute('aria-invalid') === 'true';",
        &[],
    )
    .await;
    b.type_into("#reg-name", B_NAME).await;
    b.type_into("#reg-phone", B_PHONE).await;
    shots.take("sign-in", &both).await;

    // 2. Both sign in with names; each sees the other online, by name.
    a.eval("document.getElementById('reg-phone').value = ''", &[])
        .await;
    a.type_into("#reg-phone", A_TYPED).await;
    a.click("#reg-submit").await;
    b.click("#reg-submit").await;
    for p in both {
        p.wait_shown("#app-section").await;
    }
    for (p, phone, name) in [(&a, B_PHONE, B_NAME), (&b, A_PHONE, A_NAME)] {
        p.wait(
            &format!("{name} listed online by name"),
            "const li = document.querySelector('#online li[data-phone=\"' + arguments[0] + '\"]'); \
             return !!li && li.textContent.includes(arguments[1]);",
            &[json!(phone), json!(name)],
        )
        .await;
    }
    assert_eq!(a.text("#me-name").await, A_NAME);
    shots.take("signed-in-both-online", &both).await;

    // 3. A asks someone who is not online: told so next to the box, naming the number.
    a.type_into("#request-phone", "+1 415 555 0199").await;
    a.click("#request-submit").await;
    a.wait(
        "the error names the number and says what to do",
        "const e = document.getElementById('request-feedback'); \
         return !e.hidden && e.classList.contains('is-error') \
           && e.textContent.includes('+14155550199 is not online right now');",
        &[],
    )
    .await;
    shots.take("request-to-someone-offline", &[&a]).await;

    // 4. A sends B a request by typing B's number.
    a.eval("document.getElementById('request-phone').value = ''", &[])
        .await;
    a.type_into("#request-phone", B_TYPED_BY_A).await;
    a.click("#request-submit").await;
    a.wait(
        "A is told the request went to Ben, by name",
        "const e = document.getElementById('request-feedback'); \
         return !e.hidden && e.classList.contains('is-ok') && e.textContent.includes(arguments[0]);",
        &[json!(format!("Request sent to {B_NAME}"))],
    )
    .await;
    // B sees it live: highlighted, a badge, a count in the tab title.
    b.wait(
        "B sees A's request live, with a badge and the tab title count",
        "const li = document.querySelector('#incoming li[data-phone=\"' + arguments[0] + '\"]'); \
         const badge = document.getElementById('requests-badge'); \
         return !!li && li.textContent.includes(arguments[1]) && li.classList.contains('fresh') \
           && !badge.hidden && badge.textContent === '1' && document.title.startsWith('(1) ');",
        &[json!(A_PHONE), json!(A_NAME)],
    )
    .await;
    // Accept has one place: the online list points to the request instead.
    assert_eq!(
        b.eval(
            "return document.querySelectorAll('#online button').length",
            &[]
        )
        .await,
        json!(0),
        "B's online list offers a second Accept"
    );
    shots.take("request-arrives", &both).await;

    // 5. B accepts; both land in the room, each titled with the other's name and online.
    b.click(&format!(
        "#incoming li[data-phone=\"{A_PHONE}\"] button.primary"
    ))
    .await;
    for (p, other) in [(&a, B_NAME), (&b, A_NAME)] {
        wait_in_room(p, other).await;
    }
    let room_path = a.path().await;
    assert_eq!(b.path().await, room_path, "both in one room");
    assert!(
        a.text("#room-notice").await.contains("It ends at"),
        "the room's end is explained"
    );
    shots.take("room-opened", &both).await;

    // 6. B types: A sees it; then B sends it.
    b.type_into("#input", "Typing slowly here…").await;
    a.wait(
        "A sees that Ben is typing",
        "const t = document.getElementById('typing'); \
         return !t.hidden && t.textContent.includes(arguments[0] + ' is typing') \
           && document.getElementById('room-status').dataset.state === 'typing';",
        &[json!(B_NAME)],
    )
    .await;
    shots.take("typing", &[&a]).await;
    b.type_into("#input", "\u{E007}").await; // Enter
    let mut expected: Vec<String> = vec!["Typing slowly here…".to_owned()];

    // 7. Ten messages each way appear in one order on both pages.
    let talk = |range: std::ops::Range<usize>| TALK[range].iter().copied();
    for (who, line) in talk(0..10) {
        say(if who == Who::A { &a } else { &b }, line).await;
        expected.push(line.to_owned());
    }

    if backend == Backend::Redis {
        // 8 (Redis). B's node dies mid-chat. B's page says so and keeps what B types; A goes on.
        same_messages_on_both(&a, &b, expected.len()).await;
        let node = node_b.as_mut().expect("B's node");
        node.kill();
        b.wait(
            "B's page says the connection is lost",
            "return document.getElementById('conn-banner').dataset.state === 'lost';",
            &[],
        )
        .await;
        for (who, line) in talk(10..16) {
            say(if who == Who::A { &a } else { &b }, line).await;
            expected.push(line.to_owned());
        }
        let typed_offline: Vec<&str> = talk(10..16)
            .filter(|(w, _)| *w == Who::B)
            .map(|(_, l)| l)
            .collect();
        b.wait(
            "B's messages wait for the connection",
            "const t = Array.from(document.querySelectorAll('#pending li.msg.pending .text'), e => e.textContent); \
             return JSON.stringify(t) === JSON.stringify(arguments[0]);",
            &[json!(typed_offline)],
        )
        .await;
        shots.take("node-down-messages-wait", &both).await;
        // The node comes back (another process, another port, behind the same address).
        let restarted = app.another_node().await;
        proxy_b.retarget(restarted.addr);
        drop(node_b.replace(restarted));
        b.wait_within(
            "B's page reconnects and says so",
            Duration::from_secs(15),
            "return document.getElementById('conn-banner').dataset.state === 'back';",
            &[],
        )
        .await;
        let shown = same_messages_on_both(&a, &b, expected.len()).await;
        for line in &expected {
            assert_eq!(
                shown.iter().filter(|s| *s == line).count(),
                1,
                "{line:?} lost or doubled across the restart: {shown:#?}"
            );
        }
        shots.take("node-back-nothing-lost", &both).await;
    } else {
        for (who, line) in talk(10..16) {
            say(if who == Who::A { &a } else { &b }, line).await;
            expected.push(line.to_owned());
        }
    }
    for (who, line) in talk(16..20) {
        say(if who == Who::A { &a } else { &b }, line).await;
        expected.push(line.to_owned());
    }
    let shown = same_messages_on_both(&a, &b, expected.len()).await;
    let mut sorted_shown = shown.clone();
    sorted_shown.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(sorted_shown, sorted_expected, "every message once");
    for (p, who) in [(&a, Who::A), (&b, Who::B)] {
        let typed: Vec<&str> = TALK
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, l)| *l)
            .collect();
        let own: Vec<&str> = shown
            .iter()
            .map(String::as_str)
            .filter(|s| typed.contains(s))
            .collect();
        assert_eq!(own, typed, "{}: own messages out of the order typed", p.who);
    }
    // Consecutive messages of one sender are grouped; bubbles are sized to their text.
    let widths = a
        .eval(
            "const m = Array.from(document.querySelectorAll('#messages li.msg'));\
             const w = t => { const li = m.find(l => l.querySelector('.text').textContent === t); \
               return li.querySelector('.bubble').getBoundingClientRect().width; };\
             return [w(arguments[0]), w(arguments[1]), \
               document.querySelectorAll('#messages li.msg.cont').length];",
            &[json!(SHORT), json!(LONG)],
        )
        .await;
    let (short, long) = (widths[0].as_f64(), widths[1].as_f64());
    assert!(
        short.zip(long).is_some_and(|(s, l)| s * 3.0 < l),
        "bubbles are not sized to their text: {widths}"
    );
    assert!(
        widths[2].as_u64().is_some_and(|n| n >= 5),
        "consecutive messages are not grouped: {widths}"
    );
    shots.take("conversation", &both).await;

    // 9. A message of markup is shown as text and runs nothing.
    say(&a, MARKUP).await;
    expected.push(MARKUP.to_owned());
    for p in both {
        p.wait(
            "the markup message shown as text",
            "const t = Array.from(document.querySelectorAll('#messages li.msg .text')); \
             const last = t[t.length - 1]; \
             return !!last && last.textContent === arguments[0] && last.children.length === 0;",
            &[json!(MARKUP)],
        )
        .await;
        assert_eq!(
            p.eval(
                "return [document.body.dataset.pwned || null, \
                   document.querySelectorAll('#messages img, #messages script, #messages b').length];",
                &[]
            )
            .await,
            json!([null, 0]),
            "{}: markup in a message became elements or ran",
            p.who
        );
    }
    shots.take("markup-as-text", &both).await;

    // 10. A reloads and sees the whole history, in the same order.
    a.reload().await;
    wait_in_room(&a, B_NAME).await;
    a.wait(
        "A's history after the reload",
        "const t = Array.from(document.querySelectorAll('#messages li.msg .text'), e => e.textContent); \
         return JSON.stringify(t) === arguments[0];",
        &[json!(serde_json::to_string(&same_messages_on_both(&a, &b, expected.len()).await)
            .expect("json"))],
    )
    .await;
    shots.take("reloaded-history", &both).await;

    // 11. B closes the page: A sees B offline within the grace plus a second.
    b.leave().await;
    let left = Instant::now();
    a.wait_within(
        "A sees Ben offline",
        Duration::from_secs(GRACE_SECS + 10),
        "return document.getElementById('room-status').dataset.state === 'offline';",
        &[],
    )
    .await;
    let took = left.elapsed();
    assert!(
        took <= Duration::from_secs(GRACE_SECS + 1),
        "A saw Ben offline only {took:?} after Ben left (grace {GRACE_SECS} s)"
    );
    shots.take("other-went-offline", &[&a]).await;

    // A writes while B is away. B comes back to the home page: the chat shows one unread
    // message (and the tab title counts it); A sees B online again. B opens the chat.
    say(&a, AWAY_LINE).await;
    expected.push(AWAY_LINE.to_owned());
    b.open("/").await;
    b.wait(
        "B's chat list shows the unread message",
        "const li = document.querySelector('#rooms li'); \
         const badge = li && li.querySelector('.badge'); \
         return !!badge && badge.textContent === '1' && li.textContent.includes(arguments[0]) \
           && li.textContent.includes(arguments[1]) && document.title === '(1) Chat';",
        &[json!(A_NAME), json!(AWAY_LINE)],
    )
    .await;
    a.wait(
        "A sees Ben online again",
        "return document.getElementById('room-status').dataset.state === 'online';",
        &[],
    )
    .await;
    shots.take("unread-on-return", &both).await;
    b.click("#rooms li a").await;
    wait_in_room(&b, A_NAME).await;
    same_messages_on_both(&a, &b, expected.len()).await;
    // B's page marks what it showed as read: A sees "Seen" under that message, and only there.
    a.wait(
        "A sees Seen under the message Ben just read",
        "const s = document.querySelectorAll('#messages .seen-note'); \
         if (s.length !== 1 || s[0].textContent !== 'Seen') return false; \
         const li = s[0].closest('li.msg'); \
         return li.classList.contains('mine') && li.querySelector('.text').textContent === arguments[0] \
           && li === document.querySelector('#messages li.msg:last-of-type');",
        &[json!(AWAY_LINE)],
    )
    .await;
    shots.take("seen-after-reading", &both).await;

    // 12. A ends the chat (from the menu, after a dialog that says what it means); both see it.
    a.click("#room-menu summary").await;
    a.wait_shown("#block-user").await;
    assert_eq!(a.text("#block-user").await, format!("Block {B_NAME}"));
    shots.take("room-menu", &[&a]).await;
    a.click("#close-room").await;
    a.wait_shown("#close-dialog").await;
    shots.take("end-chat-dialog", &[&a]).await;
    a.click("#close-confirm").await;
    for (p, text) in [
        (&a, "You ended this chat"),
        (&b, "Asha Rao ended this chat"),
    ] {
        p.wait(
            "the chat shown as ended",
            "const e = document.getElementById('ended'); \
             return !e.hidden && e.textContent.includes(arguments[0]) \
               && document.getElementById('composer').hidden \
               && document.getElementById('room-status').dataset.state === 'ended';",
            &[json!(text)],
        )
        .await;
    }
    shots.take("chat-ended", &both).await;

    // 13. B asks A again; A blocks B from the request (after confirming). B and the request
    // are gone from A's page at once; B is told A is not online, and stops seeing A listed.
    for p in both {
        p.open("/").await;
        p.wait_shown("#app-section").await;
    }
    b.type_into("#request-phone", A_TYPED).await;
    b.click("#request-submit").await;
    let incoming_b = format!("#incoming li[data-phone=\"{B_PHONE}\"]");
    a.wait_shown(&format!("{incoming_b} button.block")).await;
    shots.take("request-with-block", &[&a]).await;
    a.eval("window.confirm = () => true;", &[]).await;
    a.click(&format!("{incoming_b} button.block")).await;
    a.wait(
        "A is told Ben is blocked; Ben is gone from requests and from the online list",
        "const t = document.getElementById('toasts'); \
         return !!t && t.textContent.includes('You blocked ' + arguments[1]) \
           && !document.querySelector('#incoming li[data-phone=\"' + arguments[0] + '\"]') \
           && !document.querySelector('#online li[data-phone=\"' + arguments[0] + '\"]');",
        &[json!(B_PHONE), json!(B_NAME)],
    )
    .await;
    shots.take("blocked-from-request", &[&a]).await;
    b.wait(
        "A is no longer listed online for Ben",
        "return !document.querySelector('#online li[data-phone=\"' + arguments[0] + '\"]');",
        &[json!(A_PHONE)],
    )
    .await;
    b.eval("document.getElementById('request-phone').value = ''", &[])
        .await;
    b.type_into("#request-phone", A_TYPED).await;
    b.click("#request-submit").await;
    b.wait(
        "Ben's new request answers as if Asha were offline",
        "const e = document.getElementById('request-feedback'); \
         return !e.hidden && e.classList.contains('is-error') && e.textContent.includes('not online right now');",
        &[],
    )
    .await;

    if backend == Backend::Memory {
        // 14 (memory). The server restarts: both pages say the connection is lost, then that
        // the server restarted, with the number kept for signing in again.
        for p in both {
            p.wait(
                "the ended chat is gone from the list",
                "return document.querySelectorAll('#rooms li').length === 0;",
                &[],
            )
            .await;
        }
        app.server.kill();
        for p in both {
            p.wait(
                "the page says the connection is lost",
                "return document.getElementById('conn-banner').dataset.state === 'lost';",
                &[],
            )
            .await;
        }
        shots.take("server-down", &both).await;
        let new = app.another_node().await;
        proxy_a.retarget(new.addr);
        proxy_b.retarget(new.addr);
        drop(app.replace_server(new));
        for (p, phone, name) in [(&a, A_PHONE, A_NAME), (&b, B_PHONE, B_NAME)] {
            p.wait_within(
                "the page says the server restarted, with the number kept",
                Duration::from_secs(20),
                "const n = document.getElementById('reg-notice'); \
                 return !document.getElementById('register-section').hidden && !n.hidden \
                   && n.textContent.includes('restarted') \
                   && document.getElementById('reg-phone').value === arguments[0] \
                   && document.getElementById('reg-name').value === arguments[1];",
                &[json!(phone), json!(name)],
            )
            .await;
        }
        shots.take("server-restarted", &both).await;
        // One click signs A in again.
        a.click("#reg-submit").await;
        a.wait_shown("#app-section").await;
        a.wait(
            "A signed in again, by name",
            "return document.getElementById('me-name').textContent === arguments[0];",
            &[json!(A_NAME)],
        )
        .await;
    }

    a.quit().await;
    b.quit().await;
    drop(driver);
    eprintln!(
        "browser test ({variant}): {:.1} s; B seen offline {:.1} s after leaving; screenshots in {}",
        started.elapsed().as_secs_f64(),
        took.as_secs_f64(),
        shots.dir.display()
    );
}

/// Types a message and presses Enter.
async fn say(p: &Browser, text: &str) {
    p.type_into("#input", &format!("{text}\u{E007}")).await;
}

/// Waits for the chatroom with `other` (by name), joined and usable, and `other` online.
async fn wait_in_room(p: &Browser, other: &str) {
    p.wait(
        &format!("in the room with {other}, online"),
        "return location.pathname.startsWith('/chatroom/') \
           && document.getElementById('room-title').textContent === arguments[0] \
           && !document.getElementById('input').disabled \
           && document.getElementById('room-status').dataset.state === 'online' \
           && document.getElementById('conn-banner').hidden;",
        &[json!(other)],
    )
    .await;
}

/// Waits until both pages show `n` delivered messages (none still pending) in the same order;
/// returns their texts.
async fn same_messages_on_both(a: &Browser, b: &Browser, n: usize) -> Vec<String> {
    let script = "const t = Array.from(document.querySelectorAll('#messages li.msg .text'), e => e.textContent); \
         return t.length === arguments[0] && document.querySelectorAll('#pending li').length === 0 ? t : null;";
    let deadline = Instant::now() + driver::WAIT;
    loop {
        let ta = a.wait("all messages delivered", script, &[json!(n)]).await;
        let tb = b.wait("all messages delivered", script, &[json!(n)]).await;
        if ta == tb {
            return serde_json::from_value::<Vec<String>>(ta).expect("texts");
        }
        assert!(
            Instant::now() < deadline,
            "the two pages show different orders:\n{ta:#}\n{tb:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
