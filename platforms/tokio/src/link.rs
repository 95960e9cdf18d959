//! The link state the `wifi` import reports: a network interface's, read from sysfs.

use std::path::PathBuf;

use mqtt_host::LinkState;

/// Link state of a network interface (Linux sysfs); without an interface (wired, loopback,
/// another OS) the link is reported up.
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
