//! What a host provides: sockets, a clock, the link, and optionally flash. Implement them
//! over whatever network (and storage) you have.
//!
//! Every method must return at once: the component never blocks, so neither may its
//! imports. A host learns that a socket became readable its own way (the Rust host's
//! `Platform::wakeup`, a board's network interrupt) and calls [`crate::Device::poll`] again.

use alloc::string::String;
use alloc::vec::Vec;

use mqtt_protocol::store::Flash;

use crate::{LinkState, LogLevel, SocketError, SocketState, TlsParams};

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
    /// more comes. End of stream is `Err(SocketError::Closed)`.
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

/// Everything a [`crate::Device`] needs of its host: the imports above, flash, and where the
/// client's log lines go. The Rust host implements it once, for its own `dyn Platform`; a
/// board implements it for its hardware.
pub trait DevicePlatform: Socket + Clock + Wifi + 'static {
    /// Flash that survives a power cut, for the publishes not yet acknowledged (the WIT
    /// `storage` import). `None`: capacity 0, and the client keeps nothing across a restart.
    fn storage(&mut self) -> Option<&mut dyn Flash> {
        None
    }

    /// A line from the client component (its `log` import), or from the device itself (a
    /// restart, at `Warn`), for the client named `device`.
    fn log(&mut self, device: &str, level: LogLevel, message: &str);
}
