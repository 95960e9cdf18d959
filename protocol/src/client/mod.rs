//! The connection manager and session: link → socket → CONNECT → CONNACK → up, and back
//! down on link loss, socket error or a missed response, with QoS 1/2 state that survives
//! every outage while the client lives.
//!
//! Driving it (the contract every host glue follows):
//! 1. feed inputs: [`Client::handle_link`], [`Client::handle_socket_open`],
//!    [`Client::handle_socket_error`], [`Client::handle_input`], [`Client::handle_timeout`],
//!    and the API calls;
//! 2. drain [`Client::poll_transmit`] (bytes for the current socket), then
//!    [`Client::poll_action`] (open/close socket, join/leave WiFi), then
//!    [`Client::poll_event`];
//! 3. come back no later than [`Client::poll_timeout`].

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{
    topic, Connect, Decoder, Disconnect, LastWill, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, Subscribe, SubscribeFilter,
    Unsubscribe,
};
use crate::config::{Config, ConfigError};
use crate::reason::ReasonCode;
use crate::rng::SplitMix64;
use crate::test_fault::TestFault;
use crate::text;
use crate::text::Hex;
use crate::types::*;

mod api;
mod connection;
mod driving;
mod event_queue;
mod incoming;
mod restart;
mod session;
mod storage;
mod timers;

pub use connection::{FAST_PROBES, PROBE_MS};
pub(crate) use incoming::Owed;

/// Most bytes waiting to reach the socket before QoS 0 publishes wait in the queue instead
/// (see [`Client::handle_unsent`]). QoS 1/2 are bounded by the in-flight window already.
/// 64 KiB keeps a loopback socket busy; a stalled one then costs the client at most this.
pub const MAX_UNSENT: usize = 64 * 1024;

use event_queue::EventQueue;
use timers::Timer;

/// `VecDeque::remove`, by rotation: the element at `i`, the others keeping their order.
/// std's `remove` shifts elements with `wrap_copy`, about 640 bytes of wasm for each element
/// type, and the client removes from three deques (requests, in flight, events); this is a
/// few dozen bytes each. Like std's it is O(n), and a removal from the front (the usual
/// acknowledgement) moves nothing. Popping before pushing never reallocates.
fn take_at<T>(q: &mut VecDeque<T>, i: usize) -> Option<T> {
    if i >= q.len() {
        return None;
    }
    // The `i` elements before it go to the back, then come back to the front, in order.
    for _ in 0..i {
        let x = q.pop_front()?;
        q.push_back(x);
    }
    let taken = q.pop_front();
    for _ in 0..i {
        let x = q.pop_back()?;
        q.push_front(x);
    }
    taken
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Before `connect`, or after the first attempt failed.
    Idle,
    /// The link is down; waiting for it (and asking to join WiFi when we manage it).
    WaitLink {
        give_up: Option<Instant>,
        rejoin_at: Option<Instant>,
    },
    /// Waiting before the next attempt.
    Backoff {
        until: Instant,
    },
    /// Socket requested at `since`, not yet open.
    Opening {
        since: Instant,
        deadline: Instant,
    },
    /// CONNECT sent.
    AwaitConnack {
        deadline: Instant,
    },
    Connected,
    /// `disconnect` was called.
    Closed,
}

/// Something queued by the application, not yet on the wire.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "nearly every entry is a publish: boxing it would add an allocation to each for nothing")]
enum Request {
    Publish(OutgoingPublish),
    Subscribe(Vec<SubscribeFilter>, SubscribeProperties),
    Unsubscribe(Vec<String>),
}

impl Request {
    /// A QoS 0 publish: the one request no window bounds (see [`MAX_UNSENT`]).
    fn is_qos0_publish(&self) -> bool {
        matches!(self, Request::Publish(p) if p.qos == QoS::AtMostOnce)
    }
}

#[derive(Debug)]
struct Queued {
    token: Option<Token>,
    request: Request,
    deadline: Option<Instant>,
    /// Its record in the store, when there is one (QoS 1/2 publishes).
    key: Option<u32>,
}

