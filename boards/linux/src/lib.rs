//! The Linux board shim: the component's imports over the real network.
//!
//! - sockets: tokio TCP through [`mqtt_host::stream_sockets`], DNS through the OS, and only
//!   to the configured broker address(es): any other `open` is refused and logged;
//! - clock: the monotonic clock, and the system's wall clock;
//! - link: the OS manages the radio, so the shim reports the state of a named interface
//!   (`/sys/class/net/IF/operstate` and `carrier`, RSSI from `/proc/net/wireless`);
//!   without an interface (wired, loopback) the link is reported up. `connect(ssid, pw)` goes
//!   through NetworkManager's `nmcli` when it is installed and says so when it is not.
//!
//! TLS (rustls) is not wired in yet: a TLS `open` is refused with `tls-failed`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mqtt_host::stream_sockets::{socket_error, ConnectFuture, Connector, StreamSockets};
use mqtt_host::{Clock, LinkState, Platform, SocketError, TlsParams, Wifi};
use tokio::sync::Notify;

/// Connects with tokio, to the allowed hosts only.
pub struct TcpConnector {
    allowed: Vec<(String, u16)>,
}

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError> {
        if !self.allowed.iter().any(|(h, p)| h == host && *p == port) {
            tracing::warn!("refused a connection to {host}:{port}: not a configured broker address");
            return Err(SocketError::NotPermitted);
        }
        if tls.is_some() {
            tracing::error!("TLS requested but this build of mqtt-board has no TLS support yet");
            return Err(SocketError::TlsFailed);
        }
        let host = host.to_string();
        Ok(Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await.map_err(|_| SocketError::DnsFailed)?.collect();
            let mut last = SocketError::Unreachable;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = socket_error(&e),
                }
            }
            Err(last)
        }))
    }
}

/// Link state of a network interface, read from sysfs.
pub struct LinkMonitor {
    iface: Option<String>,
    sys: PathBuf,
}

impl LinkMonitor {
    pub fn new(iface: Option<String>) -> Self {
        LinkMonitor { iface, sys: PathBuf::from("/sys/class/net") }
    }

    pub fn state(&self) -> LinkState {
        let Some(iface) = &self.iface else { return LinkState::Up };
        let read = |f: &str| std::fs::read_to_string(self.sys.join(iface).join(f)).map(|s| s.trim().to_string());
        match (read("operstate").as_deref(), read("carrier").as_deref()) {
            // Loopback and some virtual interfaces report "unknown" while working.
            (Ok("up" | "unknown"), Ok("1")) => LinkState::Up,
            (Ok("dormant"), _) => LinkState::Connecting,
            _ => LinkState::Down,
        }
    }

    /// Signal level in dBm from `/proc/net/wireless`, for wireless interfaces.
    pub fn rssi(&self) -> Option<i32> {
        let iface = self.iface.as_ref()?;
        let text = std::fs::read_to_string("/proc/net/wireless").ok()?;
        let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{iface}:")))?;
        let level = line.split_whitespace().nth(3)?;
        level.trim_end_matches('.').parse::<f64>().ok().map(|v| v as i32)
    }
}

pub struct LinuxPlatform {
    sockets: StreamSockets<TcpConnector>,
    wake: Arc<Notify>,
    start: Instant,
    link: LinkMonitor,
}

impl LinuxPlatform {
    /// `brokers`: the only (host, port) pairs the component may open.
    pub fn new(brokers: Vec<(String, u16)>, iface: Option<String>) -> Self {
        let wake = Arc::new(Notify::new());
        LinuxPlatform {
            sockets: StreamSockets::new(TcpConnector { allowed: brokers }, wake.clone()),
            wake,
            start: Instant::now(),
            link: LinkMonitor::new(iface),
        }
    }
}

mqtt_host::forward_socket!(LinuxPlatform, sockets);

impl Clock for LinuxPlatform {
    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn wall_ms(&mut self) -> Option<u64> {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
    }
}

impl Wifi for LinuxPlatform {
    fn state(&mut self) -> LinkState {
        self.link.state()
    }
    fn connect(&mut self, ssid: &str, password: &str) -> Result<(), String> {
        let status = std::process::Command::new("nmcli")
            .args(["device", "wifi", "connect", ssid, "password", password])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("joining {ssid:?} needs NetworkManager's nmcli, which could not run: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("nmcli could not join {ssid:?} ({status})")) }
    }
    fn disconnect(&mut self) {}
    fn rssi(&mut self) -> Option<i32> {
        self.link.rssi()
    }
}

impl Platform for LinuxPlatform {
    fn wakeup(&self) -> Option<Arc<Notify>> {
        // Socket readiness wakes the driver; interface changes are noticed by the async
        // client's periodic poll when nothing else happens.
        Some(self.wake.clone())
    }
}
