//! Client configuration: every mqtt_as config key, plus what a sans-IO core needs (a seed,
//! bounds on memory and backoff). [`Config::validate`] turns every bad value into an error
//! that names the key and says why.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{topic, Properties, QoS};
use crate::text;

/// TLS parameters passed through to the host's socket import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// Name checked against the server certificate (and sent as SNI).
    pub server_name: String,
    /// Host-side name of a CA bundle to trust instead of the system roots.
    pub ca_file: Option<String>,
    /// Host-side names of a client certificate and key, for mutual TLS.
    pub client_cert_file: Option<String>,
    /// See `client_cert_file`.
    pub client_key_file: Option<String>,
    /// Application protocols offered (ALPN), in preference order; empty offers none.
    pub alpn: Vec<String>,
}

/// The last will: what the broker publishes for us when we vanish without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic it is published to.
    pub topic: String,
    /// What the broker publishes.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: QoS,
    /// Published retained.
    pub retain: bool,
    /// MQTT 5 Will Delay Interval, seconds.
    pub delay_secs: Option<u32>,
    /// MQTT 5 will properties (payload format, expiry, content type, user properties …).
    pub properties: Properties,
}

/// Everything the client is told at creation; [`Config::validate`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// MQTT client id. Empty asks the broker to assign one: needs `clean_init`, and `clean`
    /// too under 3.1.1; under MQTT 5 the client reconnects with the assigned id, so
    /// `clean = false` resumes its session until the next power-up.
    pub client_id: String,
    /// Broker host name or address.
    pub server: String,
    /// `None` selects 1883, or 8883 with `ssl`.
    pub port: Option<u16>,
    /// More brokers to fail over to, tried in turn after `server` (`host` or `host:port`,
    /// the port defaulting as `port`'s does). A connection attempt that fails (refused,
    /// timed out, CONNACK refusal) moves to the next; a connection that was up is tried
    /// again on the same broker first. A broker other than the last one the client was up
    /// on gets a clean start: its session, if any, is not ours.
    pub servers: Vec<String>,
    /// User name sent in CONNECT.
    pub user: Option<String>,
    /// Password sent in CONNECT (3.1.1 requires `user` with it).
    pub password: Option<Vec<u8>>,
    /// Seconds the broker waits before it regards us as dead (0 disables).
    pub keepalive_secs: u16,
    /// 0 uses keepalive/4 (mqtt_as's default).
    pub ping_interval_secs: u16,
    /// Connect over TLS.
    pub ssl: bool,
    /// TLS settings; `None` with `ssl` verifies `server` against the host's roots.
    pub ssl_params: Option<TlsParams>,
    /// How long the broker has to answer anything (CONNACK, ping, acknowledgement) before
    /// the client acts: republishes (3.1.1) or reconnects.
    pub response_time_ms: u32,
    /// Clean session on the first connection after power-up. False without a store resumes
    /// a session whose QoS 2 packet ids the client has forgotten: a new QoS 2 message that
    /// reuses one the broker still holds is taken for a resend and lost (protocol/README.md).
    pub clean_init: bool,
    /// Clean session on reconnections (Clean Start in MQTT 5).
    pub clean: bool,
    /// MQTT 3.1.1: republications of an unacknowledged QoS 1/2 message before reconnecting.
    pub max_repubs: u32,
    /// Last will, published by the broker if we vanish without DISCONNECT.
    pub will: Option<Will>,
    /// Incoming messages held for the application (see `backpressure` for what happens
    /// when that many wait).
    pub queue_len: u32,
    /// Speak MQTT 5 instead of 3.1.1.
    pub mqttv5: bool,
    /// MQTT 5 Session Expiry Interval sent in CONNECT.
    pub session_expiry_secs: u32,
    /// Most QoS 1/2 messages we accept in flight from the broker (our Receive Maximum).
    pub receive_maximum: u16,
    /// Most QoS 1/2 publishes we keep in flight to the broker.
    pub max_inflight: u16,
    /// Most requests held: waiting to be sent or acknowledged, or answered and not yet
    /// taken by `poll`; `publish` fails with `QueueFull` past it.
    pub max_queued: u32,
    /// Largest packet accepted or sent, in bytes (MQTT 5 Maximum Packet Size).
    pub max_packet_size: u32,
    /// MQTT 5 Topic Alias Maximum we accept from the broker.
    pub topic_alias_maximum: u16,
    /// Extra MQTT 5 user properties on CONNECT.
    pub connect_user_properties: Vec<(String, String)>,
    /// WiFi network to join; `None` means the host manages the link.
    pub ssid: Option<String>,
    /// Its password.
    pub wifi_pw: Option<String>,
    /// Seed for backoff jitter: the only randomness, so a run replays.
    pub seed: u64,
    /// Shortest reconnect backoff (jittered, doubling up to `backoff_max_ms`). Also the
    /// least time between probes for a broker that does not answer, when longer than
    /// [`crate::PROBE_MS`]. The backoff starts over once a connection proves itself: the
    /// broker acknowledges something on it, or it lasts `response_time_ms`. One the broker
    /// ends sooner (a 3.1.1 broker dropping the client for a publish over its size limit, on
    /// every reconnect) counts as a failed attempt.
    pub backoff_min_ms: u32,
    /// Longest reconnect backoff after a broker answered and refused. A broker that does not
    /// answer (silence, nothing listening) is probed every [`crate::PROBE_MS`] instead, for
    /// [`crate::FAST_PROBES`] attempts in a row.
    pub backoff_max_ms: u32,
    /// Re-send subscriptions after a reconnect that did not resume the session.
    pub resubscribe: bool,
    /// On (the default): when `queue_len` messages wait for the application, stop reading
    /// from the broker (TCP then holds the rest back), so every message the client
    /// acknowledged reaches the application. Off: mqtt_as's policy, discard the oldest
    /// waiting message and count it in `Stats::discards`. That keeps the newest (a sensor
    /// reading supersedes the last) and never slows the broker, but loses QoS 1/2 messages
    /// the broker has already been told were received, whenever the application falls
    /// `queue_len` messages behind.
    pub backpressure: bool,
    /// MQTT 5 enhanced authentication (spec 4.12): the method named in CONNECT, and its
    /// initial data. The broker's challenges arrive as [`crate::Event::Auth`]; answer them
    /// with [`crate::Client::authenticate`].
    pub auth_method: Option<String>,
    /// See `auth_method`.
    pub auth_data: Option<Vec<u8>>,
    /// Test-only: the deliberate fault a `test-faults` build shows (see [`crate::TestFault`]).
    /// Only in that build: the shipped one carries no trace of it.
    #[cfg(feature = "test-faults")]
    pub test_fault: Option<crate::TestFault>,
}

