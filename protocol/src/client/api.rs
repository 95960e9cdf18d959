//! What the application asks for: connect, publish, subscribe, unsubscribe, cancel, ping,
//! authenticate, disconnect. Each queues work and pumps what the window allows.

use alloc::string::String;
use alloc::vec::Vec;

use super::*;

impl Client {
    /// Start connecting. If this first attempt fails, [`Event::ConnectFailed`] is reported
    /// and the client returns to idle; once up, outages are handled without the caller.
    pub fn connect(&mut self, now: Instant) -> Result<(), ApiError> {
        self.now = now;
        match self.state {
            State::Closed => Err(ApiError::Closed),
            State::Idle => {
                self.untried = self.cfg.brokers() - 1;
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
        if matches!(self.state, State::Closed) {
            return Err(ApiError::Closed);
        }
        topic::validate_topic_name(&publish.topic).map_err(|e| ApiError::Invalid(text!("topic `", publish.topic, "`: ", e.message())))?;
        if !crate::publish_fits(self.cfg.max_packet_size, &publish.topic, publish.payload.len()) {
            return Err(ApiError::Invalid(text!("payload of ", publish.payload.len(), " bytes does not fit max_packet_size ", self.cfg.max_packet_size)));
        }
        self.enqueue(now, Request::Publish(publish), deadline)
    }

    /// Subscribe; [`Event::Subscribed`] reports one granted QoS / reason code per filter.
    /// MQTT 5: `properties` may name a subscription identifier (if the broker's CONNACK
    /// says it has none, the filters fail with 0xA1 without being sent).
    pub fn subscribe(&mut self, now: Instant, filters: Vec<SubscribeFilter>, properties: SubscribeProperties) -> Result<Token, ApiError> {
        self.now = now;
        if matches!(self.state, State::Closed) {
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

    /// Unsubscribe; [`Event::Unsubscribed`] completes the token. Renewed subscriptions after
    /// a clean reconnect no longer include these filters.
    pub fn unsubscribe(&mut self, now: Instant, filters: Vec<String>) -> Result<Token, ApiError> {
        self.now = now;
        if matches!(self.state, State::Closed) {
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

    pub(super) fn enqueue(&mut self, now: Instant, request: Request, deadline: Option<Instant>) -> Result<Token, ApiError> {
        // Answers `poll` has not handed over yet count as held (see `EventQueue`).
        if self.pending.len() + self.inflight.len() + self.events.answers() >= self.cfg.max_queued as usize {
            return Err(ApiError::QueueFull);
        }
        let key = match &request {
            Request::Publish(p) => self.store_publish(p)?,
            _ => None,
        };
        let token = match key {
            Some(key) => STORED_TOKEN | Token::from(key),
            None => {
                self.next_token += 1;
                self.next_token - 1
            }
        };
        if let Some(d) = deadline {
            session::lower(&mut self.pending_floor, d);
        }
        self.pending.push_back(Queued { token: Some(token), request, deadline, key });
        self.pump(now);
        Ok(token)
    }

    /// Stop waiting for a publish. Unsent: removed, and with a store the removal is durable
    /// before this returns (a power cut must not bring back what the application was told
    /// will never be sent). In flight: the packet id stays reserved and the exchange
    /// completes on the wire (so the protocol is never broken), but no event will name the
    /// token. Returns whether the token was found.
    pub fn cancel(&mut self, token: Token) -> bool {
        if self.faulty(TestFault::IgnoreCancel) {
            return self.pending.iter().any(|q| q.token == Some(token)) || self.inflight.iter().any(|f| f.token == Some(token));
        }
        if let Some(i) = self.pending.iter().position(|q| q.token == Some(token)) {
            let key = take_at(&mut self.pending, i).and_then(|q| q.key);
            self.forget(key);
            self.sync_store();
            return true;
        }
        if let Some(f) = self.inflight.iter_mut().find(|f| f.token == Some(token)) {
            f.token = None;
            return true;
        }
        false
    }

    /// Whether the store still keeps the publish `token` names: one handed over with a
    /// store (its token is [`STORED_TOKEN`]` | key`) and not yet closed by the broker's
    /// answer, a failure or a cancel before it was sent. False without a store.
    pub fn stored(&mut self, token: Token) -> bool {
        match (u32::try_from(token ^ STORED_TOKEN), self.store.as_mut()) {
            (Ok(key), Some(store)) => store.keeps(key),
            _ => false,
        }
    }

    /// Ping the broker now; [`Event::BrokerUp`] reports whether it answered in time.
    pub fn broker_up(&mut self, now: Instant) {
        self.now = now;
        if !matches!(self.state, State::Connected) {
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
            State::AwaitConnack { .. } | State::Connected if self.auth_challenged => ReasonCode::CONTINUE_AUTHENTICATION.0,
            State::Connected => ReasonCode::RE_AUTHENTICATE.0,
            _ => return Err(ApiError::Invalid("no authentication exchange in progress".into())),
        };
        self.auth_challenged = false;
        let properties = crate::PropertyValues { authentication_method: Some(method), authentication_data: Some(data), ..Default::default() }.into();
        self.send(now, &Packet::Auth(Disconnect { reason, properties }));
        Ok(())
    }

    /// Send DISCONNECT (the broker then discards the will) and close for good. Requests
    /// not yet completed fail: a publish with reason 0, a subscribe or unsubscribe with
    /// 0x80 (the spec's failure code) for each of its filters, so every token completes.
    /// A QoS 1/2 publish the store holds is not failed for good: its record stays open, as a
    /// power cut leaves it, so the next client started on that store sends it; its reason
    /// is [`KEPT_IN_STORE`]. (Closing the record lost what the application was told was
    /// durable; `cancel` first drops one for good.)
    pub fn disconnect(&mut self, now: Instant) {
        self.now = now;
        if matches!(self.state, State::Closed) {
            return;
        }
        if matches!(self.state, State::Connected) && !self.faulty(TestFault::DisconnectWithoutPacket) {
            self.send(now, &Packet::Disconnect(Disconnect { reason: 0, properties: Properties::default() }));
        }
        if matches!(self.state, State::Connected) {
            self.events.push_back(Event::Down(DownReason::Requested));
        }
        self.close_socket();
        const FAILED: u8 = ReasonCode::UNSPECIFIED_ERROR.0;
        // Only publishes have store records, and those stay open (see above).
        let reason = |key: Option<u32>| if key.is_some() { KEPT_IN_STORE } else { 0 };
        for q in core::mem::take(&mut self.pending) {
            let Some(token) = q.token else { continue };
            self.events.push_back(match q.request {
                Request::Publish(_) => Event::PublishFailed { token, reason: reason(q.key) },
                Request::Subscribe(filters, _) => Event::Subscribed { token, codes: alloc::vec![FAILED; filters.len()] },
                Request::Unsubscribe(filters) => Event::Unsubscribed { token, codes: alloc::vec![FAILED; filters.len()] },
            });
        }
        self.sub_waits = 0;
        for f in core::mem::take(&mut self.inflight) {
            let Some(token) = f.token else { continue };
            self.events.push_back(match f.waiting {
                Waiting::Publish(_) | Waiting::Release => Event::PublishFailed { token, reason: reason(f.key) },
                Waiting::SubAck(filters, _) => Event::Subscribed { token, codes: alloc::vec![FAILED; filters.len()] },
                Waiting::UnsubAck(filters) => Event::Unsubscribed { token, codes: alloc::vec![FAILED; filters.len()] },
            });
        }
        if self.cfg.ssid.is_some() {
            self.actions.push(Action::LeaveWifi);
        }
        self.state = State::Closed;
    }
}
