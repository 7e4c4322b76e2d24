//! Wi-Fi station (esp-radio), DHCP and DNS (embassy-net), SNTP, and the transport's
//! [`acorn_embedded::Connector`] over an embassy-net TCP socket.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicI32, Ordering};

use acorn_embedded::boot::{BootEvent, WifiCredentials};
use acorn_embedded::{Diagnosis, Step};
use embassy_executor::Spawner;
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{TcpReader, TcpSocket, TcpWriter};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, Stack, StackResources};
use embassy_time::{with_timeout, Duration, Timer};
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, ControllerConfig, Interface, WifiController,
};
use log::{info, warn};

use crate::ChipRng;

/// SNTP server.
pub const NTP_SERVER: &str = "pool.ntp.org";

/// The network stack once the radio runs.
pub struct Network {
    stack: Stack<'static>,
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) {
    runner.run().await
}

/// The last Wi-Fi signal reading, dBm (`NO_RSSI` when not associated).
static RSSI_DBM: AtomicI32 = AtomicI32::new(NO_RSSI);
const NO_RSSI: i32 = i32::MIN;
/// How often the signal is read while associated.
const RSSI_EVERY: Duration = Duration::from_secs(30);

/// The last Wi-Fi signal reading, for the heartbeat.
pub fn rssi_dbm() -> Option<i8> {
    match RSSI_DBM.load(Ordering::Relaxed) {
        NO_RSSI => None,
        dbm => i8::try_from(dbm).ok(),
    }
}

