//! The web console of `acorn dev up`, in a real browser (Debian's headless `chromium` over
//! the DevTools protocol) with real devices (`acorn device run`) on the stack's real
//! mosquitto; and its security checks over plain HTTP.

#[path = "console/cdp.rs"]
mod cdp;
// Shared with the other dev-stack tests; this one uses a part of it.
#[allow(dead_code)]
mod devstack;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cdp::Browser;
use devstack::{acorn, http, pem_files, publish, run_bounded, text, DevUp, Lines, WAIT};
use serde_json::{json, Value};

/// The console's Content-Security-Policy, exactly.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How soon a press must show on the pages.
const PRESS_SHOWN_WITHIN: Duration = Duration::from_secs(2);

/// Registers `id` with a fresh token from the admin API (or `token_file`); returns its image.
fn register(up: &mut DevUp, dir: &Path, id: &str, token_file: Option<PathBuf>) -> PathBuf {
    let backend = up.backend();
    let token_file = token_file.unwrap_or_else(|| {
        let (status, body) = http(
            "POST",
            &backend,
            "/v1/tokens",
            Some(&up.admin_key()),
            Some("{}"),
        );
        assert_eq!(status, 201, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        let file = dir.join(format!("{id}.token"));
        std::fs::write(&file, answer["tokens"][0]["token"].as_str().expect("token"))
            .expect("write token");
        file
    });
    let image = dir.join(format!("{id}.nvs.bin"));
    let mut cmd = acorn();
    cmd.args(["device", "register", "--device-id", id, "--backend"])
        .arg(&backend)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--image")
        .arg(&image);
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{}", text(&out));
    image
}

/// A running `acorn device run` with its stdin open. Killed on drop.
struct Device {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Device {
    fn start(image: &Path, up: &mut DevUp, extra: &[&str]) -> Self {
        let port = up.port("broker:");
        let ca = up.value("CA:");
        let mut child = acorn()
            .args(["device", "run", "--image"])
            .arg(image)
            .args(["--broker", &format!("localhost:{port}"), "--ca", &ca])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("acorn device run");
        let stdout = Lines::spawn(child.stdout.take().expect("stdout"));
        let stderr = Lines::spawn(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the device");
        stdin.flush().expect("flush");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: `docs/img` with `ACORN_UPDATE_SCREENSHOTS=1`, else a temp dir.
fn screenshot_dir(tmp: &Path) -> PathBuf {
    if std::env::var_os("ACORN_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img")
    } else {
        tmp.to_path_buf()
    }
}

fn js(value: &str) -> String {
    json!(value).to_string()
}

/// The state cell of a device's row on the Fleet page.
fn row_state(id: &str) -> String {
    format!(
        "(document.querySelector('tr[data-device={}] [data-field=state]') || {{}}).textContent",
        js(id)
    )
}

#[test]
fn the_console_in_a_browser_follows_the_fleet_live() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let backend = up.backend();
    let admin_key = up.admin_key();
    let first = PathBuf::from(up.value("token:"));
    // Three devices registered; two of them run.
    let one = register(&mut up, tmp.path(), "acorn-0001", Some(first));
    let two = register(&mut up, tmp.path(), "acorn-0002", None);
    register(&mut up, tmp.path(), "acorn-0003", None);
    // The first can rotate its certificate against the stack's own provisioning API.
    let ca = up.value("CA:");
    let rotation = [
        "--rotation-template",
        "acorn-pups",
        "--rotation-local",
        "--rotation-ca",
        &ca,
    ];
    let mut device_one = Device::start(&one, &mut up, &rotation);
    let mut device_two = Device::start(&two, &mut up, &[]);
    let shots = screenshot_dir(tmp.path());

    let mut browser = Browser::start();
    let started = Instant::now();

    // Signing in: the fleet sends a stranger to the sign-in form; the admin key (a password
    // field) opens a session kept in an HttpOnly, SameSite=Strict cookie.
    browser.goto(&format!("{backend}/"));
    assert!(
        browser.location().ends_with("/login"),
        "{}",
        browser.location()
    );
    assert_eq!(
        browser.eval("document.getElementById('key').type"),
        json!("password")
    );
    browser.submit(&[("key", &admin_key)], "sign-in");
    assert_eq!(
        browser.location(),
        format!("{backend}/"),
        "{}",
        browser.text("main")
    );
    let cookies = browser.cookies(&backend);
    let session = cookies
        .iter()
        .find(|c| c.0 == "acorn_console")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"))
        .clone();
    assert!(session.2 && session.3 == "Strict", "{session:?}");
    assert!(!browser
        .eval("document.documentElement.outerHTML")
        .to_string()
        .contains(&admin_key));

    // Every registered device is listed, with its state from the broker: the two running
    // ones online, the third never heard from.
    let online = format!(
        "{} === 'online' && {} === 'online'",
        row_state("acorn-0001"),
        row_state("acorn-0002")
    );
    if browser.wait_until(&online, WAIT).is_none() {
        // The pages stream only what arrives while they are open: read it again.
        browser.goto(&format!("{backend}/"));
    }
    assert!(
        browser.wait_until(&online, WAIT).is_some(),
        "not online: {}",
        browser.text("#fleet")
    );
    assert_eq!(browser.eval(&row_state("acorn-0003")), json!("unknown"));
    assert_eq!(
        browser.eval("document.querySelectorAll('#fleet tbody tr').length"),
        json!(3)
    );
    // Search (id, state or firmware, any case) and sorting by a column.
    let rows = "Array.from(document.querySelectorAll('#fleet tbody tr')).map(r => r.dataset.device).join(' ')";
    browser.submit(&[("q", "0003")], "search");
    assert_eq!(browser.eval(rows), json!("acorn-0003"));
    browser.goto(&format!("{backend}/?q=ONLINE"));
    assert_eq!(browser.eval(rows), json!("acorn-0001 acorn-0002"));
    browser.goto(&format!("{backend}/?sort=state"));
    assert_eq!(
        browser.eval(rows),
        json!("acorn-0001 acorn-0002 acorn-0003")
    );
    assert_eq!(browser.text("th a[aria-sort]"), "State");

    // A press shows in the device's row within 2 s...
    browser.goto(&format!("{backend}/"));
    assert!(browser
        .wait_until("document.body.dataset.stream === 'open'", WAIT)
        .is_some());
    device_one.send("press rf-fleet-1");
    let last_press = "(document.querySelector('tr[data-device=\"acorn-0001\"] [data-field=lastPress]') || {}).textContent.includes('rf-fleet-1')";
    let took = browser.wait_until(last_press, PRESS_SHOWN_WITHIN);
    assert!(
        took.is_some(),
        "no press in the row within 2 s: {}",
        browser.text("#fleet")
    );
    // The chart counts it (and two more).
    device_one.send("press rf-fleet-2");
    device_two.send("press rf-fleet-3");
    let counted = "Array.from(document.querySelectorAll('#chart rect.bar')).reduce((n, b) => n + Number(b.dataset.count), 0) >= 3";
    assert!(
        browser.wait_until(counted, WAIT).is_some(),
        "the chart did not count the presses"
    );
    browser.screenshot(&shots.join("console-fleet.png"));

    // ...and in the live stream, which can be paused.
    browser.goto(&format!("{backend}/live"));
    assert!(browser
        .wait_until("document.body.dataset.stream === 'open'", WAIT)
        .is_some());
    device_two.send("press rf-live-2");
    let live_press = "document.querySelector('#events tbody').textContent.includes('rf-live-2')";
    assert!(
        browser.wait_until(live_press, PRESS_SHOWN_WITHIN).is_some(),
        "no press in the live stream within 2 s: {}",
        browser.text("#events")
    );
    browser.eval("document.getElementById('pause').click()");
    device_two.send("press rf-held-2");
    assert!(browser
        .wait_until(
            "document.getElementById('paused-count').textContent.includes('waiting')",
            WAIT
        )
        .is_some());
    assert!(
        !browser.text("#events tbody").contains("rf-held-2"),
        "shown while paused"
    );
    browser.eval("document.getElementById('pause').click()");
    assert!(browser
        .wait_until(
            "document.querySelector('#events tbody').textContent.includes('rf-held-2')",
            WAIT
        )
        .is_some());
    browser.screenshot(&shots.join("console-live.png"));

    // A settings change from the Device page reaches the device (asked at the device), and
    // the page shows the device's answer.
    browser.goto(&format!("{backend}/devices/acorn-0001"));
    browser.submit(
        &[("soundVolume", "3"), ("ledBrightness", "20")],
        "send-settings",
    );
    assert!(
        browser
            .location()
            .contains("/devices/acorn-0001?sent=console-"),
        "{}",
        browser.location()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        device_one.send("status");
        let settled = device_one
            .stdout
            .wait_for(Duration::from_millis(500), |l| {
                l.contains("\"soundVolume\":3") && l.contains("\"ledBrightness\":20")
            })
            .is_some();
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device never applied the settings: {:?}",
            device_one.stdout.seen
        );
    }
    let answered =
        "document.querySelector('#answers').textContent.includes('answer to settings: ok')";
    if browser
        .wait_until(answered, Duration::from_secs(3))
        .is_none()
    {
        // The answer came before the page's stream opened: the server has it.
        let here = browser.location();
        browser.goto(&here);
    }
    assert!(
        browser.wait_until(answered, WAIT).is_some(),
        "{}",
        browser.text("#answers")
    );
    assert!(browser
        .text("#answers")
        .contains("soundVolume 3, ledBrightness 20"));
    browser.submit(&[], "command-get-status");
    let status_answer =
        "document.querySelector('#answers').textContent.includes('answer to get-status: ok')";
    if browser
        .wait_until(status_answer, Duration::from_secs(3))
        .is_none()
    {
        let here = browser.location();
        browser.goto(&here);
    }
    assert!(
        browser.wait_until(status_answer, WAIT).is_some(),
        "{}",
        browser.text("#answers")
    );

    // Rotate certificate: the device answers, commits a new certificate, and the page lists
    // the old one as superseded.
    browser.submit(&[], "command-rotate-certificate");
    let rotated = "document.querySelector('#answers').textContent.includes('rotation committed')";
    if browser.wait_until(rotated, WAIT).is_none() {
        let here = browser.location();
        browser.goto(&here);
    }
    assert!(
        browser.wait_until(rotated, WAIT).is_some(),
        "{}",
        browser.text("#answers")
    );
    let here = browser.location();
    browser.goto(&here);
    assert!(
        browser.text("#certificate-history").contains("superseded"),
        "{}",
        browser.text("main")
    );
    browser.screenshot(&shots.join("console-device.png"));

    // A device publishing markup and quotes (here through a service identity on its topics)
    // is shown as text: no script of theirs runs.
    let (status, body) = http(
        "POST",
        &backend,
        "/v1/service-identities",
        Some(&admin_key),
        Some(r#"{"name":"observer"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let identity: Value = serde_json::from_str(&body).expect("JSON");
    let files = pem_files(
        tmp.path(),
        "observer",
        identity["certificatePem"].as_str().expect("cert"),
        identity["privateKeyPem"].as_str().expect("key"),
        Path::new(&up.value("CA:")),
    );
    let service_port = up.port("services:");
    let evil_firmware = r#"<script>document.title='pwned'</script>"'<b>"#;
    let evil_button =
        r#""><script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">"#;
    browser.goto(&format!("{backend}/"));
    assert!(browser
        .wait_until("document.body.dataset.stream === 'open'", WAIT)
        .is_some());
    let status_message = json!({"deviceId": "acorn-0003", "timestamp": "2026-12-01T10:00:00.000Z",
        "status": "online", "firmwareVersion": evil_firmware});
    let press_message = json!({"deviceId": "acorn-0003", "buttonRfId": evil_button,
        "timestamp": "2026-12-01T10:00:01.000Z", "pressId": "0000001"});
    for (topic, payload) in [
        ("acorn-pups/status/acorn-0003", status_message),
        ("acorn-pups/button-press/acorn-0003", press_message),
    ] {
        let out = publish(
            service_port,
            &files,
            "service:observer",
            topic,
            &payload.to_string(),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let firmware_cell = "(document.querySelector('tr[data-device=\"acorn-0003\"] [data-field=firmware]') || {}).textContent";
    let shown = format!("{firmware_cell} === {}", js(evil_firmware));
    assert!(
        browser.wait_until(&shown, WAIT).is_some(),
        "{}",
        browser.text("#fleet")
    );
    // Streamed into the page, then rendered by the server: text both times.
    for page in ["/", "/live", "/devices/acorn-0003"] {
        if page != "/" {
            browser.goto(&format!("{backend}{page}"));
        }
        let html = browser
            .eval("document.body.innerHTML")
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            html.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
            "{page}: {html}"
        );
        assert_ne!(browser.eval("document.title"), json!("pwned"), "{page}");
        assert_eq!(
            browser.eval("document.querySelectorAll('script').length"),
            json!(1),
            "{page}"
        );
        assert_eq!(
            browser.eval("document.querySelectorAll('img').length"),
            json!(0),
            "{page}"
        );
    }
    assert!(
        browser.text("body").contains(evil_button),
        "the button id is shown as sent"
    );

    // Revoking (with the device id typed to confirm) takes the device offline: the device
    // is refused by the broker, and the pages say so.
    browser.goto(&format!("{backend}/devices/acorn-0002"));
    browser.submit(&[("confirm", "acorn-0001")], "revoke-button");
    assert!(
        browser.text("main").contains("type the device id exactly"),
        "a wrong confirmation revokes nothing"
    );
    browser.goto(&format!("{backend}/devices/acorn-0002"));
    browser.submit(&[("confirm", "acorn-0002")], "revoke-button");
    assert_eq!(browser.text("#device-state"), "revoked");
    assert!(
        device_two
            .stderr
            .wait_for(WAIT, |l| l.contains("revoked"))
            .is_some(),
        "the device was not cut off: {:?}",
        device_two.stderr.seen
    );
    browser.goto(&format!("{backend}/"));
    assert_eq!(browser.eval(&row_state("acorn-0002")), json!("revoked"));
    assert_eq!(browser.eval(&row_state("acorn-0001")), json!("online"));
    assert_eq!(browser.text("#count-revoked"), "1");

    // Tokens: minted once, shown once, listed while unused.
    browser.goto(&format!("{backend}/tokens"));
    browser.submit(
        &[("ttlMinutes", "10"), ("deviceId", "acorn-0009")],
        "mint-button",
    );
    let token = browser.text("#new-token");
    assert_eq!(token.len(), 64, "{token}");
    assert!(browser.text("#unused").contains("acorn-0009"));

    // Signing out ends the session on the server: the old cookie opens nothing.
    browser.goto(&format!("{backend}/"));
    browser.submit(&[], "sign-out");
    assert!(
        browser.location().ends_with("/login"),
        "{}",
        browser.location()
    );
    let (status, location) =
        get_with_cookie(&backend, "/", &format!("acorn_console={}", session.1));
    assert_eq!((status, location.as_str()), (303, "/login"));

    eprintln!("browser steps took {:?}", started.elapsed());
    drop(device_one);
    drop(device_two);
    up.interrupt();
}

/// `GET path` with a cookie; the status and the `Location` header.
fn get_with_cookie(base: &str, path: &str, cookie: &str) -> (u16, String) {
    let (status, headers, _) = request(base, "GET", path, &[("Cookie", cookie)], "");
    let location = header(&headers, "location").unwrap_or_default();
    (status, location)
}

/// The value of header field `name` (any case) in a response head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One HTTP/1.1 request, a POST's body form-encoded; the status, the head and the body.
fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut headers = headers.to_vec();
    if method == "POST" {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    devstack::request(base, method, path, &headers, body)
}

#[test]
fn every_console_action_needs_a_session_and_its_csrf_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let backend = up.backend();
    let admin_key = up.admin_key();
    let first = PathBuf::from(up.value("token:"));
    register(&mut up, tmp.path(), "acorn-0001", Some(first));
    let actions = [
        ("/devices/acorn-0001/settings", "soundVolume=3"),
        ("/devices/acorn-0001/command", "command=get-status"),
        ("/devices/acorn-0001/revoke", "confirm=acorn-0001"),
        ("/tokens", "ttlMinutes=5"),
        ("/logout", ""),
    ];

    // Without a session: every action 401, every page to the sign-in form.
    for (path, body) in actions {
        let (status, _, _) = request(&backend, "POST", path, &[], body);
        assert_eq!(status, 401, "{path}");
    }
    for path in ["/", "/live", "/tokens", "/devices/acorn-0001"] {
        let (status, location) = get_with_cookie(&backend, path, "acorn_console=forged");
        assert_eq!((status, location.as_str()), (303, "/login"), "{path}");
    }
    let (status, _, _) = request(&backend, "GET", "/events", &[], "");
    assert_eq!(status, 401);

    // A wrong key signs nobody in; a used or unknown one-time link neither.
    let (status, head, body) = request(&backend, "POST", "/login", &[], "key=wrong");
    assert_eq!(status, 401);
    assert!(header(&head, "set-cookie").is_none() && body.contains("not the admin key"));
    let (status, _, _) = request(&backend, "GET", "/login/once?token=0123", &[], "");
    assert_eq!(status, 401);

    // Signed in (form-encoded key; '+' and '%' survive the encoding).
    let key = admin_key.replace('%', "%25").replace('+', "%2B");
    let (status, head, _) = request(&backend, "POST", "/login", &[], &format!("key={key}"));
    assert_eq!(status, 303, "{head}");
    let set_cookie = header(&head, "set-cookie").expect("cookie");
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("cookie").to_owned();
    let (_, _, page) = request(&backend, "GET", "/tokens", &[("Cookie", &cookie)], "");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // With the session but without its CSRF token, with a wrong one, or from another
    // origin: refused (403), nothing done.
    for (path, body) in actions {
        for fields in [body.to_owned(), format!("{body}&csrf={}", "0".repeat(64))] {
            let (status, _, _) = request(&backend, "POST", path, &[("Cookie", &cookie)], &fields);
            assert_eq!(status, 403, "{path} {fields}");
        }
        let fields = format!("{body}&csrf={csrf}");
        let origin = [
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ];
        let (status, _, _) = request(&backend, "POST", path, &origin, &fields);
        assert_eq!(status, 403, "{path} from another origin");
    }
    let (status, body) = http(
        "GET",
        &backend,
        "/v1/devices/acorn-0001",
        Some(&admin_key),
        None,
    );
    assert!(
        status == 200 && body.contains("\"status\":\"active\""),
        "{body}"
    );

    // With both: done (a token minted), and bad input is a clear page, not a crash.
    let with = |fields: &str| {
        let (status, _, body) = request(
            &backend,
            "POST",
            "/tokens",
            &[("Cookie", &cookie)],
            &format!("{fields}&csrf={csrf}"),
        );
        (status, body)
    };
    let (status, body) = with("ttlMinutes=5");
    assert!(
        status == 200 && body.contains("id=\"new-token\""),
        "{status} {body}"
    );
    let (status, body) = with("ttlMinutes=banana");
    assert!(
        status == 400 && body.contains("whole number of minutes"),
        "{status}"
    );
    let (status, body) = with("ttlMinutes=5&deviceId=no/slashes");
    assert!(
        status == 400 && body.contains("deviceId"),
        "{status} {body}"
    );
    let settings = |fields: &str| {
        request(
            &backend,
            "POST",
            "/devices/acorn-0001/settings",
            &[("Cookie", &cookie)],
            &format!("{fields}&csrf={csrf}"),
        )
    };
    // The device's own rules refuse a volume of 11, before anything is sent.
    let (status, _, body) = settings("soundVolume=11");
    assert!(
        status == 400 && body.contains("soundVolume") && body.contains("10"),
        "{status} {body}"
    );
    let (status, _, body) = settings("soundVolume=");
    assert!(
        status == 400 && body.contains("at least one setting"),
        "{status} {body}"
    );
    let (status, _, _) = request(
        &backend,
        "POST",
        "/devices/nobody/command",
        &[("Cookie", &cookie)],
        &format!("command=reconnect&csrf={csrf}"),
    );
    assert_eq!(status, 404);
    let (status, _, body) = request(
        &backend,
        "POST",
        "/devices/acorn-0001/command",
        &[("Cookie", &cookie)],
        &format!("command=self-destruct&csrf={csrf}"),
    );
    assert!(status == 400 && body.contains("self-destruct"), "{status}");

    // The CSP and its companions are on every page, signed in or not, errors too; the
    // admin key is on none.
    for path in [
        "/",
        "/live",
        "/tokens",
        "/devices/acorn-0001",
        "/devices/nobody",
        "/login",
        "/assets/console.js",
        "/assets/console.css",
    ] {
        let (status, head, body) = request(&backend, "GET", path, &[("Cookie", &cookie)], "");
        assert!(status < 500, "{path}: {status}");
        assert_eq!(
            header(&head, "content-security-policy").as_deref(),
            Some(CSP),
            "{path}"
        );
        assert_eq!(
            header(&head, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(&head, "referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert!(!body.contains(&admin_key), "{path} shows the admin key");
        if path.starts_with("/assets") {
            continue;
        }
        assert!(
            !body.contains("<script>") && !body.contains(" style="),
            "{path}: inline script or style"
        );
    }

    // Sign-out ends the session on the server.
    let (status, _, _) = request(
        &backend,
        "POST",
        "/logout",
        &[("Cookie", &cookie)],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    let (status, location) = get_with_cookie(&backend, "/", &cookie);
    assert_eq!((status, location.as_str()), (303, "/login"));
    let (status, _, _) = request(
        &backend,
        "POST",
        "/tokens",
        &[("Cookie", &cookie)],
        &format!("ttlMinutes=5&csrf={csrf}"),
    );
    assert_eq!(status, 401);
    let logs = up.stderr.drain().join("\n");
    assert!(!logs.contains(&admin_key), "the admin key is logged");
    up.interrupt();
}
