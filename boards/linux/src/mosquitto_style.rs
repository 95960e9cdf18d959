//! What `mqtt-board pub`/`sub` take from mosquitto_pub/mosquitto_sub where the flags mean the
//! same: the `-L` URL, `-V` protocol names, `-F` output formats.

/// The parts of `-L mqtt(s)://[user[:password]@]host[:port]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub topic: String,
}

/// Parses a `-L` URL as mosquitto does: scheme `mqtt` or `mqtts`, a topic after the first
/// `/` (required).
pub fn parse_url(s: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("-L {s:?}: {why} (expected mqtt(s)://[user[:password]@]host[:port]/topic)");
    let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let tls = match scheme {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err(bad("the scheme must be mqtt or mqtts")),
    };
    let (authority, topic) = rest.split_once('/').ok_or_else(|| bad("no topic"))?;
    if topic.is_empty() {
        return Err(bad("no topic"));
    }
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (user, password) = match credentials {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(c.to_string()), None),
        },
        None => (None, None),
    };
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("the port is not a number"));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
        (h, rest.strip_prefix(':').map(port).transpose()?)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Url { tls, user, password, host: host.to_string(), port, topic: topic.to_string() })
}

/// `-V`: true for MQTT 5. mosquitto's names (`mqttv5`, `mqttv311`) and numbers (`5`, `311`).
pub fn is_v5(version: &str) -> Result<bool, String> {
    match version {
        "5" | "mqttv5" => Ok(true),
        "311" | "mqttv311" => Ok(false),
        "31" | "mqttv31" => Err("-V mqttv31: MQTT 3.1 is not supported (3.1.1 and 5 are)".into()),
        other => Err(format!("-V {other:?}: expected 5, mqttv5, 311 or mqttv311")),
    }
}

/// One received message, for `-F`.
pub struct Received<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retained: bool,
    /// Wall-clock milliseconds since the Unix epoch when it arrived.
    pub at_ms: u128,
}

/// Refuses a `-F` format with a `%` specifier that [`format()`] does not render (`KNOWN`),
/// as mosquitto_sub does at start, rather than print it as it is in every message.
pub fn check_format(fmt: &str) -> Result<(), String> {
    const KNOWN: &str = "tplqrUI%";
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(k) if KNOWN.contains(k) => {}
                Some(other) => return Err(format!("-F {fmt:?}: no format specifier %{other} (there are %t %p %l %q %r %U %I and %%)")),
                None => return Err(format!("-F {fmt:?}: ends in a lone % (write %% for a percent sign)")),
            }
        }
    }
    Ok(())
}

/// Renders mosquitto_sub's `-F` format: `%t` topic, `%p` payload, `%l` payload length,
/// `%q` QoS, `%r` retained (0/1), `%U` Unix time with fraction, `%I` ISO 8601 time (UTC),
/// `%%` a percent sign; `\n`, `\t` and `\\` escapes.
pub fn format(fmt: &str, m: &Received<'_>) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(m.topic),
                Some('p') => out.push_str(&String::from_utf8_lossy(m.payload)),
                Some('l') => out.push_str(&m.payload.len().to_string()),
                Some('q') => out.push_str(&m.qos.to_string()),
                Some('r') => out.push(if m.retained { '1' } else { '0' }),
                Some('U') => out.push_str(&format!("{}.{:03}", m.at_ms / 1000, m.at_ms % 1000)),
                Some('I') => out.push_str(&iso8601(m.at_ms)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-29T23:30:31.123Z` for Unix milliseconds: humantime formats exactly this (RFC 3339
/// in UTC with milliseconds).
pub fn iso8601(unix_ms: u128) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_with_an_unknown_specifier_is_refused() {
        assert_eq!(check_format("%t %p %l %q %r %U %I 100%% \\n"), Ok(()));
        assert_eq!(check_format("%z").unwrap_err(), "-F \"%z\": no format specifier %z (there are %t %p %l %q %r %U %I and %%)");
        assert!(check_format("50%").unwrap_err().contains("lone %"));
    }

    #[test]
    fn urls_as_mosquitto_takes_them() {
        let u = parse_url("mqtts://ann:s3cret@broker.example:8883/sensors/1").unwrap();
        assert_eq!(
            u,
            Url {
                tls: true,
                user: Some("ann".into()),
                password: Some("s3cret".into()),
                host: "broker.example".into(),
                port: Some(8883),
                topic: "sensors/1".into()
            }
        );
        let plain = parse_url("mqtt://127.0.0.1/a/b").unwrap();
        assert_eq!((plain.tls, plain.port, plain.topic.as_str(), plain.user), (false, None, "a/b", None));
        assert!(parse_url("http://h/t").unwrap_err().contains("scheme"));
        assert!(parse_url("mqtt://h").unwrap_err().contains("no topic"));
        assert!(parse_url("mqtt://h:port/t").unwrap_err().contains("port"));
        let v6 = parse_url("mqtt://[::1]:1884/t").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(1884)));
    }

    #[test]
    fn formats_as_mosquitto_sub_f() {
        let m = Received { topic: "a/b", payload: b"hi", qos: 1, retained: true, at_ms: 1_700_000_000_123 };
        assert_eq!(format("%t %p (%l) q%q r%r %%\\n", &m), "a/b hi (2) q1 r1 %\n");
        assert_eq!(format("%U", &m), "1700000000.123");
        assert_eq!(format("%I", &m), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn protocol_versions() {
        assert_eq!((is_v5("5"), is_v5("mqttv311")), (Ok(true), Ok(false)));
        assert!(is_v5("mqttv31").is_err() && is_v5("6").is_err());
    }
}
