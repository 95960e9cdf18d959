//! The connection manager: link → socket → CONNECT → CONNACK → up, and back down with a
//! backoff on loss; on CONNACK, the session is resumed or started over.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;

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

/// How often a client that was up looks for a broker that does not answer: silence (a
/// lossy or dead path swallows the SYN) or nothing listening (a broker restarting). Such an
/// attempt never reached an MQTT server, so it costs the broker nothing and is repeated at
/// this steady pace instead of on the growing backoff, which would otherwise leave the
/// client several seconds late after the outage ends. Raised to `backoff_min_ms` when that
/// is longer. An open waits this long (or four times the last open, for a slow path, within
/// the response time) before a fresh one replaces it: a silent path's SYN is then sent again
/// this often, where TCP's own retransmissions back off to 3, 7, 15 s.
pub const PROBE_MS: u64 = 800;

/// Fast probes in a row before attempts fall back to the full response time and the
/// backoff: a broker gone for good is not probed at this pace forever, and a path that has
/// become slower than the probe still gets attempts long enough to connect.
pub const FAST_PROBES: u8 = 32;

impl Client {
    /// Open a connection now if the link allows, else wait for it.
    pub(super) fn attempt(&mut self, now: Instant, give_up: Option<Instant>) {
        if self.link == LinkState::Up {
            self.open(now);
        } else {
            self.join_wifi(now, give_up);
        }
    }

    pub(super) fn join_wifi(&mut self, now: Instant, give_up: Option<Instant>) {
        let rejoin_at = match (&self.cfg.ssid, self.link) {
            (Some(ssid), LinkState::Down) => {
                let password = self.cfg.wifi_pw.clone().unwrap_or_default();
                self.actions.push(Action::JoinWifi { ssid: ssid.clone(), password });
                Some(now + self.next_backoff(self.backoff_max()))
            }
            _ => None,
        };
        self.state = State::WaitLink { give_up, rejoin_at };
    }

    pub(super) fn open(&mut self, now: Instant) {
        let (host, port) = self.cfg.broker(self.broker);
        let tls = if self.cfg.ssl {
            let mut p = self.cfg.ssl_params.clone().unwrap_or_else(|| crate::config::TlsParams { server_name: self.cfg.server.clone(), ..Default::default() });
            // The name checked is the broker's own, unless the application named another.
            if p.server_name == self.cfg.server {
                p.server_name = host.clone();
            }
            Some(p)
        } else {
            None
        };
        self.actions.push(Action::OpenSocket { host, port, tls });
        self.socket_open = true;
        let mut wait = u64::from(self.cfg.response_time_ms);
        if self.probing() {
            wait = wait.min(self.probe_ms().max(4 * self.open_ms));
        }
        self.state = State::Opening { since: now, deadline: now + wait };
    }

    /// Attempts are fast probes: the client was up (the first connect keeps the full
    /// response time) and has not used its fast probes up.
    fn probing(&self) -> bool {
        self.ever_up && self.probes < FAST_PROBES && !self.faulty(TestFault::NoProbe)
    }

    fn probe_ms(&self) -> u64 {
        PROBE_MS.max(u64::from(self.cfg.backoff_min_ms))
    }

