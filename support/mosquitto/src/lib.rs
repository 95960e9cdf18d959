//! A real Mosquitto for tests and benchmarks: started on a free loopback port with a
//! generated config in a temporary directory, waited for until it says it is running, killed (and its
//! directory removed) on drop. One launcher for the board tests and the bench, so a fix to
//! how Mosquitto is started reaches both.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What every launch needs to know when it fails: how to get Mosquitto.
const INSTALL: &str = "install it with `apt-get install mosquitto` (.ci/run does)";

/// A running Mosquitto; killed on drop.
pub struct Mosquitto {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// Settings it was started with (below the `listener` line), kept for `restart`.
    settings: String,
    session: Session,
    dir: tempfile::TempDir,
}

/// Which session (and so which scheduling group) Mosquitto runs in.
///
/// Linux's autogroup (`/proc/sys/kernel/sched_autogroup_enabled`, on in most distributions'
/// kernels) shares the CPU fairly between sessions first and between the threads of each
/// session second. A broker started as a child runs in its parent's session and competes
/// thread for thread with the clients a benchmark measures; on a loaded 2-core machine that
/// decides which client is ahead. A broker in a session of its own is scheduled the way a
/// system service (a cgroup of its own) or a broker on another machine is: beside the clients,
/// not among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// The starting process's session (what tests use: Ctrl-C reaches it too).
    Parent,
    /// A new session (`setsid`). It is also killed when the thread that started it ends
    /// (`PR_SET_PDEATHSIG`), so an interrupted benchmark leaves no broker behind (Ctrl-C
    /// reaches only the terminal's session).
    Own,
}

/// PEM files for a TLS listener, made by [`tls_certs`].
pub struct TlsCerts {
    /// The CA that signed `cert`: what a client must trust.
    pub ca: PathBuf,
    /// The server certificate, for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsCerts {
    /// mosquitto.conf lines for a TLS listener on `port` with these files.
    pub fn listener(&self, port: u16) -> String {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A fresh CA and a server certificate it signed for 127.0.0.1 and localhost, written as
/// `NAME-ca.pem`, `NAME-server.pem` and `NAME-server.key` in `dir`.
pub fn tls_certs(dir: &Path, name: &str) -> std::io::Result<TlsCerts> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let err = |e: rcgen::Error| std::io::Error::other(format!("making test certificates: {e}"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).map_err(err)?.signed_by(&key, &ca).map_err(err)?;
    let certs = TlsCerts { ca: dir.join(format!("{name}-ca.pem")), cert: dir.join(format!("{name}-server.pem")), key: dir.join(format!("{name}-server.key")) };
    std::fs::write(&certs.ca, ca.pem())?;
    std::fs::write(&certs.cert, cert.pem())?;
    std::fs::write(&certs.key, key.serialize_pem())?;
    Ok(certs)
}

/// A `mosquitto_sub` at QoS 1 on `topic` that cannot miss what is published once this
/// returns, however loaded the machine: a first run with `-c -E` makes a persistent session
/// holding the subscription and exits once Mosquitto acknowledged it (QoS 1 messages then
/// queue for it); the second resumes that session, with `extra` flags, and prints `count`
/// messages on its stdout (piped) or gives up after `wait_s`. A sleep before publishing was
/// not enough when tests run side by side.
pub fn observer(port: u16, topic: &str, count: u32, wait_s: u32, extra: &[&str]) -> std::io::Result<Child> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let id = format!("observer-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let port = port.to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str(), "-t", topic, "-q", "1", "-c", "-i", id.as_str()];
    let missing = |e: std::io::Error| std::io::Error::new(e.kind(), format!("mosquitto_sub: {e}: install it with `apt-get install mosquitto-clients`"));
    let subscribed = Command::new("mosquitto_sub").args(base).arg("-E").status().map_err(missing)?;
    if !subscribed.success() {
        return Err(std::io::Error::other(format!("mosquitto_sub -E (subscribing to {topic}) failed: {subscribed}")));
    }
    Command::new("mosquitto_sub").args(base).args(["-C", &count.to_string(), "-W", &wait_s.to_string()]).args(extra).stdout(Stdio::piped()).spawn()
}

/// A free loopback port (the OS picks it; Mosquitto binds it a moment later).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Mosquitto {
    /// Starts one on a free port with `settings` (mosquitto.conf lines) below
    /// `listener PORT 127.0.0.1` and `allow_anonymous true`.
    pub fn start(settings: &str) -> std::io::Result<Mosquitto> {
        Mosquitto::start_in(Session::Parent, settings)
    }

    /// [`Mosquitto::start`] in the given session (see [`Session`]).
    pub fn start_in(session: Session, settings: &str) -> std::io::Result<Mosquitto> {
        // The port is free when the OS names it and may be taken (by some client's ephemeral
        // port) before Mosquitto binds it: then try another.
        let mut tries = 3;
        loop {
            match Mosquitto::launch_on(free_port()?, settings, session) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
                result => return result,
            }
        }
    }

