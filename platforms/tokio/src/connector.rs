//! Opening connections: tokio TCP (TCP_NODELAY), to the allowed brokers only, with TLS
//! when the client asks for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use mqtt_host::stream_sockets::{socket_error, ConnectFuture, Connector};
use mqtt_host::{SocketError, TlsParams};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::Verification;

/// Connects with tokio, to the allowed hosts only, with TLS when asked.
pub struct TcpConnector {
    allowed: Vec<(String, u16)>,
    pub(crate) verification: Verification,
    pub(crate) nodelay: bool,
    /// Why the latest attempt failed, for [`mqtt_host::Platform::take_failure`].
    pub(crate) failure: Failure,
}

/// The text of the latest connection failure, written by the connecting task.
pub(crate) type Failure = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// Records why an attempt failed (not logged here: a refused TCP connect during an outage
/// is routine, a failed handshake is not, and the callers log accordingly).
fn fail(failure: &Failure, error: SocketError, text: String) -> SocketError {
    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    error
}

impl TcpConnector {
    pub fn new(allowed: Vec<(String, u16)>) -> Self {
        TcpConnector { allowed, verification: Verification::On, nodelay: true, failure: Failure::default() }
    }

    /// Why the latest connection attempt failed, once.
    pub fn take_failure(&mut self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A plain or TLS stream, behind one type so the socket tasks need not care.
pub enum PlatformStream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for PlatformStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlatformStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            PlatformStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PlatformStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PlatformStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            PlatformStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlatformStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            PlatformStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlatformStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            PlatformStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(feature = "tls")]
type Handshake = Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>;

#[cfg(feature = "tls")]
fn handshake(tls: Option<TlsParams>, verification: Verification, failure: &Failure) -> Result<Handshake, SocketError> {
    let Some(p) = tls else { return Ok(None) };
    let failed = |text: String| {
        tracing::error!("{text}");
        fail(failure, SocketError::TlsFailed, text)
    };
    let config = crate::tls::client_config(&p, verification).map_err(|e| failed(format!("TLS setup failed: {e}")))?;
    let name = rustls::pki_types::ServerName::try_from(p.server_name.clone()).map_err(|e| failed(format!("TLS server name {:?}: {e}", p.server_name)))?;
    Ok(Some((tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), name)))
}

impl Connector for TcpConnector {
    type Stream = PlatformStream;

    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError> {
        let failure = self.failure.clone();
        // A new attempt: an older attempt's reason must not be reported for this one.
        *failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.allowed.iter().any(|(h, p)| h == host && *p == port) {
            let text = format!("refused a connection to {host}:{port}: not a configured broker address");
            tracing::warn!("{text}");
            return Err(fail(&failure, SocketError::NotPermitted, text));
        }
        #[cfg(feature = "tls")]
        let tls = handshake(tls, self.verification, &failure)?;
        #[cfg(not(feature = "tls"))]
        if tls.is_some() {
            let text = format!("TLS to {host}:{port} asked for, but mqtt-platform-tokio was built without its `tls` feature");
            tracing::error!("{text}");
            return Err(fail(&failure, SocketError::TlsFailed, text));
        }
        let host = host.to_string();
        let nodelay = self.nodelay;
        Ok(Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| fail(&failure, SocketError::DnsFailed, format!("resolving {host}: {e}")))?
                .collect();
            let mut last = (SocketError::Unreachable, format!("{host} has no address"));
            let mut tcp = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        // On by default: MQTT packets are small and the client batches
                        // its writes, so Nagle only delays acknowledgements.
                        let _ = s.set_nodelay(nodelay);
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = (socket_error(&e), format!("connecting to {addr}: {e}")),
                }
            }
            let Some(tcp) = tcp else { return Err(fail(&failure, last.0, last.1)) };
            #[cfg(feature = "tls")]
            if let Some((connector, name)) = tls {
                return match connector.connect(name, tcp).await {
                    Ok(s) => Ok(PlatformStream::Tls(Box::new(s))),
                    Err(e) => {
                        let text = format!("TLS handshake with {host}:{port} failed: {e}");
                        tracing::error!("{text}");
                        Err(fail(&failure, SocketError::TlsFailed, text))
                    }
                };
            }
            Ok(PlatformStream::Plain(tcp))
        }))
    }
}
