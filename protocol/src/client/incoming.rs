//! Packets from the broker, once decoded: acknowledgements, messages, AUTH, DISCONNECT.

use super::*;

/// What an incoming message owes the broker once it leaves the queue: when `poll_event`
/// hands it to the application, or the discard policy drops it. Not when it arrives: a
/// message the broker was told arrived is the client's to deliver, and until the
/// application has it, it lives only in this instance. A host that replaces a failed
/// instance (a trap, the watchdog), or a power cut, would lose it; unacknowledged, the
/// broker resends it to the session the fresh instance resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    /// QoS 0, or an answer already given.
    Nothing,
    /// QoS 1: the PUBACK, on the connection the message arrived on (a resumed session
    /// resends it instead; a new one may reuse the id for another message).
    PubAck(PacketId),
    /// QoS 2: the record that it was delivered (durable before the application sees it),
    /// then the PUBREC, on whichever connection of the session is up.
    PubRec(PacketId),
}

impl Client {
    pub(super) fn take_inflight(&mut self, pid: PacketId, want: fn(&Waiting) -> bool) -> Option<InFlight> {
        let i = self.inflight.iter().position(|f| f.pid == pid && want(&f.waiting))?;
        let f = take_at(&mut self.inflight, i)?;
        self.sub_waits -= usize::from(f.waiting.is_sub_wait());
        Some(f)
    }

