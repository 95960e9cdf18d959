//! `mqtt-board --config FILE`: the connection settings in TOML, so a deployed board does not
//! carry its password on the command line. Flags given on the command line win over the file;
//! keys missing from both take the client's defaults.
//!
//! ```toml
//! host = "broker.example.net"
//! port = 8883
//! tls = true
//! cafile = "/etc/mqtt/ca.pem"
//! id = "greenhouse-3"
//! keepalive = 30
//! clean = false
//! user = "greenhouse"
//! password = "…"
//! iface = "wlan0"
//! will = { topic = "greenhouse/3/status", payload = "offline", qos = 1, retain = true }
//! ```

use serde::Deserialize;

/// Every setting of a board connection; all optional so a file can hold any subset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<bool>,
    /// Skip the broker certificate check (logged as a warning on every connection).
    pub insecure: Option<bool>,
    pub cafile: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// ALPN protocols offered in the TLS handshake, e.g. `["x-amzn-mqtt-ca"]`.
    pub alpn: Option<Vec<String>>,
    pub id: Option<String>,
    pub keepalive: Option<u16>,
    pub clean: Option<bool>,
    pub v5: Option<bool>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub iface: Option<String>,
    pub response_time_ms: Option<u32>,
    pub will: Option<WillConfig>,
    // Client tunables with no flag of their own.
    pub ping_interval_s: Option<u16>,
    pub max_repubs: Option<u32>,
    pub queue_len: Option<u32>,
    pub max_inflight: Option<u16>,
    pub backoff_min_ms: Option<u32>,
    pub backoff_max_ms: Option<u32>,
    pub session_expiry_s: Option<u32>,
    /// Stop reading from the broker while `queue_len` messages wait, instead of discarding.
    pub backpressure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WillConfig {
    pub topic: String,
    pub payload: String,
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
}

fn one() -> u8 {
    1
}

impl BoardConfig {
    pub fn load(path: &std::path::Path) -> Result<BoardConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<BoardConfig, String> {
        let c: BoardConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => mqtt_host::source_position::describe(text, span.start, e.message()),
            None => e.message().to_string(),
        })?;
        if let Some(w) = &c.will
            && w.qos > 2
        {
            return Err(format!("will.qos = {}: must be 0, 1 or 2", w.qos));
        }
        Ok(c)
    }

    /// `self` (the command line) where set, `file` elsewhere.
    pub fn over(self, file: BoardConfig) -> BoardConfig {
        macro_rules! pick {
            ($($f:ident),*) => { BoardConfig { $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            host,
            port,
            tls,
            insecure,
            cafile,
            cert,
            key,
            alpn,
            id,
            keepalive,
            clean,
            v5,
            user,
            password,
            iface,
            response_time_ms,
            will,
            ping_interval_s,
            max_repubs,
            queue_len,
            max_inflight,
            backoff_min_ms,
            backoff_max_ms,
            session_expiry_s,
            backpressure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("file_config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = BoardConfig::parse(&example).unwrap();
        assert_eq!(c.port, Some(8883));
        assert_eq!(c.will.unwrap().qos, 1);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = BoardConfig::parse("host = \"a\"\nkeep_alive = 3\n").unwrap_err();
        assert!(e.starts_with("line 2, column 1") && e.contains("keep_alive"), "{e}");
    }

    #[test]
    fn wrong_type_names_its_line() {
        let e = BoardConfig::parse("port = \"eighty\"\n").unwrap_err();
        assert!(e.starts_with("line 1") && e.contains("u16"), "{e}");
    }

    #[test]
    fn command_line_wins_and_the_file_fills_the_rest() {
        let cli = BoardConfig { host: Some("cli".into()), ..Default::default() };
        let file = BoardConfig { host: Some("file".into()), keepalive: Some(7), ..Default::default() };
        let c = cli.over(file);
        assert_eq!((c.host.as_deref(), c.keepalive), (Some("cli"), Some(7)));
    }
}
