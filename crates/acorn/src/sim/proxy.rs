//! A fault-injecting TCP proxy between the devices and the broker, on 127.0.0.1: added
//! latency, stalls, resets, blackholes and a bandwidth cap, switched at run time; and a gate
//! that keeps devices from the broker (new connections are closed at once, as when the broker
//! is down) until the observer listens again after a broker restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The network's condition, applied to every connection through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Bytes pass as they come.
    #[default]
    Clear,
    /// Every chunk waits this long before it is forwarded (both directions).
    Latency(Duration),
    /// Open connections carry nothing (both directions, bytes held, not lost); new ones work.
    Stall,
    /// Nothing passes: open connections carry nothing, new connections are accepted but
    /// never reach the broker; when it ends, the connections it held are closed.
    Blackhole,
    /// All connections together carry at most this many bytes per second.
    Bandwidth(u64),
}

/// What the proxy shares with its connections.
struct State {
    upstream: SocketAddr,
    condition: watch::Sender<Condition>,
    /// Closed: new connections are closed at once (the broker is "down").
    open: watch::Sender<bool>,
    /// Bumped to reset every connection open at that moment.
    resets: watch::Sender<u64>,
    /// Token bucket of the bandwidth cap: (bytes available, last refill).
    bucket: Mutex<(f64, Instant)>,
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            condition: watch::channel(Condition::Clear).0,
            open: watch::channel(true).0,
            resets: watch::channel(0).0,
            bucket: Mutex::new((0.0, Instant::now())),
        });
        let task = tokio::spawn(accept(listener, state.clone()));
        Ok(Self { addr, state, task })
    }

    /// Where devices connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the network's condition.
    pub fn set(&self, condition: Condition) {
        if let Condition::Bandwidth(_) = condition {
            *self.state.bucket.lock().unwrap_or_else(|e| e.into_inner()) = (0.0, Instant::now());
        }
        self.state.condition.send_replace(condition);
    }

    /// Resets (RST) every connection open now.
    pub fn reset_all(&self) {
        self.state.resets.send_modify(|n| *n += 1);
    }

    /// Opens or closes the gate to the broker.
    pub fn set_open(&self, open: bool) {
        self.state.open.send_replace(open);
    }

    /// Stops accepting (open connections end when their ends close).
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve(client, state.clone()));
    }
}

/// Closes a socket with RST (linger 0).
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn serve(client: TcpStream, state: Arc<State>) {
    let _ = client.set_nodelay(true);
    if !*state.open.borrow() {
        return;
    }
    let mut condition = state.condition.subscribe();
    if *condition.borrow() == Condition::Blackhole {
        // Held silent until the blackhole ends, then closed.
        let _ = condition.wait_for(|c| *c != Condition::Blackhole).await;
        return;
    }
    let Ok(Ok(upstream)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(state.upstream)).await
    else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let mut resets = state.resets.subscribe();
    resets.borrow_and_update();
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let mut up_buf = vec![0u8; 4096];
    let mut down_buf = vec![0u8; 4096];
    let ended = loop {
        let cond = *condition.borrow();
        let frozen = matches!(cond, Condition::Stall | Condition::Blackhole);
        tokio::select! {
            n = cr.read(&mut up_buf), if !frozen => match n {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    if !forward(&state, &mut condition, &mut uw, &up_buf[..n]).await {
                        break false;
                    }
                }
            },
            n = ur.read(&mut down_buf), if !frozen => match n {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    if !forward(&state, &mut condition, &mut cw, &down_buf[..n]).await {
                        break false;
                    }
                }
            },
            changed = condition.changed() => {
                if changed.is_err() {
                    break false;
                }
                if cond == Condition::Blackhole && *condition.borrow() != Condition::Blackhole {
                    // What a blackhole held has timed out on a real network.
                    break true;
                }
            }
            _ = resets.changed() => break true,
        }
    };
    let client = cr.reunite(cw);
    let upstream = ur.reunite(uw);
    if ended {
        if let Ok(c) = client {
            reset(c);
        }
        if let Ok(u) = upstream {
            reset(u);
        }
    }
}

/// Forwards one chunk under the current condition; false when the write failed.
async fn forward(
    state: &State,
    condition: &mut watch::Receiver<Condition>,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
) -> bool {
    let now_condition = *condition.borrow();
    match now_condition {
        Condition::Latency(d) => tokio::time::sleep(d).await,
        Condition::Bandwidth(rate) => {
            let wait = {
                let mut bucket = state.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let rate = rate.max(1) as f64;
                let (tokens, last) = *bucket;
                // At most one second of burst.
                let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate)
                    - bytes.len() as f64;
                *bucket = (tokens, now);
                (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / rate))
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            }
        }
        _ => {}
    }
    // A stall that began meanwhile holds this chunk until it ends.
    let _ = condition
        .wait_for(|c| !matches!(c, Condition::Stall | Condition::Blackhole))
        .await;
    tokio::time::timeout(Duration::from_secs(30), to.write_all(bytes))
        .await
        .is_ok_and(|r| r.is_ok())
}
