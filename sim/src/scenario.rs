//! Scenario files: what to simulate, what goes wrong when, and what must still hold.
//! The schema is documented with an example per fault in `scenarios/README.md`.

use std::path::Path;

pub use mqtt_broker_model::AckKind;
use serde::{Deserialize, Serialize};

/// A scenario file that could not be used; the text names the line, the key and what was
/// expected (from toml's spans and serde's messages).
#[derive(Debug)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

/// A check serde cannot express failed: the key path at fault (`fault[2].at_s`, for
/// [`mqtt_host::source_position::locate`] to find its line) and why, naming it.
struct Invalid {
    at: String,
    why: String,
}

fn invalid(at: impl Into<String>, why: String) -> Result<(), Invalid> {
    Err(Invalid { at: at.into(), why })
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What real-world situation this replays (shown in reports).
    #[serde(default)]
    pub description: String,
    /// Seeds `cargo test` runs; `mqtt-sim run` uses the first unless `--seed` is given.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Simulated time the workload and faults span.
    pub duration_s: f64,
    /// Extra simulated time after `duration_s` for the client to drain.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Simulation step; also the network's time resolution.
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    #[serde(default)]
    pub network: Network,
    /// How many devices run the same config and workload (a fleet behind one access point:
    /// link faults hit all of them). `{device}` in topics and filters becomes the index, and
    /// client ids get `-<index>` when there is more than one.
    #[serde(default = "one_device")]
    pub devices: u32,
    /// Devices sharing one simulated network host (default 1). Every fault already hits the
    /// whole fleet, so this changes no outcome's meaning; it is what makes large fleets
    /// affordable: turmoil links every pair of hosts and walks all links for every host at
    /// every step, so a step costs about hosts³.
    #[serde(default = "one_device")]
    pub devices_per_host: u32,
    #[serde(default)]
    pub device: DeviceSpec,
    #[serde(default)]
    pub broker: BrokerSpec,
    /// How many brokers (default 1), each on its own host with an observer: `broker`, then
    /// `broker-2`, `broker-3` … (name them in the device's `servers` to fail over), all with
    /// the `[broker]` settings; injected traffic comes from the first. `broker_down` and
    /// `broker_restart` take `broker = N` (1-based); the other broker faults hit the first.
    #[serde(default = "one_device")]
    pub brokers: u32,
    /// Device → broker publishes.
    #[serde(default)]
    pub workload: Vec<Workload>,
    /// Broker-side publishes to the device (as if from another client).
    #[serde(default)]
    pub inject: Vec<Inject>,
    /// Topic filters the in-broker observer records (default: everything).
    #[serde(default = "default_observe")]
    pub observe: Vec<String>,
    #[serde(default)]
    pub fault: Vec<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
    #[serde(default)]
    pub expect: Expect,
}

fn one_device() -> u32 {
    1
}

fn default_seeds() -> Vec<u64> {
    (1..=5).collect()
}
fn default_drain() -> f64 {
    120.0
}
fn default_tick() -> u64 {
    5
}
fn default_observe() -> Vec<String> {
    vec!["#".into()]
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One-way latency between device and broker.
    #[serde(default = "default_latency")]
    pub latency_ms: u64,
    /// Extra random latency per message (seeded).
    #[serde(default)]
    pub jitter_ms: u64,
}

fn default_latency() -> u64 {
    5
}

impl Default for Network {
    fn default() -> Self {
        Network { latency_ms: default_latency(), jitter_ms: 0 }
    }
}

use mqtt_host::settings_struct;

mqtt_host::with_config_keys!(settings_struct;
    /// The device's client config: every key of the component's config record (the one
    /// settings schema, `mqtt_host::settings`), unset keys taking the client's defaults, and
    /// what the simulated application does.
    pub struct DeviceSpec {
        /// A slow application: it takes the messages waiting for it only this often (unset:
        /// whenever the client has any).
        #[serde(default)]
        pub app_take_every_ms: Option<u64>,
        /// MQTT 5 enhanced authentication: the secret the application answers the broker's
        /// challenges with (the method is `auth_method`).
        #[serde(default)]
        pub auth_secret: Option<String>,
        /// Subscriptions made at start-up.
        #[serde(default)]
        pub subscribe: Vec<SubSpec>,
        /// Flash for the power-cut store (unset: none, and a power cycle loses what the
        /// broker had not acknowledged). Kept across power cycles; torn by `power_cut`.
        #[serde(default)]
        pub store: Option<StoreSpec>,
    }
);

/// A device's flash: `capacity_kib` in sectors of `sector_kib`, written `write_bytes` at a
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    pub capacity_kib: u32,
    #[serde(default = "four")]
    pub sector_kib: u32,
    #[serde(default = "four")]
    pub write_bytes: u32,
}

fn four() -> u32 {
    4
}

impl StoreSpec {
    pub fn geometry(&self) -> mqtt_host::Geometry {
        mqtt_host::Geometry { capacity: self.capacity_kib * 1024, sector_size: self.sector_kib * 1024, write_size: self.write_bytes }
    }

