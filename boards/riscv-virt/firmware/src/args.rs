//! What the device is told at boot: QEMU's `-append` becomes the device tree's
//! `/chosen/bootargs`, read here as `key=value` words.

use alloc::string::{String, ToString};

/// The demo's settings (see the README's "A bare-metal RISC-V board" for each).
pub struct Args {
    pub broker: String,
    pub port: u16,
    pub client_id: String,
    pub topic: String,
    pub count: u32,
    pub interval_ms: u64,
    /// Give up (and fail) after this long.
    pub limit_ms: u64,
    /// Keep accepted QoS 1 publishes in the flash bank (`store=on`) until acknowledged.
    pub store: bool,
}

impl Args {
    pub fn parse(bootargs: &str) -> Result<Args, String> {
        let mut args = Args {
            broker: "10.0.2.2".into(),
            port: 1883,
            client_id: "riscv-virt".into(),
            topic: "riscv-virt/counter".into(),
            count: 10,
            interval_ms: 100,
            limit_ms: 60_000,
            store: false,
        };
        for word in bootargs.split_whitespace() {
            let (key, value) = word.split_once('=').ok_or_else(|| alloc::format!("`{word}`: expected key=value"))?;
            let number = |what: &str| value.parse::<u64>().map_err(|_| alloc::format!("{key}: `{value}` is not {what}"));
            match key {
                "broker" => args.broker = value.to_string(),
                "port" => args.port = u16::try_from(number("a port")?).map_err(|_| alloc::format!("port: {value} is over 65535"))?,
                "client-id" => args.client_id = value.to_string(),
                "topic" => args.topic = value.to_string(),
                "count" => args.count = u32::try_from(number("a count")?).map_err(|_| alloc::format!("count: {value} is too large"))?,
                "interval-ms" => args.interval_ms = number("milliseconds")?,
                "limit-s" => args.limit_ms = number("seconds")?.saturating_mul(1000),
                "store" => {
                    args.store = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(alloc::format!("store: `{value}` is not on or off")),
                    }
                }
                _ => return Err(alloc::format!("unknown setting `{key}` (broker, port, client-id, topic, count, interval-ms, limit-s, store)")),
            }
        }
        Ok(args)
    }
}

/// The bootargs from the device tree QEMU hands over in `a1`.
pub fn bootargs(dtb: usize) -> Result<&'static str, &'static str> {
    // SAFETY: QEMU places a valid flattened device tree at `dtb` and leaves it there.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "no device tree at a1")?;
    Ok(fdt.chosen().bootargs().unwrap_or(""))
}
