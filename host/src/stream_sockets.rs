//! The `socket` import for tokio hosts, over any async byte stream (tokio TCP on a board,
//! turmoil TCP in the simulator, TLS on top of either).
//!
//! The import must never block, so every call polls the stream once, in the task that
//! polls the component, with a waker that wakes that task when the stream becomes ready
//! (the platform's [`Notify`]). No task per socket and no buffer in between: `recv` reads
//! straight from the stream and `send` writes straight to it, returning 0 when the kernel's
//! buffer is full, so the bytes wait in the component and TCP holds back whoever is faster.
//! (Reader and writer tasks per socket cost two thread switches and a copy per message,
//! and the writer's queue had no bound.)

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

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

/// Wakes the driver (through the platform's [`Notify`]) when a stream is ready.
struct NotifyWaker(Arc<Notify>);

impl Wake for NotifyWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

enum Sock<S> {
    Connecting(ConnectFuture<S>),
    Open(S),
    /// The connection failed or the stream ended (or broke); reported on every call.
    Failed(SocketError),
}

/// Most bytes one `recv` reads: what the component asks for (16 KiB) fits.
const MAX_RECV: usize = 64 * 1024;

pub struct StreamSockets<C: Connector> {
    connector: C,
    waker: Waker,
    sockets: BTreeMap<u32, Sock<C::Stream>>,
    next: u32,
    /// Where `recv` reads to; kept so an empty read allocates nothing.
    scratch: Vec<u8>,
}

impl<C: Connector> StreamSockets<C> {
    pub fn new(connector: C, wake: Arc<Notify>) -> Self {
        let waker = Waker::from(Arc::new(NotifyWaker(wake)));
        StreamSockets { connector, waker, sockets: BTreeMap::new(), next: 0, scratch: Vec::new() }
    }

    pub fn connector_mut(&mut self) -> &mut C {
        &mut self.connector
    }

    pub fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        let connecting = self.connector.connect(host, port, tls)?;
        self.next += 1;
        self.sockets.insert(self.next, Sock::Connecting(connecting));
        // Start connecting now; `status` polls again when the waker says it moved.
        let _ = self.status(self.next);
        Ok(self.next)
    }

    pub fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        let mut cx = Context::from_waker(&self.waker);
        let s = self.sockets.get_mut(&handle).ok_or(SocketError::BadHandle)?;
        if let Sock::Connecting(f) = s {
            match f.as_mut().poll(&mut cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(stream)) => *s = Sock::Open(stream),
                Poll::Ready(Err(e)) => *s = Sock::Failed(e),
            }
        }
        match s {
            Sock::Connecting(_) => Ok(SocketState::Connecting),
            Sock::Open(_) => Ok(SocketState::Open),
            Sock::Failed(e) => Err(*e),
        }
    }

    pub fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        let mut cx = Context::from_waker(&self.waker);
        let s = self.sockets.get_mut(&handle).ok_or(SocketError::BadHandle)?;
        let stream = match s {
            Sock::Connecting(_) => return Ok(0),
            Sock::Failed(e) => return Err(*e),
            Sock::Open(stream) => stream,
        };
        match Pin::new(&mut *stream).poll_write(&mut cx, data) {
            Poll::Pending => Ok(0),
            Poll::Ready(Ok(n)) => {
                // A TLS stream may keep records it could not write yet; `flush` (before
                // every poll) pushes them once the socket is writable again.
                let _ = Pin::new(stream).poll_flush(&mut cx);
                Ok(n as u32)
            }
            Poll::Ready(Err(e)) => Err(fail(s, &e)),
        }
    }

    /// Reads until the stream has nothing more (or `max` is reached), so that a short
    /// answer tells the component what an empty one used to: nothing more now, and the
    /// waker is armed for what comes next. The read that finds nothing is one the host
    /// makes anyway (tokio clears a socket's readiness on a short read, so it is not even a
    /// syscall), and the component saves a boundary crossing per poll.
    pub fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let mut cx = Context::from_waker(&self.waker);
        let s = self.sockets.get_mut(&handle).ok_or(SocketError::BadHandle)?;
        let stream = match s {
            Sock::Connecting(_) => return Ok(Vec::new()),
            Sock::Failed(e) => return Err(*e),
            Sock::Open(stream) => stream,
        };
        self.scratch.resize((max as usize).clamp(1, MAX_RECV), 0);
        let mut buf = ReadBuf::new(&mut self.scratch);
        loop {
            let before = buf.filled().len();
            let end = match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    if buf.remaining() == 0 {
                        // There may be more, and only a read that finds nothing asks the
                        // stream to wake us when more comes: if the component stops here
                        // (its per-poll cap), this makes the driver poll again instead of
                        // sleeping on data.
                        self.waker.wake_by_ref();
                        break;
                    }
                    continue;
                }
                Poll::Ready(Ok(())) => {
                    *s = Sock::Failed(SocketError::Closed);
                    SocketError::Closed
                }
                Poll::Ready(Err(e)) => fail(s, &e),
            };
            if before == 0 {
                return Err(end);
            }
            // The bytes before the end (or the error) go out now; the next poll, woken at
            // once since no read is left to arm the waker, reports it.
            self.waker.wake_by_ref();
            break;
        }
        Ok(buf.filled().to_vec())
    }

    /// Pushes out what a stream accepted but still holds (a TLS stream's records).
    pub fn flush(&mut self) {
        let mut cx = Context::from_waker(&self.waker);
        for s in self.sockets.values_mut() {
            if let Sock::Open(stream) = s
                && let Poll::Ready(Err(e)) = Pin::new(stream).poll_flush(&mut cx)
            {
                fail(s, &e);
            }
        }
    }

    pub fn close(&mut self, handle: u32) {
        if let Some(Sock::Open(mut stream)) = self.sockets.remove(&handle) {
            // One try at an orderly end (TLS close_notify, then FIN); the component does not
            // wait for it, and dropping the stream closes it either way.
            let mut cx = Context::from_waker(&self.waker);
            let _ = Pin::new(&mut stream).poll_shutdown(&mut cx);
        }
    }
}

