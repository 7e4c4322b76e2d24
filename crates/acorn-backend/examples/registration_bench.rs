//! Registration throughput of the service for each registry (SQLite, PostgreSQL) and signer
//! (`local`, `aws` against moto's emulator) at 1 and 16 concurrent clients: registrations per
//! second and p50/p99 latency, printed as the Markdown table of `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p acorn-backend --features aws --example registration_bench
//! cargo run --release -p acorn-backend --example registration_bench      # local signer only
//! ```
//!
//! Each row has its own backend (in this process, plain HTTP on loopback), its own database (a
//! fresh SQLite file, or a durable PostgreSQL cluster made with initdb: fsync on) and, for
//! `aws`, its own moto server. Clients send CSR registrations (keys made before the clock
//! starts) with a token each; every request is bounded by a 60 s timeout and every row by its
//! count.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "aws")]
use acorn_backend::SignerConfig;
use acorn_backend::{Backend, BackendConfig, DatabaseUrl, PoolOptions};
use acorn_test_support::postgres::Postgres;
use secrecy::ExposeSecret as _;
use serde_json::json;

/// What one row measures.
#[derive(Clone, Copy)]
struct Row {
    registry: &'static str,
    signer: &'static str,
    /// The aws signer's request rate limit (requests/s); `None` for local.
    aws_rate: Option<f64>,
    clients: usize,
    registrations: usize,
}

struct Outcome {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(row: Row) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BackendConfig::new(dir.path().join("data"));
    config.keygen_concurrency = 2;
    let _pg = if row.registry == "postgres" {
        let pg = tokio::task::spawn_blocking(Postgres::start_durable)
            .await
            .expect("postgres");
        let url = pg.create_database("bench");
        config.database = Some(DatabaseUrl::parse(&url).expect("url"));
        config.pool = PoolOptions {
            max_connections: 16,
            ..PoolOptions::default()
        };
        Some(pg)
    } else {
        None
    };
    #[cfg(feature = "aws")]
    let _moto = if row.signer == "aws" {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        let moto = tokio::task::spawn_blocking(acorn_test_support::moto::Moto::start)
            .await
            .expect("moto");
        config.signer = SignerConfig::Aws(acorn_backend::AwsSignerConfig {
            region: Some(acorn_test_support::moto::REGION.into()),
            endpoint_url: Some(moto.endpoint.clone()),
            create_policy: true,
            requests_per_second: row.aws_rate.unwrap_or(10.0),
            operation_timeout: Duration::from_secs(60),
            ..acorn_backend::AwsSignerConfig::default()
        });
        Some(moto)
    } else {
        None
    };
    if row.signer == "aws" && !cfg!(feature = "aws") {
        panic!("the aws rows need --features aws");
    }
    let backend = Backend::start(config).await.expect("backend");
    let base = backend.base_url();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tokens = backend
        .registry()
        .mint_tokens(row.registrations as u32, 3600, now)
        .await
        .expect("tokens");
    // Requests made before the clock starts: a CSR per device, as devices send them.
    let work: Vec<(String, serde_json::Value)> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let id = format!("bench-{i:05}");
            let (_, csr) = acorn_test_support::backend::csr(&id);
            let body = json!({
                "deviceId": id, "serialNumber": format!("SN-{i}"),
                "macAddress": format!("02:00:00:00:{:02X}:{:02X}", i / 256, i % 256),
                "firmwareVersion": "1.0.0", "csr": csr,
            });
            (t.token.expose_secret().to_owned(), body)
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(work));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(row.clients)
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..row.clients {
        let (queue, client, url) = (
            Arc::clone(&queue),
            client.clone(),
            format!("{base}/v1/devices/register"),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            loop {
                let Some((token, body)) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 201)
                    .unwrap_or(false);
                latencies.push(t.elapsed());
                if !ok {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await.expect("client task");
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    backend.shutdown().await.expect("shutdown");
    Outcome {
        per_second: (row.registrations - failed) as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        failed,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut rows = Vec::new();
    for registry in ["sqlite", "postgres"] {
        for clients in [1, 16] {
            rows.push(Row {
                registry,
                signer: "local",
                aws_rate: None,
                clients,
                registrations: 400,
            });
        }
    }
    if cfg!(feature = "aws") {
        for registry in ["sqlite", "postgres"] {
            for clients in [1, 16] {
                rows.push(Row {
                    registry,
                    signer: "aws",
                    aws_rate: Some(1000.0),
                    clients,
                    registrations: 100,
                });
            }
        }
        // The default per-instance limit of 10 AWS requests/s (4 per registration).
        rows.push(Row {
            registry: "sqlite",
            signer: "aws",
            aws_rate: Some(10.0),
            clients: 16,
            registrations: 40,
        });
    }
    println!("| registry | signer | AWS request limit | clients | registrations | per second | p50 | p99 |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let out = run(row).await;
        let limit = row
            .aws_rate
            .map(|r| format!("{r} /s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} ms | {:.1} ms |{}",
            row.registry,
            if row.signer == "aws" {
                "aws (moto)"
            } else {
                "local"
            },
            limit,
            row.clients,
            row.registrations,
            out.per_second,
            out.p50.as_secs_f64() * 1000.0,
            out.p99.as_secs_f64() * 1000.0,
            if out.failed > 0 {
                format!(" {} failed", out.failed)
            } else {
                String::new()
            }
        );
    }
}
