//! Every deadline the client keeps, in one table: [`Timer`] names them, [`Client::deadlines`]
//! computes them all from the state that owns each, [`Client::poll_timeout`] is the earliest
//! and [`Client::handle_timeout`] runs the expired ones in the table's order. A new timer is
//! one variant, one line in `deadlines` and one arm in `expire`, so the two sides cannot
//! disagree.
//!
//! The deadlines are derived, not stored (quinn-proto stores an `Option<Instant>` per
//! timer): each follows from state the client keeps anyway (the connection state's own
//! deadline, when a packet was sent, when the broker was last heard), so there is nothing
//! to set or stop that could go stale. The ack timer is the exception: it is derived from
//! `ack_floor`, a lower bound on the in-flight send times, instead of a walk over the
//! in-flight entries on every poll (with 100 publishes in flight, the timer walks took
//! about a tenth of the guest's time). The bound only moves down as entries go in flight
//! (a send time is always the latest so far); when the timer fires early because the
//! entry it came from has gone, the check finds nothing due and sets the bound to the true
//! earliest. It can be early, never late. The request timer works the same way from
//! `pending_floor`, lowered by each request queued with a deadline and set to the true
//! earliest when it fires.

use super::*;

/// A deadline the client keeps; `ALL` is the order in which expired ones run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Backpressure let go (the application made room): decode the input held back.
    HeldInput,
    /// A queued request's `deadline` (from `publish`) passed while it was unsent.
    RequestDeadline,
    /// The first connection gives up waiting for the link.
    LinkGiveUp,
    /// Ask to join WiFi again (we manage the link and it is still down).
    Rejoin,
    /// The backoff after a lost connection is over: attempt again.
    Backoff,
    /// The socket did not open within the response time.
    OpenTimeout,
    /// CONNACK (or the broker's next AUTH step) did not come in time.
    ConnackTimeout,
    /// The broker did not answer our ping (nor send anything else) in time.
    PingResponse,
    /// Time to ping: nothing exchanged for the ping interval.
    Ping,
    /// An in-flight packet's acknowledgement is overdue.
    Ack,
}

impl Timer {
    pub(super) const ALL: [Timer; 10] = [
        Timer::HeldInput,
        Timer::RequestDeadline,
        Timer::LinkGiveUp,
        Timer::Rejoin,
        Timer::Backoff,
        Timer::OpenTimeout,
        Timer::ConnackTimeout,
        Timer::PingResponse,
        Timer::Ping,
        Timer::Ack,
    ];
}

// `Client::deadlines` indexes its table by discriminant: `ALL` lists the variants in the
// order they are declared.
const _: () = {
    let mut i = 0;
    while i < Timer::ALL.len() {
        assert!(Timer::ALL[i] as usize == i);
        i += 1;
    }
};