impl Default for Config {
    /// mqtt_as's defaults where it has them, except `backpressure`: mqtt_as discards the
    /// oldest message when its queue is full; here that is an explicit opt-in.
    fn default() -> Self {
        Config {
            client_id: String::new(),
            server: String::new(),
            port: None,
            servers: Vec::new(),
            user: None,
            password: None,
            keepalive_secs: 60,
            ping_interval_secs: 0,
            ssl: false,
            ssl_params: None,
            response_time_ms: 10_000,
            clean_init: true,
            clean: true,
            max_repubs: 4,
            will: None,
            queue_len: 64,
            mqttv5: false,
            session_expiry_secs: 0,
            receive_maximum: 64,
            max_inflight: 16,
            max_queued: 1024,
            max_packet_size: 256 * 1024,
            topic_alias_maximum: 16,
            connect_user_properties: Vec::new(),
            ssid: None,
            wifi_pw: None,
            seed: 0,
            backoff_min_ms: 250,
            // mqtt_as retries about once a second; 5 s caps what an outage the client cannot
            // see end (a silent link, a dead broker) adds to recovery, while jitter still
            // spreads a fleet's reconnects.
            backoff_max_ms: 5_000,
            resubscribe: true,
            // No acknowledged message may be lost with the defaults (see the field).
            backpressure: true,
            auth_method: None,
            auth_data: None,
            #[cfg(feature = "test-faults")]
            test_fault: None,
        }
    }
}