/// What an in-flight packet id is waiting for.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "nearly every entry is a publish: boxing it would add an allocation to each for nothing")]
enum Waiting {
    /// QoS 1: PUBACK; QoS 2: PUBREC.
    Publish(OutgoingPublish),
    /// QoS 2 after PUBREC: PUBCOMP.
    Release,
    SubAck(Vec<SubscribeFilter>, SubscribeProperties),
    UnsubAck(Vec<String>),
}

impl Waiting {
    /// A SUBSCRIBE or UNSUBSCRIBE waiting for its answer: in flight, but in no publish slot.
    fn is_sub_wait(&self) -> bool {
        matches!(self, Waiting::SubAck(..) | Waiting::UnsubAck(_))
    }

    /// Takes back what [`Client::packet_for`] lent a PUBLISH: its payload, and its topic
    /// unless a topic alias went in its place (then the publish kept it).
    fn take_back(&mut self, packet: &mut Packet) {
        if let (Waiting::Publish(p), Packet::Publish(sent)) = (self, packet) {
            // What is replaced is the empty `Vec` and `String` that `publish_packet` left,
            // which own no memory: forgetting them frees nothing and needs no drop code.
            core::mem::forget(core::mem::replace(&mut p.payload, core::mem::take(&mut sent.payload)));
            if p.topic.is_empty() {
                core::mem::forget(core::mem::replace(&mut p.topic, core::mem::take(&mut sent.topic)));
            }
        }
    }
}

#[derive(Debug)]
struct InFlight {
    pid: PacketId,
    /// `None` once cancelled, or for internal requests (re-subscription).
    token: Option<Token>,
    waiting: Waiting,
    sent_at: Instant,
    repubs: u32,
    /// Its record in the store, when there is one (QoS 1/2 publishes).
    key: Option<u32>,
}

/// What the broker told us in CONNACK (MQTT 5), with 3.1.1 defaults.
#[derive(Debug, Clone)]
struct ServerLimits {
    receive_maximum: u16,
    maximum_packet_size: u32,
    topic_alias_maximum: u16,
    maximum_qos: QoS,
    keepalive_secs: u16,
    subscription_ids: bool,
}

/// The sans-IO MQTT client: told the time, handed bytes, asked what to do.
///
/// The driving loop every host follows (here with a broker scripted by hand):
///
/// ```
/// use mqtt_protocol::codec::ConnAck;
/// use mqtt_protocol::{Action, Client, Config, Event, Instant, LinkState, Packet, Properties, ProtocolVersion};
///
/// let cfg = Config { client_id: "sensor-1".into(), server: "broker.local".into(), ..Config::default() };
/// let mut client = Client::new(cfg).unwrap();
/// let now = Instant::from_millis(0);
/// client.handle_link(now, LinkState::Up);
/// client.connect(now).unwrap();
/// // Perform the IO it asks for: here, open a socket.
/// assert!(matches!(client.poll_action(), Some(Action::OpenSocket { port: 1883, .. })));
/// client.handle_socket_open(now);
/// let connect = client.poll_transmit().expect("CONNECT to send");
/// assert_eq!(connect[0] >> 4, 1, "a CONNECT packet");
/// // The broker's answer arrives on the socket.
/// let connack = Packet::ConnAck(ConnAck { session_present: false, code: 0, properties: Properties::default() });
/// client.handle_input(Instant::from_millis(20), &connack.encode(ProtocolVersion::V311));
/// assert_eq!(client.poll_event(), Some(Event::Link(LinkState::Up)));
/// assert_eq!(client.poll_event(), Some(Event::Up { session_present: false }));
/// // Come back no later than this (the keepalive ping, 15 s after the last traffic).
/// assert_eq!(client.poll_timeout(), Some(Instant::from_millis(15_000)));
/// ```
pub struct Client {
    cfg: Config,
    version: ProtocolVersion,
    state: State,
    link: LinkState,
    rng: SplitMix64,
    decoder: Decoder,
    /// Bytes for the current socket, packets back to back.
    transmits: Vec<u8>,
    /// Bytes the driver took with [`Client::transmit_into`] and still holds, as it last
    /// said ([`Client::handle_unsent`]).
    unsent_elsewhere: usize,
    /// Rarely more than two at a time (close, open).
    actions: Vec<Action>,
    events: EventQueue,
    socket_open: bool,

