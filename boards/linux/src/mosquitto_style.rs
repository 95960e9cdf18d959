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

/// What a `-F` specifier puts in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Topic,
    Payload,
    Length,
    Qos,
    Retained,
    UnixTime,
    IsoTime,
}

/// mosquitto_sub's specifiers (besides `%%`): the parser and its error's list both read this.
const FIELDS: [(char, Field); 7] = [
    ('t', Field::Topic),
    ('p', Field::Payload),
    ('l', Field::Length),
    ('q', Field::Qos),
    ('r', Field::Retained),
    ('U', Field::UnixTime),
    ('I', Field::IsoTime),
];

#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// mosquitto_sub's `-F` format, parsed once at start: `%t` topic, `%p` payload, `%l` payload
/// length, `%q` QoS, `%r` retained (0/1), `%U` Unix time with fraction, `%I` ISO 8601 time
/// (UTC), `%%` a percent sign; `\n`, `\t` and `\\` escapes (another backslash stays as it is).
#[derive(Debug, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    /// Refuses a `%` specifier it does not know, or a lone `%` at the end, as mosquitto_sub
    /// does at start, rather than print it as it is in every message.
    pub fn parse(fmt: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => text.push('%'),
                    Some(k) => match FIELDS.iter().find(|(c, _)| *c == k) {
                        Some(&(_, field)) => {
                            if !text.is_empty() {
                                pieces.push(Piece::Text(std::mem::take(&mut text)));
                            }
                            pieces.push(Piece::Field(field));
                        }
                        None => {
                            let known: Vec<String> = FIELDS.iter().map(|(c, _)| format!("%{c}")).collect();
                            return Err(format!("-F {fmt:?}: no format specifier %{k} (there are {} and %%)", known.join(" ")));
                        }
                    },
                    None => return Err(format!("-F {fmt:?}: ends in a lone % (write %% for a percent sign)")),
                },
                '\\' => match chars.next() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('\\') => text.push('\\'),
                    Some(other) => {
                        text.push('\\');
                        text.push(other);
                    }
                    None => text.push('\\'),
                },
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// The line for one message.
    pub fn render(&self, m: &Received<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(Field::Topic) => out.push_str(m.topic),
                Piece::Field(Field::Payload) => out.push_str(&String::from_utf8_lossy(m.payload)),
                Piece::Field(Field::Length) => out.push_str(&m.payload.len().to_string()),
                Piece::Field(Field::Qos) => out.push_str(&m.qos.to_string()),
                Piece::Field(Field::Retained) => out.push(if m.retained { '1' } else { '0' }),
                Piece::Field(Field::UnixTime) => out.push_str(&format!("{}.{:03}", m.at_ms / 1000, m.at_ms % 1000)),
                Piece::Field(Field::IsoTime) => out.push_str(&iso8601(m.at_ms)),
            }
        }
        out
    }
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
        assert!(Format::parse("%t %p %l %q %r %U %I 100%% \\n").is_ok());
        assert_eq!(Format::parse("%z").unwrap_err(), "-F \"%z\": no format specifier %z (there are %t %p %l %q %r %U %I and %%)");
        assert!(Format::parse("50%").unwrap_err().contains("lone %"));
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
        let format = |f: &str| Format::parse(f).unwrap().render(&m);
        assert_eq!(format("%t %p (%l) q%q r%r %%\\n"), "a/b hi (2) q1 r1 %\n");
        assert_eq!(format("%U"), "1700000000.123");
        assert_eq!(format("%I"), "2023-11-14T22:13:20.123Z");
        assert_eq!(format("\\a\\\\b\\tc\\"), "\\a\\b\tc\\");
    }

    #[test]
    fn protocol_versions() {
        assert_eq!((is_v5("5"), is_v5("mqttv311")), (Ok(true), Ok(false)));
        assert!(is_v5("mqttv31").is_err() && is_v5("6").is_err());
    }
}
