//! What a host provides: sockets, a clock, the link, and optionally flash. Implement them
//! over whatever network (and storage) you have.
//!
//! Every method must return at once: the component never blocks, so neither may its
//! imports. Report readiness by calling [`crate::Device::poll`] again (the async
//! [`crate::Client`] does that when [`Platform::wakeup`] fires).

use std::sync::Arc;

use tokio::sync::Notify;

use mqtt_protocol::store::Flash;

use crate::{LinkState, SocketError, SocketState, TlsParams};

/// Non-blocking TCP (and TLS) connections, identified by host-chosen handles.
pub trait Socket {
    /// Start opening a connection; the handle's `status` says when it is open.
    fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError>;
    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError>;
    /// Accept what fits and return how many bytes that was (0 when the buffer is full).
    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError>;
    /// What has arrived, at most `max` bytes; empty when nothing has. Fewer than `max`
    /// tells the component that nothing more is there now (it does not ask again until its
    /// next poll), so return less only when that is so, and have the client polled when
    /// more comes ([`Platform::wakeup`]). End of stream is `Err(SocketError::Closed)`.
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError>;
    fn close(&mut self, handle: u32);
    /// Push out what `send` accepted but the connection still holds (a TLS stream's
    /// records that the socket had no room for); called before every poll. Sockets that
    /// hold nothing back need not implement it.
    fn flush(&mut self) {}
}

pub trait Clock {
    /// Monotonic milliseconds.
    fn now_ms(&mut self) -> u64;
    /// Unix-epoch milliseconds, when known.
    fn wall_ms(&mut self) -> Option<u64> {
        None
    }
}

pub trait Wifi {
    fn state(&mut self) -> LinkState;
    /// Join a network; the outcome shows in `state`. Hosts whose OS manages the link say so.
    fn connect(&mut self, ssid: &str, password: &str) -> Result<(), String>;
    fn disconnect(&mut self);
    fn rssi(&mut self) -> Option<i32> {
        None
    }
}

/// Everything the component imports, in one object the host owns.
pub trait Platform: Socket + Clock + Wifi + Send + 'static {
    /// Notified when a socket becomes readable or closes, or the link changes, so an async
    /// driver knows to poll. `None`: the driver polls only at deadlines and API calls.
    fn wakeup(&self) -> Option<Arc<Notify>> {
        None
    }

    /// Flash that survives a power cut, for the publishes not yet acknowledged (the WIT
    /// `storage` import; [`crate::FileFlash`] keeps it in a file, [`MemFlash`] in RAM).
    /// `None` (the default): capacity 0, and the client keeps nothing across a restart.
    ///
    /// [`MemFlash`]: mqtt_protocol::store::MemFlash
    fn storage(&mut self) -> Option<&mut dyn Flash> {
        None
    }

    /// Why the latest connection attempt failed, in the platform's words (a certificate
    /// the CA did not sign, a name that does not resolve), taken once. The component only
    /// hears a `socket-error` code; the async [`crate::Client`] adds this text to the error
    /// of a failed first connect, so the reason reaches the application and not only a log.
    fn take_failure(&mut self) -> Option<String> {
        None
    }
}
