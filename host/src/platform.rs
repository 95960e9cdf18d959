//! What a host provides: sockets, a clock, the link, and optionally flash. Implement them
//! over whatever network (and storage) you have.
//!
//! Every method must return at once: the component never blocks, so neither may its
//! imports. Report readiness by calling [`crate::Device::poll`] again (the async
//! [`crate::Client`] does that when [`Platform::wakeup`] fires).

use std::sync::Arc;

use tokio::sync::Notify;

use mqtt_protocol::store::Flash;

pub use mqtt_device::{Clock, Socket, Wifi};

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

/// The device's view of any platform: its flash as the platform says, its log lines to
/// `tracing` under the device's name.
impl mqtt_device::DevicePlatform for dyn Platform {
    fn storage(&mut self) -> Option<&mut dyn Flash> {
        Platform::storage(self)
    }

    fn log(&mut self, device: &str, level: crate::LogLevel, message: &str) {
        use crate::LogLevel as Level;
        match level {
            Level::Trace => tracing::trace!(device = %device, "{message}"),
            Level::Debug => tracing::debug!(device = %device, "{message}"),
            Level::Info => tracing::info!(device = %device, "{message}"),
            Level::Warn => tracing::warn!(device = %device, "{message}"),
            Level::Error => tracing::error!(device = %device, "{message}"),
        }
    }
}
