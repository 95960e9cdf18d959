//! The session: requests queued and in flight, packet ids, the window, the packets that
//! (re)start each exchange.

use alloc::vec;

use super::*;

impl Client {
    pub(super) fn window(&self) -> usize {
        if self.faulty(TestFault::IgnoreReceiveMaximum) {
            return usize::from(self.cfg.max_inflight);
        }
        usize::from(self.cfg.max_inflight.min(self.limits.receive_maximum))
    }

    pub(super) fn inflight_publishes(&self) -> usize {
        self.inflight.len().saturating_sub(self.sub_waits)
    }

    /// The next free packet id after the last one given. Ids go round 1..=65535 in order, so
    /// after one walk over the entries in flight every id up to the nearest one in use is
    /// known to be free: `pids_free_ahead` counts them down, and the walk (O(window), once
    /// per publish before, issue 14) comes once per lap. Only `push_inflight` adds entries;
    /// one with another id than the last given resets the count.
    pub(super) fn alloc_pid(&mut self) -> Option<PacketId> {
        const IDS: u32 = u16::MAX as u32;
        for _ in 0..u16::MAX {
            self.next_pid = if self.next_pid == u16::MAX { 1 } else { self.next_pid + 1 };
            let candidate = self.next_pid;
            if self.pids_free_ahead > 0 {
                self.pids_free_ahead -= 1;
                return PacketId::new(candidate);
            }
            // How far ahead the nearest id in flight is: 0 when it is the candidate.
            let mut nearest = IDS;
            for f in &self.inflight {
                nearest = nearest.min((u32::from(f.pid.get()) + IDS - u32::from(candidate)) % IDS);
            }
            if nearest > 0 {
                self.pids_free_ahead = nearest - 1;
                return PacketId::new(candidate);
            }
        }
        None
    }

    /// Move queued requests onto the wire while the connection and the window allow.
    pub(super) fn pump(&mut self, now: Instant) {
        if !matches!(self.state, State::Connected) {
            return;
        }
        let mut in_window = self.inflight_publishes();
        while let Some(front) = self.pending.front() {
            let needs_slot = matches!(&front.request, Request::Publish(p) if p.qos != QoS::AtMostOnce);
            if needs_slot && in_window >= self.window() {
                break;
            }
            // QoS 0 has no window: what bounds it is the socket. While it is this far behind,
            // QoS 0 publishes wait in the queue (bounded by `max_queued`), not in buffers.
            if front.request.is_qos0_publish() && self.transmits.len() + self.unsent_elsewhere >= MAX_UNSENT {
                break;
            }
            let Some(mut q) = self.pending.pop_front() else { break };
            if let Request::Publish(p) = &mut q.request {
                if p.qos > self.limits.maximum_qos {
                    self.forget(q.key);
                    if let Some(token) = q.token {
                        self.events.push_back(Event::PublishFailed { token, reason: ReasonCode::QOS_NOT_SUPPORTED.0 });
                    }
                    continue;
                }
                if p.qos == QoS::AtMostOnce {
                    // Given to the packet for good: a QoS 0 publish is done once sent.
                    let packet = self.publish_packet(p, None, false);
                    if self.send_if_fits(now, &packet, q.token)
                        && let Some(token) = q.token
                    {
                        self.events.push_back(Event::Published(token));
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
                        self.events.push_back(Event::Subscribed { token, codes: vec![ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED.0; s.len()] });
                    }
                    continue;
                }
                Request::Subscribe(s, p) => Waiting::SubAck(s, p),
                Request::Unsubscribe(u) => Waiting::UnsubAck(u),
            };
            let mut f = InFlight { pid, token: q.token, waiting, sent_at: now, repubs: 0, key: q.key };
            let mut packet = self.packet_for(pid, &mut f.waiting, false);
            if !matches!(f.waiting, Waiting::Publish(_)) {
                self.send(now, &packet);
            } else if !self.send_if_fits(now, &packet, f.token) {
                // Failed for good (too big for the broker): nothing to take back.
                in_window -= 1;
                self.forget(f.key);
                continue;
            }
            f.waiting.take_back(&mut packet);
            if let Some(key) = f.key {
                // Durable before the PUBLISH leaves (`poll_transmit` syncs the store before
                // it hands out the bytes): a resumed session must resend this id.
                self.record(|s| s.sent(key, pid.get()));
            } else if matches!(f.waiting, Waiting::Publish(_)) {
                // The same for a host that keeps it across a restart (see `restart`).
                self.note_sent_id(f.token, pid, false);
            }
            self.push_inflight(f);
        }
    }

    /// Every entry goes in flight through here, so that `ack_floor` bounds its send time and
    /// `pids_free_ahead` stays true.
    pub(super) fn push_inflight(&mut self, f: InFlight) {
        if f.pid.get() != self.next_pid {
            self.pids_free_ahead = 0;
        }
        lower(&mut self.ack_floor, f.sent_at);
        self.sub_waits += usize::from(f.waiting.is_sub_wait());
        self.inflight.push_back(f);
    }

