//! What a host that replaces a failed instance of the client needs from it: the packet ids
//! its publishes are in flight under, and a way to hand them to the fresh one.
//!
//! Why: a fresh client numbers its packet ids from the start, and a resumed session (the
//! broker kept it: `clean_init` false) may still hold some of them. Resending a publish under
//! another id breaks MQTT-4.4.0-1 and delivers it twice; worse, a broker takes a new QoS 2
//! message under an id it holds from an unfinished exchange (its PUBREC lost) for a duplicate
//! and drops it, while the client sees the exchange complete. The store keeps the ids across
//! a power cut; without one, the host keeps them across a restart.

use super::*;

impl Client {
    /// Keep a list of the packet ids publishes go out under, for [`Client::take_sent_ids`],
    /// where a fresh instance would need them: without a store (it keeps them itself) and
    /// with a session the broker keeps, from the start (`clean_init` false) or after the
    /// first connection (`clean` false; a host gives the fresh instance of a client that was
    /// up `clean_init` false then, the power-up purge being behind it). With both true every
    /// connection is clean and the broker forgets the ids. Call after
    /// [`Client::attach_store`]; returns whether it keeps them.
    ///
    /// With such a session it also keeps the broker the session lives on, for
    /// [`Client::take_session_broker`] (with or without a store: the store keeps ids, not
    /// where they belong).
    pub fn report_sent_ids(&mut self) -> bool {
        let kept = !(self.cfg.clean_init && self.cfg.clean);
        let wanted = self.store.is_none() && kept;
        self.sent_ids = wanted.then(Vec::new);
        // A fresh instance's session is taken to be on the first broker.
        self.session_told = kept.then_some(0);
        wanted
    }

    /// The broker (0: `server`, then `servers` in order) a connection came up on, when it
    /// is not the one the host last heard of (the first, for a fresh instance). Hand it to
    /// the host with the packet ids, before the bytes leave: once a failover took the session
    /// elsewhere, the ids in flight belong to that broker's session, and a fresh instance
    /// that resumed the first broker's (stale) session instead would resend them, and reuse
    /// ids, where they mean other messages.
    pub fn take_session_broker(&mut self) -> Option<usize> {
        let (Some(told), Some(up)) = (self.session_told, self.up_broker) else { return None };
        (told != up).then(|| {
            self.session_told = Some(up);
            up
        })
    }

    /// For a fresh instance, before [`Client::connect`] (and before `resume_publish`'s
    /// publishes go out): the failed instance's session lives on `broker` (what
    /// [`Client::take_session_broker`] last said), so connect there first and resume it as
    /// the failed instance would have (a connection that fails over from it starts clean).
    pub fn resume_session(&mut self, broker: usize) -> Result<(), ApiError> {
        if broker >= self.cfg.brokers() || !matches!(self.state, State::Idle) {
            return Err(ApiError::Invalid("a session is resumed before connect, on a configured broker".into()));
        }
        self.broker = broker;
        self.up_broker = Some(broker);
        if let Some(told) = &mut self.session_told {
            *told = broker;
        }
        Ok(())
    }

    /// Packet ids given and QoS 2 releases since the last call. Hand them to the host before
    /// the bytes from [`Client::transmit_into`] leave, so that no id is on the wire before
    /// the host knows it.
    pub fn take_sent_ids(&mut self) -> Vec<SentId> {
        match &mut self.sent_ids {
            Some(ids) if !ids.is_empty() => core::mem::take(ids),
            _ => Vec::new(),
        }
    }

    pub(super) fn note_sent_id(&mut self, token: Option<Token>, pid: PacketId, released: bool) {
        if let (Some(ids), Some(token)) = (&mut self.sent_ids, token) {
            ids.push(SentId { token, packet_id: pid.get(), released });
        }
    }

    /// Takes back a publish a failed instance had in flight, under the packet id it went out
    /// with (its `token` is not reused: the returned one names it from now on). Only before
    /// [`Client::connect`], so that the connection's CONNACK decides (as for what a store
    /// gives back): a resumed session resends it with DUP under that id (PUBREL if
    /// `released`); a fresh one sends it as a new publish (and completes a released one,
    /// which the broker had accepted). Call in the order they were sent, before any other
    /// publish.
    pub fn resume_publish(&mut self, now: Instant, publish: OutgoingPublish, sent: SentId) -> Result<Token, ApiError> {
        self.now = now;
        let pid = PacketId::new(sent.packet_id).filter(|pid| publish.qos != QoS::AtMostOnce && !self.inflight.iter().any(|f| f.pid == *pid));
        let (Some(pid), State::Idle) = (pid, &self.state) else {
            return Err(ApiError::Invalid("a publish is resumed before connect, once, under a packet id, at QoS 1 or 2".into()));
        };
        if self.pending.len() + self.inflight.len() >= self.cfg.max_queued as usize {
            return Err(ApiError::QueueFull);
        }
        topic::validate_topic_name(&publish.topic).map_err(|e| ApiError::Invalid(text!("topic `", publish.topic, "`: ", e.message())))?;
        self.next_token += 1;
        let token = self.next_token - 1;
        let waiting = if sent.released && publish.qos == QoS::ExactlyOnce { Waiting::Release } else { Waiting::Publish(publish) };
        self.push_inflight(InFlight { pid, token: Some(token), waiting, sent_at: now, repubs: 0, key: None });
        Ok(token)
    }
}
