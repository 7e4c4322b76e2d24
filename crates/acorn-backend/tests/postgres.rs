//! The service on PostgreSQL (a real cluster made by each test): two instances share one
//! registry and one token is used once across them; `/v1/ready` fails while the database is
//! down and recovers when it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use acorn_backend::{BackendConfig, DatabaseUrl, PoolOptions, SecretString};
use acorn_test_support::backend::{body, csr, start_with, TestBackend};
use acorn_test_support::postgres::Postgres;
use serde_json::{json, Value};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn cluster() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres starts")
}

fn on_postgres(url: &str, admin: &str) -> impl FnOnce(&mut BackendConfig) {
    let (url, admin) = (url.to_owned(), admin.to_owned());
    move |config| {
        config.database = Some(DatabaseUrl::parse(&url).expect("url"));
        config.pool = PoolOptions {
            timeout: Duration::from_secs(2),
            ..PoolOptions::default()
        };
        config.admin_key = Some(SecretString::from(admin));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_race_twelve_registrations_on_one_token_and_one_wins() {
    const RACERS: usize = 12;
    let pg = cluster().await;
    let url = pg.create_database("acorn");
    let admin = "shared-admin-key-of-both-instances";
    let a = Arc::new(start_with(on_postgres(&url, admin)).await);
    let b = Arc::new(start_with(on_postgres(&url, admin)).await);
    assert_eq!(a.handle.registry().kind(), "postgres");
    // Minted by one instance, raced on both.
    let token = a.token().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let instance: Arc<TestBackend> = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let (token, barrier) = (token.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let id = format!("race-{i}");
            let mut req = body(&id);
            req["csr"] = json!(csr(&id).1);
            barrier.wait().await;
            instance.register(Some(&token), &req).await
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        let (status, v) = task.await.expect("task");
        match status {
            201 => won.push(v["deviceId"].as_str().expect("id").to_owned()),
            409 => assert!(["token_in_use", "token_used"].contains(&code(&v)), "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one registration wins");
    // Both instances see the one device: one registry.
    for instance in [&a, &b] {
        let (status, v) = instance.admin_get("/v1/devices").await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["deviceId"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [won[0].as_str()]);
    }
    assert_eq!(
        pg.psql(
            "acorn",
            "SELECT COUNT(*) FROM tokens WHERE used_at IS NOT NULL"
        ),
        "1"
    );
    // Revoked on one instance, revoked for the other.
    let (status, _) = b
        .admin_post(&format!("/v1/devices/{}/revoke", won[0]))
        .await;
    assert_eq!(status, 200);
    let (_, v) = a.admin_get(&format!("/v1/devices/{}", won[0])).await;
    assert_eq!(v["status"], "revoked");
}

async fn ready(b: &TestBackend) -> (u16, Value) {
    let resp = b
        .client
        .get(b.url("/v1/ready"))
        .send()
        .await
        .expect("ready");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_fails_while_postgres_is_down_and_recovers_when_it_returns() {
    let pg = cluster().await;
    let url = pg.create_database("acorn");
    let b = start_with(on_postgres(&url, "admin-key-ready")).await;
    let (status, v) = ready(&b).await;
    assert_eq!(status, 200, "{v}");
    let token = b.token().await;

    let pg = Arc::new(std::sync::Mutex::new(pg));
    let stop = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || stop.lock().expect("lock").stop())
        .await
        .expect("stop");
    let (status, v) = ready(&b).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["database"], "unavailable");
    assert_eq!(v["checks"]["signer"], "ok");
    // Liveness stays up; a registration fails as a server fault, saying nothing of the database.
    let health = b
        .client
        .get(b.url("/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let (status, v) = b.register(Some(&token), &body("while-down")).await;
    assert_eq!((status, code(&v)), (500, "internal_error"), "{v}");
    assert!(
        !v.to_string().contains("127.0.0.1"),
        "no database address to clients: {v}"
    );

    let start = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || start.lock().expect("lock").restart())
        .await
        .expect("restart");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = ready(&b).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after PostgreSQL returned: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, v) = b.register(Some(&token), &body("after-return")).await;
    assert_eq!(status, 201, "the token survived the outage: {v}");
}