    // What is left as flags is not where the connection stands (that is `state`: Up is owed a
    // Down exactly while it is `Connected`, and the clean_init purge follows from
    // `initial_done`), but history, IO bookkeeping and pending answers: `ever_up` and
    // `initial_done` outlive connections, `socket_open` tracks the host's socket through the
    // transitions that close and reopen it, `auth_challenged` an exchange that spans states,
    // `input_held` and `broker_up_asked` the application's side.
    /// A connection reached `Up` at least once: later outages are ours to handle silently.
    ever_up: bool,
    /// The power-up connection (clean_init) is behind us; later ones use `clean`.
    initial_done: bool,
    backoff_attempt: u32,
    /// Connections in a row the broker ended before it acknowledged anything on them, within
    /// the response time of CONNACK (`up_at`). Each counts as a failed attempt instead of
    /// starting the backoff over: a 3.1.1 broker cannot announce its packet size limit, so a
    /// publish over it is resent on every reconnect and the broker drops each connection at
    /// once; without this the client reconnects every `backoff_min_ms` for as long as the
    /// publish waits. A connection that lasted longer proved itself even with nothing to
    /// acknowledge (a subscriber whose stream keeps pings from being due, say).
    unacknowledged_ups: u8,
    /// When the last connection came up (CONNACK).
    up_at: Instant,
    /// Attempts in a row that nothing answered (see `connection::PROBE_MS`).
    probes: u8,
    /// How long the last socket that opened took (TCP and TLS), in ms.
    open_ms: u64,
    /// The broker in use: 0 is `server`, then `servers` in order.
    broker: usize,
    /// The broker of the last connection that came up (its session is ours).
    up_broker: Option<usize>,
    /// First connect: brokers still to try before reporting `ConnectFailed`.
    untried: usize,
    client_id: String,
    limits: ServerLimits,

    // Session.
    next_token: Token,
    next_pid: u16,
    /// Packet ids after `next_pid` known to be free (see `alloc_pid`).
    pids_free_ahead: u32,
    pending: VecDeque<Queued>,
    /// No later than the earliest `deadline` in `pending`: a lower bound, as `ack_floor` is,
    /// so that the request timer costs nothing while no request has a deadline (the walk
    /// it replaces went over up to `max_queued` entries several times per poll).
    pending_floor: Option<Instant>,
    inflight: VecDeque<InFlight>,
    /// How many entries of `inflight` wait for a SUBACK or UNSUBACK; the rest are publishes,
    /// which the window counts on every pump. Counting them by a walk over the window, once
    /// per PUBACK while requests wait, was a tenth of the guest's time in the QoS 1 peer
    /// benchmark (issue 14). Kept by `push_inflight`, `take_inflight` and the two places
    /// that empty `inflight` (`resume`, `disconnect`).
    sub_waits: usize,
    /// No later than the earliest `sent_at` in `inflight`: a lower bound that the ack
    /// timer uses instead of a walk over up to `max_inflight` entries on every poll (see
    /// `timers`).
    ack_floor: Option<Instant>,
    // Small linear collections instead of B-trees, on purpose: they hold at most a few
    // dozen entries (bounded by Receive Maximum, topic-alias maximum, subscriptions) and
    // each B-tree instantiation costs ~5 KiB of component code (measured with twiggy).
    /// QoS 2 packet ids received and not yet released (exactly-once delivery).
    incoming_qos2: Vec<u16>,
    /// How many of `incoming_qos2`, from the front, were received before this connection:
    /// ids the resumed session may still release, or stale ones (see `handle_publish`).
    incoming_qos2_carried: usize,
    /// Filters the broker granted, with their request's properties, for re-subscription
    /// after a clean reconnect (one SUBSCRIBE per run of equal properties).
    subscriptions: Vec<(SubscribeFilter, SubscribeProperties)>,
    /// MQTT 5 enhanced authentication: the broker's challenge awaits our answer.
    auth_challenged: bool,
    /// Backpressure: decoding stopped with the queue full; bytes may wait in the decoder.
    input_held: bool,
    /// Backpressure: when the application last made room. Replies that sat behind the
    /// messages we refused to read are not late, so timers count from here at the earliest.
    resumed_at: Instant,
    /// MQTT 5 topic aliases for this connection: ours (topic → alias) and the broker's.
    /// Our aliases: `aliases_out[i]` is the topic of alias i + 1.
    aliases_out: Vec<String>,
    /// The broker's aliases: `aliases_in[i]` is the topic of alias i + 1.
    aliases_in: Vec<Option<String>>,