/// The config keys that the WIT `config` record, [`Config`] and every host's settings files
/// share under one name and one type: the one list a new plain key joins (besides the WIT
/// record and [`Config`] itself). The record's two structured fields, `ssl-params` and `will`,
/// are converted by hand.
///
/// It calls back `$callback!` with `[$extra]` and then every key as
/// `#[attributes] name: Type,`: the guest's WIT conversion and `mqtt-host`'s `default_config`
/// copy each key across, and `mqtt-host`'s settings schema (the scenario `[device]` table, the
/// board's `--config` file) declares each as an optional field. The `serde` attributes are for
/// that schema: the names people write (`keepalive_s`) and the other names they may use
/// (`keepalive`, `keepalive_secs`). A key with no attribute is written as it is named here.
/// This crate does not use serde; the attributes are only tokens until a host expands them.
#[macro_export]
macro_rules! with_config_keys {
    ($callback:ident; $($extra:tt)*) => {
        $callback! {
            [$($extra)*]
            /// MQTT client id. Empty asks the broker to assign one (needs clean sessions).
            #[serde(alias = "id")]
            client_id: String,
            /// Broker host name or address.
            #[serde(alias = "host")]
            server: String,
            /// Broker port; unset: 1883, or 8883 with `ssl`.
            port: Option<u16>,
            /// More brokers to fail over to, in order: `host` or `host:port`.
            servers: Vec<String>,
            /// User name sent in CONNECT.
            user: Option<String>,
            /// Password sent in CONNECT.
            password: Option<Vec<u8>>,
            /// Seconds the broker waits before it regards the client as dead (0 disables).
            #[serde(rename = "keepalive_s", alias = "keepalive", alias = "keepalive_secs")]
            keepalive_secs: u16,
            /// Seconds between pings when idle; 0 uses keepalive/4.
            #[serde(rename = "ping_interval_s", alias = "ping_interval_secs")]
            ping_interval_secs: u16,
            /// Connect over TLS.
            #[serde(alias = "tls")]
            ssl: bool,
            /// How long the broker has to answer before the client acts.
            response_time_ms: u32,
            /// Clean session on the first connection after power-up.
            clean_init: bool,
            /// Clean session on reconnections.
            clean: bool,
            /// MQTT 3.1.1: republications of an unacknowledged message before reconnecting.
            max_repubs: u32,
            /// Incoming messages held for the application.
            queue_len: u32,
            /// Speak MQTT 5.
            #[serde(alias = "v5")]
            mqttv5: bool,
            /// MQTT 5 Session Expiry Interval, seconds (needs `mqttv5`).
            #[serde(rename = "session_expiry_s", alias = "session_expiry_secs")]
            session_expiry_secs: u32,
            /// Most QoS 1/2 messages accepted in flight from the broker.
            receive_maximum: u16,
            /// Most QoS 1/2 publishes kept in flight to the broker.
            max_inflight: u16,
            /// Most publishes waiting to be sent or acknowledged.
            max_queued: u32,
            /// Largest packet accepted or sent, in bytes.
            max_packet_size: u32,
            /// MQTT 5 Topic Alias Maximum accepted from the broker.
            topic_alias_maximum: u16,
            /// Extra MQTT 5 user properties on CONNECT, as `[name, value]` pairs.
            connect_user_properties: Vec<(String, String)>,
            /// WiFi network to join; unset: the host manages the link.
            ssid: Option<String>,
            /// Its password.
            wifi_pw: Option<String>,
            /// Seed for backoff jitter: the only randomness.
            seed: u64,
            /// Shortest reconnect backoff.
            backoff_min_ms: u32,
            /// Longest reconnect backoff.
            backoff_max_ms: u32,
            /// Re-send subscriptions after a reconnect that did not resume the session.
            resubscribe: bool,
            /// Stop reading from the broker while `queue_len` messages wait (no loss); false:
            /// discard the oldest (loses acknowledged QoS 1/2 messages).
            backpressure: bool,
            /// MQTT 5 enhanced authentication method named in CONNECT.
            auth_method: Option<String>,
            /// Its initial data.
            auth_data: Option<Vec<u8>>,
        }
    };
}

