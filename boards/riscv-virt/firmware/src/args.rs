//! What the device is told at boot: QEMU's `-append` becomes the device tree's
//! `/chosen/bootargs`, read here as `key=value` words (no spaces inside a value). The demo's
//! own settings are below; every other key is one of the client's config keys, by the names
//! every host uses (`hosts/config_keys.json`: `keepalive_s`, `clean`, `mqttv5`, …).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use mqtt_device::Config;

include!(concat!(env!("OUT_DIR"), "/config_keys.rs"));

/// The demo's settings, and the client's config.
pub struct Args {
    pub topic: String,
    pub count: u32,
    pub interval_ms: u64,
    /// Give up (and fail) after this long.
    pub limit_ms: u64,
    /// Keep accepted QoS 1 publishes in the flash bank (`store=on`) until acknowledged.
    pub store: bool,
    /// Fault injection: every this many polls, one runs out of fuel (`fault-every=N`), so
    /// that the tests see the device restart the instance and lose nothing.
    pub fault_every: Option<u64>,
    pub config: Config,
}

/// The demo's own keys.
const OWN: &[&str] = &["topic", "count", "interval-ms", "limit-s", "store", "fault-every"];

impl Args {
    pub fn parse(bootargs: &str) -> Result<Args, String> {
        let mut args =
            Args { topic: "riscv-virt/counter".into(), count: 10, interval_ms: 100, limit_ms: 60_000, store: false, fault_every: None, config: board_config() };
        for word in bootargs.split_whitespace() {
            let (key, value) = word.split_once('=').ok_or_else(|| alloc::format!("`{word}`: expected key=value"))?;
            let number = || u64::from_word(value).map_err(|why| alloc::format!("{key}: {why}"));
            match key {
                "topic" => args.topic = value.to_string(),
                "count" => args.count = u32::from_word(value).map_err(|why| alloc::format!("count: {why}"))?,
                "interval-ms" => args.interval_ms = number()?,
                "limit-s" => args.limit_ms = number()?.saturating_mul(1000),
                "fault-every" => match number()? {
                    0 => return Err("fault-every: 0 would fail every poll; at least 1".into()),
                    n => args.fault_every = Some(n),
                },
                "store" => {
                    args.store = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(alloc::format!("store: `{value}` is not on or off")),
                    }
                }
                _ => {
                    if !set_key(&mut args.config, key, value)? {
                        let keys: Vec<&str> = FIELD_NAMES.iter().map(|&(_, name)| name).collect();
                        return Err(alloc::format!("unknown setting `{key}`: the demo's are {OWN:?}, the client's {keys:?}"));
                    }
                }
            }
        }
        Ok(args)
    }
}

/// The core's defaults, but for the broker (the machine QEMU runs on, as its user-mode
/// network shows it), the id and an unclean session: what the broker sent while the link was
/// down waits for the client there.
fn board_config() -> Config {
    mqtt_protocol::Config { client_id: "riscv-virt".into(), server: "10.0.2.2".into(), clean_init: true, clean: false, ..mqtt_protocol::Config::default() }
        .into()
}

/// A config value from a boot setting's text. Written here rather than with serde: these
/// few shapes are all the keys have, and serde's deserializers for text formats (TOML, JSON)
/// would want a value syntax that QEMU's command line does not carry well.
trait FromWord: Sized {
    fn from_word(word: &str) -> Result<Self, String>;
}

impl FromWord for String {
    fn from_word(word: &str) -> Result<Self, String> {
        Ok(word.to_string())
    }
}

impl FromWord for bool {
    fn from_word(word: &str) -> Result<Self, String> {
        match word {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(alloc::format!("`{word}` is not true or false")),
        }
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl FromWord for $t {
            fn from_word(word: &str) -> Result<Self, String> {
                word.parse().map_err(|_| alloc::format!("`{word}` is not a whole number from 0 to {}", <$t>::MAX))
            }
        }
    )*};
}
whole_numbers!(u16, u32, u64);

/// Empty: unset.
impl<T: FromWord> FromWord for Option<T> {
    fn from_word(word: &str) -> Result<Self, String> {
        if word.is_empty() {
            Ok(None)
        } else {
            T::from_word(word).map(Some)
        }
    }
}

/// The text's bytes (a password, authentication data).
impl FromWord for Vec<u8> {
    fn from_word(word: &str) -> Result<Self, String> {
        Ok(word.as_bytes().to_vec())
    }
}

/// Comma-separated (failover brokers).
impl FromWord for Vec<String> {
    fn from_word(word: &str) -> Result<Self, String> {
        Ok(word.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
    }
}

/// Comma-separated `name=value` pairs (user properties).
impl FromWord for Vec<(String, String)> {
    fn from_word(word: &str) -> Result<Self, String> {
        word.split(',')
            .filter(|s| !s.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').ok_or_else(|| alloc::format!("`{pair}` is not name=value"))?;
                Ok((name.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// `text` (the client's refusal of a config) with each key named as the settings name it,
/// not by its field in the config record (`keepalive_s`, not `keepalive_secs`).
pub fn with_setting_names(text: &str) -> String {
    let mut text = text.to_string();
    for (field, name) in FIELD_NAMES {
        text = text.replace(&alloc::format!("`{field}`"), &alloc::format!("`{name}`"));
    }
    text
}

/// The bootargs from the device tree QEMU hands over in `a1`.
pub fn bootargs(dtb: usize) -> Result<&'static str, &'static str> {
    // SAFETY: QEMU places a valid flattened device tree at `dtb` and leaves it there.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "no device tree at a1")?;
    Ok(fdt.chosen().bootargs().unwrap_or(""))
}
