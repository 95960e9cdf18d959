//! The bare-metal RISC-V board (`firmware/`, its own Cargo workspace: it builds for
//! `riscv32imac-unknown-none-elf`, the core of ESP32-C3/C6-class chips, and for
//! `riscv64gc-unknown-none-elf`) built and run in QEMU's `virt` machine from a Linux machine:
//! for its tests, and for anyone who wants to watch the component run with no OS.
//!
//! QEMU's user-mode network puts the machine it runs on at 10.0.2.2 for the board, so a
//! broker on this machine's loopback is reachable there. QEMU's monitor (a Unix socket)
//! turns the board's link off and on: its virtio-net reports the cable unplugged, which the
//! component sees through its `wifi` import as mqtt_as sees WiFi go.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The RISC-V core the board has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Arch {
    /// RV32IMAC: the microcontroller class (ESP32-C3/C6); the component runs as `pulley32`.
    #[default]
    Rv32,
    /// RV64GC; the component runs as `pulley64`.
    Rv64,
}

impl Arch {
    /// The Rust target the firmware builds for.
    pub fn target(self) -> &'static str {
        match self {
            Arch::Rv32 => "riscv32imac-unknown-none-elf",
            Arch::Rv64 => "riscv64gc-unknown-none-elf",
        }
    }

    fn qemu(self) -> &'static str {
        match self {
            Arch::Rv32 => "qemu-system-riscv32",
            Arch::Rv64 => "qemu-system-riscv64",
        }
    }
}

/// Builds the firmware (release) for `arch` into `target_dir` and returns its ELF file. The
/// first build takes minutes: wasmtime for the board, and wasmtime with Cranelift for the
/// build script, which precompiles the component for Pulley.
pub fn build_firmware(target_dir: &Path, arch: Arch) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = arch.target();
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", target, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // What an outer cargo (a test run) sets for its own build is not the firmware's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the firmware failed ({status}): see cargo's output above (the target is added with `rustup target add {target}`)");
    }
    Ok(target_dir.join(target).join("release/mqtt-riscv-virt-firmware"))
}

/// The target dir the tests and the CLI build the firmware in: beside the workspace's own.
pub fn default_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/riscv-virt")
}

/// How to boot a board.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The firmware's `key=value` settings (`port=1883 count=10 …`).
    pub bootargs: String,
    /// A file for the flash bank the store lives in (see [`erased_flash`]); the same file
    /// in the next boot is what survives a power cut. None: a bank of QEMU's memory only.
    pub flash: Option<PathBuf>,
    /// Start with the cable pulled: the board boots with its link down.
    pub link_down: bool,
    /// Copy the console to stdout as it comes.
    pub echo: bool,
    /// The core the firmware was built for.
    pub arch: Arch,
}

/// QEMU's flash banks on `virt` are 32 MiB, and a file behind one must be exactly that.
pub const FLASH_BANK: u64 = 32 << 20;

/// What starts a flash image: given a file for bank 0, QEMU's reset vector jumps to the
/// bank instead of RAM (as a microcontroller starts from its flash), so the bank begins with
/// the jump to the firmware QEMU loaded at 0x8000_0000, leaving `a0` and `a1` (the hart id and
/// the device tree) as they are. `li t0, 1; slli t0, t0, 31; jr t0`: the address built by a
/// shift because `lui` would sign-extend it on RV64. The store lives past this first block.
const BOOT_STUB: [u32; 3] = [0x0010_0293, 0x01f2_9293, 0x0002_8067];