/// A config value that cannot work, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config key at fault.
    pub key: &'static str,
    /// Why its value cannot work.
    pub why: String,
}

impl ConfigError {
    /// "config key `KEY`: WHY".
    pub fn message(&self) -> String {
        text!("config key `", self.key, "`: ", self.why)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl core::error::Error for ConfigError {}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; `None` for a port that
/// is not a number up to 65535. Byte by byte, on purpose: `str::parse` and pattern searches
/// cost about 1 KiB of component code for what is a few comparisons here.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let b = s.as_bytes();
    let colons = b.iter().filter(|c| **c == b':').count();
    let (host, rest) = if b.first() == Some(&b'[') {
        let close = b.iter().position(|c| *c == b']')?;
        (s.get(1..close)?, s.get(close + 1..)?)
    } else if colons > 1 {
        return Some((s, None));
    } else {
        match b.iter().position(|c| *c == b':') {
            Some(i) => (s.get(..i)?, s.get(i..)?),
            None => (s, ""),
        }
    };
    let Some(digits) = rest.strip_prefix(':') else { return rest.is_empty().then_some((host, None)) };
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut port = 0u32;
    for d in digits.bytes() {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
    }
    Some((host, Some(u16::try_from(port).ok()?)))
}

fn err(key: &'static str, why: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError { key, why: why.into() })
}

/// Whether a publish of this topic and payload fits a client's `max_packet_size`, with 16
/// bytes for the header, packet id and lengths: the client refuses one that does not
/// ([`crate::ApiError::Invalid`]), since it holds every publish until it completes. A host
/// can check up front with this.
#[inline]
pub fn publish_fits(max_packet_size: u32, topic: &str, payload_len: usize) -> bool {
    payload_len as u64 + topic.len() as u64 + 16 <= u64::from(max_packet_size)
}

impl Config {
    /// The broker port: `port`, or the standard one for the transport.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(Self::default_port(self.ssl))
    }

    /// 8883 with TLS, 1883 without (the IANA ports for MQTT).
    pub const fn default_port(ssl: bool) -> u16 {
        if ssl {
            8883
        } else {
            1883
        }
    }

    /// Broker `index` (0: `server`, then `servers` in order): host and port.
    pub fn broker(&self, index: usize) -> (String, u16) {
        match index.checked_sub(1).and_then(|i| self.servers.get(i)).and_then(|s| split_host_port(s)) {
            Some((host, port)) => (host.into(), port.unwrap_or(self.port())),
            None => (self.server.clone(), self.port()),
        }
    }

    /// How many brokers there are to try.
    pub fn brokers(&self) -> usize {
        1 + self.servers.len()
    }

    /// Milliseconds between pings when nothing else is exchanged; `None` disables pings.
    pub fn ping_interval_ms(&self, keepalive_secs: u16) -> Option<u64> {
        let default = u64::from(keepalive_secs) * 1000 / 4;
        let explicit = u64::from(self.ping_interval_secs) * 1000;
        match (default, explicit) {
            (0, 0) => None,
            (0, e) => Some(e),
            (d, 0) => Some(d),
            (d, e) => Some(d.min(e)),
        }
    }

