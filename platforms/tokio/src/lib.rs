//! The client component's imports over tokio, for any host with an OS network stack.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use mqtt_host::{Client, ComponentFile, ConfigBuilder, Device, Qos};
//! use mqtt_platform_tokio::TokioPlatform;
//!
//! let config = ConfigBuilder::new("broker.example", "sensor-1").port(1883).build()?;
//! let platform = TokioPlatform::for_config(&config); // may open only the brokers it names
//! let device = Device::new(&ComponentFile::embedded()?, Box::new(platform), config, "sensor-1")?;
//! let client = Client::spawn(device);
//! client.connect().await?;
//! client.publish("sensors/1", b"21.5", Qos::AtLeastOnce, false).await?;
//! # Ok(()) }
//! ```
//!
//! - sockets: tokio TCP with TCP_NODELAY (unless [`TokioPlatform::with_nagle`]), DNS through the OS, and only to the broker
//!   addresses the platform was made with: any other `open` is refused and logged;
//! - TLS (feature `tls`, on by default): rustls, roots from the system or a CA file, client
//!   certificates, ALPN; see [`Verification`];
//! - clock: the monotonic clock, and the system's wall clock;
//! - link: the OS manages the radio, so the platform reports the state of a named interface
//!   (`/sys/class/net/IF`, Linux) or, without one, an up link; `connect(ssid, pw)` goes
//!   through NetworkManager's `nmcli` when it is installed and says so when it is not;
//! - flash: optionally a [`mqtt_host::FileFlash`], so unacknowledged publishes survive a
//!   crash or power cut ([`TokioPlatform::with_store`]).

mod connector;
mod link;
#[cfg(feature = "tls")]
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use mqtt_host::stream_sockets::StreamSockets;
use mqtt_host::{Clock, Config, LinkState, Platform, Wifi};
use tokio::sync::Notify;

pub use connector::{PlatformStream, TcpConnector};
pub use link::LinkMonitor;

/// Whether TLS checks the broker's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verification {
    #[default]
    On,
    /// Accept any certificate for any name (the board's `--insecure`); every connection logs
    /// a warning.
    Off,
}

/// The platform: sockets, clocks, link state and optional flash, for one client.
pub struct TokioPlatform {
    sockets: StreamSockets<TcpConnector>,
    wake: Arc<Notify>,
    start: Instant,
    link: LinkMonitor,
    /// Started by the first `wakeup` (inside the driver's runtime) when an interface is watched.
    link_watch: std::sync::OnceLock<Option<link::LinkWatch>>,
    store: Option<mqtt_host::FileFlash>,
}

impl TokioPlatform {
    /// A platform that may open only `brokers` ((host, port) pairs, exactly as the client's
    /// config names them).
    pub fn new(brokers: Vec<(String, u16)>) -> Self {
        let wake = Arc::new(Notify::new());
        TokioPlatform {
            sockets: StreamSockets::new(TcpConnector::new(brokers), wake.clone()),
            wake,
            start: Instant::now(),
            link: LinkMonitor::new(None),
            link_watch: std::sync::OnceLock::new(),
            store: None,
        }
    }

    /// A platform that may open only the brokers `config` names: `server`, `servers` and
    /// their ports (the defaults filled in as the client fills them).
    pub fn for_config(config: &Config) -> Self {
        Self::new(mqtt_host::brokers(config))
    }

    /// Report the link state of network interface `iface` (e.g. `wlan0`) instead of an
    /// always-up link, so that the client hears of a WiFi drop at once.
    /// ([`TokioPlatform::interface_missing`] says whether it exists.)
    pub fn with_interface(mut self, iface: impl Into<String>) -> Self {
        self.link = LinkMonitor::new(Some(iface.into()));
        self
    }

    /// Why the interface given to [`TokioPlatform::with_interface`] cannot be read (it does
    /// not exist), naming those that do; the client sees its link down until it appears.
    pub fn interface_missing(&self) -> Option<String> {
        self.link.missing()
    }

    /// Whether TLS checks the broker's certificate (on unless told otherwise).
    pub fn with_verification(mut self, verification: Verification) -> Self {
        self.sockets.connector_mut().verification = verification;
        self
    }

    /// Leave Nagle's algorithm on (TCP_NODELAY off; it is on by default), as some clients
    /// do by default: for comparing like with like, not for speed.
    pub fn with_nagle(mut self) -> Self {
        self.sockets.connector_mut().nodelay = false;
        self
    }

    /// Keep unacknowledged publishes in `flash` across restarts, kills and power cuts.
    pub fn with_store(mut self, flash: mqtt_host::FileFlash) -> Self {
        self.store = Some(flash);
        self
    }
}

mqtt_host::forward_socket!(TokioPlatform, sockets);

impl Clock for TokioPlatform {
    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn wall_ms(&mut self) -> Option<u64> {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
    }
}

impl Wifi for TokioPlatform {
    fn state(&mut self) -> LinkState {
        self.link.state()
    }
    fn connect(&mut self, ssid: &str, password: &str) -> Result<(), String> {
        let status = std::process::Command::new("nmcli")
            .args(["device", "wifi", "connect", ssid, "password", password])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("joining {ssid:?} needs NetworkManager's nmcli, which could not run: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("nmcli could not join {ssid:?} ({status})"))
        }
    }
    fn disconnect(&mut self) {}
    fn rssi(&mut self) -> Option<i32> {
        self.link.rssi()
    }
}

impl Platform for TokioPlatform {
    fn storage(&mut self) -> Option<&mut dyn mqtt_host::Flash> {
        self.store.as_mut().map(|f| f as &mut dyn mqtt_host::Flash)
    }

    fn take_failure(&mut self) -> Option<String> {
        self.sockets.connector_mut().take_failure()
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        // Socket readiness wakes the driver, and so does a change of the watched interface.
        if self.link.watches() {
            self.link_watch.get_or_init(|| link::LinkWatch::spawn(self.link.clone(), self.wake.clone()));
        }
        Some(self.wake.clone())
    }
}