    fn validate(&self) -> Result<(), Invalid> {
        // The simulator's own bound (the flash lives in memory), which also keeps the sizes
        // in bytes inside a u32.
        if self.capacity_kib > 16 * 1024 || self.sector_kib > self.capacity_kib {
            let why = format!("device.store: capacity_kib = {} must be at most 16384, and sector_kib = {} at most that", self.capacity_kib, self.sector_kib);
            return invalid("device.store.capacity_kib", why);
        }
        // The rules the store applies to any flash, from the function `Store::open` runs,
        // so a scenario cannot get past what a board could not.
        self.geometry().check().or_else(|e| {
            // The line to point at: the key the store's text is about (its text names sizes
            // in bytes, the file has KiB; both are shown).
            let key = match () {
                _ if e.contains("sector size") => "sector_kib",
                _ if e.contains("write size") => "write_bytes",
                _ => "capacity_kib",
            };
            let given = format!("capacity_kib = {}, sector_kib = {}, write_bytes = {}", self.capacity_kib, self.sector_kib, self.write_bytes);
            invalid(format!("device.store.{key}"), format!("device.store: {e} ({given})"))
        })
    }
}

/// Which flash operation a `power_cut` falls inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutDuring {
    /// One of the next few operations, drawn from the seed.
    #[default]
    Any,
    /// A write: a seeded prefix of its bytes reaches the cells.
    Write,
    /// An erase: the sector is left half-erased.
    Erase,
    /// A sync: nothing written since the last one survives.
    Sync,
}

