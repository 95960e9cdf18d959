//! What the broker does with each packet a client sends, and the checks it makes of them.

use std::collections::VecDeque;

use mqtt_protocol::codec::{ConnAck, Connect, Disconnect, PubResponse, Publish, SubAck, Subscribe, Unsubscribe};
use mqtt_protocol::{Packet, PacketId, Properties, PropertyValues, ProtocolVersion, QoS, ReasonCode};

use crate::broker::{Ending, Phase};
use crate::session::{Message, Session, Subscription};
use crate::{auth_answer, AckKind, Broker, ConnId, DropReason, Event};

/// MQTT 5 DISCONNECT reason "Disconnect with Will Message".
const DISCONNECT_WITH_WILL: u8 = 0x04;
/// MQTT 5 AUTH reason "Continue authentication".
const CONTINUE_AUTHENTICATION: u8 = 0x18;

impl Broker {
    /// One packet from a connection, by where the connection stands.
    pub(crate) fn packet(&mut self, now: u64, conn: ConnId, p: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match (&c.phase, p) {
            (Phase::New, Packet::Connect(connect)) => {
                c.version = connect.protocol;
                c.decoder.set_version(connect.protocol);
                if let Some(connect) = self.challenge(now, conn, connect) {
                    self.connect_or_wait(now, conn, connect);
                }
            }
            (Phase::Challenged { .. }, Packet::Auth(answer)) => {
                let Phase::Challenged { connect, expected } = std::mem::replace(&mut c.phase, Phase::New) else { unreachable!("matched above") };
                if self.verify(now, conn, &connect, &answer, &expected) {
                    self.connect_or_wait(now, conn, *connect);
                }
            }
            (Phase::New | Phase::Challenged { .. }, p) => {
                let client = self.client_of(conn);
                self.violation(&client, format!("sent {} before its CONNECT was accepted (MQTT-3.1.0-1)", p.name()));
                self.end(now, conn, Ending::Closed);
            }
            (Phase::Late { .. }, _) => unreachable!("packets behind a late CONNACK wait in its backlog"),
            (Phase::Open { .. }, Packet::Disconnect(d)) => {
                let how = if d.reason == DISCONNECT_WITH_WILL { Ending::CleanWithWill } else { Ending::Clean };
                self.end(now, conn, how);
            }
            (Phase::Open { client }, p) => {
                let client = client.clone();
                if !self.session_packet(now, conn, &client, p) {
                    self.end(now, conn, Ending::Closed);
                }
            }
        }
    }

    /// Enhanced authentication, when the broker demands it: a CONNECT naming another method
    /// is refused, any other is challenged. Gives the CONNECT back when no exchange is needed.
    fn challenge(&mut self, now: u64, conn: ConnId, c: Connect) -> Option<Connect> {
        let Some(auth) = &self.cfg.auth else { return Some(c) };
        if auth.exempt.contains(&c.client_id) {
            return Some(c);
        }
        let method = auth.method.clone();
        if c.properties.authentication_method.as_ref() != Some(&method) {
            // 0x8C Bad authentication method (MQTT 5); 5 Not authorized (3.1.1).
            let code = if c.protocol == ProtocolVersion::V5 { 0x8C } else { 5 };
            self.refuse(now, conn, &c, code, "authentication method");
            return None;
        }
        self.challenges += 1;
        let challenge = format!("{}:{}", c.client_id, self.challenges).into_bytes();
        let expected = auth_answer(&challenge, &auth.secret);
        let properties = PropertyValues { authentication_method: Some(method), authentication_data: Some(challenge), ..Default::default() }.into();
        self.send(conn, Packet::Auth(Disconnect { reason: CONTINUE_AUTHENTICATION, properties }));
        self.event(Event::AuthChallenged { client: c.client_id.clone() });
        let c2 = self.conns.get_mut(&conn).expect("the caller holds it");
        c2.phase = Phase::Challenged { connect: Box::new(c), expected };
        None
    }

