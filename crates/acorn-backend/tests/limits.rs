//! Bounded clients: slow-loris connections, idle keep-alive connections, slow bodies and the
//! connection cap, against the real HTTP server on loopback.

use acorn_test_support::backend as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use acorn_backend::ServeLimits;
use common::{start, start_with};

/// Reads until the server closes the connection (or `limit` passes); returns when it closed
/// and what it sent.
fn wait_closed(mut stream: TcpStream, limit: Duration) -> (Option<Duration>, String) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (Some(started.elapsed()), lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (Some(started.elapsed()), lossy(&got)),
        }
    }
    (None, lossy(&got))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_dropped_within_10_s_by_default() {
    let b = start().await;
    let addr = b.handle.local_addr();
    let closed = tokio::task::spawn_blocking(move || {
        let lorises: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"POST /v1/devices/register HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .expect("partial header");
                s
            })
            .collect();
        let threads: Vec<_> = lorises
            .into_iter()
            .map(|s| std::thread::spawn(move || wait_closed(s, Duration::from_secs(15))))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("task");
    for (i, (when, _)) in closed.iter().enumerate() {
        let when = when.unwrap_or_else(|| panic!("loris {i} still open after 15 s"));
        assert!(
            when <= Duration::from_secs(10),
            "loris {i} closed after {when:?}"
        );
    }
    // The service still answers.
    let resp = b
        .client
        .get(b.url("/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_slow_bodies_are_cut_off() {
    let b = start_with(|c| {
        c.limits = ServeLimits {
            idle_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            ..ServeLimits::default()
        };
    })
    .await;
    let addr = b.handle.local_addr();
    let (idle, slow_body) = tokio::task::spawn_blocking(move || {
        // One complete request, then silence on the kept-alive connection.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let idle = wait_closed(s, Duration::from_secs(10));
        // A body announced as 100 bytes, of which 10 arrive.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(
            b"POST /v1/devices/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer t\r\nContent-Length: 100\r\n\r\n{\"deviceId",
        )
        .expect("partial body");
        let slow = wait_closed(s, Duration::from_secs(10));
        (idle, slow)
    })
    .await
    .expect("task");
    let (when, text) = idle;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let when = when.expect("the idle connection is closed");
    assert!(
        when >= Duration::from_millis(2500) && when <= Duration::from_secs(7),
        "idle connection closed after {when:?}"
    );
    let (when, text) = slow_body;
    assert!(when.is_some(), "the slow body's connection is closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees_as_clients_go() {
    let b = start_with(|c| {
        c.limits = ServeLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(2),
            ..ServeLimits::default()
        };
    })
    .await;
    let addr = b.handle.local_addr();
    let answered_after = tokio::task::spawn_blocking(move || {
        // Two lorises take both slots.
        let _lorises: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /v1/health HTTP/1.1\r\n")
                    .expect("partial");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // A third client is served only once a slot frees (the lorises time out at 2 s).
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect (kernel backlog)");
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let (_, text) = wait_closed(s, Duration::from_secs(10));
        (started.elapsed(), text)
    })
    .await
    .expect("task");
    let (after, text) = answered_after;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        after >= Duration::from_millis(1000),
        "the third client was served after {after:?}, while both slots were held"
    );
}

#[tokio::test]
async fn unusable_limits_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = acorn_backend::BackendConfig::new(dir.path());
    config.limits.max_connections = 0;
    let err = acorn_backend::Backend::start(config)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("max_connections"), "{err}");
}
