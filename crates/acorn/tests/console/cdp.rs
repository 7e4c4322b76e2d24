//! Debian's `chromium`, headless, driven over the Chrome DevTools Protocol: one WebSocket
//! (tungstenite), one page, a handful of commands (navigate, evaluate, screenshot, cookies).
//! Every wait is bounded.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The bound of one DevTools command, and of the browser's start.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page open. Killed on drop.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium --headless` on a free DevTools port and opens a blank page.
    pub fn start() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium (apt-get install chromium)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(COMMAND_WAIT)
            .expect("chromium printed no DevTools address");
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("ws:// address")
            .to_owned();
        let tcp = TcpStream::connect(&host).expect("connect to DevTools");
        tcp.set_read_timeout(Some(COMMAND_WAIT)).expect("timeout");
        let (socket, _) = tungstenite::client(url.as_str(), tcp).expect("DevTools handshake");
        let mut browser = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to DevTools");
        let deadline = Instant::now() + COMMAND_WAIT;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let text = match self.socket.read().expect("read from DevTools") {
                Message::Text(t) => t,
                _ => continue,
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] != json!(id) {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                panic!("{method} failed: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until it is `true`, at most `limit`; how long that
    /// took, or `None`.
    pub fn wait_until(&mut self, expression: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.eval(&format!("!!({expression})")) == json!(true) {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&mut self, url: &str) {
        self.mark_document();
        self.call("Page.navigate", json!({"url": url}));
        self.wait_loaded();
    }

    /// Marks the current document, so that [`Browser::wait_loaded`] can tell the next one.
    fn mark_document(&mut self) {
        self.eval("window.__acornOldDocument = true");
    }

    /// Waits (bounded) until a new document replaced the marked one and has loaded.
    pub fn wait_loaded(&mut self) {
        let loaded =
            "window.__acornOldDocument === undefined && document.readyState === 'complete'";
        assert!(
            self.wait_until(loaded, COMMAND_WAIT).is_some(),
            "the page did not load"
        );
    }

    /// Submits a form the way a person does: `fill` sets inputs (by id), then the button
    /// with id `button` is clicked; waits for the next page.
    pub fn submit(&mut self, fill: &[(&str, &str)], button: &str) {
        for (id, value) in fill {
            let script = format!(
                "document.getElementById({}).value = {}",
                json!(id),
                json!(value)
            );
            self.eval(&script);
        }
        self.mark_document();
        self.eval(&format!(
            "document.getElementById({}).click()",
            json!(button)
        ));
        self.wait_loaded();
    }

    /// The page's address.
    pub fn location(&mut self) -> String {
        self.eval("location.href").as_str().unwrap_or("").to_owned()
    }

    /// The text of the first element `selector` matches ("" when none).
    pub fn text(&mut self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({}) || {{textContent: ''}}).textContent",
            json!(selector)
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Saves a PNG of the whole page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// The browser's cookies for `url`: `(name, value, httpOnly, sameSite)`.
    pub fn cookies(&mut self, url: &str) -> Vec<(String, String, bool, String)> {
        let answer = self.call("Network.getCookies", json!({"urls": [url]}));
        answer["cookies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_owned(),
                    c["value"].as_str().unwrap_or("").to_owned(),
                    c["httpOnly"].as_bool().unwrap_or(false),
                    c["sameSite"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
