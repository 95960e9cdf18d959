//! The events `poll` has not handed over yet.

use alloc::collections::VecDeque;
use core::ops::Deref;

use super::take_at;
use crate::types::Event;

/// The events, with two counts kept beside them:
/// - the incoming messages among them, which `queue_len` bounds (the discard policy and
///   backpressure both act on it);
/// - the answers (a publish completed or failed, a subscription or unsubscription
///   answered). Those count against `max_queued` until a poll hands them over, as the
///   requests they answer did: a host publishing QoS 0 without ever polling would otherwise
///   grow the queue without bound. Status events (up, down, link, errors) do not: they come
///   of a turn, not of a request, and before, an application that published before its
///   first poll after `connect` had a place or two fewer than `max_queued`.
///
/// Read through `Deref`; changed only here, so the counts stay right.
#[derive(Default)]
pub(super) struct EventQueue {
    queue: VecDeque<Event>,
    messages: usize,
    answers: usize,
}

fn is_answer(e: &Event) -> bool {
    matches!(e, Event::Published(_) | Event::PublishFailed { .. } | Event::Subscribed { .. } | Event::Unsubscribed { .. })
}

fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message(_))
}

impl EventQueue {
    pub(super) fn push_back(&mut self, e: Event) {
        self.messages += usize::from(is_message(&e));
        self.answers += usize::from(is_answer(&e));
        self.queue.push_back(e);
    }

    /// The event at `i`, the others keeping their order.
    pub(super) fn take(&mut self, i: usize) -> Option<Event> {
        let e = take_at(&mut self.queue, i)?;
        self.messages -= usize::from(is_message(&e));
        self.answers -= usize::from(is_answer(&e));
        Some(e)
    }

    /// Incoming messages not handed over yet.
    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    /// Answers not handed over yet.
    pub(super) fn answers(&self) -> usize {
        self.answers
    }

    /// The events, to change what a waiting message owes the broker; what kind each is must
    /// stay as it is (the count depends on it).
    pub(super) fn iter_mut(&mut self) -> alloc::collections::vec_deque::IterMut<'_, Event> {
        self.queue.iter_mut()
    }
}

impl Deref for EventQueue {
    type Target = VecDeque<Event>;
    fn deref(&self) -> &VecDeque<Event> {
        &self.queue
    }
}