impl Client {
    /// When `timer` expires, or `None` while it is not running.
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.deadlines()[timer as usize]
    }

    /// Every timer's deadline, indexed by [`Timer`] (`ALL`'s order), in one pass over the
    /// state that owns them. An idle poll asks for all ten twice (what is due, then the next
    /// deadline), and as ten calls each, every call deriving the connection state and the
    /// test faults again, that was a sixth of the idle poll's instructions (callgrind, issue
    /// 14); the rules live here alone, so the two askers cannot disagree.
    pub(super) fn deadlines(&self) -> [Option<Instant>; Timer::ALL.len()] {
        let mut at = [None; Timer::ALL.len()];
        at[Timer::HeldInput as usize] = (self.input_held && !self.reading_paused()).then_some(self.now);
        if !self.faulty(TestFault::IgnoreDeadline) {
            at[Timer::RequestDeadline as usize] = self.pending_floor;
        }
        match self.state {
            State::WaitLink { give_up, rejoin_at } => {
                at[Timer::LinkGiveUp as usize] = give_up;
                at[Timer::Rejoin as usize] = rejoin_at;
            }
            State::Backoff { until } => at[Timer::Backoff as usize] = Some(until),
            State::Opening { deadline, .. } => at[Timer::OpenTimeout as usize] = Some(deadline),
            State::AwaitConnack { deadline } => at[Timer::ConnackTimeout as usize] = Some(deadline),
            State::Connected => {
                at[Timer::Ping as usize] = self.ping_due();
                // While input is held back, answers may sit unread behind the messages: no
                // response deadline runs (pings go on, see `ping_due`).
                if !self.deadlines_suspended() {
                    at[Timer::PingResponse as usize] = self.ping_sent.map(|_| self.ping_deadline());
                    at[Timer::Ack as usize] = self.ack_floor.map(|sent| self.deadline_after(sent));
                }
            }
            State::Idle | State::Closed => {}
        }
        at
    }

    /// Does what an expired `timer` asks.
    pub(super) fn expire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::HeldInput => self.decode(now),
            Timer::RequestDeadline => self.expire_pending(now),
            Timer::LinkGiveUp => self.lost(now, DownReason::LinkLost),
            Timer::Rejoin => {
                let give_up = match self.state {
                    State::WaitLink { give_up, .. } => give_up,
                    _ => None,
                };
                self.join_wifi(now, give_up);
            }
            Timer::Backoff => self.attempt(now, None),
            Timer::OpenTimeout => self.lost(now, DownReason::Socket(SocketError::TimedOut)),
            Timer::ConnackTimeout | Timer::PingResponse => self.lost(now, DownReason::Timeout),
            Timer::Ping => self.send_ping(now),
            Timer::Ack => self.acks_overdue(now),
        }
    }

    pub(super) fn keepalive_secs(&self) -> u16 {
        self.limits.keepalive_secs
    }

    pub(super) fn ping_due(&self) -> Option<Instant> {
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
    pub(super) fn ping_deadline(&self) -> Instant {
        let sent = self.ping_sent.unwrap_or(self.now);
        sent.max(self.last_rx).max(self.resumed_at) + u64::from(self.cfg.response_time_ms)
    }

    pub(super) fn ack_deadline(&self, f: &InFlight) -> Instant {
        self.deadline_after(f.sent_at)
    }

    /// When a packet sent at `sent` is overdue (time spent suspended does not count).
    fn deadline_after(&self, sent: Instant) -> Instant {
        sent.max(self.resumed_at) + self.ack_timeout()
    }

    /// How long an in-flight packet waits before we act: a republication under 3.1.1; under
    /// MQTT 5 (which forbids resending on a live connection, spec 4.4) the connection is
    /// presumed dead after as long as 3.1.1 would have kept republishing.
    pub(super) fn ack_timeout(&self) -> u64 {
        let rt = u64::from(self.cfg.response_time_ms);
        match self.version {
            ProtocolVersion::V311 => rt,
            ProtocolVersion::V5 => rt * (u64::from(self.cfg.max_repubs) + 1),
        }
    }

    pub(super) fn send_ping(&mut self, now: Instant) {
        self.ping_sent = Some(now);
        self.send(now, &Packet::PingReq);
    }

    /// Republish (3.1.1) what waited too long for its acknowledgement, or, past
    /// `max_repubs` (and at once under MQTT 5, which forbids resending on a live
    /// connection), give the connection up. Then `ack_floor` is the true earliest again
    /// (left early when this returns early: harmless, see the module's comment).
    pub(super) fn acks_overdue(&mut self, now: Instant) {
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
                if let Some(f) = take_at(&mut self.inflight, i) {
                    self.forget(f.key);
                    if let Some(token) = f.token {
                        self.events.push_back(Event::Published(token));
                    }
                }
                self.pump(now);
                return;
            }
            let f = &mut self.inflight[i];
            f.repubs += 1;
            f.sent_at = now;
            // Borrowed out and back rather than cloned (a clone of a publish and its
            // properties costs code as well as time).
            let (pid, mut waiting) = (f.pid, core::mem::replace(&mut f.waiting, Waiting::Release));
            if matches!(waiting, Waiting::Publish(_)) {
                self.stats.republishes += 1;
            }
            let dup = !self.faulty(TestFault::ResendWithoutDup);
            let mut packet = self.packet_for(pid, &mut waiting, dup);
            self.send(now, &packet);
            waiting.take_back(&mut packet);
            self.inflight[i].waiting = waiting;
        }
        self.ack_floor = self.inflight.iter().map(|f| f.sent_at).min();
    }
}