impl CutDuring {
    pub fn name(self) -> &'static str {
        match self {
            CutDuring::Any => "any",
            CutDuring::Write => "write",
            CutDuring::Erase => "erase",
            CutDuring::Sync => "sync",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubSpec {
    pub filter: String,
    #[serde(default = "one")]
    pub qos: u8,
    /// MQTT 5 No Local: the broker never sends the device its own messages on this filter.
    #[serde(default)]
    pub no_local: bool,
    /// MQTT 5 Retain As Published: messages keep the retain flag their publisher set.
    #[serde(default)]
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling: 0 the retained messages on subscribe, 1 only for a new
    /// subscription, 2 none.
    #[serde(default)]
    pub retain_handling: u8,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// Keep sessions across a broker restart unless the fault says otherwise.
    #[serde(default = "yes")]
    pub persist_sessions: bool,
    /// Receive Maximum the broker announces (MQTT 5) and its QoS 1/2 window to each client.
    #[serde(default = "default_broker_window")]
    pub receive_maximum: u16,
    /// Topic Alias Maximum the broker announces (MQTT 5).
    #[serde(default)]
    pub topic_alias_maximum: u16,
    /// Maximum Packet Size the broker announces (MQTT 5); a larger packet from a client is a
    /// protocol violation. Unset: nothing announced, up to 1 MiB accepted.
    #[serde(default)]
    pub maximum_packet_size: Option<u32>,
    /// Server Keep Alive the broker announces (MQTT 5) and enforces instead of the client's.
    #[serde(default)]
    pub server_keep_alive: Option<u16>,
    /// Messages queued per offline session before the broker drops the oldest (Mosquitto's
    /// `max_queued_messages`).
    #[serde(default = "default_max_queued")]
    pub max_queued_messages: usize,
    /// MQTT 5 enhanced authentication the broker demands: a CONNECT must name this method,
    /// and answer the broker's challenge with it and `auth_secret` (see `mqtt_broker_model::auth_answer`).
    #[serde(default)]
    pub auth_method: Option<String>,
    #[serde(default)]
    pub auth_secret: Option<String>,
    /// Topic filters the broker's access control denies (a Mosquitto ACL): publishes to
    /// them go nowhere (MQTT 5: PUBACK/PUBREC 0x87), subscriptions to them are refused in
    /// the SUBACK (0x87; 0x80 under 3.1.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_broker_window() -> u16 {
    20
}
fn default_max_queued() -> usize {
    1000
}

impl Default for BrokerSpec {
    fn default() -> Self {
        BrokerSpec {
            persist_sessions: true,
            receive_maximum: default_broker_window(),
            topic_alias_maximum: 0,
            maximum_packet_size: None,
            server_keep_alive: None,
            max_queued_messages: default_max_queued(),
            auth_method: None,
            auth_secret: None,
            deny: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub topic: String,
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub start_s: f64,
    pub every_ms: u64,
    pub count: u64,
    #[serde(default = "default_payload")]
    pub payload_bytes: usize,
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5 Message Expiry Interval.
    pub message_expiry_s: Option<u32>,
    /// How long each publish may wait unsent before it fails (reported to the application,
    /// so not counted as lost).
    pub deadline_ms: Option<u64>,
}

impl Workload {
    /// When its stream has run its course (`count` periods after `start_s`).
    pub fn end_s(&self) -> f64 {
        self.start_s + (self.count * self.every_ms) as f64 / 1000.0
    }

    /// When each of its publishes is made, in seconds, in order.
    pub fn times(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.count).map(|k| self.start_s + (k * self.every_ms) as f64 / 1000.0)
    }
}

fn default_payload() -> usize {
    32
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    pub topic: String,
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub start_s: f64,
    pub every_ms: u64,
    pub count: u64,
    #[serde(default)]
    pub retain: bool,
    pub message_expiry_s: Option<u32>,
}

impl Inject {
    /// When its stream has run its course (`count` periods after `start_s`).
    pub fn end_s(&self) -> f64 {
        self.start_s + (self.count * self.every_ms) as f64 / 1000.0
    }
}

/// One fault on the timeline. `at_s` is simulated seconds from the start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// WiFi drops: the link reports down and segments are held, as TCP retransmission
    /// would hold them; they flow again when the link returns.
    LinkDown { at_s: f64, for_s: f64 },
    /// `count` drops of `down_s`, separated by `up_s`.
    LinkFlap { at_s: f64, count: u32, down_s: f64, up_s: f64 },
    /// Associated but silent (the edge of range): segments held, WiFi still reports up.
    SilentLink { at_s: f64, for_s: f64 },
    /// Latency (and jitter) change for a while.
    Latency {
        at_s: f64,
        for_s: f64,
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// The broker process restarts; sessions survive if `persist`.
    BrokerRestart {
        at_s: f64,
        down_s: f64,
        #[serde(default = "yes")]
        persist: bool,
        /// Which broker (1-based), when the scenario has several.
        #[serde(default = "one_u32")]
        broker: u32,
    },
    /// Nothing listens on the broker port (connections refused).
    BrokerDown {
        at_s: f64,
        for_s: f64,
        /// Which broker (1-based), when the scenario has several.
        #[serde(default = "one_u32")]
        broker: u32,
    },
    /// The broker silently drops its next `count` packets of one kind.
    DropAcks {
        at_s: f64,
        packet: AckKind,
        #[serde(default = "one_u32")]
        count: u32,
    },
    /// The broker sends its next `count` packets of one kind `ms` late (CONNACK: the broker
    /// is slow to accept, everything after it waits too).
    DelayAcks {
        at_s: f64,
        packet: AckKind,
        #[serde(default = "one_u32")]
        count: u32,
        ms: u64,
    },
    /// The broker answers CONNECT with this return/reason code for a while.
    Refuse { at_s: f64, for_s: f64, code: u8 },
    /// The broker stops answering PINGREQ for a while.
    StopPings { at_s: f64, for_s: f64 },
    /// The broker crashes without FIN while partitioned: the device's TCP never learns.
    HalfOpen { at_s: f64, for_s: f64 },
    /// The device loses power: its RAM state is gone; it boots again after `off_s`.
    PowerCycle { at_s: f64, off_s: f64 },
    /// The power fails inside a flash operation (the next matching one after `at_s`, or at
    /// `at_s + within_s` if none comes): the flash keeps what a chip would, the device is
    /// off until `off_s` after that. Needs `device.store`.
    PowerCut {
        at_s: f64,
        off_s: f64,
        #[serde(default)]
        during: CutDuring,
        #[serde(default = "default_within")]
        within_s: f64,
    },
    /// Name resolution fails for a while.
    DnsFailure { at_s: f64, for_s: f64 },
    /// MQTT 5: the broker sends DISCONNECT with `reason` and closes.
    ServerDisconnect { at_s: f64, reason: u8 },
    /// The application calls `disconnect()` (the will must not fire).
    Disconnect { at_s: f64 },
    /// The WiFi access point changes (roaming): a short gap with the link down.
    Roam { at_s: f64, gap_ms: u64 },
    /// The application subscribes (possibly during an outage).
    Subscribe {
        at_s: f64,
        filter: String,
        #[serde(default = "one")]
        qos: u8,
    },
    /// The application unsubscribes (possibly during an outage).
    Unsubscribe { at_s: f64, filter: String },
    /// The application cancels every publish on `topic` whose token has not completed.
    Cancel { at_s: f64, topic: String },
    /// The observer (the other subscriber) disconnects cleanly and comes back after `for_s`;
    /// its session stays, so the broker queues for it, and expires what outlives its
    /// Message Expiry Interval meanwhile.
    ObserverAway { at_s: f64, for_s: f64 },
    /// The component fails (a trap: its next call runs out of fuel) and the host's watchdog
    /// replaces the instance, handing the fresh one what the application asked for and the
    /// old one had not completed.
    GuestTrap { at_s: f64 },
}

fn one_u32() -> u32 {
    1
}

fn default_within() -> f64 {
    2.0
}

/// Random link drops drawn from the seed (FoundationDB-style chaos).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    pub link_drops: u32,
    #[serde(default = "default_chaos_max")]
    pub max_down_s: f64,
    #[serde(default)]
    pub broker_restarts: u32,
    /// Power cuts inside flash operations (needs `device.store`).
    #[serde(default)]
    pub power_cuts: u32,
}

fn default_chaos_max() -> f64 {
    30.0
}

/// What must hold; unset expectations are not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every QoS 1/2 publish accepted while the device lived reaches the observer.
    pub no_qos1_loss: Option<bool>,
    pub max_duplicates: Option<u64>,
    /// First deliveries per topic arrive in publish order.
    pub in_order: Option<bool>,
    /// After each link return, the client is up again within this time.
    pub reconnect_within_ms: Option<u64>,
    /// After each silent link or broker outage ends, a device it took down is up again
    /// within this time.
    pub recover_within_ms: Option<u64>,
    /// The device's will reaches the observer (true) or never does (false).
    pub will_delivered: Option<bool>,
    pub will_by_s: Option<f64>,
    /// Injected QoS 1 messages the device must receive (all of them when `true`).
    pub device_receives_all: Option<bool>,
    /// No injected message reaches the device after this many were injected while it was
    /// away with a clean session (false: at least one was lost, as clean sessions must).
    pub device_receives_none_while_away: Option<bool>,
    /// Every accepted QoS 1/2 publish acknowledged by this time (a publish whose deadline
    /// failed it was settled when the application was told).
    pub drain_within_s: Option<f64>,
    pub min_reconnects: Option<u64>,
    /// Times the host's watchdog replaced a failed component instance, at least this many
    /// (a `guest_trap` fault must have struck).
    pub min_watchdog_restarts: Option<u64>,
    pub max_reconnects: Option<u64>,
    /// Incoming messages discarded by the `queue_len` policy, at least this many.
    pub min_discards: Option<u64>,
    /// ... and at most this many (0 with `backpressure`).
    pub max_discards: Option<u64>,
    /// Publishes that must fail (expired / refused), at least this many.
    pub min_publish_failures: Option<u64>,
    /// Filters the broker refused (SUBACK failure codes) that the application was told of,
    /// at least this many.
    pub min_subscribe_refusals: Option<u64>,
    /// Publishes the application cancelled (`cancel` faults): at most this many reach the
    /// observer (one already sent may), and none of their tokens completes.
    pub max_cancelled_delivered: Option<u64>,
    /// Most QoS 1/2 messages the broker ever had in flight to the device.
    pub max_broker_inflight_to_device: Option<u64>,
    /// A down reason the device must report (substring of its text).
    pub down_reason: Option<String>,
    /// Every injected QoS 1/2 message on these topics reaches the device's application.
    #[serde(default)]
    pub device_receives: Vec<String>,
    /// Nothing sent on these topics (injected, or published by a device) reaches the
    /// device's application.
    #[serde(default)]
    pub device_never_receives: Vec<String>,
    /// Every message the device's application received on these topics carried the retain
    /// flag (and at least one arrived): MQTT 5 Retain As Published.
    #[serde(default)]
    pub device_receives_retained: Vec<String>,
    /// Messages the broker must expire instead of delivering (MQTT 5 message expiry).
    pub min_expired: Option<u64>,
    /// Most connections the devices may try to open over the run (a client that retries
    /// without backoff hammers a broker that refuses it, or a resolver that fails).
    pub max_connect_attempts: Option<u64>,
    /// Most extra copies of an injected message the device's application may receive
    /// (0 for QoS 2: exactly once).
    pub device_max_duplicates: Option<u64>,
    /// The newest message of every inject stream reaches the device's application: with
    /// mqtt_as's discard-oldest policy an overflowing queue never loses the latest.
    pub device_receives_last_injected: Option<bool>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|ScenarioError(e)| ScenarioError(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError(describe_toml_error(text, &e)))?;
        s.validate().map_err(|Invalid { at, why }| ScenarioError(mqtt_host::source_position::describe_key(text, &at, &why)))?;
        Ok(s)
    }