    /// Every value that cannot work, as an error naming the key and why (the first found).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.is_empty() {
            return err("server", "is required (broker host name or address)");
        }
        if self.port == Some(0) {
            return err("port", "0 is not a port; leave it unset for 1883 (8883 with ssl)");
        }
        for s in &self.servers {
            if split_host_port(s).is_none_or(|(host, port)| host.is_empty() || port == Some(0)) {
                return err("servers", text!("`", s, "` is not `host` or `host:port` (port 1..=65535)"));
            }
        }
        if self.client_id.len() > u16::MAX as usize {
            return err("client_id", "longer than 65535 bytes");
        }
        // An empty id gets one assigned by the broker. Under MQTT 5 the client keeps it for
        // its reconnects, so `clean = false` resumes the session until the next power-up (the
        // id lives in RAM, so that connection must start clean). 3.1.1 servers refuse an
        // empty id with a persistent session (MQTT-3.1.3-8) and assign none to keep.
        if self.client_id.is_empty() && !(self.clean_init && (self.clean || self.mqttv5)) {
            return err(
                "client_id",
                "is empty, which needs clean_init (and clean, under MQTT 3.1.1): a session that outlives a power-up needs a stable client id",
            );
        }
        if self.keepalive_secs == 1 {
            return err("keepalive_secs", "1 s is out of range: use 0 (off) or at least 2 s");
        }
        if self.response_time_ms < 100 || self.response_time_ms > 600_000 {
            return err("response_time_ms", text!(self.response_time_ms, " is out of range 100..=600000"));
        }
        if self.keepalive_secs > 0 && u64::from(self.response_time_ms) >= u64::from(self.keepalive_secs) * 1000 {
            return err(
                "keepalive_secs",
                text!(
                    self.keepalive_secs,
                    " s is out of range: it must be longer than response_time_ms (",
                    self.response_time_ms,
                    " ms) so a dead broker is noticed before the keepalive runs out"
                ),
            );
        }
        if self.password.is_some() && self.user.is_none() && !self.mqttv5 {
            return err("password", "is set without `user` (MQTT 3.1.1 spec 3.1.2.9)");
        }
        if let Some(u) = &self.user
            && u.len() > u16::MAX as usize
        {
            return err("user", "longer than 65535 bytes");
        }
        if self.password.as_ref().is_some_and(|p| p.len() > u16::MAX as usize) {
            return err("password", "longer than 65535 bytes");
        }
        if self.ssl && self.ssl_params.as_ref().is_some_and(|p| p.server_name.is_empty()) {
            return err("ssl_params.server_name", "is empty");
        }
        if self.queue_len == 0 || self.queue_len > 65_535 {
            return err("queue_len", text!(self.queue_len, " is out of range 1..=65535"));
        }
        if self.receive_maximum == 0 {
            return err("receive_maximum", "must be at least 1");
        }
        if self.max_inflight == 0 {
            return err("max_inflight", "must be at least 1");
        }
        if self.max_queued < u32::from(self.max_inflight) {
            return err("max_queued", text!(self.max_queued, " is smaller than max_inflight (", self.max_inflight, ")"));
        }
        if self.max_packet_size < 128 || self.max_packet_size > crate::codec::MAX_REMAINING_LENGTH + 5 {
            return err("max_packet_size", text!(self.max_packet_size, " is out of range 128..=268435460"));
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return err("backoff_min_ms", text!(self.backoff_min_ms, " must be at least 1 and at most backoff_max_ms (", self.backoff_max_ms, ")"));
        }
        // MQTT 3.1.1 has no expiry (a persistent session lasts until the broker drops it), so
        // an expiry set there would be silently ignored.
        if self.session_expiry_secs > 0 && !self.mqttv5 {
            return err("session_expiry_secs", "needs mqttv5");
        }
        if self.wifi_pw.is_some() && self.ssid.is_none() {
            return err("wifi_pw", "is set without `ssid`");
        }
        if let Some(w) = &self.will {
            if let Err(e) = topic::validate_topic_name(&w.topic) {
                return err("will.topic", e.message());
            }
            if w.payload.len() > u16::MAX as usize {
                return err("will.payload", "longer than 65535 bytes");
            }
            if w.delay_secs.is_some() && !self.mqttv5 {
                return err("will.delay_secs", "needs mqttv5");
            }
        }
        if (self.auth_method.is_some() || self.auth_data.is_some()) && !self.mqttv5 {
            return err("auth_method", "enhanced authentication needs mqttv5");
        }
        if self.auth_data.is_some() && self.auth_method.is_none() {
            return err("auth_data", "is set without `auth_method`");
        }
        if self.auth_method.as_ref().is_some_and(|m| m.is_empty() || m.len() > usize::from(u16::MAX)) {
            return err("auth_method", "must be 1 to 65535 bytes");
        }
        if self.auth_data.as_ref().is_some_and(|d| d.len() > usize::from(u16::MAX)) {
            return err("auth_data", "longer than 65535 bytes");
        }
        for (k, v) in &self.connect_user_properties {
            if k.len() > u16::MAX as usize || v.len() > u16::MAX as usize {
                return err("connect_user_properties", "a name or value is longer than 65535 bytes");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn failover_brokers_are_host_or_host_port() {
        let cfg = Config { server: "a".into(), servers: alloc::vec!["b".into(), "c:1884".into(), "[::1]:8000".into(), "::2".into()], ..Config::default() };
        assert!(cfg.validate().is_ok());
        let all: alloc::vec::Vec<_> = (0..cfg.brokers()).map(|i| cfg.broker(i)).collect();
        assert_eq!(all, [("a".into(), 1883), ("b".into(), 1883), ("c".into(), 1884), ("::1".into(), 8000), ("::2".into(), 1883)]);
        for bad in ["", ":1883", "c:x", "c:0", "c:70000", "c:", "[::1]x", "[::1"] {
            let cfg = Config { server: "a".into(), servers: alloc::vec![bad.into()], ..Config::default() };
            assert_eq!(cfg.validate().unwrap_err().key, "servers", "{bad:?}");
        }
    }

    fn good() -> Config {
        Config { client_id: "dev".into(), server: "broker".into(), ..Config::default() }
    }

    #[test]
    fn default_config_with_server_and_id_is_valid() {
        assert_eq!(good().validate(), Ok(()));
    }

    #[test]
    fn empty_client_id_with_unclean_session_is_rejected_naming_the_key() {
        let c = Config { client_id: String::new(), clean: false, ..good() };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "client_id");
        // MQTT 5 keeps the assigned id across reconnects, not across a power-up.
        assert_eq!(Config { mqttv5: true, ..c.clone() }.validate(), Ok(()));
        assert_eq!(Config { mqttv5: true, clean_init: false, ..c }.validate().unwrap_err().key, "client_id");
    }

    #[test]
    fn port_zero_is_rejected_and_unset_port_defaults_by_ssl() {
        assert_eq!(Config { port: Some(0), ..good() }.validate().unwrap_err().key, "port");
        assert_eq!(good().port(), 1883);
        assert_eq!(Config { ssl: true, ..good() }.port(), 8883);
    }

    #[test]
    fn keepalive_shorter_than_response_time_is_out_of_range() {
        let e = Config { keepalive_secs: 5, ..good() }.validate().unwrap_err();
        assert_eq!(e.key, "keepalive_secs");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert_eq!(Config { keepalive_secs: 1, ..good() }.validate().unwrap_err().key, "keepalive_secs");
        assert_eq!(Config { keepalive_secs: 0, ..good() }.validate(), Ok(()));
    }

    /// MQTT 5-only settings under 3.1.1 would be ignored without a word: refused instead.
    #[test]
    fn settings_only_mqtt5_has_are_refused_under_3_1_1_naming_the_key() {
        let expiry = Config { session_expiry_secs: 3600, ..good() };
        assert_eq!(expiry.validate().unwrap_err().message(), "config key `session_expiry_secs`: needs mqttv5");
        assert_eq!(Config { mqttv5: true, ..expiry }.validate(), Ok(()));
        let will = Will {
            topic: "w".into(),
            payload: alloc::vec![],
            qos: crate::QoS::AtLeastOnce,
            retain: false,
            delay_secs: Some(5),
            properties: Default::default(),
        };
        assert_eq!(Config { will: Some(will), ..good() }.validate().unwrap_err().key, "will.delay_secs");
        assert_eq!(Config { auth_method: Some("SCRAM".into()), ..good() }.validate().unwrap_err().key, "auth_method");
    }

    #[test]
    fn ping_interval_is_keepalive_quarter_unless_smaller_given() {
        let c = good();
        assert_eq!(c.ping_interval_ms(60), Some(15_000));
        assert_eq!(Config { ping_interval_secs: 5, ..good() }.ping_interval_ms(60), Some(5_000));
        assert_eq!(c.ping_interval_ms(0), None);
    }
}