    pub(super) fn handle_packet(&mut self, now: Instant, packet: Packet) {
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
                other => self.protocol_error(now, text!(other.name(), " before CONNACK"), ReasonCode::PROTOCOL_ERROR),
            }
            return;
        }
        if !matches!(self.state, State::Connected) {
            return;
        }
        if matches!(packet, Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp) {
            // The broker takes what this connection sends.
            self.connection_proven();
        }
        match packet {
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::PubAck(a) => {
                let qos1 = |w: &Waiting| matches!(w, Waiting::Publish(p) if p.qos == QoS::AtLeastOnce);
                if let Some(f) = self.take_inflight(a.packet_id, qos1) {
                    self.complete(&f, a.reason);
                    self.pump(now);
                }
            }
            Packet::PubRec(a) => {
                let qos2 = |w: &Waiting| matches!(w, Waiting::Publish(p) if p.qos == QoS::ExactlyOnce) || matches!(w, Waiting::Release);
                let Some(i) = self.inflight.iter().position(|f| f.pid == a.packet_id && qos2(&f.waiting)) else {
                    return;
                };
                if ReasonCode(a.reason).is_failure() {
                    if let Some(f) = self.take_inflight(a.packet_id, qos2) {
                        self.complete(&f, a.reason);
                        self.pump(now);
                    }
                    return;
                }
                match self.inflight[i].key {
                    Some(key) => self.record(|s| s.released(key)),
                    None => self.note_sent_id(self.inflight[i].token, a.packet_id, true),
                }
                let f = &mut self.inflight[i];
                f.waiting = Waiting::Release;
                f.sent_at = now;
                f.repubs = 0;
                let rel = PubResponse::success(a.packet_id);
                self.send(now, &Packet::PubRel(rel));
            }
            Packet::PubRel(a) => {
                let id = a.packet_id.get();
                let at = self.incoming_qos2.iter().position(|x| *x == id);
                let known = at.is_some();
                if let Some(i) = at {
                    self.incoming_qos2.remove(i);
                    if i < self.incoming_qos2_carried {
                        self.incoming_qos2_carried -= 1;
                    }
                    // Durable before PUBCOMP: the broker may reuse the id at once.
                    self.record(|s| s.received_done(id));
                }
                let reason = if known || self.version == ProtocolVersion::V311 { ReasonCode::SUCCESS.0 } else { ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.0 };
                let comp = PubResponse { packet_id: a.packet_id, reason, properties: Properties::default() };
                self.send(now, &Packet::PubComp(comp));
            }
            Packet::PubComp(a) => {
                if let Some(f) = self.take_inflight(a.packet_id, |w| matches!(w, Waiting::Release)) {
                    self.complete(&f, a.reason);
                    self.pump(now);
                }
            }
            Packet::SubAck(a) => {
                let Some(f) = self.take_inflight(a.packet_id, |w| matches!(w, Waiting::SubAck(..))) else { return };
                let Waiting::SubAck(filters, props) = f.waiting else { return };
                if filters.len() != a.codes.len() {
                    self.protocol_error(now, "SUBACK code count differs from the SUBSCRIBE's filters".into(), ReasonCode::PROTOCOL_ERROR);
                    return;
                }
                let mut codes = a.codes;
                for (filter, code) in filters.into_iter().zip(codes.iter_mut()) {
                    if ReasonCode(*code).is_failure() && self.faulty(TestFault::IgnoreSubackFailure) {
                        *code = filter.qos as u8;
                    }
                    if !ReasonCode(*code).is_failure() {
                        self.subscriptions.retain(|(s, _)| s.filter != filter.filter);
                        self.subscriptions.push((filter, props.clone()));
                    }
                }
                if let Some(token) = f.token {
                    self.events.push_back(Event::Subscribed { token, codes });
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
            Packet::Disconnect(mut d) if self.version == ProtocolVersion::V5 => {
                if let Some(r) = d.properties.take(|v| &mut v.reason_string) {
                    self.events.push_back(Event::Error(text!("broker disconnect: ", r)));
                }
                let reason = if self.faulty(TestFault::MisreportReasonCode) { crate::ReasonCode::UNSPECIFIED_ERROR.0 } else { d.reason };
                self.lost(now, DownReason::ServerDisconnect(reason));
            }
            Packet::Auth(a) => {
                self.handle_auth(now, a);
            }
            other => self.protocol_error(now, text!(other.name(), " is not sent by a broker"), ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// The broker's AUTH (spec 4.12): only for the method we asked for, only to continue
    /// (0x18) or to conclude a re-authentication (0x00). Returns whether it was accepted.
    pub(super) fn handle_auth(&mut self, now: Instant, mut a: Disconnect) -> bool {
        let Some(method) = &self.cfg.auth_method else {
            self.protocol_error(now, "AUTH received, but no authentication method was requested".into(), ReasonCode::PROTOCOL_ERROR);
            return false;
        };
        if a.properties.authentication_method.as_ref() != Some(method) {
            self.protocol_error(now, text!("AUTH does not name our authentication method `", method, "`"), ReasonCode::PROTOCOL_ERROR);
            return false;
        }
        let initial = matches!(self.state, State::AwaitConnack { .. });
        match a.reason {
            r if r == ReasonCode::CONTINUE_AUTHENTICATION.0 => self.auth_challenged = true,
            r if r == ReasonCode::SUCCESS.0 && !initial => self.auth_challenged = false,
            r => {
                self.protocol_error(now, text!("AUTH with reason code ", Hex(r), " here"), ReasonCode::PROTOCOL_ERROR);
                return false;
            }
        }
        self.events.push_back(Event::Auth { reason: a.reason, data: a.properties.take(|v| &mut v.authentication_data).unwrap_or_default() });
        true
    }

    pub(super) fn complete(&mut self, f: &InFlight, reason: u8) {
        self.forget(f.key);
        let Some(token) = f.token else { return };
        if ReasonCode(reason).is_failure() && !self.faulty(TestFault::IgnorePubackFailure) {
            self.events.push_back(Event::PublishFailed { token, reason });
        } else {
            self.events.push_back(Event::Published(token));
        }
    }

    pub(super) fn handle_publish(&mut self, now: Instant, mut p: Publish) {
        if self.version == ProtocolVersion::V5
            && let Some(alias) = p.properties.take(|v| &mut v.topic_alias)
        {
            if alias > self.cfg.topic_alias_maximum {
                self.protocol_error(now, text!("topic alias ", alias, " over our maximum ", self.cfg.topic_alias_maximum), ReasonCode::TOPIC_ALIAS_INVALID);
                return;
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(usize::from(alias) - 1) {
                    Some(Some(t)) => p.topic = t.clone(),
                    _ => {
                        self.protocol_error(now, text!("unknown topic alias ", alias), ReasonCode::PROTOCOL_ERROR);
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
        let owed = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => Owed::Nothing,
            (QoS::AtLeastOnce, Some(pid)) => Owed::PubAck(pid),
            (QoS::ExactlyOnce, Some(pid)) => {
                let fresh = !self.incoming_qos2.contains(&pid.get());
                if fresh && self.incoming_qos2.len() >= usize::from(self.cfg.receive_maximum) && self.version == ProtocolVersion::V5 {
                    if self.incoming_qos2_carried == 0 {
                        self.protocol_error(now, "broker exceeded our Receive Maximum".into(), ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                        return;
                    }
                    // A broker within our Receive Maximum sends a new message only once it
                    // holds none of the ids we do, so the oldest one kept from before this
                    // connection is stale (the broker lost its session, and a power cut kept
                    // us from recording that): forgotten, not a reason to drop every
                    // connection the broker resumes (a reconnect loop, found by `explore
                    // --seed 307`).
                    let stale = self.incoming_qos2.remove(0);
                    self.incoming_qos2_carried -= 1;
                    self.record(|s| s.received_done(stale));
                }
                if fresh {
                    // Known from here on, so that a resend is not queued twice; recorded
                    // and answered when the application takes it (`settle`).
                    self.incoming_qos2.push(pid.get());
                    Owed::PubRec(pid)
                } else {
                    // A resend. Of a message the application has: answered again. Of one
                    // still queued: answered when the application takes it.
                    if !self.events.iter().any(|e| matches!(e, Event::Message(m) if m.owed == Owed::PubRec(pid))) {
                        let rec = PubResponse::success(pid);
                        self.send(now, &Packet::PubRec(rec));
                    }
                    if !self.faulty(TestFault::Qos2DeliverTwice) {
                        return;
                    }
                    Owed::Nothing
                }
            }
            _ => return,
        };
        let owed = if self.faulty(TestFault::AckOnArrival) {
            self.answer(owed);
            Owed::Nothing
        } else {
            owed
        };
        let properties = (self.version == ProtocolVersion::V5).then_some(p.properties);
        let message = Message { topic: p.topic, payload: p.payload, qos: p.qos, retained: p.retain, dup: p.dup, properties, owed };
        if self.events.messages() >= self.cfg.queue_len as usize && self.faulty(TestFault::DiscardNewest) {
            self.stats.discards += 1;
            self.answer(owed);
            return;
        }
        if self.events.messages() >= self.cfg.queue_len as usize {
            // mqtt_as's policy: the oldest waiting message makes room. The application chose
            // to lose it, so it is acknowledged as if taken.
            if let Some(i) = self.events.iter().position(|e| matches!(e, Event::Message(_))) {
                let dropped = self.events.take(i);
                self.stats.discards += 1;
                self.settle(dropped);
            }
        }
        self.events.push_back(Event::Message(message));
    }

    /// A message left the queue (taken by the application, or dropped by the discard
    /// policy it chose): what it owed goes out.
    pub(super) fn settle(&mut self, e: Option<Event>) -> Option<Event> {
        let Some(Event::Message(mut m)) = e else { return e };
        let owed = core::mem::replace(&mut m.owed, Owed::Nothing);
        self.answer(owed);
        Some(Event::Message(m))
    }

    fn answer(&mut self, owed: Owed) {
        let now = self.now;
        let connected = matches!(self.state, State::Connected);
        match owed {
            Owed::Nothing => {}
            Owed::PubAck(packet_id) => {
                if connected {
                    self.send(now, &Packet::PubAck(PubResponse::success(packet_id)));
                }
            }
            // Unless the broker lost the session since (`resume` forgot the id).
            Owed::PubRec(packet_id) if self.incoming_qos2.contains(&packet_id.get()) => {
                if !self.faulty(TestFault::IncomingNotStored) {
                    // Durable before PUBREC and the hand-over: after a power cut the
                    // broker's resend (DUP) is recognised, not delivered again. (If the
                    // flash fails, the message still goes to the application: once now, at
                    // worst again after a reboot, rather than never.)
                    self.record(|s| s.received(packet_id.get()));
                }
                if connected {
                    self.send(now, &Packet::PubRec(PubResponse::success(packet_id)));
                }
            }
            Owed::PubRec(_) => {}
        }
    }
}