    /// The client's answer to the challenge: right, or refused with 0x87 Not authorized.
    fn verify(&mut self, now: u64, conn: ConnId, c: &Connect, answer: &Disconnect, expected: &[u8]) -> bool {
        let method = self.cfg.auth.as_ref().map(|a| a.method.clone());
        let ok = answer.reason == CONTINUE_AUTHENTICATION
            && answer.properties.authentication_method == method
            && answer.properties.authentication_data.as_deref() == Some(expected);
        if ok {
            self.event(Event::Authenticated { client: c.client_id.clone() });
        } else {
            self.refuse(now, conn, c, 0x87, "wrong authentication answer");
        }
        ok
    }

    fn refuse(&mut self, now: u64, conn: ConnId, c: &Connect, code: u8, why: &'static str) {
        self.transmit(conn, Packet::ConnAck(ConnAck { session_present: false, code, properties: Properties::default() }).encode(c.protocol));
        self.event(Event::Refused { client: c.client_id.clone(), code, why });
        self.end(now, conn, Ending::Closed);
    }

    /// Accepts the CONNECT now, or when a late CONNACK is due.
    fn connect_or_wait(&mut self, now: u64, conn: ConnId, c: Connect) {
        match self.knobs.take_delay(AckKind::Connack) {
            Some(ms) => {
                self.event(Event::AckDelayed { packet: "CONNACK", ms });
                self.late_connects.insert((now + ms, conn));
                if let Some(cn) = self.conns.get_mut(&conn) {
                    cn.phase = Phase::Late { connect: Box::new(c), backlog: VecDeque::new() };
                }
            }
            None => self.connect(now, conn, c),
        }
    }

