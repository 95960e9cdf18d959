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
}

impl TcpConnector {
    pub fn new(allowed: Vec<(String, u16)>) -> Self {
        TcpConnector { allowed, verification: Verification::On, nodelay: true }
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
fn handshake(tls: Option<TlsParams>, verification: Verification) -> Result<Handshake, SocketError> {
    let Some(p) = tls else { return Ok(None) };
    let config = crate::tls::client_config(&p, verification).map_err(|e| {
        tracing::error!("TLS setup failed: {e}");
        SocketError::TlsFailed
    })?;
    let name = rustls::pki_types::ServerName::try_from(p.server_name.clone()).map_err(|e| {
        tracing::error!("TLS server name {:?}: {e}", p.server_name);
        SocketError::TlsFailed
    })?;
    Ok(Some((tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), name)))
}

impl Connector for TcpConnector {
    type Stream = PlatformStream;

    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError> {
        if !self.allowed.iter().any(|(h, p)| h == host && *p == port) {
            tracing::warn!("refused a connection to {host}:{port}: not a configured broker address");
            return Err(SocketError::NotPermitted);
        }
        #[cfg(feature = "tls")]
        let tls = handshake(tls, self.verification)?;
        #[cfg(not(feature = "tls"))]
        if tls.is_some() {
            tracing::error!("TLS to {host}:{port} asked for, but mqtt-platform-tokio was built without its `tls` feature");
            return Err(SocketError::TlsFailed);
        }
        let host = host.to_string();
        let nodelay = self.nodelay;
        Ok(Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await.map_err(|_| SocketError::DnsFailed)?.collect();
            let mut last = SocketError::Unreachable;
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
                    Err(e) => last = socket_error(&e),
                }
            }
            let tcp = tcp.ok_or(last)?;
            #[cfg(feature = "tls")]
            if let Some((connector, name)) = tls {
                return match connector.connect(name, tcp).await {
                    Ok(s) => Ok(PlatformStream::Tls(Box::new(s))),
                    Err(e) => {
                        tracing::error!("TLS handshake with {host}:{port} failed: {e}");
                        Err(SocketError::TlsFailed)
                    }
                };
            }
            Ok(PlatformStream::Plain(tcp))
        }))
    }
}