    /// Sends a publish unless it is over the broker's MQTT 5 Maximum Packet Size (then it can
    /// never be sent: it fails). Encoded once, straight into the output, and taken back
    /// when too big, rather than encoded a second time to measure it.
    pub(super) fn send_if_fits(&mut self, now: Instant, packet: &Packet, token: Option<Token>) -> bool {
        let before = self.transmits.len();
        packet.encode_into(self.version, &mut self.transmits);
        if self.transmits.len() - before <= self.limits.maximum_packet_size as usize {
            self.sent(now, before);
            return true;
        }
        self.transmits.truncate(before);
        if let Some(token) = token {
            self.events.push_back(Event::PublishFailed { token, reason: ReasonCode::PACKET_TOO_LARGE.0 });
        }
        false
    }

    pub(super) fn expire_pending(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline.is_some_and(|d| now >= d) {
                if let Some(q) = take_at(&mut self.pending, i) {
                    self.forget(q.key);
                    if let Some(token) = q.token {
                        self.events.push_back(Event::PublishFailed { token, reason: 0 });
                    }
                }
            } else {
                i += 1;
            }
        }
        self.pending_floor = self.pending.iter().filter_map(|q| q.deadline).min();
    }

    /// The PUBLISH for `p`. Its topic and payload are lent to the packet, not copied (a copy
    /// of each was two allocations and two copies per publish, issue 14): an in-flight entry
    /// takes them back with [`Waiting::take_back`] once the packet is encoded.
    pub(super) fn publish_packet(&mut self, p: &mut OutgoingPublish, pid: Option<PacketId>, dup: bool) -> Packet {
        let mut properties = Properties::default();
        let mut topic = core::mem::take(&mut p.topic);
        if self.version == ProtocolVersion::V5 {
            // Written only when the application gave some: the first write makes room.
            if let Some(src) = p.properties.values() {
                properties.payload_format_indicator = src.payload_format_indicator;
                properties.message_expiry_interval = src.message_expiry_interval.filter(|_| !self.faulty(TestFault::DropMessageExpiry));
                properties.content_type = src.content_type.clone();
                properties.response_topic = src.response_topic.clone();
                properties.correlation_data = src.correlation_data.clone();
                properties.user_properties = src.user_properties.clone();
            }
            if let Some(i) = self.aliases_out.iter().position(|t| *t == topic) {
                properties.topic_alias = Some(i as u16 + 1);
                // The alias goes instead: the topic stays with the publish (not lent).
                p.topic = core::mem::take(&mut topic);
            } else if self.aliases_out.len() < usize::from(self.limits.topic_alias_maximum) {
                self.aliases_out.push(topic.clone());
                properties.topic_alias = Some(self.aliases_out.len() as u16);
            }
        }
        Packet::Publish(Publish { dup, qos: p.qos, retain: p.retain, topic, packet_id: pid, payload: core::mem::take(&mut p.payload), properties })
    }

    /// The packet that (re)starts an in-flight exchange.
    /// A resent PUBLISH keeps its packet id and has DUP set (spec 4.4). A publish lends its
    /// topic and payload to the packet: give the packet back with [`Waiting::take_back`].
    pub(super) fn packet_for(&mut self, pid: PacketId, waiting: &mut Waiting, resend: bool) -> Packet {
        match waiting {
            Waiting::Publish(p) => self.publish_packet(p, Some(pid), resend),
            Waiting::Release => Packet::PubRel(PubResponse::success(pid)),
            Waiting::SubAck(filters, p) => {
                let mut properties = Properties::default();
                if self.version == ProtocolVersion::V5 {
                    properties.subscription_identifiers.extend(p.subscription_id);
                    properties.user_properties = p.user_properties.clone();
                }
                let mut filters = filters.clone();
                if self.faulty(TestFault::IgnoreNoLocal) {
                    filters.iter_mut().for_each(|f| f.no_local = false);
                }
                if self.faulty(TestFault::IgnoreRetainAsPublished) {
                    filters.iter_mut().for_each(|f| f.retain_as_published = false);
                }
                if self.faulty(TestFault::IgnoreRetainHandling) {
                    filters.iter_mut().for_each(|f| f.retain_handling = 0);
                }
                Packet::Subscribe(Subscribe { packet_id: pid, filters, properties })
            }
            Waiting::UnsubAck(filters) => Packet::Unsubscribe(Unsubscribe { packet_id: pid, filters: filters.clone(), properties: Properties::default() }),
        }
    }

    pub(super) fn send(&mut self, now: Instant, packet: &Packet) {
        let before = self.transmits.len();
        packet.encode_into(self.version, &mut self.transmits);
        self.sent(now, before);
    }

    /// Counts what was encoded into the output after its first `before` bytes as sent.
    fn sent(&mut self, now: Instant, before: usize) {
        self.stats.bytes_out += (self.transmits.len() - before) as u64;
        self.last_tx = now;
    }
}

/// Moves the lower bound `floor` down to `t` if `t` is earlier (or sets it).
pub(super) fn lower(floor: &mut Option<Instant>, t: Instant) {
    *floor = Some(floor.map_or(t, |f| f.min(t)));
}
