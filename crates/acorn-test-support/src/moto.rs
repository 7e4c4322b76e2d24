//! A local AWS IoT Core for the tests: moto's server (PyPI `moto[server]`) on a free loopback
//! port, a boto3 client from the same virtualenv to read its state independently of our code,
//! and a fault-injecting proxy that fails chosen AWS IoT operations.
//!
//! moto and boto3 come from the repository's `.venv` (`bash .ci/run` installs them), or from
//! `ACORN_MOTO_VENV`. Missing, the test fails and says how to install them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variable naming the virtualenv with `moto[server]` and `boto3`.
pub const VENV_ENV: &str = "ACORN_MOTO_VENV";

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// The virtualenv holding moto and boto3.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os(VENV_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    if !venv.join("bin/moto_server").is_file() {
        panic!(
            "moto is not installed ({}/bin/moto_server is missing): install it with \
             `python3 -m venv .venv && .venv/bin/pip install 'moto[server]' boto3` at the \
             repository root (bash .ci/run does), or set {VENV_ENV} to a virtualenv that has them",
            venv.display()
        );
    }
    venv
}

/// A running moto server of one test, stopped on drop.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Option<Child>,
    /// Dropping it ends the thread that spawned moto (its parent-death signal then fires).
    keeper: Option<std::sync::mpsc::Sender<()>>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.keeper.take());
    }
}

