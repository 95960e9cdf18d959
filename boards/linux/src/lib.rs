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
//! TLS is rustls (see [`tls`]): the system's roots or a CA file, the server name from the
//! client's TLS parameters, an optional client certificate and key. Verification is on
//! unless the board is told otherwise (`--insecure`, logged on every connection); a failed
//! handshake or certificate check is `tls-failed`, with the reason logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mqtt_host::stream_sockets::{socket_error, ConnectFuture, Connector, StreamSockets};
use mqtt_host::{Clock, LinkState, Platform, SocketError, TlsParams, Wifi};
use tokio::sync::Notify;

pub mod file_config;
pub mod mosquitto_style;
pub mod record;
pub mod tls;

pub use tls::Verification;

/// Connects with tokio, to the allowed hosts only, with TLS when asked.
pub struct TcpConnector {
    allowed: Vec<(String, u16)>,
    verification: Verification,
}

/// A plain or TLS stream.
pub type BoardStream = stream::Either;

mod stream {
    //! The two stream types behind one, so the socket tasks need not care.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    pub enum Either {
        Plain(TcpStream),
        Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    }

    impl AsyncRead for Either {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Either::Plain(s) => Pin::new(s).poll_read(cx, buf),
                Either::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            }
        }
    }

    impl AsyncWrite for Either {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            match self.get_mut() {
                Either::Plain(s) => Pin::new(s).poll_write(cx, buf),
                Either::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            }
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Either::Plain(s) => Pin::new(s).poll_flush(cx),
                Either::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            }
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Either::Plain(s) => Pin::new(s).poll_shutdown(cx),
                Either::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            }
        }
    }
}

impl Connector for TcpConnector {
    type Stream = BoardStream;

    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError> {
        if !self.allowed.iter().any(|(h, p)| h == host && *p == port) {
            tracing::warn!("refused a connection to {host}:{port}: not a configured broker address");
            return Err(SocketError::NotPermitted);
        }
        let tls = match tls {
            Some(p) => {
                let config = tls::client_config(&p, self.verification).map_err(|e| {
                    tracing::error!("TLS setup failed: {e}");
                    SocketError::TlsFailed
                })?;
                let name = rustls::pki_types::ServerName::try_from(p.server_name.clone()).map_err(|e| {
                    tracing::error!("TLS server name {:?}: {e}", p.server_name);
                    SocketError::TlsFailed
                })?;
                Some((tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), name))
            }
            None => None,
        };
        let host = host.to_string();
        Ok(Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await.map_err(|_| SocketError::DnsFailed)?.collect();
            let mut last = SocketError::Unreachable;
            let mut tcp = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = socket_error(&e),
                }
            }
            let tcp = tcp.ok_or(last)?;
            match tls {
                None => Ok(BoardStream::Plain(tcp)),
                Some((connector, name)) => match connector.connect(name, tcp).await {
                    Ok(s) => Ok(BoardStream::Tls(Box::new(s))),
                    Err(e) => {
                        tracing::error!("TLS handshake with {host}:{port} failed: {e}");
                        Err(SocketError::TlsFailed)
                    }
                },
            }
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
    /// The power-cut store's flash (`--store FILE`), if any.
    store: Option<mqtt_host::FileFlash>,
}

impl LinuxPlatform {
    /// `brokers`: the only (host, port) pairs the component may open.
    pub fn new(brokers: Vec<(String, u16)>, iface: Option<String>) -> Self {
        Self::with_verification(brokers, iface, Verification::On)
    }

    /// As [`LinuxPlatform::new`], choosing whether TLS checks the broker's certificate.
    pub fn with_verification(brokers: Vec<(String, u16)>, iface: Option<String>, verification: Verification) -> Self {
        let wake = Arc::new(Notify::new());
        LinuxPlatform {
            sockets: StreamSockets::new(TcpConnector { allowed: brokers, verification }, wake.clone()),
            wake,
            start: Instant::now(),
            link: LinkMonitor::new(iface),
            store: None,
        }
    }

    /// Keep unacknowledged publishes in `flash` across restarts, kills and power cuts.
    pub fn with_store(mut self, flash: mqtt_host::FileFlash) -> Self {
        self.store = Some(flash);
        self
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

impl Platform for LinuxPlatform {
    fn storage(&mut self) -> Option<&mut dyn mqtt_host::Flash> {
        self.store.as_mut().map(|f| f as &mut dyn mqtt_host::Flash)
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        // Socket readiness wakes the driver; interface changes are noticed by the async
        // client's periodic poll when nothing else happens.
        Some(self.wake.clone())
    }
}
