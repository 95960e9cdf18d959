//! The Linux board: `mqtt-board`, the component over the real network with
//! mosquitto_pub/sub's flags, on [`mqtt_platform_tokio::TokioPlatform`] (tokio TCP, rustls,
//! the interface's link state from sysfs, a file as flash).

pub mod file_config;
pub mod mosquitto_style;
pub mod record;

pub use mqtt_platform_tokio::{tls, LinkMonitor, TokioPlatform, Verification};