/// Marks a socket whose stream broke; returns the error for the call that found it.
fn fail<S>(s: &mut Sock<S>, e: &std::io::Error) -> SocketError {
    let e = socket_error(e);
    *s = Sock::Failed(e);
    e
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
    fn flush(&mut self) {
        StreamSockets::flush(self)
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
            fn flush(&mut self) {
                $crate::Socket::flush(&mut self.$field)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// Hands out one end of an in-memory pipe per `connect`.
    struct Pipe(Option<DuplexStream>);

    impl Connector for Pipe {
        type Stream = DuplexStream;
        fn connect(&mut self, _: &str, _: u16, _: Option<TlsParams>) -> Result<ConnectFuture<DuplexStream>, SocketError> {
            let end = self.0.take().ok_or(SocketError::Refused)?;
            Ok(Box::pin(async move { Ok(end) }))
        }
    }

    async fn woken(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(200), wake.notified()).await.is_ok()
    }

    /// A socket opened on a pipe of `capacity` bytes, with the wakeups of opening it
    /// drained: the socket, its handle, the broker's end and the driver's wakeup.
    async fn opened(capacity: usize) -> (StreamSockets<Pipe>, u32, DuplexStream, Arc<Notify>) {
        let (ours, broker) = tokio::io::duplex(capacity);
        let wake = Arc::new(Notify::new());
        let mut sockets = StreamSockets::new(Pipe(Some(ours)), wake.clone());
        let h = sockets.open("broker", 1883, None).unwrap();
        assert_eq!(sockets.status(h), Ok(SocketState::Open));
        while woken(&wake).await {}
        (sockets, h, broker, wake)
    }

    /// The driver sleeps until the waker fires, so each way data can arrive must fire it:
    /// after a read that found nothing, and after a read that stopped at `max` with more
    /// left (the component's per-poll cap), when no read will come to ask again.
    #[tokio::test]
    async fn every_way_of_data_arriving_wakes_the_driver() {
        let (mut sockets, h, mut broker, wake) = opened(1 << 20).await;

        assert_eq!(sockets.recv(h, 16), Ok(Vec::new()));
        broker.write_all(&[7; 40]).await.unwrap();
        assert!(woken(&wake).await, "bytes after an empty read");

        assert_eq!(sockets.recv(h, 16), Ok(vec![7; 16]));
        assert!(woken(&wake).await, "a full read with more waiting");
        // A short read has drained the stream and armed the waker, as an empty one does.
        assert_eq!(sockets.recv(h, 64), Ok(vec![7; 24]));
        assert!(!woken(&wake).await, "nothing left, nothing to wake for");
        broker.write_all(&[8; 10]).await.unwrap();
        assert!(woken(&wake).await, "bytes after a short read");
        broker.write_all(&[9; 5]).await.unwrap();
        assert_eq!(sockets.recv(h, 64), Ok([[8; 10].as_slice(), &[9; 5]].concat()), "one recv takes all that waits");
        assert_eq!(sockets.recv(h, 64), Ok(Vec::new()));

        drop(broker);
        assert!(woken(&wake).await, "the end of the stream");
        assert_eq!(sockets.recv(h, 64), Err(SocketError::Closed));
        assert_eq!(sockets.send(h, b"late"), Err(SocketError::Closed));
    }

    /// Bytes that arrive just before the end of the stream are handed over, and the end
    /// is reported on the next call, for which the driver is woken (no read is left that
    /// would arm the waker).
    #[tokio::test]
    async fn the_bytes_before_the_end_come_first_then_the_end() {
        let (mut sockets, h, mut broker, wake) = opened(1 << 10).await;

        broker.write_all(&[3; 5]).await.unwrap();
        drop(broker);
        assert_eq!(sockets.recv(h, 64), Ok(vec![3; 5]));
        assert!(woken(&wake).await, "the end is still to be reported");
        assert_eq!(sockets.recv(h, 64), Err(SocketError::Closed));
    }

    /// `send` takes what the stream has room for and no more: the rest stays with the
    /// component, and room made later wakes the driver to send it.
    #[tokio::test]
    async fn send_takes_what_fits_and_room_wakes_the_driver() {
        let (mut sockets, h, mut broker, wake) = opened(64).await;

        assert_eq!(sockets.send(h, &[1; 100]), Ok(64));
        assert_eq!(sockets.send(h, &[1; 36]), Ok(0));
        let mut got = [0; 64];
        broker.read_exact(&mut got).await.unwrap();
        assert!(woken(&wake).await, "room in the stream");
        assert_eq!(sockets.send(h, &[1; 36]), Ok(36));
    }
}