/// Makes `path` a fresh flash image for [`Launch::flash`]: the boot stub, then erased flash
/// (every byte 0xff).
pub fn erased_flash(path: &Path) -> std::io::Result<()> {
    let mut image = vec![0xff; FLASH_BANK as usize];
    for (i, word) in BOOT_STUB.iter().enumerate() {
        image[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    std::fs::write(path, image)
}

/// Refuses a file that is not a flash image [`erased_flash`] made: QEMU would jump into it.
fn check_flash(path: &Path) -> anyhow::Result<()> {
    let mut start = [0u8; 12];
    let mut file = std::fs::File::open(path).with_context(|| format!("the flash file {}", path.display()))?;
    let len = file.metadata()?.len();
    if len != FLASH_BANK {
        bail!("the flash file {} is {len} bytes; a bank is {FLASH_BANK}", path.display());
    }
    file.read_exact(&mut start)?;
    if start.chunks_exact(4).zip(BOOT_STUB).any(|(b, w)| b != w.to_le_bytes()) {
        bail!("{} is not a flash image of this board (it does not start with the boot stub)", path.display());
    }
    Ok(())
}

/// A board running in QEMU; killed on drop (a power cut: nothing is flushed or said).
pub struct Board {
    child: Child,
    /// None when QEMU had already ended when the monitor was looked for.
    monitor: Option<UnixStream>,
    console: Arc<(Mutex<String>, Condvar)>,
    /// Reads the console until QEMU's end closes it.
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Board {
    /// Boots `firmware` as `launch` says.
    pub fn start(firmware: &Path, launch: &Launch) -> anyhow::Result<Board> {
        let dir = tempfile::Builder::new().prefix("riscv-virt-").tempdir()?;
        let socket = dir.path().join("monitor");
        let qemu_name = launch.arch.qemu();
        let mut qemu = Command::new(qemu_name);
        qemu.args(["-machine", "virt", "-bios", "none", "-m", "256M", "-smp", "1", "-display", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(firmware)
            .args(["-append", &launch.bootargs])
            .args(["-device", "virtio-net-device,netdev=net0", "-netdev", "user,id=net0"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", socket.display()));
        if let Some(flash) = &launch.flash {
            check_flash(flash)?;
            qemu.arg("-drive").arg(format!("if=pflash,unit=0,format=raw,file={}", flash.display()));
        }
        if launch.link_down {
            // Frozen until the cable is out (`-S`), so not one frame leaves before.
            qemu.arg("-S");
        }
        let echo = launch.echo;
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {qemu_name}: install it with `apt-get install qemu-system-misc`"))?;
        let stdout = child.stdout.take().expect("piped");
        let console = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = console.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if echo {
                    println!("{line}");
                }
                let (text, changed) = &*sink;
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                changed.notify_all();
            }
        });
        let monitor = connect_monitor(&socket, &mut child, qemu_name)?;
        let mut board = Board { child, monitor, console, reader: Some(reader), _dir: dir };
        if board.monitor.is_none() {
            return Ok(board);
        }
        if let Err(e) = board.read_prompt() {
            // A board that ends at once (a bad setting) takes QEMU and its monitor with it:
            // that is its result, for `wait`, not a failure to start.
            if !board.ends_within(Duration::from_secs(10))? {
                return Err(e);
            }
            return Ok(board);
        }
        if launch.link_down {
            board.set_link(false)?;
            board.command("cont")?;
        }
        Ok(board)
    }

    /// Whether QEMU exits within `limit`.
    fn ends_within(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(false)
    }

    /// Plugs the board's cable in (`true`) or pulls it out.
    pub fn set_link(&mut self, up: bool) -> anyhow::Result<()> {
        self.command(if up { "set_link net0 on" } else { "set_link net0 off" })
    }

    /// Gives QEMU's monitor a command and waits until it is carried out.
    fn command(&mut self, command: &str) -> anyhow::Result<()> {
        let Some(monitor) = &mut self.monitor else { bail!("the board has ended: no monitor for `{command}`") };
        writeln!(monitor, "{command}")?;
        self.read_prompt()
    }

    /// Waits for the monitor's next prompt: the command before it has been carried out.
    fn read_prompt(&mut self) -> anyhow::Result<()> {
        let Some(monitor) = &mut self.monitor else { bail!("the board has ended: no monitor") };
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"(qemu) ") {
            if monitor.read(&mut byte)? == 0 {
                bail!("QEMU's monitor closed");
            }
            seen.push(byte[0]);
        }
        Ok(())
    }

    /// What the board has printed so far.
    pub fn console(&self) -> String {
        self.console.0.lock().unwrap().clone()
    }

    /// Waits until the console shows `text`, for at most `limit`.
    pub fn wait_for(&self, text: &str, limit: Duration) -> anyhow::Result<()> {
        let (console, changed) = &*self.console;
        let end = Instant::now() + limit;
        let mut seen = console.lock().unwrap();
        while !seen.contains(text) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no `{text}` on the board's console within {limit:?}; it printed:\n{seen}");
            }
            seen = changed.wait_timeout(seen, left).unwrap().0;
        }
        Ok(())
    }

    /// Waits for the board to end the emulation (for at most `limit`, then kills it) and
    /// returns how it ended and everything it printed.
    pub fn wait(mut self, limit: Duration) -> anyhow::Result<(ExitStatus, String)> {
        if !self.ends_within(limit)? {
            bail!("the board ran past {limit:?}; it printed:\n{}", self.console());
        }
        let status = self.child.wait()?;
        // Everything QEMU printed, to the end of its output.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok((status, self.console()))
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU makes the monitor's socket as it starts: tried until it is there, or QEMU is gone
/// (None: a board that ended at once, whose result `wait` gives).
fn connect_monitor(socket: &Path, child: &mut Child, qemu: &str) -> anyhow::Result<Option<UnixStream>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(Some(s)),
            Err(_) if Instant::now() < end => {
                if child.try_wait()?.is_some() {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {qemu}'s monitor")),
        }
    }
}
