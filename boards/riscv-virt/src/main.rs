//! `mqtt-riscv-virt`: builds the bare-metal firmware, boots it in QEMU against a broker on
//! this machine, and optionally pulls its network cable for a while. Exits with the board's
//! status: 0 when every message was acknowledged and came back.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mqtt_riscv_virt::{build_firmware, default_target_dir, erased_flash, Arch, Board, Launch};

#[derive(Parser)]
#[command(about = "Run the MQTT client component on a bare-metal RISC-V board in QEMU")]
struct Args {
    /// The board's core.
    #[arg(long, value_enum, default_value_t = Arch::Rv32)]
    arch: Arch,
    /// The broker's port on this machine (the board reaches it at 10.0.2.2).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Messages to publish (QoS 1) and wait for.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Between two publishes.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "riscv-virt")]
    client_id: String,
    #[arg(long, default_value = "riscv-virt/counter")]
    topic: String,
    /// The board gives up (and fails) after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    limit: Duration,
    /// Pull the cable this long after the client is first up...
    #[arg(long, value_parser = humantime::parse_duration, requires = "outage_for")]
    outage_after: Option<Duration>,
    /// ...and plug it back in after this long.
    #[arg(long, value_parser = humantime::parse_duration, requires = "outage_after")]
    outage_for: Option<Duration>,
    /// Keep accepted publishes in this flash file until acknowledged (made, erased, if
    /// missing): what a run killed before then left is sent by the next run on the file.
    #[arg(long)]
    store: Option<std::path::PathBuf>,
    /// Any of the client's config keys, by the names every host uses (`keepalive_s=10`,
    /// `mqttv5=true`, `max_inflight=4`: see hosts/config_keys.json); repeatable. No spaces in
    /// a value.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mqtt-riscv-virt: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let firmware = build_firmware(&default_target_dir(), args.arch)?;
    let mut bootargs = format!(
        "port={} count={} interval-ms={} client_id={} topic={} limit-s={} store={}",
        args.port,
        args.count,
        args.interval.as_millis(),
        args.client_id,
        args.topic,
        args.limit.as_secs().max(1),
        if args.store.is_some() { "on" } else { "off" }
    );
    for setting in &args.settings {
        if setting.contains(char::is_whitespace) || !setting.contains('=') {
            anyhow::bail!("--set {setting:?}: expected KEY=VALUE with no spaces");
        }
        bootargs.push(' ');
        bootargs.push_str(setting);
    }
    if let Some(file) = &args.store
        && !file.exists()
    {
        erased_flash(file)?;
    }
    let mut board = Board::start(&firmware, &Launch { bootargs, flash: args.store.clone(), link_down: false, echo: true, arch: args.arch })?;
    if let (Some(after), Some(length)) = (args.outage_after, args.outage_for) {
        board.wait_for("up (session present", Duration::from_secs(30))?;
        std::thread::sleep(after);
        eprintln!("mqtt-riscv-virt: cable pulled for {}", humantime::format_duration(length));
        board.set_link(false)?;
        std::thread::sleep(length);
        board.set_link(true)?;
        eprintln!("mqtt-riscv-virt: cable back in");
    }
    let (status, _) = board.wait(args.limit + Duration::from_secs(30))?;
    Ok(ExitCode::from(status.code().map_or(2, |c| c.clamp(0, 255) as u8)))
}
