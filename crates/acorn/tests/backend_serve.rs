//! `acorn backend serve`: configured by a TOML file and ACORN_* variables, JSON logs without
//! secrets, /v1/health, /v1/ready, /metrics, a registration, and a drain then a clean exit on
//! SIGTERM; mistakes in the configuration stop it with what to fix.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `acorn backend serve`; killed on drop if still running.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = dir.join("serve.log");
        let mut cmd = common::acorn();
        cmd.args(["backend", "serve", "--config"])
            .arg(config)
            .env("ACORN_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("acorn backend serve starts");
        Self {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most 30 s) until /v1/health answers.
    async fn wait_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = client.get(format!("{}/v1/health", self.base)).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("acorn backend serve exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not healthy in 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The samples of a Prometheus/OpenMetrics text: `name{labels}` → value.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_from_a_config_file_and_the_environment_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_key = "a".repeat(40) + "d1e7";
    let key_file = dir.path().join("admin.key");
    acorn_files::write_private(&key_file, admin_key.as_bytes()).expect("key file");
    let config = dir.path().join("acorn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nadmin_key_file = {:?}\niot_endpoint = \"localhost:8883\"\ndrain_seconds = 2\n",
            dir.path().join("data"),
            key_file
        ),
    )
    .expect("config");
    let mut serve = Serve::start(
        dir.path(),
        &config,
        &[(
            "ACORN_DATABASE_URL",
            &format!("sqlite:{}", dir.path().join("reg.sqlite3").display()),
        )],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    serve.wait_healthy(&client).await;
    assert!(
        dir.path().join("reg.sqlite3").exists(),
        "ACORN_DATABASE_URL is used"
    );

    let resp = client
        .get(format!("{}/v1/ready", serve.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(resp.status(), 200);
    // Mint with the admin key from the file, register a device.
    let minted: Value = client
        .post(format!("{}/v1/tokens", serve.base))
        .bearer_auth(&admin_key)
        .json(&json!({ "ttlSeconds": 600 }))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    let token = minted["tokens"][0]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let register = |token: String| {
        let (client, base) = (client.clone(), serve.base.clone());
        async move {
            client
                .post(format!("{base}/v1/devices/register"))
                .bearer_auth(token)
                .json(&json!({ "deviceId": "serve-1", "serialNumber": "SN-1",
                    "macAddress": "02:00:00:00:00:01", "firmwareVersion": "1.0.0" }))
                .send()
                .await
                .expect("register")
                .status()
                .as_u16()
        }
    };
    assert_eq!(register(token.clone()).await, 201);
    assert_eq!(register(token.clone()).await, 409, "single use");

    // /metrics: parsed, with the registration, the refusal, the token and the latency.
    let resp = client
        .get(format!("{}/metrics", serve.base))
        .send()
        .await
        .expect("metrics");
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text")));
    let text = resp.text().await.expect("text");
    let m = samples(&text);
    assert_eq!(
        m.get(r#"acorn_registrations_total{outcome="registered"}"#),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        m.get(r#"acorn_registrations_total{outcome="token_used"}"#),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(m.get("acorn_tokens_minted_total"), Some(&1.0), "{text}");
    assert_eq!(m.get("acorn_tokens_used_total"), Some(&1.0), "{text}");
    assert_eq!(
        m.get(r#"acorn_registration_duration_seconds_count{result="registered"}"#),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        m.get(r#"acorn_registration_duration_seconds_count{result="refused"}"#),
        Some(&1.0),
        "{text}"
    );
    assert!(m
        .get(r#"acorn_registration_duration_seconds_sum{result="registered"}"#)
        .is_some_and(|s| *s > 0.0));
    assert_eq!(m.get("acorn_ready"), Some(&1.0), "{text}");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    // SIGTERM: /v1/ready turns 503 at once (the load balancer drains), the rest still answers,
    // then the process exits 0.
    let pid = serve.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client
            .get(format!("{}/v1/ready", serve.base))
            .send()
            .await
            .expect("ready while draining");
        if resp.status() == 503 {
            let v: Value = resp.json().await.expect("json");
            assert_eq!(v["status"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = client
        .get(format!("{}/v1/health", serve.base))
        .send()
        .await
        .expect("health while draining");
    assert_eq!(health.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit after SIGTERM: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", serve.log());

    // The log: JSON lines, the start and the stop, and no secret.
    let log = serve.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for expected in [
        "acorn backend serving",
        "stop requested: draining",
        "stopped",
        "device registered",
    ] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
    assert!(!log.contains(&admin_key), "the admin key is logged");
    assert!(!log.contains(&token), "the token is logged");
}

#[test]
fn serve_refuses_a_readable_admin_key_and_unknown_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, "k3y").expect("key");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("acorn.toml");
    std::fs::write(&config, format!("admin_key_file = {key_file:?}\n")).expect("config");
    let out = common::acorn()
        .args(["backend", "serve", "--config"])
        .arg(&config)
        .env("ACORN_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run");
    common::assert_clean_failure(&out, "readable admin key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chmod 600") && err.contains("admin.key"),
        "{err}"
    );

    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nsigner = \"local\"\nadmin_key = \"on the command line?\"\n",
    )
    .expect("config");
    let out = common::acorn()
        .args(["backend", "serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    common::assert_clean_failure(&out, "unknown key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_key") && err.contains("acorn.toml"),
        "{err}"
    );

    if !cfg!(feature = "aws") {
        let out = common::acorn()
            .args(["backend", "serve"])
            .env("ACORN_SIGNER", "aws")
            .env("ACORN_DATA_DIR", dir.path().join("data2"))
            .env("ACORN_LISTEN", "127.0.0.1:0")
            .output()
            .expect("run");
        common::assert_clean_failure(&out, "aws without the feature");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--features aws"), "{err}");
    }
}

/// `console = true` serves the web console at `/` (sign-in first, the CSP on it); without it
/// `/` is the API's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mounts_the_web_console_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("acorn.toml");
    std::fs::write(&config, "console = true\nlog_format = \"text\"\n").expect("config");
    let data = dir.path().join("data");
    let env = [("ACORN_DATA_DIR", data.to_str().expect("utf-8"))];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut serve = Serve::start(dir.path(), &config, &env);
    serve.wait_healthy(&client).await;
    let root = client
        .get(format!("{}/", serve.base))
        .send()
        .await
        .expect("GET /");
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/login");
    let login = client
        .get(format!("{}/login", serve.base))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(login.status(), 200);
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .expect("CSP");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );
    assert!(login
        .text()
        .await
        .expect("body")
        .contains("type=\"password\""));
    drop(serve);

    std::fs::write(&config, "log_format = \"text\"\n").expect("config");
    let mut serve = Serve::start(dir.path(), &config, &env);
    serve.wait_healthy(&client).await;
    let root = client
        .get(format!("{}/", serve.base))
        .send()
        .await
        .expect("GET /");
    assert_eq!(root.status(), 404, "no console unless asked");
}