    /// Checks serde cannot express: ranges and relations between keys.
    fn validate(&self) -> Result<(), Invalid> {
        // Written so that NaN (which TOML can spell) is refused too.
        if !self.duration_s.is_finite() || self.duration_s <= 0.0 {
            return invalid("duration_s", format!("duration_s = {}: must be positive", self.duration_s));
        }
        // A NaN or negative drain ran no time, or less than `duration_s`, and passed.
        if !(self.drain_s.is_finite() && self.drain_s >= 0.0) {
            return invalid("drain_s", format!("drain_s = {}: must be 0 or more", self.drain_s));
        }
        if self.tick_ms == 0 || self.tick_ms > 1000 {
            return invalid("tick_ms", format!("tick_ms = {}: must be in 1..=1000", self.tick_ms));
        }
        if self.devices == 0 || self.devices > 10_000 {
            return invalid("devices", format!("devices = {}: must be in 1..=10000", self.devices));
        }
        if self.brokers == 0 || self.brokers > 4 {
            return invalid("brokers", format!("brokers = {}: must be in 1..=4", self.brokers));
        }
        if self.devices_per_host == 0 || self.devices_per_host > self.devices {
            return invalid("devices_per_host", format!("devices_per_host = {}: must be in 1..=devices ({})", self.devices_per_host, self.devices));
        }
        if self.seeds.is_empty() {
            return invalid("seeds", "seeds: needs at least one seed".into());
        }
        // A topic the client (or the broker, for an inject) would refuse at every publish: the
        // run would count nothing published and still pass.
        let not_a_topic = |what: &str, i: usize, topic: &str| {
            mqtt_protocol::codec::topic::validate_topic_name(topic).map_err(|e| Invalid {
                at: format!("{what}[{i}].topic"),
                why: format!("{what}[{i}].topic = {topic:?}: not a topic to publish to ({})", e.message()),
            })
        };
        for (i, w) in self.workload.iter().enumerate() {
            if w.qos > 2 {
                return invalid(format!("workload[{i}].qos"), format!("workload[{i}].qos = {}: must be 0, 1 or 2", w.qos));
            }
            not_a_topic("workload", i, &w.topic)?;
            if w.every_ms == 0 {
                return invalid(format!("workload[{i}].every_ms"), format!("workload[{i}].every_ms: must be at least 1"));
            }
            if w.payload_bytes < 16 {
                return invalid(
                    format!("workload[{i}].payload_bytes"),
                    format!("workload[{i}].payload_bytes = {}: at least 16 (the payload carries a sequence number)", w.payload_bytes),
                );
            }
        }
        for (i, w) in self.inject.iter().enumerate() {
            if w.qos > 2 {
                return invalid(format!("inject[{i}].qos"), format!("inject[{i}].qos = {}: must be 0, 1 or 2", w.qos));
            }
            not_a_topic("inject", i, &w.topic)?;
            if w.every_ms == 0 {
                return invalid(format!("inject[{i}].every_ms"), format!("inject[{i}].every_ms: must be at least 1"));
            }
        }
        let end = self.duration_s + self.drain_s;
        let starts = self.workload.iter().enumerate().map(|(i, w)| ("workload", i, w.start_s));
        for (what, i, start) in starts.chain(self.inject.iter().enumerate().map(|(i, w)| ("inject", i, w.start_s))) {
            if !(0.0..end).contains(&start) {
                return invalid(format!("{what}[{i}].start_s"), format!("{what}[{i}].start_s = {start}: outside the run (0 to duration_s + drain_s = {end})"));
            }
        }
        for (i, sub) in self.device.subscribe.iter().enumerate() {
            if sub.qos > 2 {
                return invalid(format!("device.subscribe[{i}].qos"), format!("device.subscribe[{i}].qos = {}: must be 0, 1 or 2", sub.qos));
            }
            if sub.retain_handling > 2 {
                return invalid(
                    format!("device.subscribe[{i}].retain_handling"),
                    format!("device.subscribe[{i}].retain_handling = {}: must be 0, 1 or 2", sub.retain_handling),
                );
            }
        }
        if self.broker.auth_method.is_some() != self.broker.auth_secret.is_some() {
            return invalid("broker.auth_method", "broker.auth_method and broker.auth_secret go together".into());
        }
        if self.device.auth_secret.is_some() && self.device.auth_method.is_none() {
            return invalid("device.auth_secret", "device.auth_secret is set without device.auth_method".into());
        }
        if let Some(w) = &self.device.will
            && w.qos > 2
        {
            return invalid("device.will.qos", format!("device.will.qos = {}: must be 0, 1 or 2", w.qos));
        }
        for (i, f) in self.fault.iter().enumerate() {
            if let Fault::Subscribe { qos, .. } = f
                && *qos > 2
            {
                return invalid(format!("fault[{i}].qos"), format!("fault[{i}] (subscribe): qos = {qos}: must be 0, 1 or 2"));
            }
            if let Fault::Subscribe { filter, .. } | Fault::Unsubscribe { filter, .. } = f
                && let Err(e) = mqtt_protocol::codec::topic::validate_topic_filter(filter)
            {
                return invalid(format!("fault[{i}].filter"), format!("fault[{i}] ({}): filter = {filter:?}: not a topic filter ({})", f.name(), e.message()));
            }
            let (at, span) = f.window();
            // Written so that NaN and infinity are refused too: a NaN time never came round,
            // so the fault silently did not happen.
            if !(at.is_finite() && at >= 0.0) {
                return invalid(format!("fault[{i}].at_s"), format!("fault[{i}] ({}): at_s = {at}: must be finite and not negative", f.name()));
            }
            if !(span.is_finite() && span >= 0.0) {
                return invalid(format!("fault[{i}]"), format!("fault[{i}] ({}): times must be finite and not negative", f.name()));
            }
            if span == 0.0 && f.has_duration() {
                return invalid(format!("fault[{i}].for_s"), format!("fault[{i}] ({}): for_s = 0: a fault that lasts no time does nothing", f.name()));
            }
            if at >= self.duration_s + self.drain_s {
                return invalid(
                    format!("fault[{i}].at_s"),
                    format!("fault[{i}] ({}): at_s = {at} is past the end of the run (duration_s + drain_s = {})", f.name(), self.duration_s + self.drain_s),
                );
            }
            if let Fault::BrokerDown { broker, .. } | Fault::BrokerRestart { broker, .. } = f
                && (*broker == 0 || *broker > self.brokers)
            {
                return invalid(format!("fault[{i}].broker"), format!("fault[{i}] ({}): broker = {broker}, but brokers = {}", f.name(), self.brokers));
            }
            if matches!(f, Fault::PowerCut { .. }) && self.device.store.is_none() {
                return invalid(format!("fault[{i}]"), format!("fault[{i}] (power_cut) falls inside flash operations: it needs device.store"));
            }
        }
        if let Some(store) = &self.device.store {
            store.validate()?;
        }
        // The client would refuse the config at `create`: say so now, naming the key.
        let mut config = mqtt_host::default_config(crate::runner::BROKER, "device-1");
        // (`apply_to` refuses only a will's QoS.)
        self.device.apply_to(&mut config).map_err(|e| Invalid { at: "device.will.qos".into(), why: format!("device.{e}") })?;
        mqtt_host::settings::check(&config).map_err(|e| Invalid { at: format!("device.{}", e.key), why: format!("[device]: {e}") })?;
        // A payload the client would refuse at every call: the run would count nothing
        // published and still pass (the topics are checked with the workloads above).
        for (i, w) in self.workload.iter().enumerate() {
            if !mqtt_protocol::publish_fits(config.max_packet_size, &w.topic, w.payload_bytes) {
                return invalid(
                    format!("workload[{i}].payload_bytes"),
                    format!(
                        "workload[{i}].payload_bytes = {}: with its topic, more than the device's max_packet_size ({}) holds; the client would refuse every publish",
                        w.payload_bytes, config.max_packet_size
                    ),
                );
            }
        }
        if let Some(c) = &self.chaos
            && !(c.max_down_s.is_finite() && c.max_down_s > 0.0)
        {
            return invalid("chaos.max_down_s", format!("chaos.max_down_s = {}: must be positive", c.max_down_s));
        }
        // A NaN bound passed whatever happened.
        for (key, v) in [("will_by_s", self.expect.will_by_s), ("drain_within_s", self.expect.drain_within_s)] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return invalid(format!("expect.{key}"), format!("expect.{key} = {v}: must be 0 or more"));
            }
        }
        if self.chaos.as_ref().is_some_and(|c| c.power_cuts > 0) && self.device.store.is_none() {
            return invalid("chaos.power_cuts", "chaos.power_cuts falls inside flash operations: it needs device.store".into());
        }
        Ok(())
    }

    pub fn total_ms(&self) -> u64 {
        ((self.duration_s + self.drain_s) * 1000.0) as u64
    }
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::LinkDown { .. } => "link_down",
            Fault::LinkFlap { .. } => "link_flap",
            Fault::SilentLink { .. } => "silent_link",
            Fault::Latency { .. } => "latency",
            Fault::BrokerRestart { .. } => "broker_restart",
            Fault::BrokerDown { .. } => "broker_down",
            Fault::DropAcks { .. } => "drop_acks",
            Fault::DelayAcks { .. } => "delay_acks",
            Fault::Refuse { .. } => "refuse",
            Fault::StopPings { .. } => "stop_pings",
            Fault::HalfOpen { .. } => "half_open",
            Fault::PowerCycle { .. } => "power_cycle",
            Fault::PowerCut { .. } => "power_cut",
            Fault::DnsFailure { .. } => "dns_failure",
            Fault::ServerDisconnect { .. } => "server_disconnect",
            Fault::Disconnect { .. } => "disconnect",
            Fault::Roam { .. } => "roam",
            Fault::Subscribe { .. } => "subscribe",
            Fault::Unsubscribe { .. } => "unsubscribe",
            Fault::Cancel { .. } => "cancel",
            Fault::ObserverAway { .. } => "observer_away",
            Fault::GuestTrap { .. } => "guest_trap",
        }
    }

    /// Whether the fault lasts `for_s` (and so does nothing when that is 0).
    fn has_duration(&self) -> bool {
        self.timing().2
    }

    /// (start, duration) in seconds.
    pub fn window(&self) -> (f64, f64) {
        let (at, span, _) = self.timing();
        (at, span)
    }

    /// [`Fault::window`], and whether its duration is the fault's own `for_s`: one match
    /// names every kind, so a new one must say both.
    fn timing(&self) -> (f64, f64, bool) {
        match *self {
            Fault::LinkDown { at_s, for_s }
            | Fault::SilentLink { at_s, for_s }
            | Fault::Latency { at_s, for_s, .. }
            | Fault::BrokerDown { at_s, for_s, .. }
            | Fault::Refuse { at_s, for_s, .. }
            | Fault::StopPings { at_s, for_s }
            | Fault::HalfOpen { at_s, for_s }
            | Fault::DnsFailure { at_s, for_s }
            | Fault::ObserverAway { at_s, for_s } => (at_s, for_s, true),
            Fault::LinkFlap { at_s, count, down_s, up_s } => (at_s, f64::from(count) * (down_s + up_s), false),
            Fault::BrokerRestart { at_s, down_s, .. } => (at_s, down_s, false),
            Fault::PowerCycle { at_s, off_s } => (at_s, off_s, false),
            Fault::PowerCut { at_s, off_s, within_s, .. } => (at_s, within_s + off_s, false),
            Fault::Roam { at_s, gap_ms } => (at_s, gap_ms as f64 / 1000.0, false),
            Fault::DropAcks { at_s, .. }
            | Fault::DelayAcks { at_s, .. }
            | Fault::ServerDisconnect { at_s, .. }
            | Fault::Disconnect { at_s }
            | Fault::Subscribe { at_s, .. }
            | Fault::Unsubscribe { at_s, .. }
            | Fault::Cancel { at_s, .. }
            | Fault::GuestTrap { at_s } => (at_s, 0.0, false),
        }
    }
}

