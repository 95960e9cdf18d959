//! The host's side of the contract: inputs (`handle_*`) in, outputs (`poll_*`) out.

use alloc::vec::Vec;

use super::*;

impl Client {
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
                self.probes = 0;
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
        if let State::Opening { since, .. } = self.state {
            self.open_ms = now.saturating_since(since);
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

    pub(super) fn reading_paused(&self) -> bool {
        self.cfg.backpressure
            && matches!(self.state, State::Connected)
            && self.events.messages() >= self.cfg.queue_len as usize
            && !self.faulty(TestFault::IgnoreBackpressure)
    }

    /// While input is held back, answers may sit unread behind it: no response deadline runs.
    pub(super) fn deadlines_suspended(&self) -> bool {
        self.reading_paused() && !self.faulty(TestFault::DeadlinesWhileHeld)
    }

    pub(super) fn decode(&mut self, now: Instant) {
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
        // Nothing due, the usual case, is judged in one pass over the table.
        if !self.deadlines().into_iter().flatten().any(|t| t <= now) {
            return;
        }
        // In the table's order, each judged on the state the ones before it left.
        for timer in Timer::ALL {
            if self.deadline(timer).is_some_and(|t| t <= now) {
                self.expire(now, timer);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Outputs

    /// Bytes for the current socket, packets back to back; call until `None` after every
    /// input and before [`Client::poll_action`] (bytes queued before a close belong to the
    /// old socket). If the socket takes only part, keep the rest and send it first next time.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.transmit_into(&mut out).then_some(out)
    }

    /// The driver still holds `bytes` of what it took (its socket had no room for them).
    /// QoS 0 publishes wait in the queue while these and the bytes not yet taken reach
    /// [`MAX_UNSENT`]; say so after every send, so that room made lets them out. Returns
    /// true when it did (take the bytes with [`Client::transmit_into`]).
    pub fn handle_unsent(&mut self, now: Instant, bytes: usize) -> bool {
        self.now = now;
        self.unsent_elsewhere = bytes;
        // Only a QoS 0 publish at the front of the queue waits for this (and pumping walks
        // the in-flight window, so not on every call).
        if !self.pending.front().is_some_and(|q| q.request.is_qos0_publish()) {
            return false;
        }
        let before = self.transmits.len();
        self.pump(now);
        self.transmits.len() != before
    }

    /// [`Client::poll_transmit`] appending to `out` (a driver's send buffer); false when there
    /// was nothing. Buffers swap when `out` is empty, so in the usual case, everything sent
    /// before the next packet, neither side allocates or copies.
    pub fn transmit_into(&mut self, out: &mut Vec<u8>) -> bool {
        // Records the bytes depend on (packet ids, incoming QoS 2 ids) are durable first.
        self.sync_store();
        if self.transmits.is_empty() {
            return false;
        }
        if out.is_empty() {
            core::mem::swap(out, &mut self.transmits);
        } else {
            out.append(&mut self.transmits);
        }
        true
    }

    /// The next IO to perform (open or close the socket, join or leave WiFi), in order;
    /// call until `None` after draining [`Client::poll_transmit`].
    pub fn poll_action(&mut self) -> Option<Action> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    /// The next event that is not an incoming message: messages stay queued (in order,
    /// bounded by `queue_len`, unacknowledged) for an application that cannot take them now.
    pub fn poll_event_except_messages(&mut self) -> Option<Event> {
        let e = self.next_event(false);
        self.sync_store();
        e
    }

    /// The next thing that happened, in order; call until `None` after the actions. Taking
    /// a message makes room in the `queue_len` bound (and, with backpressure, lets input
    /// held back be decoded at the next [`Client::handle_timeout`]), and acknowledges it to
    /// the broker (the PUBACK or PUBREC goes out with the next [`Client::transmit_into`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.next_event(true);
        // After the hand-over's records: a QoS 2 message is known delivered before it leaves.
        self.sync_store();
        e
    }

    /// [`Client::poll_event`] until `None`, but at most `max_messages` of them incoming
    /// messages (the rest stay queued, unacknowledged), each given to `take`; returns how
    /// many messages it took. For a host that hands events over in batches: the store is
    /// synced once, when this returns, not once per QoS 2 message, so act on none of them
    /// before it has.
    pub fn poll_events(&mut self, max_messages: u32, mut take: impl FnMut(Event)) -> u32 {
        let mut messages = 0;
        while let Some(e) = self.next_event(messages < max_messages) {
            messages += u32::from(matches!(e, Event::Message(_)));
            take(e);
        }
        self.sync_store();
        messages
    }

    fn next_event(&mut self, messages: bool) -> Option<Event> {
        let i = if messages { 0 } else { self.events.iter().position(|e| !matches!(e, Event::Message(_)))? };
        // Deadlines held back start again from now, asked before the take: it may be the
        // message whose taking ends the hold. Anything handed over while the hold lasts
        // sets it too, and the last to set it is the take that ended the hold.
        if self.deadlines_suspended() {
            self.resumed_at = self.now;
        }
        let e = self.events.take(i);
        self.settle(e)
    }

    /// The next instant at which [`Client::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines().into_iter().flatten().min()
    }
}
