//! Debian's `chromedriver` and `chromium`, driven over WebDriver with fantoccini.
//!
//! One [`Driver`] (a chromedriver process on a free port) per test; each [`Browser`] is one
//! WebDriver session, so its own Chromium process with its own fresh profile directory: two
//! browsers share no storage, as two people's would not. Every process starts in one process
//! group that is killed when the driver drops, and the profile directories are removed then.
//! Every wait polls the page for a condition and is bounded.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a condition may take unless a wait says otherwise.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(20);

/// Desktop window size.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's width (and height), for the narrow screenshots.
pub const PHONE: (u32, u32) = (390, 844);

/// Finds a program: `$var` if set, else the first of `names` on `PATH`; panics with the
/// install command when there is none (the browser test never skips).
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found on PATH (or set {var}): the browser test needs Debian's Chromium and its \
         driver: apt-get install chromium chromium-driver",
        names.join(" / ")
    );
}

/// A running chromedriver; it and every browser it started are killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    /// The profile directories of the browsers, removed on drop.
    profiles: Mutex<Vec<PathBuf>>,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub async fn start() -> Driver {
        let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can kill it and every Chromium it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles: Mutex::new(Vec::new()),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + DRIVER_START;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {addr} within {DRIVER_START:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        driver
    }

    /// Opens a new browser (a fresh Chromium profile) for the person `who`, whose pages are
    /// served at `base` (`http://ip:port`); a failed wait leaves a screenshot in `shots`.
    pub async fn browser(&self, who: &str, base: &str, shots: &Path) -> Browser {
        static N: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "chat-browser-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).expect("create a profile directory");
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(profile.clone());
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open a Chromium session for {who}: {e}"));
        let mut browser = Browser {
            client,
            who: who.to_owned(),
            base: base.to_owned(),
            frame: (0, 0),
            shots: shots.to_path_buf(),
        };
        // A window is larger than the page it shows (headless Chromium keeps room for its
        // toolbars): size windows so that the page gets the sizes asked for.
        let frame = browser
            .eval(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
                &[],
            )
            .await;
        let px = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        browser.frame = (px(&frame[0]), px(&frame[1]));
        browser.resize(DESKTOP).await;
        browser
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One person's browser.
pub struct Browser {
    client: Client,
    /// Who uses it ("a-asha"), for messages and screenshot names.
    pub who: String,
    /// The origin its pages come from.
    pub base: String,
    /// How much larger the window is than the page in it (width, height).
    frame: (u32, u32),
    /// Where a failed wait saves its screenshot.
    shots: PathBuf,
}

impl Browser {
    /// Opens `path` of this person's server.
    pub async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("{}: open {url}: {e}", self.who));
    }

    /// Leaves the chat pages (as closing the tab would).
    pub async fn leave(&self) {
        self.client
            .goto("about:blank")
            .await
            .unwrap_or_else(|e| panic!("{}: leave the page: {e}", self.who));
    }

    /// Reloads the page.
    pub async fn reload(&self) {
        self.client
            .refresh()
            .await
            .unwrap_or_else(|e| panic!("{}: reload: {e}", self.who));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: &[Value]) -> Value {
        self.client
            .execute(script, args.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.who))
    }

    /// Polls `script` until it returns something truthy, for at most `within`; returns that
    /// value. On timeout: a screenshot `FAILED-<who>.png` and a panic with the page's text.
    pub async fn wait_within(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        args: &[Value],
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script, args).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self
                    .eval(
                        "return document.title + '\\n' + document.body.innerText",
                        &[],
                    )
                    .await;
                if let Ok(png) = self.client.screenshot().await {
                    let file = self.shots.join(format!("FAILED-{}.png", self.who));
                    let _ = std::fs::write(file, png);
                }
                panic!(
                    "{}: {what}: not within {within:?}. The page says:\n{}",
                    self.who,
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Browser::wait_within`] the default bound.
    pub async fn wait(&self, what: &str, script: &str, args: &[Value]) -> Value {
        self.wait_within(what, WAIT, script, args).await
    }

    /// Waits for the element `css` to be shown (present, not hidden, with a box).
    pub async fn wait_shown(&self, css: &str) {
        self.wait(
            &format!("{css} shown"),
            "const e = document.querySelector(arguments[0]); \
             return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;",
            &[json!(css)],
        )
        .await;
    }

    /// Types `text` into the element `css` as a person would (key by key).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_shown(css).await;
        let e = self.find(css).await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("{}: type into {css}: {err}", self.who));
    }

    /// Clicks the element `css` (a real click: it must be visible and not covered).
    pub async fn click(&self, css: &str) {
        self.wait_shown(css).await;
        let e = self.find(css).await;
        e.click()
            .await
            .unwrap_or_else(|err| panic!("{}: click {css}: {err}", self.who));
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: find {css}: {e}", self.who))
    }

    /// The text of the first element matching `css` ("" if none).
    pub async fn text(&self, css: &str) -> String {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            &[json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The page's path.
    pub async fn path(&self) -> String {
        self.eval("return location.pathname", &[])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Gives the page `w` x `h` CSS pixels.
    async fn resize(&self, (w, h): (u32, u32)) {
        self.client
            .set_window_size(w + self.frame.0, h + self.frame.1)
            .await
            .unwrap_or_else(|e| panic!("{}: resize to {w}x{h}: {e}", self.who));
    }

    /// Saves `<name>-<who>-desktop.png` and `<name>-<who>-phone.png` (390 px wide) in `dir`.
    pub async fn screenshots(&self, dir: &Path, name: &str) {
        self.save(dir, &format!("{name}-{}-desktop.png", self.who))
            .await;
        self.resize(PHONE).await;
        self.settle().await;
        self.save(dir, &format!("{name}-{}-phone.png", self.who))
            .await;
        self.resize(DESKTOP).await;
        self.settle().await;
    }

    /// Lets the page lay itself out after a resize (two animation frames).
    async fn settle(&self) {
        let _ = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            )
            .await;
    }

    async fn save(&self, dir: &Path, file: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.who));
        std::fs::write(dir.join(file), png).expect("write a screenshot");
    }

    /// Ends the WebDriver session (Chromium quits).
    pub async fn quit(self) {
        let _ = self.client.close().await;
    }
}