#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                info!("Wi-Fi associated");
                // Wait for the disconnect, reading the signal every 30 s meanwhile.
                loop {
                    if let Ok(dbm) = controller.rssi() {
                        RSSI_DBM.store(dbm, Ordering::Relaxed);
                    }
                    let wait = controller.wait_for_disconnect_async();
                    // Done (disconnected, or it returned at once because the link is down
                    // already) unless the 30 s ran out first.
                    if with_timeout(RSSI_EVERY, wait).await.is_ok() {
                        break;
                    }
                }
                RSSI_DBM.store(NO_RSSI, Ordering::Relaxed);
                warn!("Wi-Fi disconnected; joining again");
            }
            Err(e) => warn!("Wi-Fi join failed: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

impl Network {
    /// Starts the radio as a station for `credentials`, DHCP and the join loop.
    pub fn start(
        spawner: Spawner,
        wifi: esp_hal::peripherals::WIFI<'static>,
        credentials: &WifiCredentials,
        rng: ChipRng,
    ) -> Network {
        let auth = if credentials.password.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            AuthenticationMethodConfig::Wpa2Personal(
                credentials.password.as_str().try_into().unwrap_or_default(),
            )
        };
        let station = Config::Station(
            StationConfig::default()
                .with_ssid(credentials.ssid.as_str().try_into().unwrap_or_default())
                .with_authentication(auth),
        );
        let controller = WifiController::new(
            wifi,
            ControllerConfig::default().with_initial_config(station),
        )
        .expect("the Wi-Fi controller starts");
        let resources = Box::leak(Box::new(StackResources::<4>::new()));
        let seed = rand_core::RngCore::next_u64(&mut rng.clone());
        let (stack, runner) = embassy_net::new(
            Interface::station(),
            embassy_net::Config::dhcpv4(Default::default()),
            resources,
            seed,
        );
        spawner.spawn(net_task(runner).expect("net task"));
        spawner.spawn(wifi_task(controller).expect("wifi task"));
        Network { stack }
    }

    /// Waits (at most 30 s) for DHCP.
    pub async fn wait_up(&mut self) -> BootEvent {
        match with_timeout(Duration::from_secs(30), self.stack.wait_config_up()).await {
            Ok(()) => BootEvent::WifiUp {
                address: self
                    .stack
                    .config_v4()
                    .map(|c| format!("{}", c.address))
                    .unwrap_or_default(),
            },
            Err(_) => BootEvent::WifiFailed {
                reason: String::from(
                    "no DHCP address within 30 s (wrong password, or no access point in range?)",
                ),
            },
        }
    }

    /// One SNTP exchange (`acorn_embedded::sntp`: a random transmit timestamp the answer
    /// must echo, and RFC 4330's checks); sets the wall clock.
    pub async fn sntp(&self, nonce: [u8; 8]) -> BootEvent {
        use acorn_embedded::sntp::{read_answer, request, NTP_PORT, PACKET_LEN};
        let failed = |reason: String| BootEvent::ClockFailed { reason };
        let addrs = match self.stack.dns_query(NTP_SERVER, DnsQueryType::A).await {
            Ok(a) if !a.is_empty() => a,
            _ => return failed(format!("cannot resolve {NTP_SERVER}")),
        };
        let mut rx_meta = [PacketMetadata::EMPTY; 2];
        let mut tx_meta = [PacketMetadata::EMPTY; 2];
        let mut rx = [0u8; 128];
        let mut tx = [0u8; 128];
        let mut socket = UdpSocket::new(self.stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
        if socket.bind(0).is_err() {
            return failed(String::from("no UDP port"));
        }
        let server = (addrs[0], NTP_PORT);
        if socket.send_to(&request(nonce), server).await.is_err() {
            return failed(String::from("SNTP request not sent"));
        }
        let mut answer = [0u8; PACKET_LEN];
        match with_timeout(Duration::from_secs(5), socket.recv_from(&mut answer)).await {
            Ok(Ok((n, _))) => match read_answer(&answer[..n], nonce) {
                Ok(unix_ms) => {
                    crate::set_unix_ms(unix_ms);
                    BootEvent::ClockSynced {
                        unix_secs: unix_ms / 1000,
                    }
                }
                Err(e) => failed(format!("{e}")),
            },
            _ => failed(String::from("no SNTP answer within 5 s")),
        }
    }

    /// The transport's connector (its TCP socket buffers are allocated once, here).
    pub fn connector(&self) -> ChipConnector {
        let rx: &'static mut [u8] = Box::leak(alloc::vec![0u8; 8192].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(alloc::vec![0u8; 4096].into_boxed_slice());
        let mut socket = TcpSocket::new(self.stack, rx, tx);
        socket.set_timeout(Some(Duration::from_secs(150)));
        ChipConnector {
            stack: self.stack,
            socket,
        }
    }
}

/// DNS + TCP over embassy-net; one socket, reused for every connection.
pub struct ChipConnector {
    stack: Stack<'static>,
    socket: TcpSocket<'static>,
}

impl acorn_embedded::Connector for ChipConnector {
    type Reader<'c> = TcpReader<'c>;
    type Writer<'c> = TcpWriter<'c>;

    async fn connect<'c>(
        &'c mut self,
        host: &str,
        port: u16,
    ) -> Result<(TcpReader<'c>, TcpWriter<'c>), (Step, Diagnosis)> {
        self.socket.abort();
        let _ = self.socket.flush().await;
        let addrs = self
            .stack
            .dns_query(host, DnsQueryType::A)
            .await
            .map_err(|e| {
                (
                    Step::Dns,
                    Diagnosis::DnsFailure {
                        host: host.into(),
                        detail: format!("{e:?}"),
                    },
                )
            })?;
        let Some(addr) = addrs.first().copied() else {
            return Err((
                Step::Dns,
                Diagnosis::DnsFailure {
                    host: host.into(),
                    detail: String::from("no address"),
                },
            ));
        };
        self.socket.connect((addr, port)).await.map_err(|e| {
            (
                Step::Tcp,
                Diagnosis::NetworkError {
                    detail: format!("TCP connect to {host}:{port} failed: {e:?}"),
                },
            )
        })?;
        Ok(self.socket.split())
    }
}
