//! The `socket` import for tokio hosts, over any async byte stream (tokio TCP on a board,
//! turmoil TCP in the simulator, TLS on top of either).
//!
//! The import must never block, so each socket is backed by tasks: one connects, then reads
//! into an inbox (waking the device loop); one drains what `send` accepted. The component
//! sees only the inbox and the state.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::{SocketError, SocketState, TlsParams};

pub type ConnectFuture<S> = Pin<Box<dyn Future<Output = Result<S, SocketError>> + Send>>;

/// How a host makes a connection.
pub trait Connector: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// Refuse at once (`Err`) or return the future that connects (and handshakes).
    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError>;
}

/// Maps an IO error to what the client can act on.
pub fn socket_error(e: &std::io::Error) -> SocketError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => SocketError::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => SocketError::Reset,
        K::TimedOut => SocketError::TimedOut,
        K::UnexpectedEof => SocketError::Closed,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown | K::AddrNotAvailable => SocketError::Unreachable,
        K::PermissionDenied => SocketError::NotPermitted,
        _ => SocketError::Other,
    }
}

struct Conn {
    state: Result<SocketState, SocketError>,
    /// Bytes read from the stream; those before `taken` were handed to `recv` already.
    inbox: Vec<u8>,
    /// `recv` takes from the front by moving this offset, and the reader drops the taken
    /// prefix before it appends: draining the front on every `recv` moved the whole rest
    /// of the inbox each time (up to 1 MiB per 16 KiB taken).
    taken: usize,
    /// Set once the stream ended; reported after the inbox is drained.
    ended: Option<SocketError>,
}

struct Sock {
    conn: Arc<Mutex<Conn>>,
    /// Signalled when `recv` makes room in a full inbox.
    space: Arc<Notify>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Conn {
    fn unread(&self) -> usize {
        self.inbox.len() - self.taken
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.taken > 0 {
            self.inbox.drain(..self.taken);
            self.taken = 0;
        }
        self.inbox.extend_from_slice(bytes);
    }
}

fn lock(c: &Arc<Mutex<Conn>>) -> MutexGuard<'_, Conn> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most bytes held unread per socket: reading pauses past it (the component reads at most
/// 256 KiB per poll), so a flooding peer cannot grow host memory without bound.
const MAX_INBOX: usize = 1 << 20;

pub struct StreamSockets<C: Connector> {
    connector: C,
    wake: Arc<Notify>,
    sockets: BTreeMap<u32, Sock>,
    next: u32,
}

impl<C: Connector> StreamSockets<C> {
    pub fn new(connector: C, wake: Arc<Notify>) -> Self {
        StreamSockets { connector, wake, sockets: BTreeMap::new(), next: 0 }
    }

    pub fn connector_mut(&mut self) -> &mut C {
        &mut self.connector
    }

    pub fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        let connecting = self.connector.connect(host, port, tls)?;
        self.next += 1;
        let handle = self.next;
        let conn = Arc::new(Mutex::new(Conn { state: Ok(SocketState::Connecting), inbox: Vec::new(), taken: 0, ended: None }));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let space = Arc::new(Notify::new());
        let (c, wake, room) = (conn.clone(), self.wake.clone(), space.clone());
        let task = tokio::spawn(async move {
            let stream = match connecting.await {
                Ok(s) => s,
                Err(e) => {
                    lock(&c).state = Err(e);
                    wake.notify_one();
                    return;
                }
            };
            lock(&c).state = Ok(SocketState::Open);
            wake.notify_one();
            let (mut rd, mut wr) = tokio::io::split(stream);
            let writer = tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            });
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                while lock(&c).unread() >= MAX_INBOX {
                    room.notified().await;
                }
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        lock(&c).ended = Some(SocketError::Closed);
                        break;
                    }
                    Ok(n) => lock(&c).append(&buf[..n]),
                    Err(e) => {
                        lock(&c).ended = Some(socket_error(&e));
                        break;
                    }
                }
                wake.notify_one();
            }
            wake.notify_one();
            writer.abort();
        });
        self.sockets.insert(handle, Sock { conn, space, tx, task });
        Ok(handle)
    }

    pub fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        lock(&s.conn).state
    }

    pub fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        if let Some(e) = lock(&s.conn).ended {
            return Err(e);
        }
        s.tx.send(data.to_vec()).map_err(|_| SocketError::Closed)?;
        Ok(data.len() as u32)
    }

    pub fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        let mut c = lock(&s.conn);
        if c.unread() == 0 {
            return match c.ended {
                Some(e) => Err(e),
                None => Ok(Vec::new()),
            };
        }
        let n = c.unread().min(max as usize);
        let out = c.inbox[c.taken..c.taken + n].to_vec();
        c.taken += n;
        if c.taken == c.inbox.len() {
            c.inbox.clear();
            c.taken = 0;
        }
        s.space.notify_one();
        Ok(out)
    }

    pub fn close(&mut self, handle: u32) {
        if let Some(s) = self.sockets.remove(&handle) {
            s.task.abort();
        }
    }
}

impl<C: Connector> crate::Socket for StreamSockets<C> {
    fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        StreamSockets::open(self, host, port, tls)
    }
    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        StreamSockets::status(self, handle)
    }
    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        StreamSockets::send(self, handle, data)
    }
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        StreamSockets::recv(self, handle, max)
    }
    fn close(&mut self, handle: u32) {
        StreamSockets::close(self, handle)
    }
}

/// Implements [`crate::Socket`] for a platform struct by forwarding to one of its fields
/// (typically a [`StreamSockets`]): `mqtt_host::forward_socket!(MyPlatform, sockets);`
#[macro_export]
macro_rules! forward_socket {
    ($platform:ty, $field:ident) => {
        impl $crate::Socket for $platform {
            fn open(&mut self, host: &str, port: u16, tls: Option<$crate::TlsParams>) -> Result<u32, $crate::SocketError> {
                $crate::Socket::open(&mut self.$field, host, port, tls)
            }
            fn status(&mut self, handle: u32) -> Result<$crate::SocketState, $crate::SocketError> {
                $crate::Socket::status(&mut self.$field, handle)
            }
            fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, $crate::SocketError> {
                $crate::Socket::send(&mut self.$field, handle, data)
            }
            fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, $crate::SocketError> {
                $crate::Socket::recv(&mut self.$field, handle, max)
            }
            fn close(&mut self, handle: u32) {
                $crate::Socket::close(&mut self.$field, handle)
            }
        }
    };
}

impl<C: Connector> Drop for StreamSockets<C> {
    fn drop(&mut self) {
        for (_, s) in std::mem::take(&mut self.sockets) {
            s.task.abort();
        }
    }
}