impl Moto {
    /// Starts a moto server on a free loopback port and waits until it accepts connections
    /// (at most 60 s); its certificate ids are SHA-256 of the DER, as in AWS.
    pub fn start() -> Self {
        let venv = venv();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let python = venv.join("bin/python");
        // moto's server with certificate ids computed as AWS does (SHA-256 of the DER, not
        // of the PEM text); its HTTP config API cannot set that, so set it before the server
        // starts.
        let script = format!(
            "from moto.core.config import default_user_config\n\
             default_user_config['iot'] = {{'use_valid_cert': True}}\n\
             from moto.server import main\n\
             main(['-H', '127.0.0.1', '-p', '{port}'])\n"
        );
        // Spawned from a thread that lives as long as this server: the parent-death signal
        // fires only when the test process dies (or the server is dropped).
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let child = Command::new("setpriv")
                .args(["--pdeathsig", "SIGKILL", "--"])
                .arg(python)
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let _ = tx.send(child);
            let _ = stop_rx.recv();
        });
        let child = rx.recv().expect("spawner").expect("moto_server starts");
        let moto = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            keeper: Some(stop_tx),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a Python script with the venv's interpreter, `AWS_ENDPOINT_URL` set to this
    /// server and fake credentials; returns what it printed (JSON) or its error.
    pub fn python(&self, script: &str) -> Result<Value, String> {
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", REGION)
            .output()
            .map_err(|e| format!("python: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Calls boto3's IoT client: `iot.<method>(**kwargs)`, the answer as JSON (datetimes as
    /// strings), or `{"error": code}` when AWS answers with an error.
    pub fn boto3(&self, method: &str, kwargs: &Value) -> Value {
        let script = format!(
            "import boto3, json, botocore\n\
             iot = boto3.client('iot')\n\
             try:\n    out = iot.{method}(**json.loads({kwargs:?}))\n    out.pop('ResponseMetadata', None)\n\
             except botocore.exceptions.ClientError as e:\n    out = {{'error': e.response['Error']['Code']}}\n\
             print(json.dumps(out, default=str))",
            kwargs = kwargs.to_string()
        );
        self.python(&script)
            .unwrap_or_else(|e| panic!("boto3 iot.{method}: {e}"))
    }

    /// The account as AWS IoT holds it, read with boto3 in one go: `things` (name →
    /// `attributes`, `principals`), `certificates` (ARN → `status`, `policies`, `things`) and
    /// `policies` (name → document).
    pub fn state(&self) -> Value {
        const SCRIPT: &str = r#"
import boto3, json
iot = boto3.client('iot')
things = {}
for t in iot.list_things(maxResults=250)['things']:
    name = t['thingName']
    things[name] = {
        'attributes': t.get('attributes', {}),
        'principals': iot.list_thing_principals(thingName=name)['principals'],
    }
certs = {}
for c in iot.list_certificates(pageSize=250)['certificates']:
    arn = c['certificateArn']
    certs[arn] = {
        'status': c['status'],
        'policies': [p['policyName'] for p in iot.list_attached_policies(target=arn)['policies']],
        'things': iot.list_principal_things(principal=arn)['things'],
    }
policies = {}
for p in iot.list_policies()['policies']:
    policies[p['policyName']] = iot.get_policy(policyName=p['policyName'])['policyDocument']
print(json.dumps({'things': things, 'certificates': certs, 'policies': policies}))
"#;
        self.python(SCRIPT)
            .unwrap_or_else(|e| panic!("reading moto's state with boto3: {e}"))
    }

    /// Every certificate in the account: ARN → status.
    pub fn certificates(&self) -> HashMap<String, String> {
        let out = self.boto3("list_certificates", &serde_json::json!({ "pageSize": 250 }));
        out["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["certificateArn"].as_str().unwrap_or_default().to_owned(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Creates the policy `name` with `document` unless it exists.
    pub fn ensure_policy(&self, name: &str, document: &str) {
        let found = self.boto3("get_policy", &serde_json::json!({ "policyName": name }));
        if found.get("error").is_some() {
            let made = self.boto3(
                "create_policy",
                &serde_json::json!({ "policyName": name, "policyDocument": document }),
            );
            assert!(made.get("error").is_none(), "create_policy: {made}");
        }
    }
}

/// One rule of the [`FaultProxy`]: answer `times` requests whose method is `method` and whose
/// path starts with `path_prefix` with AWS error `error_type` and HTTP `status`, instead of
/// forwarding them.
#[derive(Debug, Clone)]
pub struct Fault {
    /// HTTP method, e.g. `PUT`.
    pub method: &'static str,
    /// Path prefix, e.g. `/target-policies/`.
    pub path_prefix: String,
    /// How many matching requests fail (then they pass).
    pub times: usize,
    /// HTTP status of the injected error.
    pub status: u16,
    /// The AWS error code (`x-amzn-ErrorType`), e.g. `ThrottlingException`.
    pub error_type: &'static str,
}

impl Fault {
    /// `times` failures of `method path_prefix*` with an `InternalFailureException` (500).
    pub fn internal(method: &'static str, path_prefix: &str, times: usize) -> Self {
        Self {
            method,
            path_prefix: path_prefix.into(),
            times,
            status: 500,
            error_type: "InternalFailureException",
        }
    }

    /// `times` throttlings (429 `ThrottlingException`) of `method path_prefix*`.
    pub fn throttle(method: &'static str, path_prefix: &str, times: usize) -> Self {
        Self {
            method,
            path_prefix: path_prefix.into(),
            times,
            status: 429,
            error_type: "ThrottlingException",
        }
    }
}

/// A request held by the [`FaultProxy`] until the test releases it.
#[derive(Clone)]
pub struct Hold {
    method: &'static str,
    path_prefix: String,
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Hold {
    /// Waits until the held request has arrived (at most 30 s).
    pub async fn arrived(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.arrived.notified())
            .await
            .expect("the held request did not arrive within 30 s");
    }

    /// Lets the held request go on to moto.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<Fault>,
    holds: Vec<Hold>,
    /// Every request seen: (method, path).
    seen: Vec<(String, String)>,
}

/// An HTTP proxy in front of moto that fails chosen requests (see [`Fault`]) and records
/// every request; stopped on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the endpoint to give the AWS SDK.
    pub endpoint: String,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (moto's endpoint). Must run inside a tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let upstream = upstream.to_owned();
        let st = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (st, client, upstream) = (Arc::clone(&st), client.clone(), upstream.clone());
            async move { forward(st, client, &upstream, req).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Adds a fault rule.
    pub fn fail(&self, fault: Fault) {
        self.state.lock().expect("lock").faults.push(fault);
    }

    /// Holds the next request `method path_prefix*` until [`Hold::release`].
    pub fn hold(&self, method: &'static str, path_prefix: &str) -> Hold {
        let hold = Hold {
            method,
            path_prefix: path_prefix.into(),
            arrived: Arc::new(tokio::sync::Notify::new()),
            release: Arc::new(tokio::sync::Notify::new()),
        };
        self.state.lock().expect("lock").holds.push(hold.clone());
        hold
    }

    /// Removes every fault and hold rule and forgets the requests seen.
    pub fn reset(&self) {
        let mut st = self.state.lock().expect("lock");
        st.faults.clear();
        st.holds.clear();
        st.seen.clear();
    }

    /// How many requests `method path_prefix*` the proxy has seen (failed or forwarded).
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.state
            .lock()
            .expect("lock")
            .seen
            .iter()
            .filter(|(m, p)| m == method && p.starts_with(path_prefix))
            .count()
    }
}

async fn forward(
    state: Arc<Mutex<ProxyState>>,
    client: reqwest::Client,
    upstream: &str,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let method = req.method().as_str().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let path = req.uri().path().to_owned();
    let held = {
        let mut st = state.lock().expect("lock");
        let found = st
            .holds
            .iter()
            .position(|h| h.method == method && path.starts_with(&h.path_prefix));
        found.map(|i| st.holds.remove(i))
    };
    if let Some(hold) = held {
        hold.arrived.notify_one();
        hold.release.notified().await;
    }
    let injected = {
        let mut st = state.lock().expect("lock");
        st.seen.push((method.clone(), path.clone()));
        st.faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.starts_with(&f.path_prefix))
            .map(|f| {
                f.times -= 1;
                (f.status, f.error_type)
            })
    };
    if let Some((status, error_type)) = injected {
        return (
            axum::http::StatusCode::from_u16(status).expect("status"),
            [
                ("x-amzn-ErrorType", error_type),
                ("content-type", "application/json"),
            ],
            format!("{{\"message\":\"injected by the test proxy: {error_type}\"}}"),
        )
            .into_response();
    }
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut upstream_req = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        format!("{upstream}{path_and_query}"),
    );
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            upstream_req = upstream_req.header(name.as_str(), value.as_bytes());
        }
    }
    match upstream_req.body(body).send().await {
        Ok(resp) => {
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).expect("status");
            let mut out = axum::http::HeaderMap::new();
            for (name, value) in resp.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(value.as_bytes()),
                    ) {
                        out.insert(n, v);
                    }
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, out, bytes).into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