    // Liveness.
    last_rx: Instant,
    last_tx: Instant,
    ping_sent: Option<Instant>,
    broker_up_asked: bool,
    now: Instant,

    stats: Stats,
    /// What survives a power cut (see [`Client::attach_store`]).
    store: Option<crate::store::Store>,
    /// Packet ids given (or QoS 2 releases) since the host last took them, kept only when
    /// it asked for them (see [`Client::report_sent_ids`]).
    sent_ids: Option<Vec<SentId>>,
    /// The broker the host last heard the session lives on, kept only for a host that asked
    /// (see [`Client::take_session_broker`]).
    session_told: Option<usize>,
}

impl Client {
    /// Validates `cfg`; nothing is sent until [`Client::connect`].
    pub fn new(cfg: Config) -> Result<Client, ConfigError> {
        cfg.validate()?;
        let version = if cfg.mqttv5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let limits = ServerLimits {
            receive_maximum: u16::MAX,
            maximum_packet_size: crate::codec::MAX_REMAINING_LENGTH + 5,
            topic_alias_maximum: 0,
            maximum_qos: QoS::ExactlyOnce,
            keepalive_secs: cfg.keepalive_secs,
            subscription_ids: true,
        };
        Ok(Client {
            version,
            state: State::Idle,
            link: LinkState::Down,
            rng: SplitMix64::new(cfg.seed),
            decoder: Decoder::new(version, cfg.max_packet_size),
            transmits: Vec::new(),
            unsent_elsewhere: 0,
            actions: Vec::new(),
            events: EventQueue::default(),
            socket_open: false,
            ever_up: false,
            initial_done: false,
            backoff_attempt: 0,
            unacknowledged_ups: 0,
            up_at: Instant::default(),
            probes: 0,
            open_ms: 0,
            broker: 0,
            up_broker: None,
            untried: 0,
            client_id: cfg.client_id.clone(),
            limits,
            next_token: 1,
            next_pid: 0,
            pids_free_ahead: 0,
            pending: VecDeque::new(),
            pending_floor: None,
            inflight: VecDeque::new(),
            sub_waits: 0,
            ack_floor: None,
            incoming_qos2: Vec::new(),
            incoming_qos2_carried: 0,
            subscriptions: Vec::new(),
            auth_challenged: false,
            input_held: false,
            resumed_at: Instant::default(),
            aliases_out: Vec::new(),
            aliases_in: Vec::new(),
            last_rx: Instant::default(),
            last_tx: Instant::default(),
            ping_sent: None,
            broker_up_asked: false,
            now: Instant::default(),
            stats: Stats::default(),
            store: None,
            sent_ids: None,
            session_told: None,
            cfg,
        })
    }

    /// The config it was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Between CONNACK and the connection's loss.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected)
    }

    /// Counters so far, with the in-flight and queued requests now.
    pub fn stats(&self) -> Stats {
        Stats { inflight: self.inflight.len() as u32, queued: self.pending.len() as u32, broker: self.broker as u32, ..self.stats }
    }

    /// Whether this is a `test-faults` build told to show `fault`. Always false otherwise,
    /// so the deliberate misbehaviour compiles away.
    #[inline(always)]
    pub(super) fn faulty(&self, fault: TestFault) -> bool {
        #[cfg(feature = "test-faults")]
        return self.cfg.test_fault == Some(fault);
        #[cfg(not(feature = "test-faults"))]
        {
            let _ = fault;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `take_at` does what `VecDeque::remove` does, also on a deque that wraps around
        /// its buffer (the pushes to the front).
        #[test]
        fn take_at_is_vecdeque_remove(front in 0usize..12, back in 0usize..12, i in 0usize..30) {
            let mut ours: VecDeque<usize> = VecDeque::with_capacity(8);
            for x in 0..back {
                ours.push_back(x);
            }
            for x in 0..front {
                ours.push_front(100 + x);
            }
            let mut std = ours.clone();
            prop_assert_eq!(take_at(&mut ours, i), std.remove(i));
            prop_assert_eq!(ours, std);
        }
    }
}
