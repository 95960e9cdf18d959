//! The one Mosquitto every client is measured against, on a free loopback port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
    pub version: String,
}

impl Mosquitto {
    pub fn start() -> anyhow::Result<Mosquitto> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("mqtt-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        // No queue limit: Mosquitto's default (1000) silently drops QoS 1 messages for a
        // subscriber that falls behind, which would be charged to the client under test.
        // The in-flight window to each subscriber matches the publishers' (100).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting mosquitto ({e}); install it with `apt-get install mosquitto`"))?;
        let version = Command::new("mosquitto")
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
            .unwrap_or_default();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Mosquitto { child, port, dir, version });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("mosquitto did not start listening on {port}")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