    pub(super) fn close_socket(&mut self) {
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

    /// The connection lasted its response time, or the broker acknowledged something on it:
    /// a later loss starts the backoff over (see `unacknowledged_ups`).
    #[inline]
    pub(super) fn connection_proven(&mut self) {
        self.unacknowledged_ups = 0;
        self.backoff_attempt = 0;
    }

    fn backoff_max(&self) -> u64 {
        u64::from(self.cfg.backoff_max_ms)
    }

    /// Exponential backoff with jitter: uniform in [d/2, d], d = min(max, min·2^attempt);
    /// `max` is `backoff_max_ms` unless the attempt was a probe.
    pub(super) fn next_backoff(&mut self, max: u64) -> u64 {
        if self.faulty(TestFault::NoBackoff) {
            return 0;
        }
        let min = u64::from(self.cfg.backoff_min_ms);
        let d = min.saturating_mul(1u64 << self.backoff_attempt.min(20)).min(max);
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        d / 2 + self.rng.below(d / 2 + 1)
    }

    /// MQTT 3.1.1 with clean_init and not clean: the power-up connection only purges the old
    /// session (mqtt_as's way), then the client reconnects unclean.
    pub(super) fn purging(&self) -> bool {
        !self.initial_done && !self.cfg.mqttv5 && self.cfg.clean_init && !self.cfg.clean
    }

    /// A connection attempt failed on the broker in use: the next one goes to the next
    /// broker (a connection that was up is not an attempt that failed). True when the first
    /// connect has brokers left to try before it reports `ConnectFailed`.
    fn attempt_failed(&mut self) -> bool {
        if matches!(self.state, State::Connected) {
            return false;
        }
        if !self.faulty(TestFault::NoFailover) {
            self.broker = (self.broker + 1) % self.cfg.brokers();
        }
        if !self.ever_up && self.untried > 0 {
            self.untried -= 1;
            return true;
        }
        false
    }

    /// The connection (or the attempt) is gone: report, close, and plan the next attempt.
    pub(super) fn lost(&mut self, now: Instant, reason: DownReason) {
        if self.broker_up_asked {
            self.broker_up_asked = false;
            self.events.push_back(Event::BrokerUp(false));
        }
        // Bytes not yet handed to the socket belong to the dead connection; the session
        // state (in-flight, pending) is what gets resent.
        self.transmits.clear();
        // Up was reported exactly when the state became Connected: a Down is owed.
        if matches!(self.state, State::Connected) {
            self.events.push_back(Event::Down(reason.clone()));
            if now.saturating_since(self.up_at) >= u64::from(self.cfg.response_time_ms) {
                self.connection_proven();
            }
        }
        // An attempt nothing answered: probe again soon (see `PROBE_MS`).
        let probe =
            self.probing() && matches!(self.state, State::Opening { .. }) && matches!(reason, DownReason::Socket(SocketError::TimedOut | SocketError::Refused));
        // Losing the link is not the broker's fault: the same broker is tried again.
        let try_next = reason != DownReason::LinkLost && self.attempt_failed();
        self.close_socket();
        if try_next && self.link == LinkState::Up {
            self.open(now);
            return;
        }
        if !self.ever_up {
            self.events.push_back(Event::ConnectFailed(reason.message()));
            self.state = State::Idle;
            return;
        }
        if self.link == LinkState::Up {
            let mut max = self.backoff_max();
            if probe {
                self.probes += 1;
                if matches!(reason, DownReason::Socket(SocketError::TimedOut)) {
                    // The open's own deadline spaced this probe from the last.
                    self.open(now);
                    return;
                }
                max = max.min(self.probe_ms());
            }
            let delay = self.next_backoff(max);
            self.state = State::Backoff { until: now + delay };
        } else {
            self.join_wifi(now, None);
        }
    }

    pub(super) fn protocol_error(&mut self, now: Instant, why: String, reason_code: ReasonCode) {
        self.stats.protocol_errors += 1;
        // MQTT 5 tells the broker why before closing: only that DISCONNECT goes out, ahead
        // of the close `lost` queues (bytes are drained before actions).
        let mut bye = Vec::new();
        if self.version == ProtocolVersion::V5 && self.socket_open {
            let start = self.transmits.len();
            self.send(now, &Packet::Disconnect(Disconnect { reason: reason_code.0, properties: Properties::default() }));
            bye = self.transmits.split_off(start);
        }
        self.lost(now, DownReason::ProtocolError(why));
        self.transmits = bye;
    }

    pub(super) fn connect_packet(&self) -> Connect {
        let clean = if self.faulty(TestFault::AlwaysClean) {
            true
        } else if self.up_broker.is_some_and(|b| b != self.broker) {
            // Another broker than the one our session lives on: start one there.
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
            if v5 && !self.faulty(TestFault::NoWillDelay) {
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

    pub(super) fn handle_connack(&mut self, now: Instant, ack: crate::codec::ConnAck) {
        if ack.code != 0 {
            let text = connack_text(self.version, ack.code);
            self.transmits.clear();
            let try_next = self.attempt_failed();
            self.close_socket();
            if try_next {
                self.open(now);
                return;
            }
            if !self.ever_up {
                self.events.push_back(Event::ConnectFailed(text));
                self.state = State::Idle;
            } else {
                self.events.push_back(Event::Error(text));
                let delay = self.next_backoff(self.backoff_max());
                self.state = State::Backoff { until: now + delay };
            }
            return;
        }
        if self.purging() {
            // mqtt_as clean_init: the old session is gone now; start the persistent one.
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
            keepalive_secs: p.server_keep_alive.filter(|_| !self.faulty(TestFault::IgnoreServerKeepalive)).unwrap_or(self.cfg.keepalive_secs),
            subscription_ids: p.subscription_identifier_available != Some(0),
        };
        if let Some(data) = ack.properties.authentication_data.clone() {
            // The broker's last word in the exchange (e.g. SCRAM's server signature).
            self.events.push_back(Event::Auth { reason: 0, data });
        }
        self.auth_challenged = false;
        if let Some(id) = p.assigned_client_identifier.as_ref().filter(|_| !self.faulty(TestFault::ForgetAssignedId)) {
            self.client_id = id.clone();
        }
        self.state = State::Connected;
        self.up_broker = Some(self.broker);
        // Where a power-up resumes the session (only a client that resumes one at power-up
        // needs it); synced before anything goes out on it.
        if !self.cfg.clean_init {
            let broker = self.broker as u32;
            self.record(|s| s.session(broker));
        }
        self.stats.connects += 1;
        if self.ever_up {
            self.stats.reconnects += 1;
        }
        self.ever_up = true;
        self.initial_done = true;
        // Until this connection proves itself, it counts as one more failed attempt.
        self.backoff_attempt = u32::from(self.unacknowledged_ups);
        self.unacknowledged_ups = self.unacknowledged_ups.saturating_add(1);
        self.up_at = now;
        self.probes = 0;
        self.events.push_back(Event::Up { session_present: ack.session_present });
        self.resume(now, ack.session_present);
        self.pump(now);
    }

    /// After CONNACK: resend what the broker may not have (session present), or start the
    /// unfinished requests over as new ones (clean session).
    pub(super) fn resume(&mut self, now: Instant, session_present: bool) {
        // Messages still queued from an earlier connection: a QoS 1 PUBACK belongs to the
        // connection that carried the message (a resumed session resends it; a new one may
        // reuse the id), a QoS 2 exchange to the session.
        for e in self.events.iter_mut() {
            if let Event::Message(m) = e
                && (matches!(m.owed, Owed::PubAck(_)) || !session_present)
            {
                m.owed = Owed::Nothing;
            }
        }
        if !session_present {
            self.incoming_qos2.clear();
            self.record(crate::store::Store::clear_received);
        }
        self.incoming_qos2_carried = self.incoming_qos2.len();
        let mut inflight = core::mem::take(&mut self.inflight);
        self.sub_waits = 0;
        if self.faulty(TestFault::ResendReversed) {
            inflight.make_contiguous().reverse();
        }
        let mut restart: Vec<Queued> = Vec::new();
        let mut dropped_one = false;
        for mut f in inflight {
            if session_present {
                if self.faulty(TestFault::DropRepublish) && matches!(f.waiting, Waiting::Publish(_)) && !dropped_one {
                    dropped_one = true;
                    self.forget(f.key);
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
                let mut packet = self.packet_for(f.pid, &mut f.waiting, dup);
                self.send(now, &packet);
                f.waiting.take_back(&mut packet);
                self.push_inflight(f);
            } else {
                match f.waiting {
                    // The broker took ownership at PUBREC: with the session gone there is
                    // nothing to release, and the message was accepted.
                    Waiting::Release => {
                        self.forget(f.key);
                        if let Some(token) = f.token {
                            self.events.push_back(Event::Published(token));
                        }
                    }
                    Waiting::Publish(p) => restart.push(Queued { token: f.token, request: Request::Publish(p), deadline: None, key: f.key }),
                    Waiting::SubAck(s, p) => restart.push(Queued { token: f.token, request: Request::Subscribe(s, p), deadline: None, key: None }),
                    Waiting::UnsubAck(u) => restart.push(Queued { token: f.token, request: Request::Unsubscribe(u), deadline: None, key: None }),
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
                    _ => again.push(Queued { token: None, request: Request::Subscribe(vec![filter.clone()], props.clone()), deadline: None, key: None }),
                }
            }
            for q in again.into_iter().rev() {
                self.pending.push_front(q);
            }
        }
    }
}