    /// Accepts a CONNECT: takes over or starts the session, answers CONNACK, and resumes.
    pub(crate) fn connect(&mut self, now: u64, conn: ConnId, c: Connect) {
        if let Some(code) = self.knobs.refuse_code {
            self.refuse(now, conn, &c, code, "refused by the scenario");
            return;
        }
        let v5 = c.protocol == ProtocolVersion::V5;
        let client = if c.client_id.is_empty() { format!("auto-{}", conn.0) } else { c.client_id.clone() };
        // Take over: a second connection with the same id ends the first.
        if let Some(old) = self.sessions.get(&client).and_then(|s| s.connection) {
            self.end(now, old, Ending::Closed);
        }
        if c.clean_start || self.sessions.get(&client).is_some_and(|s| s.expired(now)) {
            self.end_session(&client);
        }
        let present = self.sessions.contains_key(&client);
        let expiry_ms = if v5 {
            Some(u64::from(c.properties.session_expiry_interval.unwrap_or(0)) * 1000)
        } else if c.clean_start {
            Some(0)
        } else {
            None
        };
        let client_window = if v5 { usize::from(c.properties.receive_maximum.unwrap_or(u16::MAX)) } else { usize::MAX };
        let window = client_window.min(usize::from(self.cfg.receive_maximum));
        let s = self.sessions.entry(client.clone()).or_insert_with(|| Session::new(expiry_ms, window));
        s.connection = Some(conn);
        s.disconnected_at = None;
        s.expiry_ms = expiry_ms;
        // A new connection within the Will Delay Interval cancels the will of the one that
        // was lost (MQTT-3.1.3-9): it must not go out later, when this one ends cleanly.
        self.wills.retain(|w| w.client != client);
        s.window = window;
        let keep_alive = if v5 { self.cfg.server_keep_alive.unwrap_or(c.keep_alive) } else { c.keep_alive };
        let cn = self.conns.get_mut(&conn).expect("the caller holds it");
        cn.phase = Phase::Open { client: client.clone() };
        cn.keepalive_ms = (keep_alive > 0).then_some(u64::from(keep_alive) * 1000);
        cn.will = c.will.as_ref().map(|w| {
            let m = Message { topic: w.topic.clone(), payload: w.payload.clone(), qos: w.qos, retain: w.retain, expires_at: None };
            (m, u64::from(w.properties.will_delay_interval.unwrap_or(0)) * 1000)
        });
        self.touch(conn, now);
        let mut properties = Properties::default();
        if v5 {
            properties.receive_maximum = Some(self.cfg.receive_maximum);
            properties.maximum_packet_size = self.cfg.maximum_packet_size;
            properties.server_keep_alive = self.cfg.server_keep_alive;
            if self.cfg.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.cfg.topic_alias_maximum);
            }
            if c.client_id.is_empty() {
                properties.assigned_client_identifier = Some(client.clone());
            }
            if let Some(auth) = &self.cfg.auth
                && !auth.exempt.contains(&c.client_id)
            {
                // The exchange's last word, as SCRAM's server signature would be.
                properties.authentication_method = Some(auth.method.clone());
                properties.authentication_data = Some(b"welcome".to_vec());
            }
        }
        self.event(Event::Connected { client: client.clone(), clean: c.clean_start, session_present: present });
        self.acknowledge(now, conn, AckKind::Connack, Packet::ConnAck(ConnAck { session_present: present, code: 0, properties }), None);
        self.resume(now, conn, &client);
    }

    /// A packet on an open connection; false closes the connection.
    fn session_packet(&mut self, now: u64, conn: ConnId, client: &str, p: Packet) -> bool {
        match p {
            Packet::Publish(p) => return self.incoming_publish(now, conn, client, p),
            Packet::PubRel(r) => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.incoming_qos2.remove(&r.packet_id.get());
                }
                let id = r.packet_id;
                self.acknowledge(now, conn, AckKind::Pubcomp, Packet::PubComp(ack(id)), Some(id.get()));
            }
            Packet::PubAck(a) | Packet::PubComp(a) => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.inflight.remove(&a.packet_id.get());
                }
                self.flush(now, client);
            }
            Packet::PubRec(a) => {
                if let Some(s) = self.sessions.get_mut(client)
                    && let Some(entry) = s.inflight.get_mut(&a.packet_id.get())
                {
                    entry.1 = true;
                }
                self.send(conn, Packet::PubRel(ack(a.packet_id)));
            }
            Packet::Subscribe(sub) => self.subscribe(now, conn, client, sub),
            Packet::Unsubscribe(u) => self.unsubscribe(now, conn, client, u),
            Packet::PingReq => {
                if !self.knobs.stop_pings {
                    self.acknowledge(now, conn, AckKind::Pingresp, Packet::PingResp, None);
                }
            }
            // Re-authentication is not modelled: the connection ends, as a broker without
            // it would end it.
            Packet::Auth(_) => return false,
            p => {
                self.violation(client, format!("sent {}, which a client never sends once connected (MQTT-3.1.0-2)", p.name()));
                return false;
            }
        }
        true
    }

    /// A PUBLISH from a client: its topic alias, the checks on its packet id, then routing
    /// and acknowledgement.
    fn incoming_publish(&mut self, now: u64, conn: ConnId, client: &str, p: Publish) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let v5 = c.version == ProtocolVersion::V5;
        let mut topic = p.topic.clone();
        if let Some(alias) = p.properties.topic_alias {
            let max = if v5 { self.cfg.topic_alias_maximum } else { 0 };
            if alias == 0 || alias > max {
                self.violation(client, format!("used topic alias {alias}, outside the 1..={max} the broker's Topic Alias Maximum allows (MQTT-3.3.2-9)"));
                return false;
            }
            if topic.is_empty() {
                match c.aliases.get(&alias) {
                    Some(t) => topic = t.clone(),
                    None => {
                        self.violation(client, format!("used topic alias {alias}, which it never set on this connection (MQTT-3.3.2-12)"));
                        return false;
                    }
                }
            } else {
                c.aliases.insert(alias, topic.clone());
            }
        }
        if topic.is_empty() {
            self.violation(client, "sent a PUBLISH with neither a topic nor a topic alias (MQTT-3.3.2-1)".into());
            return false;
        }
        self.event(Event::Received { client: client.to_string(), topic: topic.clone(), payload: p.payload.clone(), qos: p.qos, dup: p.dup });
        if let Some(id) = p.packet_id
            && !self.check_packet_id(conn, client, v5, id.get(), &p)
        {
            return false;
        }
        let expires_at = p.properties.message_expiry_interval.map(|e| now + u64::from(e) * 1000);
        let payload = p.payload;
        let message = Message { topic, payload: payload.clone(), qos: p.qos, retain: p.retain, expires_at };
        let (kind, fresh) = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {
                self.route_unless_denied(now, message, client);
                return true;
            }
            // Forwarded every time, DUP or not, as Mosquitto does.
            (QoS::AtLeastOnce, Some(_)) => (AckKind::Puback, true),
            (QoS::ExactlyOnce, Some(id)) => (AckKind::Pubrec, self.sessions.get_mut(client).is_some_and(|s| s.incoming_qos2.insert(id.get()))),
            // The decoder gives every QoS 1/2 PUBLISH a packet id.
            _ => return false,
        };
        let id = p.packet_id.expect("matched above");
        let denied = self.cfg.denies(&message.topic);
        if fresh {
            self.route_unless_denied(now, message, client);
        }
        let mut response = ack(id);
        if denied && v5 {
            response.reason = ReasonCode::NOT_AUTHORIZED.0;
            // Refused, so no PUBREL follows: the id is free for the client's next message.
            if let Some(s) = self.sessions.get_mut(client) {
                s.incoming_qos2.remove(&id.get());
            }
        }
        // A PUBACK settles the message; so does a PUBREC with a failure code, which ends the
        // QoS 2 exchange (no PUBREL follows, and the client's send quota is back: spec 4.9).
        let settles = (kind == AckKind::Puback || response.reason >= 0x80).then_some(id.get());
        let reply = if kind == AckKind::Puback { Packet::PubAck(response) } else { Packet::PubRec(response) };
        if !self.acknowledge(now, conn, kind, reply, settles)
            && let Some(s) = self.sessions.get_mut(client)
        {
            s.owed.insert(id.get(), payload);
        }
        true
    }

    /// Routes a client's message to its subscribers, unless the access control denies its
    /// topic (then it goes nowhere, and the record says why).
    fn route_unless_denied(&mut self, now: u64, message: Message, client: &str) {
        if self.cfg.denies(&message.topic) {
            self.event(Event::Dropped { client: client.to_string(), message, why: DropReason::Denied });
        } else {
            self.route(now, message, Some(client));
        }
    }

    /// The packet id of a client's QoS 1/2 PUBLISH: not reused while its message is
    /// unacknowledged, DUP on a resend after a lost acknowledgement, and no more messages
    /// unacknowledged than the Receive Maximum the broker announced. False ends the connection.
    fn check_packet_id(&mut self, conn: ConnId, client: &str, v5: bool, id: u16, p: &Publish) -> bool {
        // A resend (DUP) under an id the broker does not owe, of a message it does owe under
        // another id: the client moved the message to a new id, which MQTT-4.4.0-1 forbids
        // (and which, at QoS 2, delivers it twice). Matching on the payload is exact enough
        // here: it needs DUP and an acknowledgement the broker knows was lost.
        if p.dup
            && let Some(s) = self.sessions.get_mut(client)
            && !s.owed.contains_key(&id)
            && let Some(old) = s.owed.iter().find(|(_, payload)| **payload == p.payload).map(|(k, _)| *k)
        {
            s.owed.remove(&old);
            self.violation(client, format!("resent the message of packet id {old} under a new packet id {id} (MQTT-4.4.0-1)"));
        }
        if let Some(owed) = self.sessions.get_mut(client).and_then(|s| s.owed.remove(&id)) {
            if owed != p.payload {
                self.violation(
                    client,
                    format!("reused packet id {id} for another message while the broker's acknowledgement of the first was lost (MQTT-2.2.1-3)"),
                );
            } else if !p.dup {
                self.violation(client, format!("resent PUBLISH {id} without DUP after its acknowledgement was lost (MQTT-3.3.1-1)"));
            }
        }
        let receive_maximum = usize::from(self.cfg.receive_maximum);
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        match c.unacked.get(&id) {
            Some(held) if *held != p.payload => {
                let what = format!("reused packet id {id} for another message while the first was unacknowledged (MQTT-2.2.1-3)");
                self.violation(client, what);
                false
            }
            Some(_) => true,
            None if v5 && c.unacked.len() >= receive_maximum => {
                let n = c.unacked.len() + 1;
                self.violation(
                    client,
                    format!("had {n} QoS 1/2 publishes unacknowledged, more than the Receive Maximum {receive_maximum} the broker announced (MQTT-3.3.4-9)"),
                );
                false
            }
            None => {
                c.unacked.insert(id, p.payload.clone());
                true
            }
        }
    }

    fn subscribe(&mut self, now: u64, conn: ConnId, client: &str, sub: Subscribe) {
        let mut codes = Vec::new();
        let mut retained = Vec::new();
        let v5 = self.conns.get(&conn).is_some_and(|c| c.version == ProtocolVersion::V5);
        if let Some(s) = self.sessions.get_mut(client) {
            for f in &sub.filters {
                if self.cfg.denies(&f.filter) {
                    codes.push(if v5 { ReasonCode::NOT_AUTHORIZED.0 } else { 0x80 });
                    continue;
                }
                let existed = s
                    .subscriptions
                    .insert(f.filter.clone(), Subscription { qos: f.qos, no_local: f.no_local, retain_as_published: f.retain_as_published })
                    .is_some();
                codes.push(f.qos as u8);
                // Retain Handling (MQTT 5 3.8.3.1): 0 send the retained messages, 1 only for a
                // subscription that did not exist, 2 never.
                if f.retain_handling == 0 || (f.retain_handling == 1 && !existed) {
                    let matching = self.retained.values().filter(|m| mqtt_protocol::codec::topic::topic_matches(&f.filter, &m.topic));
                    retained.extend(matching.cloned());
                }
            }
        }
        self.event(Event::Subscribed { client: client.to_string(), filters: sub.filters.iter().map(|f| f.filter.clone()).collect() });
        self.acknowledge(now, conn, AckKind::Suback, Packet::SubAck(SubAck { packet_id: sub.packet_id, codes, properties: Properties::default() }), None);
        for m in retained {
            self.deliver(now, client, m);
        }
    }

    fn unsubscribe(&mut self, now: u64, conn: ConnId, client: &str, u: Unsubscribe) {
        if let Some(s) = self.sessions.get_mut(client) {
            for f in &u.filters {
                s.subscriptions.remove(f);
            }
        }
        let v5 = self.conns.get(&conn).is_some_and(|c| c.version == ProtocolVersion::V5);
        // MQTT 5 answers each filter (0: success); 3.1.1's UNSUBACK has no payload.
        let codes = if v5 { vec![0; u.filters.len()] } else { Vec::new() };
        self.event(Event::Unsubscribed { client: client.to_string(), filters: u.filters.clone() });
        self.acknowledge(now, conn, AckKind::Unsuback, Packet::UnsubAck(SubAck { packet_id: u.packet_id, codes, properties: Properties::default() }), None);
    }
}

fn ack(id: PacketId) -> PubResponse {
    PubResponse { packet_id: id, reason: 0, properties: Properties::default() }
}
