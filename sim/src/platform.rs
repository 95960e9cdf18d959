//! The component's imports inside the simulation: sockets over turmoil TCP, the clock from
//! simulated time, WiFi from the scenario's timeline.
//!
//! Sockets never block: `open` starts a task that connects, a reader task moves arrived
//! bytes into an inbox (and wakes the device loop), a writer task drains what `send`
//! accepted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mqtt_host::{Clock, LinkState, Platform, Socket, SocketError, SocketState, TlsParams, Wifi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::world::{now_ms, Shared};

#[derive(Default)]
struct Conn {
    state: Option<Result<SocketState, SocketError>>,
    inbox: Vec<u8>,
    /// Set once the stream ended; reported after the inbox is drained.
    ended: Option<SocketError>,
}

struct Sock {
    conn: Arc<Mutex<Conn>>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<()>,
}

pub struct SimPlatform {
    world: Shared,
    wake: Arc<Notify>,
    sockets: BTreeMap<u32, Sock>,
    next: u32,
}

impl SimPlatform {
    pub fn new(world: Shared, wake: Arc<Notify>) -> Self {
        SimPlatform { world, wake, sockets: BTreeMap::new(), next: 0 }
    }
}

impl Drop for SimPlatform {
    fn drop(&mut self) {
        for (_, s) in std::mem::take(&mut self.sockets) {
            s.task.abort();
        }
    }
}

fn lock(c: &Arc<Mutex<Conn>>) -> std::sync::MutexGuard<'_, Conn> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn map_io(e: &std::io::Error) -> SocketError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => SocketError::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => SocketError::Reset,
        K::TimedOut => SocketError::TimedOut,
        K::UnexpectedEof => SocketError::Closed,
        _ => SocketError::Other,
    }
}

impl Socket for SimPlatform {
    fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        if tls.is_some() {
            // The simulated network carries plain TCP; TLS is tested on the board.
            return Err(SocketError::TlsFailed);
        }
        if self.world.lock().dns_fail {
            return Err(SocketError::DnsFailed);
        }
        self.next += 1;
        let handle = self.next;
        let conn = Arc::new(Mutex::new(Conn { state: Some(Ok(SocketState::Connecting)), ..Conn::default() }));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (c, wake, addr) = (conn.clone(), self.wake.clone(), (host.to_string(), port));
        let task = tokio::spawn(async move {
            let stream = match turmoil::net::TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    lock(&c).state = Some(Err(map_io(&e)));
                    wake.notify_one();
                    return;
                }
            };
            lock(&c).state = Some(Ok(SocketState::Open));
            wake.notify_one();
            let (mut rd, mut wr) = stream.into_split();
            let writer = tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        lock(&c).ended = Some(SocketError::Closed);
                        break;
                    }
                    Ok(n) => lock(&c).inbox.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        lock(&c).ended = Some(map_io(&e));
                        break;
                    }
                }
                wake.notify_one();
            }
            wake.notify_one();
            writer.abort();
        });
        self.sockets.insert(handle, Sock { conn, tx, task });
        Ok(handle)
    }

    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        lock(&s.conn).state.unwrap_or(Err(SocketError::Other))
    }

    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        if let Some(e) = lock(&s.conn).ended {
            return Err(e);
        }
        s.tx.send(data.to_vec()).map_err(|_| SocketError::Closed)?;
        Ok(data.len() as u32)
    }

    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let s = self.sockets.get(&handle).ok_or(SocketError::BadHandle)?;
        let mut c = lock(&s.conn);
        if c.inbox.is_empty() {
            return match c.ended {
                Some(e) => Err(e),
                None => Ok(Vec::new()),
            };
        }
        let n = c.inbox.len().min(max as usize);
        Ok(c.inbox.drain(..n).collect())
    }

    fn close(&mut self, handle: u32) {
        if let Some(s) = self.sockets.remove(&handle) {
            s.task.abort();
        }
    }
}

impl Clock for SimPlatform {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
    fn wall_ms(&mut self) -> Option<u64> {
        turmoil::since_epoch().map(|d| d.as_millis() as u64)
    }
}

impl Wifi for SimPlatform {
    fn state(&mut self) -> LinkState {
        self.world.lock().link
    }
    fn connect(&mut self, _ssid: &str, _password: &str) -> Result<(), String> {
        // The scenario's timeline owns the link; joining succeeds when the timeline says so.
        Ok(())
    }
    fn disconnect(&mut self) {}
    fn rssi(&mut self) -> Option<i32> {
        match self.world.lock().link {
            LinkState::Up => Some(-60),
            _ => None,
        }
    }
}

impl Platform for SimPlatform {
    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
}