/// toml's message with the offending line quoted, e.g.
/// `line 12, column 9: unknown field `dration_s`, expected one of ...`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => mqtt_host::source_position::describe(text, span.start, e.message()),
        None => e.message().to_string(),
    }
}

/// The scenario files named: each file as given, each directory's `*.toml` sorted by name.
pub fn files(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            let mut found: Vec<std::path::PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|f| f.extension().is_some_and(|x| x == "toml")).collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err("no scenario files found".into());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let e = Scenario::parse("duration_s = 10\n[device]\nkeep_alive = 5\n").unwrap_err().0;
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("keep_alive") && e.contains("keepalive_s"), "{e}");
    }

    /// The `[device]` table is the one settings schema: every key of the component's config
    /// record can be set from a scenario file (the WIT side is checked at compile time: the
    /// guest and `default_config` spell the record out whole from the same key list).
    #[test]
    fn every_config_key_is_reachable_from_a_scenario_file() {
        let plain = Scenario::parse("duration_s = 1\n").unwrap();
        let base = crate::runner::device_config(&plain, 1, 0);
        let (mut want, settings) = mqtt_host::settings::every_key_changed(&base);
        let text = format!("duration_s = 1\n[device]\n{}", toml::to_string(&settings).unwrap());
        let sc = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}\n{text}", e.0));
        let got = crate::runner::device_config(&sc, 1, 0);
        // The seed is the one key the run mixes in: the file's seed offsets the run's.
        want.seed = base.seed.wrapping_add(want.seed);
        assert_eq!(mqtt_host::settings::differing_keys(&want, &got), Vec::<&str>::new(), "from:\n{text}");
    }

    #[test]
    fn wrong_type_names_the_expected_type() {
        let e = Scenario::parse("duration_s = \"ten\"\n").unwrap_err().0;
        assert!(e.contains("line 1") && e.contains("f64"), "{e}");
    }

    #[test]
    fn unknown_fault_kind_is_reported() {
        let e = Scenario::parse("duration_s = 10\n[[fault]]\nkind = \"meteor\"\nat_s = 1\n").unwrap_err().0;
        assert!(e.contains("line 3") && e.contains("meteor") && e.contains("link_down"), "{e}");
    }

    #[test]
    fn out_of_range_qos_anywhere_is_an_error_naming_the_key() {
        let e = Scenario::parse("duration_s = 10\n[device]\nsubscribe = [{ filter = \"a\", qos = 3 }]\n").unwrap_err().0;
        assert!(e.starts_with("line 3, column 30: device.subscribe[0].qos"), "{e}");
    }

    #[test]
    fn a_config_the_client_would_refuse_is_an_error_naming_the_key() {
        let e = Scenario::parse("duration_s = 10\n[device]\nkeepalive_s = 5\n").unwrap_err().0;
        assert!(e.contains("[device]") && e.contains("keepalive_secs") && e.contains("response_time_ms"), "{e}");
    }

    #[test]
    fn range_errors_name_the_key_and_its_line() {
        let e = Scenario::parse("duration_s = 10\ntick_ms = 0\n").unwrap_err().0;
        assert!(e.starts_with("line 2, column 1: tick_ms = 0") && e.ends_with("2 | tick_ms = 0"), "{e}");
    }

    /// What only the checks after parsing refuse is placed as toml's own errors are: the
    /// line of the key at fault, wherever it is written (an array of tables, an inline
    /// table, an alias of a config key).
    #[test]
    fn checks_after_parsing_name_the_line() {
        let lines = |text: &str| {
            let e = Scenario::parse(text).map(|_| text.to_string()).expect_err("refused").0;
            (e.split(',').next().unwrap_or_default().to_string(), e)
        };
        let faults = "duration_s = 10\n[[fault]]\nkind = \"link_down\"\nat_s = 1\nfor_s = 1\n[[fault]]\nkind = \"link_down\"\nat_s = 400\nfor_s = 1\n";
        let (line, e) = lines(faults);
        assert_eq!(line, "line 8", "{e}");
        assert!(e.contains("fault[1] (link_down): at_s = 400"), "{e}");
        let (line, e) = lines("duration_s = 10\n[device]\nsubscribe = [\n  { filter = \"a\", qos = 1 },\n  { filter = \"b\", qos = 3 },\n]\n");
        assert_eq!(line, "line 5", "{e}");
        let (line, e) = lines("duration_s = 10\n\n[[workload]]\ntopic = \"t\"\nqos = 3\nevery_ms = 100\ncount = 1\n");
        assert_eq!(line, "line 5", "{e}");
        // The client's own check names `keepalive_secs`; the file says `keepalive`.
        let (line, e) = lines("duration_s = 10\n[device]\nclient_id = \"a\"\nkeepalive = 1\n");
        assert_eq!(line, "line 4", "{e}");
        assert!(e.contains("keepalive_secs"), "{e}");
        let (line, e) = lines("duration_s = 10\n[device.store]\ncapacity_kib = 8\nsector_kib = 4\n");
        assert_eq!(line, "line 3", "{e}");
        assert!(e.contains("not at least 3 whole sectors"), "the store's own rule: {e}");
        let (line, e) = lines("duration_s = 10\n[device.store]\ncapacity_kib = 64\nsector_kib = 4\nwrite_bytes = 3\n");
        assert_eq!(line, "line 5", "{e}");
        let (line, e) = lines("duration_s = 10\n[device.store]\ncapacity_kib = 64\nsector_kib = 0\n");
        assert_eq!(line, "line 4", "{e}");
        // A key left to its default is placed at its table; one outside any table, not at all.
        let (line, e) = lines("duration_s = 10\n[device]\nclient_id = \"a\"\nbackoff_max_ms = 1\n");
        assert_eq!(line, "line 2", "{e}");
        assert!(e.contains("config key `backoff_min_ms`"), "{e}");
        let e = Scenario::parse("duration_s = 10\nseeds = []\n").unwrap_err().0;
        assert!(e.starts_with("line 2, column 1: seeds"), "{e}");
    }

    /// Requests the client refuses at every call: the run counted nothing published (or
    /// subscribed) and passed.
    #[test]
    fn requests_the_client_would_refuse_are_refused_naming_their_line() {
        let workload = |topic: &str, bytes: u32| {
            format!("duration_s = 30\n[device]\nclient_id = \"a\"\nmax_packet_size = 200\n[[workload]]\ntopic = \"{topic}\"\nqos = 1\nevery_ms = 100\ncount = 5\npayload_bytes = {bytes}\n")
        };
        for (text, starts) in [
            (workload("a/+", 16), "line 6, column 1: workload[0].topic = \"a/+\": not a topic to publish to (wildcard"),
            (workload("", 16), "line 6, column 1: workload[0].topic = \"\": not a topic to publish to"),
            // 200 - 16 - 1 bytes of topic: 183 fits, 184 does not.
            (workload("t", 184), "line 10, column 1: workload[0].payload_bytes = 184: with its topic, more than the device's max_packet_size (200)"),
            (
                "duration_s = 30\n[[inject]]\ntopic = \"in/#\"\nevery_ms = 100\ncount = 5\n".to_string(),
                "line 3, column 1: inject[0].topic = \"in/#\": not a topic to publish to",
            ),
            (
                "duration_s = 30\n[[fault]]\nkind = \"subscribe\"\nat_s = 5\nfilter = \"a/#/b\"\n".to_string(),
                "line 5, column 1: fault[0] (subscribe): filter = \"a/#/b\": not a topic filter",
            ),
        ] {
            let e = Scenario::parse(&text).expect_err(&text).0;
            assert!(e.starts_with(starts), "{text}: {e}");
        }
        Scenario::parse(&workload("t", 183)).expect("a payload that just fits");
    }

    /// Times TOML can spell but that mean nothing: each ran a scenario that passed without
    /// testing what it said (a NaN drain ran 0 s, a NaN fault never struck, a NaN bound held
    /// whatever happened, a fault of no length did nothing).
    #[test]
    fn times_that_mean_nothing_are_refused_naming_their_line() {
        let fault = |at: &str, for_s: &str| format!("duration_s = 30\n[[fault]]\nkind = \"link_down\"\nat_s = {at}\nfor_s = {for_s}\n");
        for (text, starts) in [
            ("duration_s = 30\ndrain_s = nan\n".to_string(), "line 2, column 1: drain_s = NaN: must be 0 or more"),
            ("duration_s = 30\ndrain_s = -20\n".to_string(), "line 2, column 1: drain_s = -20"),
            (fault("nan", "5"), "line 4, column 1: fault[0] (link_down): at_s = NaN: must be finite"),
            (fault("5", "inf"), "line 2, column 1: fault[0] (link_down): times must be finite"),
            (fault("5", "0"), "line 5, column 1: fault[0] (link_down): for_s = 0: a fault that lasts no time"),
            ("duration_s = 30\n[chaos]\nlink_drops = 3\nmax_down_s = nan\n".to_string(), "line 4, column 1: chaos.max_down_s = NaN"),
            ("duration_s = 30\n[chaos]\nlink_drops = 3\nmax_down_s = 0\n".to_string(), "line 4, column 1: chaos.max_down_s = 0"),
            ("duration_s = 30\n[expect]\ndrain_within_s = nan\n".to_string(), "line 3, column 1: expect.drain_within_s = NaN"),
            ("duration_s = 30\n[expect]\nwill_by_s = -1\n".to_string(), "line 3, column 1: expect.will_by_s = -1"),
        ] {
            let e = Scenario::parse(&text).expect_err(&text).0;
            assert!(e.starts_with(starts), "{text}: {e}");
        }
        // Faults that happen at an instant keep a window of no length.
        Scenario::parse("duration_s = 30\n[[fault]]\nkind = \"disconnect\"\nat_s = 5\n").expect("an instant fault");
    }
}
