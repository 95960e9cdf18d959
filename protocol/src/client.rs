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
use alloc::vec;
use alloc::vec::Vec;

use crate::codec::{
    topic, Connect, Decoder, Disconnect, LastWill, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, Subscribe, SubscribeFilter,
    Unsubscribe,
};
use crate::config::{Config, ConfigError};
use crate::rng::SplitMix64;
use crate::test_fault::TestFault;
use crate::text;
use crate::text::Hex;
use crate::types::*;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Socket requested, not yet open.
    Opening {
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

#[derive(Debug)]
struct Queued {
    token: Option<Token>,
    request: Request,
    deadline: Option<Instant>,
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

#[derive(Debug)]
struct InFlight {
    pid: PacketId,
    /// `None` once cancelled, or for internal requests (re-subscription).
    token: Option<Token>,
    waiting: Waiting,
    sent_at: Instant,
    repubs: u32,
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

/// The sans-IO MQTT client.
pub struct Client {
    cfg: Config,
    version: ProtocolVersion,
    state: State,
    link: LinkState,
    rng: SplitMix64,
    decoder: Decoder,
    /// Bytes for the current socket, packets back to back.
    transmits: Vec<u8>,
    /// Rarely more than two at a time (close, open).
    actions: Vec<Action>,
    events: VecDeque<Event>,
    queued_messages: usize,
    socket_open: bool,

    /// A connection reached `Up` at least once: later outages are ours to handle silently.
    ever_up: bool,
    /// We are between Up and Down (so a Down event is owed on loss).
    up: bool,
    /// MQTT 3.1.1 clean_init && !clean: the first CONNECT purges the old session, then we
    /// reconnect unclean.
    purging: bool,
    /// The power-up connection (clean_init) is behind us; later ones use `clean`.
    initial_done: bool,
    backoff_attempt: u32,
    client_id: String,
    limits: ServerLimits,

    // Session.
    next_token: Token,
    next_pid: u16,
    pending: VecDeque<Queued>,
    inflight: VecDeque<InFlight>,
    // Small linear collections instead of B-trees, on purpose: they hold at most a few
    // dozen entries (bounded by Receive Maximum, topic-alias maximum, subscriptions) and
    // each B-tree instantiation costs ~5 KiB of component code (measured with twiggy).
    /// QoS 2 packet ids received and not yet released (exactly-once delivery).
    incoming_qos2: Vec<u16>,
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
}

const V3_CONNACK: [&str; 6] =
    ["accepted", "unacceptable protocol version", "identifier rejected", "server unavailable", "bad user name or password", "not authorized"];

fn connack_text(version: ProtocolVersion, code: u8) -> String {
    match version {
        ProtocolVersion::V311 => match V3_CONNACK.get(code as usize) {
            Some(t) => text!("CONNACK refused (", code, ": ", t, ")"),
            None => text!("CONNACK refused (code ", code, ")"),
        },
        ProtocolVersion::V5 => text!("CONNACK refused (reason code ", Hex(code), ")"),
    }
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
            actions: Vec::new(),
            events: VecDeque::new(),
            queued_messages: 0,
            socket_open: false,
            ever_up: false,
            up: false,
            purging: false,
            initial_done: false,
            backoff_attempt: 0,
            client_id: cfg.client_id.clone(),
            limits,
            next_token: 1,
            next_pid: 0,
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            incoming_qos2: Vec::new(),
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
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn stats(&self) -> Stats {
        Stats { inflight: self.inflight.len() as u32, queued: self.pending.len() as u32, ..self.stats }
    }

    // ------------------------------------------------------------------------------------
    // API

    /// Start connecting. If this first attempt fails, [`Event::ConnectFailed`] is reported
    /// and the client returns to idle; once up, outages are handled without the caller.
    pub fn connect(&mut self, now: Instant) -> Result<(), ApiError> {
        self.now = now;
        match self.state {
            State::Closed => Err(ApiError::Closed),
            State::Idle => {
                self.purging = !self.cfg.mqttv5 && self.cfg.clean_init && !self.cfg.clean;
                let give_up = Some(now + 3 * u64::from(self.cfg.response_time_ms));
                self.attempt(now, give_up);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Queue a publish. QoS 0 completes when handed to the socket; QoS 1/2 on PUBACK/PUBCOMP.
    /// `deadline`: if it is still unsent then, it fails with reason 0.
    pub fn publish(&mut self, now: Instant, publish: OutgoingPublish, deadline: Option<Instant>) -> Result<Token, ApiError> {
        self.now = now;
        if self.state == State::Closed {
            return Err(ApiError::Closed);
        }
        topic::validate_topic_name(&publish.topic).map_err(|e| ApiError::Invalid(text!("topic `", publish.topic, "`: ", e.message())))?;
        if publish.payload.len() as u64 + publish.topic.len() as u64 + 16 > u64::from(self.cfg.max_packet_size) {
            return Err(ApiError::Invalid(text!("payload of ", publish.payload.len(), " bytes does not fit max_packet_size ", self.cfg.max_packet_size)));
        }
        self.enqueue(now, Request::Publish(publish), deadline)
    }

    /// Subscribe; [`Event::Subscribed`] reports one granted QoS / reason code per filter.
    /// MQTT 5: `properties` may name a subscription identifier (if the broker's CONNACK
    /// says it has none, the filters fail with 0xA1 without being sent).
    pub fn subscribe(&mut self, now: Instant, filters: Vec<SubscribeFilter>, properties: SubscribeProperties) -> Result<Token, ApiError> {
        self.now = now;
        if self.state == State::Closed {
            return Err(ApiError::Closed);
        }
        if filters.is_empty() {
            return Err(ApiError::Invalid("subscribe needs at least one filter".into()));
        }
        for f in &filters {
            topic::validate_topic_filter(&f.filter).map_err(|e| ApiError::Invalid(text!("filter `", f.filter, "`: ", e.message())))?;
            if f.retain_handling > 2 {
                return Err(ApiError::Invalid(text!("retain_handling ", f.retain_handling, " is not 0, 1 or 2")));
            }
        }
        if properties.subscription_id.is_some_and(|id| id == 0 || id > crate::codec::MAX_REMAINING_LENGTH) {
            return Err(ApiError::Invalid("subscription_id must be 1..=268435455".into()));
        }
        self.enqueue(now, Request::Subscribe(filters, properties), None)
    }

    pub fn unsubscribe(&mut self, now: Instant, filters: Vec<String>) -> Result<Token, ApiError> {
        self.now = now;
        if self.state == State::Closed {
            return Err(ApiError::Closed);
        }
        if filters.is_empty() {
            return Err(ApiError::Invalid("unsubscribe needs at least one filter".into()));
        }
        for f in &filters {
            topic::validate_topic_filter(f).map_err(|e| ApiError::Invalid(text!("filter `", f, "`: ", e.message())))?;
        }
        self.enqueue(now, Request::Unsubscribe(filters), None)
    }

    fn enqueue(&mut self, now: Instant, request: Request, deadline: Option<Instant>) -> Result<Token, ApiError> {
        if self.pending.len() + self.inflight.len() >= self.cfg.max_queued as usize {
            return Err(ApiError::QueueFull);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.pending.push_back(Queued { token: Some(token), request, deadline });
        self.pump(now);
        Ok(token)
    }

    /// Stop waiting for a publish. Unsent: removed. In flight: the packet id stays reserved
    /// and the exchange completes on the wire (so the protocol is never broken), but no
    /// event will name the token. Returns whether the token was found.
    pub fn cancel(&mut self, token: Token) -> bool {
        if let Some(i) = self.pending.iter().position(|q| q.token == Some(token)) {
            self.pending.remove(i);
            return true;
        }
        if let Some(f) = self.inflight.iter_mut().find(|f| f.token == Some(token)) {
            f.token = None;
            return true;
        }
        false
    }

    /// Ping the broker now; [`Event::BrokerUp`] reports whether it answered in time.
    pub fn broker_up(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::Connected {
            self.events.push_back(Event::BrokerUp(false));
            return;
        }
        self.broker_up_asked = true;
        if self.ping_sent.is_none() {
            self.send_ping(now);
        }
    }

    /// MQTT 5 enhanced authentication: answer the broker's challenge ([`Event::Auth`] with
    /// reason 0x18) with `data`, or, when connected and not challenged, start a
    /// re-authentication (AUTH 0x19) with it.
    pub fn authenticate(&mut self, now: Instant, data: Vec<u8>) -> Result<(), ApiError> {
        self.now = now;
        let Some(method) = self.cfg.auth_method.clone() else {
            return Err(ApiError::Invalid("authenticate needs `auth_method` in the config".into()));
        };
        let reason = match self.state {
            State::AwaitConnack { .. } | State::Connected if self.auth_challenged => 0x18,
            State::Connected => 0x19,
            _ => return Err(ApiError::Invalid("no authentication exchange in progress".into())),
        };
        self.auth_challenged = false;
        let properties = Properties { authentication_method: Some(method), authentication_data: Some(data), ..Properties::default() };
        self.send(now, &Packet::Auth(Disconnect { reason, properties }));
        Ok(())
    }

    /// Send DISCONNECT (the broker then discards the will) and close for good. Requests
    /// not yet completed fail: a publish with reason 0, a subscribe or unsubscribe with
    /// 0x80 (the spec's failure code) for each of its filters, so every token completes.
    pub fn disconnect(&mut self, now: Instant) {
        self.now = now;
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Connected && !self.faulty(TestFault::DisconnectWithoutPacket) {
            self.send(now, &Packet::Disconnect(Disconnect { reason: 0, properties: Properties::default() }));
        }
        if self.up {
            self.events.push_back(Event::Down(DownReason::Requested));
            self.up = false;
        }
        self.close_socket();
        const FAILED: u8 = 0x80;
        for q in core::mem::take(&mut self.pending) {
            let Some(token) = q.token else { continue };
            self.events.push_back(match q.request {
                Request::Publish(_) => Event::PublishFailed { token, reason: 0 },
                Request::Subscribe(filters, _) => Event::Subscribed { token, codes: alloc::vec![FAILED; filters.len()] },
                Request::Unsubscribe(filters) => Event::Unsubscribed { token, codes: alloc::vec![FAILED; filters.len()] },
            });
        }
        for f in core::mem::take(&mut self.inflight) {
            let Some(token) = f.token else { continue };
            self.events.push_back(match f.waiting {
                Waiting::Publish(_) | Waiting::Release => Event::PublishFailed { token, reason: 0 },
                Waiting::SubAck(filters, _) => Event::Subscribed { token, codes: alloc::vec![FAILED; filters.len()] },
                Waiting::UnsubAck(filters) => Event::Unsubscribed { token, codes: alloc::vec![FAILED; filters.len()] },
            });
        }
        if self.cfg.ssid.is_some() {
            self.actions.push(Action::LeaveWifi);
        }
        self.state = State::Closed;
    }

    // ------------------------------------------------------------------------------------
    // Inputs

    /// The link (WiFi) changed. Call with the current state once at start and on every change.
    pub fn handle_link(&mut self, now: Instant, link: LinkState) {
        self.now = now;
        if link == self.link {
            return;
        }
        self.link = link;
        self.events.push_back(Event::Link(link));
        match (link, self.state) {
            (LinkState::Up, State::WaitLink { .. }) if self.faulty(TestFault::NoRetryOnLinkUp) => {
                self.state = State::Backoff { until: now + u64::from(self.cfg.backoff_max_ms) };
            }
            (LinkState::Up, State::WaitLink { .. }) => {
                // The link is back: retry at once, not after a stale backoff.
                self.backoff_attempt = 0;
                self.open(now);
            }
            (LinkState::Up, _) => {}
            (_, State::Opening { .. } | State::AwaitConnack { .. } | State::Connected | State::Backoff { .. }) => {
                self.lost(now, DownReason::LinkLost);
            }
            _ => {}
        }
    }

    /// The socket requested by [`Action::OpenSocket`] is open (TLS handshake done).
    pub fn handle_socket_open(&mut self, now: Instant) {
        self.now = now;
        if let State::Opening { .. } = self.state {
            self.decoder = Decoder::new(self.version, self.cfg.max_packet_size);
            self.last_rx = now;
            let connect = self.connect_packet();
            self.send(now, &Packet::Connect(connect));
            self.state = State::AwaitConnack { deadline: now + u64::from(self.cfg.response_time_ms) };
        }
    }

    /// The current socket failed (including an orderly close by the broker).
    pub fn handle_socket_error(&mut self, now: Instant, error: SocketError) {
        self.now = now;
        if self.socket_open {
            self.lost(now, DownReason::Socket(error));
        }
    }

    /// Bytes that arrived on the current socket. With `backpressure`, read from the socket
    /// only while [`Client::wants_input`] says so.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.now = now;
        if !self.socket_open || bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_rx = now;
        self.decoder.feed(bytes);
        self.decode(now);
    }

    /// False while `backpressure` holds input back: the application has `queue_len`
    /// messages to take first. The host should then leave the socket unread (TCP pushes
    /// back on the broker); bytes it already handed over wait in the decoder.
    pub fn wants_input(&self) -> bool {
        !self.reading_paused()
    }

    fn reading_paused(&self) -> bool {
        self.cfg.backpressure
            && self.state == State::Connected
            && self.queued_messages >= self.cfg.queue_len as usize
            && !self.faulty(TestFault::IgnoreBackpressure)
    }

    /// While input is held back, answers may sit unread behind it: no response deadline runs.
    fn deadlines_suspended(&self) -> bool {
        self.reading_paused() && !self.faulty(TestFault::DeadlinesWhileHeld)
    }

    fn decode(&mut self, now: Instant) {
        let discards_before = self.stats.discards;
        self.input_held = false;
        while self.socket_open {
            if self.reading_paused() {
                self.input_held = true;
                break;
            }
            match self.decoder.next_packet() {
                Ok(Some(packet)) => self.handle_packet(now, packet),
                Ok(None) => break,
                Err(e) => {
                    self.protocol_error(now, e.message(), e.reason_code());
                    break;
                }
            }
        }
        if self.stats.discards != discards_before {
            self.events.push_back(Event::Discarded(self.stats.discards));
        }
    }

    /// Time passed: run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.input_held && !self.reading_paused() {
            self.decode(now);
        }
        self.expire_pending(now);
        match self.state {
            State::WaitLink { give_up, rejoin_at } => {
                if give_up.is_some_and(|t| now >= t) {
                    self.lost(now, DownReason::LinkLost);
                } else if rejoin_at.is_some_and(|t| now >= t) {
                    self.join_wifi(now, give_up);
                }
            }
            State::Backoff { until } if now >= until => self.attempt(now, None),
            State::Opening { deadline } if now >= deadline => self.lost(now, DownReason::Socket(SocketError::TimedOut)),
            State::AwaitConnack { deadline } if now >= deadline => self.lost(now, DownReason::Timeout),
            State::Connected => self.connected_timers(now),
            _ => {}
        }
    }

    // ------------------------------------------------------------------------------------
    // Outputs

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmits.is_empty()).then(|| core::mem::take(&mut self.transmits))
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    /// The next event that is not an incoming message: messages stay queued (in order,
    /// bounded by `queue_len`) for an application that cannot take them now.
    pub fn poll_event_except_messages(&mut self) -> Option<Event> {
        let i = self.events.iter().position(|e| !matches!(e, Event::Message(_)))?;
        self.events.remove(i)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        if matches!(e, Event::Message(_)) {
            if self.deadlines_suspended() {
                self.resumed_at = self.now;
            }
            self.queued_messages -= 1;
        }
        Some(e)
    }

    /// The next instant at which [`Client::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.input_held && !self.reading_paused() {
            // Room again for the input held back: decode it at once.
            return Some(self.now);
        }
        let mut next = self.pending.iter().filter_map(|q| q.deadline).min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        match self.state {
            State::WaitLink { give_up, rejoin_at } => {
                consider(give_up);
                consider(rejoin_at);
            }
            State::Backoff { until } => consider(Some(until)),
            State::Opening { deadline } | State::AwaitConnack { deadline } => consider(Some(deadline)),
            State::Connected => {
                consider(self.ping_due());
                if !self.deadlines_suspended() {
                    consider(self.ping_sent.map(|_| self.ping_deadline()));
                    for f in &self.inflight {
                        consider(Some(self.ack_deadline(f)));
                    }
                }
            }
            State::Idle | State::Closed => {}
        }
        next
    }

    /// Whether this is a `test-faults` build told to show `fault`. Always false otherwise,
    /// so the deliberate misbehaviour compiles away.
    #[inline(always)]
    fn faulty(&self, fault: TestFault) -> bool {
        #[cfg(feature = "test-faults")]
        return self.cfg.test_fault == Some(fault);
        #[cfg(not(feature = "test-faults"))]
        {
            let _ = fault;
            false
        }
    }

    // ------------------------------------------------------------------------------------
    // Connection manager

    /// Open a connection now if the link allows, else wait for it.
    fn attempt(&mut self, now: Instant, give_up: Option<Instant>) {
        if self.link == LinkState::Up {
            self.open(now);
        } else {
            self.join_wifi(now, give_up);
        }
    }

    fn join_wifi(&mut self, now: Instant, give_up: Option<Instant>) {
        let rejoin_at = match (&self.cfg.ssid, self.link) {
            (Some(ssid), LinkState::Down) => {
                let password = self.cfg.wifi_pw.clone().unwrap_or_default();
                self.actions.push(Action::JoinWifi { ssid: ssid.clone(), password });
                Some(now + self.next_backoff())
            }
            _ => None,
        };
        self.state = State::WaitLink { give_up, rejoin_at };
    }

    fn open(&mut self, now: Instant) {
        let tls = if self.cfg.ssl {
            Some(self.cfg.ssl_params.clone().unwrap_or_else(|| crate::config::TlsParams { server_name: self.cfg.server.clone(), ..Default::default() }))
        } else {
            None
        };
        self.actions.push(Action::OpenSocket { host: self.cfg.server.clone(), port: self.cfg.port(), tls });
        self.socket_open = true;
        self.state = State::Opening { deadline: now + u64::from(self.cfg.response_time_ms) };
    }

    fn close_socket(&mut self) {
        if self.socket_open {
            self.actions.push(Action::CloseSocket);
            self.socket_open = false;
        }
        self.decoder.clear();
        self.input_held = false;
        self.auth_challenged = false;
        self.ping_sent = None;
        self.aliases_in.clear();
        if !self.faulty(TestFault::KeepTopicAliases) {
            self.aliases_out.clear();
        }
    }

    /// Exponential backoff with jitter: uniform in [d/2, d], d = min(max, min·2^attempt).
    fn next_backoff(&mut self) -> u64 {
        if self.faulty(TestFault::NoBackoff) {
            return 0;
        }
        let min = u64::from(self.cfg.backoff_min_ms);
        let max = u64::from(self.cfg.backoff_max_ms);
        let d = min.saturating_mul(1u64 << self.backoff_attempt.min(20)).min(max);
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        d / 2 + self.rng.below(d / 2 + 1)
    }

    /// The connection (or the attempt) is gone: report, close, and plan the next attempt.
    fn lost(&mut self, now: Instant, reason: DownReason) {
        if self.broker_up_asked {
            self.broker_up_asked = false;
            self.events.push_back(Event::BrokerUp(false));
        }
        // Bytes not yet handed to the socket belong to the dead connection; the session
        // state (in-flight, pending) is what gets resent.
        self.transmits.clear();
        self.close_socket();
        if self.up {
            self.up = false;
            self.events.push_back(Event::Down(reason.clone()));
        }
        if !self.ever_up {
            self.events.push_back(Event::ConnectFailed(reason.message()));
            self.state = State::Idle;
            return;
        }
        if self.link == LinkState::Up {
            let delay = self.next_backoff();
            self.state = State::Backoff { until: now + delay };
        } else {
            self.join_wifi(now, None);
        }
    }

    fn protocol_error(&mut self, now: Instant, why: String, reason_code: u8) {
        self.stats.protocol_errors += 1;
        // MQTT 5 tells the broker why before closing: only that DISCONNECT goes out, ahead
        // of the close `lost` queues (bytes are drained before actions).
        let mut bye = Vec::new();
        if self.version == ProtocolVersion::V5 && self.socket_open {
            let start = self.transmits.len();
            self.send(now, &Packet::Disconnect(Disconnect { reason: reason_code, properties: Properties::default() }));
            bye = self.transmits.split_off(start);
        }
        self.lost(now, DownReason::ProtocolError(why));
        self.transmits = bye;
    }

    fn connect_packet(&self) -> Connect {
        let clean = if self.faulty(TestFault::AlwaysClean) {
            true
        } else if self.initial_done || self.faulty(TestFault::IgnoreCleanInit) {
            self.cfg.clean
        } else {
            self.cfg.clean_init
        };
        let v5 = self.version == ProtocolVersion::V5;
        let mut properties = Properties::default();
        if v5 {
            if self.cfg.session_expiry_secs > 0 {
                properties.session_expiry_interval = Some(self.cfg.session_expiry_secs);
            }
            properties.receive_maximum = Some(self.cfg.receive_maximum);
            properties.maximum_packet_size = Some(self.cfg.max_packet_size);
            if self.cfg.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.cfg.topic_alias_maximum);
            }
            properties.user_properties = self.cfg.connect_user_properties.clone();
            properties.authentication_method = self.cfg.auth_method.clone();
            properties.authentication_data = self.cfg.auth_data.clone();
        }
        let will = self.cfg.will.as_ref().filter(|_| !self.faulty(TestFault::NoWill)).map(|w| {
            let mut properties = if v5 { w.properties.clone() } else { Properties::default() };
            if v5 {
                properties.will_delay_interval = w.delay_secs;
            }
            LastWill { topic: w.topic.clone(), payload: w.payload.clone(), qos: w.qos, retain: w.retain, properties }
        });
        Connect {
            protocol: self.version,
            clean_start: clean,
            keep_alive: self.cfg.keepalive_secs,
            client_id: self.client_id.clone(),
            will,
            username: self.cfg.user.clone(),
            password: self.cfg.password.clone(),
            properties,
        }
    }

    fn handle_connack(&mut self, now: Instant, ack: crate::codec::ConnAck) {
        if ack.code != 0 {
            let text = connack_text(self.version, ack.code);
            self.transmits.clear();
            self.close_socket();
            if !self.ever_up {
                self.events.push_back(Event::ConnectFailed(text));
                self.state = State::Idle;
            } else {
                self.events.push_back(Event::Error(text));
                let delay = self.next_backoff();
                self.state = State::Backoff { until: now + delay };
            }
            return;
        }
        if self.purging {
            // mqtt_as clean_init: the old session is gone now; start the persistent one.
            self.purging = false;
            self.initial_done = true;
            self.send(now, &Packet::Disconnect(Disconnect { reason: 0, properties: Properties::default() }));
            self.close_socket();
            self.open(now);
            return;
        }
        let p = &ack.properties;
        self.limits = ServerLimits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: p.maximum_packet_size.unwrap_or(crate::codec::MAX_REMAINING_LENGTH + 5),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            maximum_qos: if p.maximum_qos == Some(0) {
                QoS::AtMostOnce
            } else if p.maximum_qos == Some(1) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            },
            keepalive_secs: p.server_keep_alive.unwrap_or(self.cfg.keepalive_secs),
            subscription_ids: p.subscription_identifier_available != Some(0),
        };
        if let Some(data) = ack.properties.authentication_data.clone() {
            // The broker's last word in the exchange (e.g. SCRAM's server signature).
            self.events.push_back(Event::Auth { reason: 0, data });
        }
        self.auth_challenged = false;
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone();
        }
        self.state = State::Connected;
        self.stats.connects += 1;
        if self.ever_up {
            self.stats.reconnects += 1;
        }
        self.ever_up = true;
        self.initial_done = true;
        self.up = true;
        self.backoff_attempt = 0;
        self.events.push_back(Event::Up { session_present: ack.session_present });
        self.resume(now, ack.session_present);
        self.pump(now);
    }

    /// After CONNACK: resend what the broker may not have (session present), or start the
    /// unfinished requests over as new ones (clean session).
    fn resume(&mut self, now: Instant, session_present: bool) {
        if !session_present {
            self.incoming_qos2.clear();
        }
        let mut inflight = core::mem::take(&mut self.inflight);
        if self.faulty(TestFault::ResendReversed) {
            inflight.make_contiguous().reverse();
        }
        let mut restart: Vec<Queued> = Vec::new();
        let mut dropped_one = false;
        for mut f in inflight {
            if session_present {
                if self.faulty(TestFault::DropRepublish) && matches!(f.waiting, Waiting::Publish(_)) && !dropped_one {
                    dropped_one = true;
                    if let Some(token) = f.token {
                        self.events.push_back(Event::Published(token));
                    }
                    continue;
                }
                if self.faulty(TestFault::ResendNewPacketId)
                    && matches!(f.waiting, Waiting::Publish(_))
                    && let Some(pid) = self.alloc_pid()
                {
                    f.pid = pid;
                }
                f.sent_at = now;
                f.repubs = 0;
                let dup = !self.faulty(TestFault::ResendWithoutDup);
                let packet = self.packet_for(f.pid, &f.waiting, dup);
                self.inflight.push_back(f);
                self.send(now, &packet);
            } else {
                match f.waiting {
                    // The broker took ownership at PUBREC: with the session gone there is
                    // nothing to release, and the message was accepted.
                    Waiting::Release => {
                        if let Some(token) = f.token {
                            self.events.push_back(Event::Published(token));
                        }
                    }
                    Waiting::Publish(p) => restart.push(Queued { token: f.token, request: Request::Publish(p), deadline: None }),
                    Waiting::SubAck(s, p) => restart.push(Queued { token: f.token, request: Request::Subscribe(s, p), deadline: None }),
                    Waiting::UnsubAck(u) => restart.push(Queued { token: f.token, request: Request::Unsubscribe(u), deadline: None }),
                }
            }
        }
        // Older requests go first: in-flight ones were accepted before anything pending.
        for q in restart.into_iter().rev() {
            self.pending.push_front(q);
        }
        if !session_present && self.cfg.resubscribe && !self.subscriptions.is_empty() && !self.faulty(TestFault::NoResubscribe) {
            let already: Vec<&str> = self
                .pending
                .iter()
                .filter_map(|q| match &q.request {
                    Request::Subscribe(s, _) => Some(s.iter().map(|f| f.filter.as_str())),
                    _ => None,
                })
                .flatten()
                .collect();
            // One SUBSCRIBE per run of filters granted with the same properties (in practice,
            // per original request), so subscription identifiers come back as they were.
            let mut again: Vec<Queued> = Vec::new();
            for (filter, props) in self.subscriptions.iter().filter(|(f, _)| !already.contains(&f.filter.as_str())) {
                match again.last_mut() {
                    Some(Queued { request: Request::Subscribe(filters, p), .. }) if p == props => filters.push(filter.clone()),
                    _ => again.push(Queued { token: None, request: Request::Subscribe(vec![filter.clone()], props.clone()), deadline: None }),
                }
            }
            for q in again.into_iter().rev() {
                self.pending.push_front(q);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Session

    fn window(&self) -> usize {
        usize::from(self.cfg.max_inflight.min(self.limits.receive_maximum))
    }

    fn inflight_publishes(&self) -> usize {
        self.inflight.iter().filter(|f| matches!(f.waiting, Waiting::Publish(_) | Waiting::Release)).count()
    }

    fn alloc_pid(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.next_pid = if self.next_pid == u16::MAX { 1 } else { self.next_pid + 1 };
            let candidate = self.next_pid;
            if !self.inflight.iter().any(|f| f.pid.get() == candidate) {
                return PacketId::new(candidate);
            }
        }
        None
    }

    /// Move queued requests onto the wire while the connection and the window allow.
    fn pump(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        let mut in_window = self.inflight_publishes();
        while let Some(front) = self.pending.front() {
            let needs_slot = matches!(&front.request, Request::Publish(p) if p.qos != QoS::AtMostOnce);
            if needs_slot && in_window >= self.window() {
                break;
            }
            let Some(q) = self.pending.pop_front() else { break };
            if let Request::Publish(p) = &q.request {
                if p.qos > self.limits.maximum_qos {
                    if let Some(token) = q.token {
                        self.events.push_back(Event::PublishFailed { token, reason: 0x9B });
                    }
                    continue;
                }
                if p.qos == QoS::AtMostOnce {
                    let packet = self.publish_packet(p, None, false);
                    if self.fits(&packet, q.token) {
                        self.send(now, &packet);
                        if let Some(token) = q.token {
                            self.events.push_back(Event::Published(token));
                        }
                    }
                    continue;
                }
            }
            let Some(pid) = self.alloc_pid() else {
                self.pending.push_front(q);
                break;
            };
            let waiting = match q.request {
                Request::Publish(p) => {
                    in_window += 1;
                    Waiting::Publish(p)
                }
                Request::Subscribe(s, p) if p.subscription_id.is_some() && !self.limits.subscription_ids => {
                    // The broker said it has no subscription identifiers (CONNACK): sending
                    // one would be a protocol error on our side (spec 3.8.2.1.2).
                    if let Some(token) = q.token {
                        self.events.push_back(Event::Subscribed { token, codes: vec![0xA1; s.len()] });
                    }
                    continue;
                }
                Request::Subscribe(s, p) => Waiting::SubAck(s, p),
                Request::Unsubscribe(u) => Waiting::UnsubAck(u),
            };
            let f = InFlight { pid, token: q.token, waiting, sent_at: now, repubs: 0 };
            let packet = self.packet_for(pid, &f.waiting, false);
            if matches!(f.waiting, Waiting::Publish(_)) && !self.fits(&packet, f.token) {
                in_window -= 1;
                continue;
            }
            self.inflight.push_back(f);
            self.send(now, &packet);
        }
    }

    /// MQTT 5 Maximum Packet Size from the broker: a publish over it can never be sent.
    fn fits(&mut self, packet: &Packet, token: Option<Token>) -> bool {
        let size = packet.encode(self.version).len() as u64;
        if size <= u64::from(self.limits.maximum_packet_size) {
            return true;
        }
        if let Some(token) = token {
            self.events.push_back(Event::PublishFailed { token, reason: 0x95 });
        }
        false
    }

    fn expire_pending(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline.is_some_and(|d| now >= d) {
                if let Some(q) = self.pending.remove(i)
                    && let Some(token) = q.token
                {
                    self.events.push_back(Event::PublishFailed { token, reason: 0 });
                }
            } else {
                i += 1;
            }
        }
    }

    fn publish_packet(&mut self, p: &OutgoingPublish, pid: Option<PacketId>, dup: bool) -> Packet {
        let mut properties = Properties::default();
        let mut topic = p.topic.clone();
        if self.version == ProtocolVersion::V5 {
            let src = &p.properties;
            properties.payload_format_indicator = src.payload_format_indicator;
            properties.message_expiry_interval = src.message_expiry_interval;
            properties.content_type = src.content_type.clone();
            properties.response_topic = src.response_topic.clone();
            properties.correlation_data = src.correlation_data.clone();
            properties.user_properties = src.user_properties.clone();
            if let Some(i) = self.aliases_out.iter().position(|t| *t == p.topic) {
                properties.topic_alias = Some(i as u16 + 1);
                topic = String::new();
            } else if self.aliases_out.len() < usize::from(self.limits.topic_alias_maximum) {
                self.aliases_out.push(p.topic.clone());
                properties.topic_alias = Some(self.aliases_out.len() as u16);
            }
        }
        Packet::Publish(Publish { dup, qos: p.qos, retain: p.retain, topic, packet_id: pid, payload: p.payload.clone(), properties })
    }

    /// The packet that (re)starts an in-flight exchange.
    /// A resent PUBLISH keeps its packet id and has DUP set (spec 4.4).
    fn packet_for(&mut self, pid: PacketId, waiting: &Waiting, resend: bool) -> Packet {
        match waiting {
            Waiting::Publish(p) => self.publish_packet(p, Some(pid), resend),
            Waiting::Release => Packet::PubRel(PubResponse { packet_id: pid, reason: 0, properties: Properties::default() }),
            Waiting::SubAck(filters, p) => {
                let mut properties = Properties::default();
                if self.version == ProtocolVersion::V5 {
                    properties.subscription_identifiers.extend(p.subscription_id);
                    properties.user_properties = p.user_properties.clone();
                }
                Packet::Subscribe(Subscribe { packet_id: pid, filters: filters.clone(), properties })
            }
            Waiting::UnsubAck(filters) => Packet::Unsubscribe(Unsubscribe { packet_id: pid, filters: filters.clone(), properties: Properties::default() }),
        }
    }

    fn send(&mut self, now: Instant, packet: &Packet) {
        let bytes = packet.encode(self.version);
        self.stats.bytes_out += bytes.len() as u64;
        self.last_tx = now;
        self.transmits.extend_from_slice(&bytes);
    }

    // ------------------------------------------------------------------------------------
    // Liveness and acknowledgement timers

    fn keepalive_secs(&self) -> u16 {
        self.limits.keepalive_secs
    }

    fn ping_due(&self) -> Option<Instant> {
        if self.faulty(TestFault::NoPing) {
            return None;
        }
        let interval = self.cfg.ping_interval_ms(self.keepalive_secs())?;
        if self.deadlines_suspended() {
            // Not reading, so a PINGRESP may be waiting unread: keep pinging so the broker
            // still hears from us within its keepalive.
            return Some(self.last_tx + interval);
        }
        if self.ping_sent.is_some() {
            return None;
        }
        Some(self.last_rx.min(self.last_tx) + interval)
    }

    /// Any traffic from the broker after the ping proves it alive as well as a PINGRESP.
    fn ping_deadline(&self) -> Instant {
        let sent = self.ping_sent.unwrap_or(self.now);
        sent.max(self.last_rx).max(self.resumed_at) + u64::from(self.cfg.response_time_ms)
    }

    fn ack_deadline(&self, f: &InFlight) -> Instant {
        f.sent_at.max(self.resumed_at) + self.ack_timeout()
    }

    /// How long an in-flight packet waits before we act: a republication under 3.1.1; under
    /// MQTT 5 (which forbids resending on a live connection, spec 4.4) the connection is
    /// presumed dead after as long as 3.1.1 would have kept republishing.
    fn ack_timeout(&self) -> u64 {
        let rt = u64::from(self.cfg.response_time_ms);
        match self.version {
            ProtocolVersion::V311 => rt,
            ProtocolVersion::V5 => rt * (u64::from(self.cfg.max_repubs) + 1),
        }
    }

    fn send_ping(&mut self, now: Instant) {
        self.ping_sent = Some(now);
        self.send(now, &Packet::PingReq);
    }

    fn connected_timers(&mut self, now: Instant) {
        if self.deadlines_suspended() {
            // Answers may sit unread behind the messages we hold back: no deadline runs.
            if self.ping_due().is_some_and(|t| now >= t) {
                self.send_ping(now);
            }
            return;
        }
        if self.ping_sent.is_some() && now >= self.ping_deadline() {
            self.lost(now, DownReason::Timeout);
            return;
        }
        if self.ping_due().is_some_and(|t| now >= t) {
            self.send_ping(now);
        }
        for i in 0..self.inflight.len() {
            if now < self.ack_deadline(&self.inflight[i]) {
                continue;
            }
            if self.version == ProtocolVersion::V5 || self.inflight[i].repubs >= self.cfg.max_repubs {
                let reason = if self.version == ProtocolVersion::V5 { DownReason::Timeout } else { DownReason::MaxRepubs };
                self.lost(now, reason);
                return;
            }
            if self.faulty(TestFault::DropRepublish) && matches!(self.inflight[i].waiting, Waiting::Publish(_)) {
                // Instead of republishing, pretend the broker acknowledged.
                if let Some(f) = self.inflight.remove(i)
                    && let Some(token) = f.token
                {
                    self.events.push_back(Event::Published(token));
                }
                self.pump(now);
                return;
            }
            let f = &mut self.inflight[i];
            f.repubs += 1;
            f.sent_at = now;
            // Borrowed out and back rather than cloned (a clone of a publish and its
            // properties costs code as well as time).
            let (pid, waiting) = (f.pid, core::mem::replace(&mut f.waiting, Waiting::Release));
            if matches!(waiting, Waiting::Publish(_)) {
                self.stats.republishes += 1;
            }
            let dup = !self.faulty(TestFault::ResendWithoutDup);
            let packet = self.packet_for(pid, &waiting, dup);
            self.inflight[i].waiting = waiting;
            self.send(now, &packet);
        }
    }

    // ------------------------------------------------------------------------------------
    // Incoming packets

    fn take_inflight(&mut self, pid: PacketId, want: fn(&Waiting) -> bool) -> Option<InFlight> {
        let i = self.inflight.iter().position(|f| f.pid == pid && want(&f.waiting))?;
        self.inflight.remove(i)
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) {
        if let State::AwaitConnack { .. } = self.state {
            match packet {
                Packet::ConnAck(ack) => self.handle_connack(now, ack),
                Packet::Auth(a) => {
                    if self.handle_auth(now, a) {
                        // Our turn: the application has a response time to answer, and the
                        // broker one more for its next step.
                        self.state = State::AwaitConnack { deadline: now + 2 * u64::from(self.cfg.response_time_ms) };
                    }
                }
                other => self.protocol_error(now, text!(other.name(), " before CONNACK"), 0x82),
            }
            return;
        }
        if self.state != State::Connected {
            return;
        }
        match packet {
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::PubAck(a) => {
                let qos1 = |w: &Waiting| matches!(w, Waiting::Publish(p) if p.qos == QoS::AtLeastOnce);
                if let Some(f) = self.take_inflight(a.packet_id, qos1) {
                    self.complete(f.token, a.reason);
                    self.pump(now);
                }
            }
            Packet::PubRec(a) => {
                let qos2 = |w: &Waiting| matches!(w, Waiting::Publish(p) if p.qos == QoS::ExactlyOnce) || matches!(w, Waiting::Release);
                let Some(i) = self.inflight.iter().position(|f| f.pid == a.packet_id && qos2(&f.waiting)) else {
                    return;
                };
                if a.reason >= 0x80 {
                    if let Some(f) = self.take_inflight(a.packet_id, qos2) {
                        self.complete(f.token, a.reason);
                        self.pump(now);
                    }
                    return;
                }
                let f = &mut self.inflight[i];
                f.waiting = Waiting::Release;
                f.sent_at = now;
                f.repubs = 0;
                let rel = PubResponse { packet_id: a.packet_id, reason: 0, properties: Properties::default() };
                self.send(now, &Packet::PubRel(rel));
            }
            Packet::PubRel(a) => {
                let id = a.packet_id.get();
                let known = self.incoming_qos2.contains(&id);
                self.incoming_qos2.retain(|x| *x != id);
                let reason = if known || self.version == ProtocolVersion::V311 { 0 } else { 0x92 };
                let comp = PubResponse { packet_id: a.packet_id, reason, properties: Properties::default() };
                self.send(now, &Packet::PubComp(comp));
            }
            Packet::PubComp(a) => {
                if let Some(f) = self.take_inflight(a.packet_id, |w| matches!(w, Waiting::Release)) {
                    self.complete(f.token, a.reason);
                    self.pump(now);
                }
            }
            Packet::SubAck(a) => {
                let Some(f) = self.take_inflight(a.packet_id, |w| matches!(w, Waiting::SubAck(..))) else { return };
                let Waiting::SubAck(filters, props) = f.waiting else { return };
                if filters.len() != a.codes.len() {
                    self.protocol_error(now, "SUBACK code count differs from the SUBSCRIBE's filters".into(), 0x82);
                    return;
                }
                for (filter, code) in filters.into_iter().zip(&a.codes) {
                    if *code < 0x80 {
                        self.subscriptions.retain(|(s, _)| s.filter != filter.filter);
                        self.subscriptions.push((filter, props.clone()));
                    }
                }
                if let Some(token) = f.token {
                    self.events.push_back(Event::Subscribed { token, codes: a.codes });
                }
                self.pump(now);
            }
            Packet::UnsubAck(a) => {
                let Some(f) = self.take_inflight(a.packet_id, |w| matches!(w, Waiting::UnsubAck(_))) else { return };
                if let Waiting::UnsubAck(filters) = f.waiting {
                    for filter in filters {
                        self.subscriptions.retain(|(s, _)| s.filter != filter);
                    }
                }
                if let Some(token) = f.token {
                    self.events.push_back(Event::Unsubscribed { token, codes: a.codes });
                }
                self.pump(now);
            }
            Packet::PingResp => {
                self.ping_sent = None;
                if self.broker_up_asked {
                    self.broker_up_asked = false;
                    self.events.push_back(Event::BrokerUp(true));
                }
            }
            Packet::Disconnect(d) if self.version == ProtocolVersion::V5 => {
                if let Some(r) = d.properties.reason_string {
                    self.events.push_back(Event::Error(text!("broker disconnect: ", r)));
                }
                self.lost(now, DownReason::ServerDisconnect(d.reason));
            }
            Packet::Auth(a) => {
                self.handle_auth(now, a);
            }
            other => self.protocol_error(now, text!(other.name(), " is not sent by a broker"), 0x82),
        }
    }

    /// The broker's AUTH (spec 4.12): only for the method we asked for, only to continue
    /// (0x18) or to conclude a re-authentication (0x00). Returns whether it was accepted.
    fn handle_auth(&mut self, now: Instant, a: Disconnect) -> bool {
        let Some(method) = &self.cfg.auth_method else {
            self.protocol_error(now, "AUTH received, but no authentication method was requested".into(), 0x82);
            return false;
        };
        if a.properties.authentication_method.as_ref() != Some(method) {
            self.protocol_error(now, text!("AUTH does not name our authentication method `", method, "`"), 0x82);
            return false;
        }
        let initial = matches!(self.state, State::AwaitConnack { .. });
        match a.reason {
            0x18 => self.auth_challenged = true,
            0x00 if !initial => self.auth_challenged = false,
            r => {
                self.protocol_error(now, text!("AUTH with reason code ", Hex(r), " here"), 0x82);
                return false;
            }
        }
        self.events.push_back(Event::Auth { reason: a.reason, data: a.properties.authentication_data.unwrap_or_default() });
        true
    }

    fn complete(&mut self, token: Option<Token>, reason: u8) {
        let Some(token) = token else { return };
        if reason >= 0x80 {
            self.events.push_back(Event::PublishFailed { token, reason });
        } else {
            self.events.push_back(Event::Published(token));
        }
    }

    fn handle_publish(&mut self, now: Instant, mut p: Publish) {
        if self.version == ProtocolVersion::V5
            && let Some(alias) = p.properties.topic_alias.take()
        {
            if alias > self.cfg.topic_alias_maximum {
                self.protocol_error(now, text!("topic alias ", alias, " over our maximum ", self.cfg.topic_alias_maximum), 0x94);
                return;
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(usize::from(alias) - 1) {
                    Some(Some(t)) => p.topic = t.clone(),
                    _ => {
                        self.protocol_error(now, text!("unknown topic alias ", alias), 0x82);
                        return;
                    }
                }
            } else {
                let i = usize::from(alias) - 1;
                if self.aliases_in.len() <= i {
                    self.aliases_in.resize(i + 1, None);
                }
                self.aliases_in[i] = Some(p.topic.clone());
            }
        }
        let deliver = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => true,
            (QoS::AtLeastOnce, Some(pid)) => {
                let ack = PubResponse { packet_id: pid, reason: 0, properties: Properties::default() };
                self.send(now, &Packet::PubAck(ack));
                true
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                let fresh = !self.incoming_qos2.contains(&pid.get());
                if fresh && self.incoming_qos2.len() >= usize::from(self.cfg.receive_maximum) && self.version == ProtocolVersion::V5 {
                    self.protocol_error(now, "broker exceeded our Receive Maximum".into(), 0x93);
                    return;
                }
                if fresh {
                    self.incoming_qos2.push(pid.get());
                }
                let rec = PubResponse { packet_id: pid, reason: 0, properties: Properties::default() };
                self.send(now, &Packet::PubRec(rec));
                fresh || self.faulty(TestFault::Qos2DeliverTwice)
            }
            _ => false,
        };
        if !deliver {
            return;
        }
        let properties = (self.version == ProtocolVersion::V5).then_some(p.properties);
        let message = Message { topic: p.topic, payload: p.payload, qos: p.qos, retained: p.retain, dup: p.dup, properties };
        if self.queued_messages >= self.cfg.queue_len as usize && self.faulty(TestFault::DiscardNewest) {
            self.stats.discards += 1;
            return;
        }
        if self.queued_messages >= self.cfg.queue_len as usize {
            // mqtt_as's policy: the oldest waiting message makes room.
            if let Some(i) = self.events.iter().position(|e| matches!(e, Event::Message(_))) {
                self.events.remove(i);
                self.queued_messages -= 1;
                self.stats.discards += 1;
            }
        }
        self.queued_messages += 1;
        self.events.push_back(Event::Message(alloc::boxed::Box::new(message)));
    }
}