    /// Starts one on `port` (see [`Mosquitto::start`]).
    pub fn start_on(port: u16, settings: &str) -> std::io::Result<Mosquitto> {
        Mosquitto::launch_on(port, settings, Session::Parent)
    }

    fn launch_on(port: u16, settings: &str, session: Session) -> std::io::Result<Mosquitto> {
        let dir = tempfile::Builder::new().prefix("mosquitto-").tempdir()?;
        // Started as root, Mosquitto drops privileges to its own user, and a change of
        // credentials clears the parent-death signal `Session::Own` relies on; `user root`
        // keeps it as it was started (no effect for anyone else).
        // SAFETY: geteuid only reads this process's credentials.
        let keep_user = if session == Session::Own && unsafe { libc::geteuid() } == 0 { "user root\n" } else { "" };
        let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n{keep_user}{settings}");
        Mosquitto::launch(port, &conf, settings.to_string(), session, dir)
    }

    /// Starts one with a whole config of the caller's (a TLS listener, say) in `dir`, which
    /// it then owns; `port` is where the config listens. The config must leave logging to
    /// stderr (Mosquitto's default): readiness is read from that log.
    pub fn start_with_config(port: u16, config: &str, dir: tempfile::TempDir) -> std::io::Result<Mosquitto> {
        Mosquitto::launch(port, config, String::new(), Session::Parent, dir)
    }

    /// Kills it (its in-memory sessions go) and starts a fresh one on the same port with the
    /// same settings, as a broker restart without persistence.
    pub fn restart(self) -> std::io::Result<Mosquitto> {
        let (port, settings, session) = (self.port, self.settings.clone(), self.session);
        drop(self);
        Mosquitto::launch_on(port, &settings, session)
    }

    /// Stops it as a service stop does (SIGTERM: with `persistence true` in its settings it
    /// saves its sessions and their queued messages), waits for it to exit, and starts it
    /// again on the same port with the same settings.
    pub fn restart_gracefully(mut self) -> std::io::Result<Mosquitto> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(std::io::Error::other)?;
        // SAFETY: a signal to the child this value owns, which has not been waited for.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.child.wait()?;
        self.restart()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory its config lives in (for files a test wants beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Readiness is Mosquitto's own "running" line, logged once every listener is bound and
    /// listening. Not a connect to the port: a connect can succeed without Mosquitto (the
    /// port is in the ephemeral range, so a connect may meet itself, TCP's simultaneous open,
    /// or a listener of someone else's that took the port first), and a test then met
    /// "connection refused" from a broker said to be up.
    fn launch(port: u16, config: &str, settings: String, session: Session, dir: tempfile::TempDir) -> std::io::Result<Mosquitto> {
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config)?;
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new("mosquitto");
        command.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log);
        if session == Session::Own {
            // SAFETY: between fork and exec only async-signal-safe calls are allowed; setsid
            // and prctl are plain system calls that allocate nothing and take no locks.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() == -1 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("starting mosquitto: {e}; {INSTALL}")))?;
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let log = read_log();
                let kind = if log.contains("Address already in use") { std::io::ErrorKind::AddrInUse } else { std::io::ErrorKind::Other };
                return Err(std::io::Error::new(kind, format!("mosquitto exited at start ({status}) on port {port}; its log:\n{log}config:\n{config}")));
            }
            if read_log().lines().any(|l| l.ends_with(" running")) {
                return Ok(Mosquitto { child, port, settings, session, dir });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::io::Error::other(format!("mosquitto did not report running on {port} within 5 s; its log:\n{}", read_log())))
    }

    /// `mosquitto -h`'s first line ("mosquitto version 2.0.11"), or empty.
    pub fn version() -> String {
        Command::new("mosquitto")
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
            .unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
