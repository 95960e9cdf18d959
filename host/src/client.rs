//! An async handle on a [`Device`], shaped like mqtt_as: `connect().await`,
//! `publish(..).await` that returns when the broker acknowledged, and an event stream for
//! messages, up/down and link changes.
//!
//! A driver polls the device when a command arrives (a publish only while the in-flight
//! window has room or the client is disconnected: with the window full, the acknowledgement
//! that opens it brings the driver round anyway), the platform's wakeup fires, or the
//! client's deadline passes. It runs in a tokio task of its own ([`Client::spawn`]: events
//! come on the handle's stream), or in whichever task polls its [`EventLoop`]
//! ([`Client::new`], rumqttc's shape: events come from the loop, with no hop between tasks).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::ClientError;
use crate::{Device, DeviceError, Publish, Token};
use crate::{DownReason, Event, LinkState, Message, Qos, Stats, SubscribeProperties, Subscription};
use mqtt_device::TokenMap;
use mqtt_protocol::KEPT_IN_STORE;

/// What the application hears about without asking.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Up {
        session_present: bool,
    },
    Down(DownReason),
    Message(Message),
    Link(LinkState),
    /// Incoming messages discarded so far because the queue was full.
    Discarded(u64),
    /// MQTT 5 enhanced authentication: the broker's reason code (0x18: answer with
    /// [`Client::authenticate`]) and data.
    Auth {
        reason: u8,
        data: Vec<u8>,
    },
    /// A publish made with [`Client::enqueue`] or [`Client::post`] completed: QoS 0 handed
    /// to the socket, QoS 1 PUBACK, QoS 2 PUBCOMP.
    Published(Token),
    /// A publish made with [`Client::enqueue`] or [`Client::post`] failed for good: the MQTT
    /// 5 reason code, or 0 when it expired, was cancelled or the client was closed first.
    PublishFailed {
        token: Token,
        reason: u8,
    },
    /// A publish made with [`Client::enqueue`] or [`Client::post`] not acknowledged when the
    /// client closed ([`Client::disconnect`], or the last handle dropped), which its store
    /// keeps: not failed, the next client started on that store sends it.
    PublishKept(Token),
    /// A publish made with [`Client::post`] that the client refused to take (a bad topic,
    /// too big for the broker, the client closed): it never left, and why. (`enqueue`
    /// returns the refusal instead.)
    Refused {
        token: Token,
        why: String,
    },
    /// Something the application should know (a restart of the component, a refused
    /// reconnect); nothing is lost.
    Error(String),
}

impl ClientEvent {
    /// Whether this reports what became of a publish made with `post` or `enqueue` (see
    /// `EventTokens::unread`).
    fn is_completion(&self) -> bool {
        matches!(self, ClientEvent::Published(_) | ClientEvent::PublishFailed { .. } | ClientEvent::PublishKept(_) | ClientEvent::Refused { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("connect failed: {0}")]
    ConnectFailed(String),
    /// MQTT 5 reason code, or 0 for expired/cancelled/closed.
    #[error("publish failed (reason code {0:#04x})")]
    PublishFailed(u8),
    /// Not acknowledged when the client closed, but its store keeps it: the next client
    /// started on that store sends it.
    #[error("not acknowledged before the client closed; kept in the store, the next client on it sends it")]
    KeptInStore,
    #[error("the client task has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Command {
    Connect(Reply<()>),
    Publish(Publish, Reply<()>),
    Enqueue(Publish, Reply<Token>),
    Post(Publish, Token),
    Subscribe(Vec<Subscription>, Option<SubscribeProperties>, Reply<Vec<u8>>),
    Authenticate(Vec<u8>, Reply<()>),
    Cancel(Token, Reply<bool>),
    Unsubscribe(Vec<String>, Reply<Vec<u8>>),
    BrokerUp(oneshot::Sender<bool>),
    Stats(oneshot::Sender<Option<Stats>>),
    Disconnect(oneshot::Sender<()>),
}

impl Command {
    fn is_publish(&self) -> bool {
        matches!(self, Command::Publish(..) | Command::Enqueue(..) | Command::Post(..))
    }

    /// Whether the driver should take this at once even with the in-flight window full.
    /// `publish().await` answers at completion and `post` at once, so neither is waiting
    /// to be taken; `enqueue` answers when the client took it, and the rest are not
    /// publishes.
    fn wants_a_turn(&self) -> bool {
        !matches!(self, Command::Publish(..) | Command::Post(..))
    }
}

/// An async handle on a running client. Clones share the connection (as rumqttc's
/// `AsyncClient` is shared across tasks); the event stream stays with the handle
/// [`Client::spawn`] returned (hand it to a task with [`Client::take_events`]).
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: Events,
    tokens: Arc<EventTokens>,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client { commands: self.commands.clone(), events: self.events.closed(), tokens: self.tokens.clone() }
    }
}

/// The tokens of publishes reported on the event stream, and the room [`Client::post`]
/// counts. `post` returns as soon as its request is on the way, as rumqttc's `publish`
/// returns once its request is in the channel: its token cannot be the device's (given out
/// only when the client task hands the publish over), so the handle numbers them, and
/// `enqueue`'s come from the same count (the task takes one when it hands the publish
/// over), so that one event stream never shows a token twice.
struct EventTokens {
    next: AtomicU64,
    /// One permit per publish `post` may still make (`max_queued` outstanding); the task
    /// gives a permit back when one completes, fails or is refused.
    room: Semaphore,
    /// Wakes the driver for a command that wants a turn (`Command::wants_a_turn`: all but
    /// `publish` and `post`) and when a handle is dropped. Those two wake it through the
    /// channel only while it listens there: with the in-flight window full it does not, and
    /// takes them at its next turn (see `Driver::wants_publishes`).
    nudge: Notify,
    /// Completions of `post` and `enqueue` waiting unread on the event stream. Once the
    /// stream is taken with [`Client::take_events`], both wait while `max_queued` do, so a
    /// reader that lags holds the publishers back (as rumqttc's `publish` waits for its
    /// event loop) instead of letting completions, about 200 bytes each, pile up without
    /// bound; those left unread from before the take count too. A bound of its own, not
    /// part of `room`'s: there, a reader's lag would take places from the publishes in
    /// flight, and it cost a QoS 1 `post` run 14 % of its rate. No wait while the stream is
    /// on its handle (the handle cannot read it while its `post` waits), and no count for
    /// an [`EventLoop`] (it hands out what a turn found before it turns again).
    unread: AtomicUsize,
    /// `max_queued`.
    unread_limit: usize,
    /// Wakes the publishers waiting for the reader once it is down to half the limit:
    /// woken at every completion taken, each would publish one and wait again.
    caught_up: Notify,
    /// Set when the event stream leaves its handle ([`Client::take_events`]): from then
    /// on, `unread` holds the publishers back.
    stream_taken: AtomicBool,
}

impl EventTokens {
    fn new(max_queued: u32) -> EventTokens {
        EventTokens {
            next: AtomicU64::new(1),
            room: Semaphore::new(max_queued as usize),
            nudge: Notify::new(),
            unread: AtomicUsize::new(0),
            unread_limit: max_queued as usize,
            caught_up: Notify::new(),
            stream_taken: AtomicBool::new(false),
        }
    }

    fn take(&self) -> Token {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn reader_lags(&self) -> bool {
        self.unread.load(Ordering::Acquire) >= self.unread_limit && self.stream_taken.load(Ordering::Acquire)
    }

    /// Waits while the reader of a taken stream lags (see `unread`); `Stopped` if the client
    /// task ends meanwhile.
    async fn keep_up(&self) -> Result<(), Error> {
        while self.reader_lags() {
            let caught_up = self.caught_up.notified();
            tokio::pin!(caught_up);
            // Listening before the second look: a wake between the two is not missed.
            caught_up.as_mut().enable();
            if !self.reader_lags() {
                break;
            }
            if self.room.is_closed() {
                return Err(Error::Stopped);
            }
            caught_up.await;
        }
        Ok(())
    }

    /// The reader took a completion (or the stream that held it is gone).
    fn completion_taken(&self) {
        if self.unread.fetch_sub(1, Ordering::AcqRel) == self.unread_limit / 2 + 1 {
            self.caught_up.notify_waiters();
        }
    }
}

/// Messages handed to the application and not yet taken. The driver asks the component
/// for no more than `queue_len` minus these, so what waits for a slow application stays
/// bounded: the rest waits in the client, which discards the oldest or, with
/// `backpressure`, stops reading the socket.
struct Backlog {
    /// `queue_len`.
    limit: usize,
    held: AtomicUsize,
    room: Notify,
}

impl Backlog {
    /// How many messages the driver may ask the component for now.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.held.load(Ordering::Acquire))
    }

    fn taken(&self, e: &ClientEvent) {
        if let ClientEvent::Message(_) = e {
            // Only a take that makes room where there was none needs the driver: otherwise
            // its last poll was not limited and nothing waits in the client for this.
            if self.held.fetch_sub(1, Ordering::AcqRel) >= self.limit {
                self.room.notify_one();
            }
        }
    }
}

/// Most requests taken in one turn of the driver before it polls the client again (so
/// that acknowledgements and messages are not starved by a flood of requests), and most
/// publishes handed to the client in one call.
const MAX_BATCH: usize = 64;
/// About the most payload and topic bytes handed to the client in one call (at least one
/// publish goes): a long queue of big publishes is not copied into the component at once.
const OFFER_BYTES: usize = 64 * 1024;
/// Longest sleep between polls when the platform offers no wakeup.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Longest sleep between polls otherwise: link changes (read by the `wifi` import) are
/// noticed within this time by a platform whose wakeup does not report them.
const LINK_POLL: Duration = Duration::from_millis(1000);

/// Called after a poll of the client that sent a broker something it answers (while QoS 1
/// or 2 publishes await their acknowledgements) or that acknowledged messages: the thread
/// gives its CPU to any other thread waiting for it (`sched_yield`), and carries on at once
/// if none is.
///
/// Why: a poll usually wakes the peer it wrote to, and the kernel tends to queue a thread
/// woken that way on the CPU of the thread that woke it (wake-affine placement). Without a
/// yield the tokio worker runs on with the next task (the event reader, the other client's
/// driver), and the woken peer (a broker on this machine, say) waits for the rest of its
/// slice, milliseconds at worst, while the pipeline stalls. A turn of this client does a
/// batch where rumqttc's event loop does a packet, so it held the CPU longer per wake-up and
/// its stalls ran longer: measured on the 2-core bench machine (QoS 1, window 100, paired
/// rounds against the build before, bench/HISTORY.md), `publish(..).await`'s p99 went from
/// 1.24–1.35× rumqttc's to 0.48–0.83×, its rate from 0.93–1.03× to 1.39–1.49×, and its CPU
/// from 0.96–1.04× to 0.71–0.76×. It costs a system call a poll, which returns at once when
/// nothing waits; QoS 0 traffic, which no answer paces, does not yield: there a yield after
/// every poll cost two fifths more CPU a message (4.9 µs against 3.5).
fn give_way() {
    std::thread::yield_now();
}

impl Client {
    /// Move `device` into a task on the current tokio runtime; its events come on
    /// [`Client::next_event`].
    pub fn spawn(device: Device) -> Client {
        let (tx, events) = mpsc::unbounded_channel();
        let (client, event_loop) = Client::with_outbox(device, Outbox::Channel(tx), events);
        tokio::spawn((*event_loop.driver).run(event_loop.commands));
        client
    }

    /// A handle on `device` and the [`EventLoop`] that runs it, in the task that polls it
    /// (rumqttc's `AsyncClient::new` shape): nothing happens while no one polls the loop.
    /// Events come only from [`EventLoop::poll`] (this handle's [`Client::next_event`] is
    /// `None`). Saves a task and a wakeup per batch of events over [`Client::spawn`]
    /// where one task both drives the client and handles its events, a subscriber say.
    pub fn new(device: Device) -> (Client, EventLoop) {
        let (_, closed) = mpsc::unbounded_channel();
        Client::with_outbox(device, Outbox::Local(VecDeque::new()), closed)
    }

    fn with_outbox(device: Device, outbox: Outbox, events: mpsc::UnboundedReceiver<ClientEvent>) -> (Client, EventLoop) {
        let (commands, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog { limit: device.config().queue_len as usize, held: AtomicUsize::new(0), room: Notify::new() });
        let tokens = Arc::new(EventTokens::new(device.config().max_queued));
        let driver = Box::new(Driver::new(device, outbox, backlog.clone(), tokens.clone()));
        let events = Events { rx: events, backlog, tokens: tokens.clone() };
        (Client { commands, events, tokens }, EventLoop { driver, commands: rx, finished: false })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        answer(self.send(make)?).await
    }

    /// Hands a command to the client task; its answer comes on the receiver. Not `async`:
    /// what a future builds and sends here is not part of the future (see [`Client::publish`]).
    fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<oneshot::Receiver<Result<T, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send_command(make(tx))?;
        Ok(rx)
    }

    /// Puts `cmd` in the channel, after the publishes sent before it, and wakes the driver
    /// for it unless it is a publish that waits for the window anyway (see
    /// [`EventTokens::nudge`]).
    fn send_command(&self, cmd: Command) -> Result<(), Error> {
        let nudge = cmd.wants_a_turn();
        self.commands.send(cmd).map_err(|_| Error::Stopped)?;
        if nudge {
            self.tokens.nudge.notify_one();
        }
        Ok(())
    }

    /// Returns when the broker accepted the connection; fails if this first attempt fails.
    pub async fn connect(&self) -> Result<(), Error> {
        self.ask(Command::Connect).await
    }

    /// QoS 1/2: returns when the broker acknowledged (across any outages in between); QoS 0
    /// when it went to the socket. Waits for room as [`Client::enqueue`] does.
    ///
    /// Each poll that completes publishes wakes the task awaiting them; awaited from outside
    /// tokio's workers (`block_on`, `#[tokio::main]`'s own task), that is a wake-up across
    /// threads per batch. For many publishes in flight, [`Client::post`] with its events read
    /// by a spawned task costs less CPU.
    ///
    /// The topic and payload are taken as rumqttc takes them: an owned `String` or `Vec<u8>`
    /// moves in, a borrowed `&str` or `&[u8]` is copied once.
    pub async fn publish(&self, topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: Qos, retain: bool) -> Result<(), Error> {
        // The publish is built and sent in one synchronous step, so that the future keeps
        // only its arguments and then the receiver (72 bytes with `&str` and `&[u8]`, 48
        // more with an owned `String` and `Vec<u8>`): built across
        // an await, the `Publish` and the command made it 504 bytes, moved by every
        // executor or `FuturesUnordered` that holds many of them (issue 14).
        let rx =
            self.send(|r| Command::Publish(Publish { topic: topic.into(), payload: payload.into(), qos, retain, properties: None, deadline_ms: None }, r))?;
        answer(rx).await
    }

    pub async fn publish_with(&self, p: Publish) -> Result<(), Error> {
        answer(self.send(|r| Command::Publish(p, r))?).await
    }

    /// Hands a publish to the client and returns its token as soon as the client took it
    /// (with a store: recorded, so it survives a power cut from then on); its completion
    /// comes later on the event stream as [`ClientEvent::Published`] or
    /// [`ClientEvent::PublishFailed`]. While the client has no room (`max_queued` requests
    /// wait, or QoS 0 waits for a socket that is behind) it waits, in order with the other
    /// publishes, and while the task that took the event stream lags as [`Client::post`]
    /// says; it fails only if the client refuses the publish itself (a bad topic, too big,
    /// closed). One turn of the client task per call: to keep many publishes in flight from
    /// one task, [`Client::post`] is faster.
    #[allow(clippy::manual_async_fn)] // as `post`, and for its reason
    pub fn enqueue(&self, p: Publish) -> impl std::future::Future<Output = Result<Token, Error>> + Send + '_ {
        async move {
            if self.tokens.reader_lags() {
                // Boxed as `post`'s wait for room is.
                Box::pin(self.tokens.keep_up()).await?;
            }
            answer(self.send(|r| Command::Enqueue(p, r))?).await
        }
    }

    /// Hands a publish to the client task and returns its token at once, as rumqttc's
    /// `publish` returns once its request is in the channel; what becomes of it comes on the
    /// event stream: [`ClientEvent::Published`], [`ClientEvent::PublishFailed`], or
    /// [`ClientEvent::Refused`] if the client would not take it (a bad topic, too big,
    /// closed). Waits while `max_queued` publishes made this way have not completed, and
    /// while `max_queued` completions wait unread on an event stream taken with
    /// [`Client::take_events`] (as rumqttc's `publish` waits for its event loop: a reader
    /// that lags holds the publishers back, and completions do not pile up without bound);
    /// so a task that posts on and on before it reads the stream it took waits for ever.
    /// Fails only if the client task has stopped. Unlike [`Client::enqueue`], its return says
    /// nothing about the client having taken the publish: with a store, one that a power
    /// cut interrupts before the client took it is lost (while connected with the in-flight
    /// window full, the client takes it at the next acknowledgement, not at once; while
    /// disconnected, at once). From one task, a sequence of
    /// `enqueue` calls waits for the task once per call (30–35k QoS 1 messages a second in
    /// `mqtt-bench` peer runs against 37–44k for `post`); `post`s go to the client in batches.
    #[allow(clippy::manual_async_fn)] // on purpose: see the first comment inside
    pub fn post(&self, p: Publish) -> impl std::future::Future<Output = Result<Token, Error>> + Send + '_ {
        // An `async` block rather than an `async fn`: the fn would copy `p` from its
        // argument slot into a local, and both slots would be in the future (464 bytes
        // against 248 this way, with a 208-byte `Publish`; issue 14).
        async move {
            if self.tokens.reader_lags() {
                Box::pin(self.tokens.keep_up()).await?;
            }
            let permit = match self.tokens.room.try_acquire() {
                Ok(permit) => permit,
                // Boxed: held inline, the semaphore's wait made every future bigger by its
                // size; only a client that is full pays for the box.
                Err(_) => Box::pin(self.tokens.room.acquire()).await.map_err(|_| Error::Stopped)?,
            };
            // The task gives the permit back (`Driver::settled`).
            permit.forget();
            let token = self.tokens.take();
            self.send_command(Command::Post(p, token))?;
            Ok(token)
        }
    }

    /// Stops waiting for a publish made with [`Client::enqueue`] or [`Client::post`], by the
    /// token either returned. One not sent yet is dropped (from the store too, before this
    /// returns); one in flight still completes on the wire (its packet id stays taken until
    /// the broker answers). Either way its token reports
    /// [`ClientEvent::PublishFailed`] with reason 0 now, and no other event after it. False
    /// when there was nothing to cancel: the publish had completed, failed or been refused
    /// (its event is on the stream or on its way), or the token is not one of this client's.
    /// A `publish(..).await` has no token: dropping its future stops the waiting, not the
    /// publish.
    pub async fn cancel(&self, token: Token) -> Result<bool, Error> {
        self.ask(|r| Command::Cancel(token, r)).await
    }

    /// Returns the granted QoS / reason code per filter.
    pub async fn subscribe(&self, subs: Vec<Subscription>) -> Result<Vec<u8>, Error> {
        self.ask(|r| Command::Subscribe(subs, None, r)).await
    }

    /// [`Client::subscribe`] with MQTT 5 properties (subscription identifier, user properties).
    pub async fn subscribe_with(&self, subs: Vec<Subscription>, properties: SubscribeProperties) -> Result<Vec<u8>, Error> {
        self.ask(|r| Command::Subscribe(subs, Some(properties), r)).await
    }

    /// MQTT 5 enhanced authentication: answer a [`ClientEvent::Auth`] challenge, or start a
    /// re-authentication.
    pub async fn authenticate(&self, data: Vec<u8>) -> Result<(), Error> {
        self.ask(|r| Command::Authenticate(data, r)).await
    }

    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<Vec<u8>, Error> {
        self.ask(|r| Command::Unsubscribe(filters, r)).await
    }

    /// Ping the broker; true when it answered within `response_time`.
    pub async fn broker_up(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.send_command(Command::BrokerUp(tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.send_command(Command::Stats(tx)).ok()?;
        rx.await.ok().flatten()
    }

    /// Sends DISCONNECT (the broker then discards the will) and closes the client for good.
    /// What has not completed fails: a publish with reason 0 ([`ClientEvent::PublishFailed`],
    /// or [`Error::PublishFailed`] from its `publish(..).await`), a subscribe or unsubscribe
    /// with 0x80 for each filter. A QoS 1/2 publish with a store does not fail: the store
    /// keeps it ([`ClientEvent::PublishKept`], [`Error::KeptInStore`]) and the next client
    /// started on that store sends it; [`Client::cancel`] it first to drop it for good.
    /// Dropping the last handle disconnects too.
    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send_command(Command::Disconnect(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The next message, up/down or link change; `None` once the client task stopped.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.next().await
    }

    /// Hands the event stream to another task (one that reports up/down while this one
    /// publishes, say); [`Client::next_event`] on this client returns `None` from then on.
    /// An application that does not want the events drops the stream: what would have come
    /// on it is dropped too, and what it held stops holding the client back. Held and not
    /// read, it holds the client back: at `queue_len` messages the client stops reading the
    /// socket, at `max_queued` completions `post` and `enqueue` wait, those it held when it
    /// was taken included. (Left on its handle, the stream keeps every completion until it
    /// is read, about 200 bytes each: a handle cannot read its own stream while its `post`
    /// waits.)
    pub fn take_events(&mut self) -> Events {
        let closed = self.events.closed();
        if !self.events.rx.is_closed() {
            self.tokens.stream_taken.store(true, Ordering::Release);
        }
        std::mem::replace(&mut self.events, closed)
    }
}

impl Drop for Client {
    /// The driver may not be listening on the channel (its window full): told, it finds
    /// the channel closed once the last handle is gone, and finishes.
    fn drop(&mut self) {
        // The sender goes first, so that the nudged driver sees it gone.
        drop(std::mem::replace(&mut self.commands, mpsc::unbounded_channel().0));
        self.tokens.nudge.notify_one();
    }
}

/// What the client task answered to a command; `Stopped` if it ended first.
async fn answer<T>(rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
    rx.await.map_err(|_| Error::Stopped)?
}

/// A client's event stream, taken with [`Client::take_events`].
pub struct Events {
    rx: mpsc::UnboundedReceiver<ClientEvent>,
    backlog: Arc<Backlog>,
    tokens: Arc<EventTokens>,
}

impl Events {
    /// A stream that has ended (`next` is `None`), sharing this one's counts: what a handle
    /// without the event stream holds.
    fn closed(&self) -> Events {
        let (_, rx) = mpsc::unbounded_channel();
        Events { rx, backlog: self.backlog.clone(), tokens: self.tokens.clone() }
    }

    /// The next event; `None` once the client task stopped.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        let e = self.rx.recv().await?;
        self.taken(&e);
        Some(e)
    }

    fn taken(&self, e: &ClientEvent) {
        self.backlog.taken(e);
        if e.is_completion() {
            self.tokens.completion_taken();
        }
    }
}

impl Drop for Events {
    /// What the stream held, and no one will take, stops holding the client back: counted
    /// as waiting, messages would keep it from reading the socket and completions would
    /// keep `post` and `enqueue` waiting, for good. Closed first, so nothing comes after.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(e) = self.rx.try_recv() {
            self.taken(&e);
        }
    }
}

/// Runs a client made with [`Client::new`] in the task that polls it.
pub struct EventLoop {
    /// Boxed: a driver is ~1.7 KB (the device's store), moved with the loop otherwise.
    driver: Box<Driver>,
    commands: mpsc::UnboundedReceiver<Command>,
    finished: bool,
}

impl EventLoop {
    /// Drives the client until it has something to report, and returns that: a message,
    /// a completion, up/down… `None` once the client is finished (every [`Client`] handle
    /// dropped, or the component failed for good: an [`ClientEvent::Error`] says why
    /// first). Cancel-safe: a poll dropped while it waits (in a `select!` or a timeout)
    /// loses nothing.
    pub async fn poll(&mut self) -> Option<ClientEvent> {
        loop {
            if let Outbox::Local(held) = &mut self.driver.events
                && let Some(e) = held.pop_front()
            {
                self.driver.backlog.taken(&e);
                return Some(e);
            }
            if self.finished {
                return None;
            }
            if !self.driver.turn(&mut self.commands).await {
                self.finished = true;
                // What the handles ask from now on fails (`Stopped`), as it does once
                // `Client::spawn`'s task has ended: the requests already here are dropped
                // with their replies.
                self.commands.close();
                while self.commands.try_recv().is_ok() {}
            }
        }
    }
}

/// Where the driver puts what the application hears about.
enum Outbox {
    /// [`Client::spawn`]: to the handle's event stream, from the driver's task.
    Channel(mpsc::UnboundedSender<ClientEvent>),
    /// [`Client::new`]: kept until [`EventLoop::poll`] returns it.
    Local(VecDeque<ClientEvent>),
}

impl Outbox {
    /// False when no one can take `e` any more (the event stream was dropped).
    fn push(&mut self, e: ClientEvent) -> bool {
        match self {
            Outbox::Channel(tx) => tx.send(e).is_ok(),
            Outbox::Local(held) => {
                held.push_back(e);
                true
            }
        }
    }

    /// Whether events wait for an [`EventLoop::poll`] to return them.
    fn holds_any(&self) -> bool {
        matches!(self, Outbox::Local(held) if !held.is_empty())
    }
}

/// Who waits for a publish the client has not taken yet.
enum Publisher {
    /// `publish().await`: answered at completion.
    Awaits(Reply<()>),
    /// `enqueue().await`: answered with the token once the client took it.
    Enqueued(Reply<Token>),
    /// `post`: reported on the event stream under this token.
    Posted(Token),
}

/// Where a publish the client took reports its completion.
enum Completion {
    /// To the `publish().await` that waits for it.
    Answer(Reply<()>),
    /// On the event stream, under the token `enqueue` returned.
    Enqueued(Token),
    /// On the event stream, under the token `post` returned; a `post` permit goes back.
    Posted(Token),
}

struct Driver {
    device: Device,
    /// Publishes not handed to the client yet, in order: the ones a batch of commands
    /// brought (handed over together at its end, in one call), and the ones the client had
    /// no room for (`QueueFull`: `max_queued` requests wait), offered again once a poll
    /// reported something. Their callers wait, as rumqttc's do on its bounded request
    /// channel, instead of failing.
    waiting_room: VecDeque<(Publish, Publisher)>,
    /// False from a `QueueFull` until a poll reports something: only what a poll hands over
    /// (completions, messages taken) makes room, so offering before that is a call for nothing.
    room_may_open: bool,
    events: Outbox,
    backlog: Arc<Backlog>,
    /// Wakes the driver when a socket is ready (the platform's wakeup; `None`: it has none).
    wake: Option<Arc<Notify>>,
    /// One timer for the driver's life, re-armed only when it must fire earlier: a new
    /// timer per turn cost a timer-wheel insertion and removal per batch of requests or
    /// messages. Firing early only costs a poll that finds nothing due. Made on the first
    /// turn, so that [`Client::new`] may be called outside a tokio runtime.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    connect_waiters: Vec<Reply<()>>,
    /// Publishes the client took, each with where its completion goes: one map, so that a
    /// completion is one lookup whichever way the publish was made.
    in_flight: TokenMap<(Completion, Qos)>,
    /// Publishes of QoS 1 and 2 in `in_flight`: while any are, a poll has likely woken a
    /// broker that owes this client an answer (see [`give_way`]).
    awaiting_broker: usize,
    sub_waiters: BTreeMap<Token, Reply<Vec<u8>>>,
    ping_waiters: Vec<oneshot::Sender<bool>>,
    tokens: Arc<EventTokens>,
    /// The last turn polled and returned with events for an [`EventLoop`] to hand out; the
    /// next one starts at the wait.
    polled: bool,
    /// `post` permits to give back at the end of this turn (one `add_permits` a turn,
    /// not one a publish: it takes the semaphore's lock).
    settled: usize,
    /// The client's in-flight window (`max_inflight`).
    window: usize,
    /// Connected: between `Up` and `Down`. Kept from the events the polls hand over rather
    /// than asked (`Device::is_connected` is a call into the component, once a turn).
    up: bool,
    /// A request that wants a turn came ([`EventTokens::nudge`]): the next turn takes
    /// what is in the channel even with the window full.
    nudged: bool,
}

impl Drop for Driver {
    /// A `post` waiting for room, or a `post` or `enqueue` waiting for the reader, fails
    /// (`Stopped`) instead of waiting forever.
    fn drop(&mut self) {
        self.tokens.room.close();
        self.tokens.caught_up.notify_waiters();
    }
}

impl Driver {
    fn new(mut device: Device, events: Outbox, backlog: Arc<Backlog>, tokens: Arc<EventTokens>) -> Self {
        let wake = device.platform_mut().wakeup();
        let window = usize::from(device.config().max_inflight);
        Driver {
            device,
            waiting_room: VecDeque::new(),
            room_may_open: true,
            events,
            backlog,
            wake,
            sleep: None,
            connect_waiters: Vec::new(),
            in_flight: TokenMap::new(),
            awaiting_broker: 0,
            sub_waiters: BTreeMap::new(),
            ping_waiters: Vec::new(),
            tokens,
            polled: false,
            settled: 0,
            window,
            up: false,
            nudged: false,
        }
    }

    /// `Client::spawn`'s task: turns until the client is finished.
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while self.turn(&mut commands).await {}
    }

    /// One turn: poll the client and hand it what waits; then, unless that reported
    /// something an [`EventLoop`] should return first, wait for a command, the platform,
    /// room for messages or the deadline, and take what came. False once the client is
    /// finished (its handles dropped, or the component failed for good).
    ///
    /// Cancel-safe: the only await is the wait, and nothing is taken until it ends.
    async fn turn(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> bool {
        // After a turn that returned with events, the poll that found them saw everything
        // there was: polling again before something new comes (a command, the socket, room,
        // the deadline; the wait below sees each at once) would be two crossings for nothing.
        let polled = std::mem::take(&mut self.polled);
        // The requests that came meanwhile (left in the channel while the window was full,
        // or sent while this task was busy) go in before the poll. Without a poll due, only
        // if the client can send a publish now or a request that wants a turn nudged:
        // otherwise taking them costs a poll that sends nothing (an event loop's task comes
        // here after every event it returned), and the next poll takes them anyway.
        let took = if !polled || std::mem::take(&mut self.nudged) || self.wants_publishes() {
            match self.take_commands(commands, MAX_BATCH) {
                Ok(took) => took,
                Err(()) => return false,
            }
        } else {
            false
        };
        if !polled || took {
            if let Err(e) = self.poll() {
                self.emit(ClientEvent::Error(e.to_string()));
                return false;
            }
            if self.settled > 0 {
                // One `add_permits` a turn, not one a publish: it takes the semaphore's lock.
                self.tokens.room.add_permits(std::mem::take(&mut self.settled));
            }
            // What the poll completed may have made room (or, after `disconnect`, the
            // refusals answer the waiting); what that hands over is polled at once.
            if self.offer_waiting() {
                return true;
            }
            if self.events.holds_any() {
                self.polled = true;
                return true;
            }
        }
        if self.nudged {
            // More in the channel than one turn takes, a request that wants a turn among it.
            return true;
        }
        let listen = self.wants_publishes();
        let now = self.device.platform_mut().now_ms();
        let deadline = self.device.next_deadline().ok().flatten();
        let mut wait = deadline.map_or(Duration::from_secs(3600), |d| Duration::from_millis(d.saturating_sub(now)));
        wait = wait.min(if self.wake.is_none() { IDLE_POLL } else { LINK_POLL });
        let due = tokio::time::Instant::now() + wait;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.is_elapsed() || due < sleep.deadline() {
            sleep.as_mut().reset(due);
        }
        let notified = async {
            match &self.wake {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv(), if listen => match cmd {
                Some(cmd) => {
                    self.command(cmd);
                    // Requests that queued up meanwhile go in before the next poll: one
                    // poll, one deadline query and one timer per batch, not per request
                    // (an application with many publishes in flight sends them in bursts).
                    // The next turn takes more before it polls.
                    return self.take_commands(commands, MAX_BATCH - 1).is_ok();
                }
                None => {
                    self.last_handle_gone();
                    return false;
                }
            },
            // A request that wants a turn, or a handle dropped: taken at the next turn.
            _ = self.tokens.nudge.notified() => self.nudged = true,
            _ = notified => {}
            _ = self.backlog.room.notified() => {}
            _ = sleep.as_mut() => {}
        }
        true
    }

    fn emit(&mut self, e: ClientEvent) {
        self.events.push(e);
    }

    /// The completion of a `post` or `enqueue`, counted as unread if it goes to the
    /// stream (see [`EventTokens::unread`]).
    fn emit_completion(&mut self, e: ClientEvent) {
        let Outbox::Channel(_) = self.events else { return self.emit(e) };
        // Counted before it is sent: the reader that takes it counts it down.
        self.tokens.unread.fetch_add(1, Ordering::AcqRel);
        if !self.events.push(e) {
            // No one will take it (the stream was dropped).
            self.tokens.completion_taken();
        }
    }

    /// A message for the application, counted as held until it is taken. One that no one
    /// can take (the event stream was dropped) is not: counted, it would never be taken, and
    /// after `queue_len` of them the client would stop reading the socket for good (with
    /// `backpressure`), acknowledgements of its own publishes and all.
    fn emit_message(&mut self, m: Message) {
        // Counted before it is sent: a take that came first would count below zero.
        self.backlog.held.fetch_add(1, Ordering::AcqRel);
        if !self.events.push(ClientEvent::Message(m)) {
            self.backlog.held.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a publish sent now should wake this task. Not while connected with the
    /// in-flight window full: the client would only queue it, and the acknowledgement that
    /// opens the window wakes the task anyway, which takes what waits in the channel before
    /// it polls. So a publisher that keeps the window full (and `max_queued` behind it)
    /// costs no wake-up across threads per batch of publishes, as rumqttc's event loop
    /// stops reading its request channel while its window is full. Disconnected, every
    /// publish goes to the client at once: with a store, that is what records it.
    fn wants_publishes(&self) -> bool {
        !self.up || self.in_flight.len() < self.window
    }

    /// Takes up to `most` requests already in the channel and hands their publishes over
    /// together; true if it took any. `Err` once every handle is gone (the client is then
    /// closed): the driver is finished.
    fn take_commands(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>, most: usize) -> Result<bool, ()> {
        let (mut took, mut emptied) = (false, false);
        for _ in 0..most {
            match commands.try_recv() {
                Ok(cmd) => {
                    self.command(cmd);
                    took = true;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    emptied = true;
                    break;
                }
                // What the last handle sent before it went is polled first; the next
                // turn finds the channel closed.
                Err(mpsc::error::TryRecvError::Disconnected) if took => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.last_handle_gone();
                    return Err(());
                }
            }
        }
        // Stopped with more to take: the next turn takes again, window full or not, so that
        // a request that wants a turn behind `most` publishes (or the channel's end) is not
        // left for the next acknowledgement.
        self.nudged = !emptied;
        if took {
            // The batch's publishes, handed over together before the poll that sends them.
            self.offer_waiting();
        }
        Ok(took)
    }

    /// Every handle is gone (the channel closed): the client says goodbye to the broker (a
    /// DISCONNECT, so no will), and the task ends.
    fn last_handle_gone(&mut self) {
        let _ = self.device.disconnect();
    }

    fn command(&mut self, cmd: Command) {
        if !cmd.is_publish() {
            // The publishes asked for before this go to the client before it.
            self.offer_waiting();
        }
        match cmd {
            Command::Connect(reply) => match self.device.connect() {
                Ok(()) => self.connect_waiters.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Publish(p, reply) => self.waiting_room.push_back((p, Publisher::Awaits(reply))),
            Command::Enqueue(p, reply) => self.waiting_room.push_back((p, Publisher::Enqueued(reply))),
            Command::Post(p, token) => self.waiting_room.push_back((p, Publisher::Posted(token))),
            Command::Authenticate(data, reply) => {
                let _ = reply.send(self.device.authenticate(&data).map_err(Error::from));
            }
            Command::Cancel(token, reply) => {
                let _ = reply.send(self.cancel(token).map_err(Error::from));
            }
            Command::Subscribe(subs, props, reply) => match self.device.subscribe_with(subs, props) {
                Ok(token) => {
                    self.sub_waiters.insert(token, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Unsubscribe(filters, reply) => match self.device.unsubscribe(filters) {
                Ok(token) => {
                    self.sub_waiters.insert(token, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::BrokerUp(reply) => {
                self.ping_waiters.push(reply);
                if self.device.broker_up().is_err() {
                    for w in self.ping_waiters.drain(..) {
                        let _ = w.send(false);
                    }
                }
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.device.stats().ok().flatten());
            }
            Command::Disconnect(reply) => {
                let _ = self.device.disconnect();
                // What still waits for room is refused from now on (closed): answered by
                // the next offer.
                self.room_may_open = true;
                let _ = self.poll();
                let _ = reply.send(());
            }
        }
    }

    /// Hands what waits to the client, in order, in calls of at most `MAX_BATCH` publishes
    /// and about `OFFER_BYTES` of them, until it refuses one for want of room; true when
    /// it answered any.
    fn offer_waiting(&mut self) -> bool {
        let mut answered = false;
        while self.room_may_open && !self.waiting_room.is_empty() {
            let mut bytes = 0;
            let n = self
                .waiting_room
                .iter()
                .take(MAX_BATCH)
                .take_while(|(p, _)| {
                    let first = bytes == 0;
                    bytes += p.topic.len() + p.payload.len() + 1;
                    first || bytes <= OFFER_BYTES
                })
                .count();
            // Each publish's QoS goes beside its publisher: `batch` moves into the call.
            let (batch, by): (Vec<Publish>, Vec<(Publisher, Qos)>) = self
                .waiting_room
                .drain(..n)
                .map(|(p, by)| {
                    let qos = p.qos;
                    (p, (by, qos))
                })
                .unzip();
            let mut refused = Vec::new();
            for (r, (by, qos)) in self.device.try_publish_many(batch).into_iter().zip(by) {
                match r {
                    Ok(token) => {
                        answered = true;
                        let completion = match by {
                            Publisher::Awaits(reply) => Completion::Answer(reply),
                            Publisher::Enqueued(reply) => {
                                let mine = self.tokens.take();
                                let _ = reply.send(Ok(mine));
                                Completion::Enqueued(mine)
                            }
                            Publisher::Posted(mine) => Completion::Posted(mine),
                        };
                        self.awaiting_broker += usize::from(qos != Qos::AtMostOnce);
                        self.in_flight.insert(token, (completion, qos));
                    }
                    Err(e) => match *e {
                        // No later one in the call was taken either: they all wait, in order.
                        (DeviceError::Client(ClientError::QueueFull), p) => refused.push((p, by)),
                        (e, _) => {
                            answered = true;
                            match by {
                                Publisher::Awaits(reply) => drop(reply.send(Err(e.into()))),
                                Publisher::Enqueued(reply) => drop(reply.send(Err(e.into()))),
                                Publisher::Posted(token) => {
                                    self.settled += 1;
                                    self.emit_completion(ClientEvent::Refused { token, why: e.to_string() });
                                }
                            }
                        }
                    },
                }
            }
            if !refused.is_empty() {
                self.room_may_open = false;
                for waiting in refused.into_iter().rev() {
                    self.waiting_room.push_front(waiting);
                }
            }
        }
        answered
    }

    /// [`Client::cancel`]: `token` is the application's (`enqueue`'s or `post`'s), so it is
    /// looked for among the publishes not handed over yet and then among the client's.
    /// Linear searches: a cancel is rare, and a second map kept for it would cost every
    /// publish an insert and a removal.
    fn cancel(&mut self, token: Token) -> Result<bool, DeviceError> {
        let waiting = self.waiting_room.iter().position(|(_, by)| matches!(by, Publisher::Posted(t) if *t == token));
        if let Some(i) = waiting {
            // Never handed over: it only leaves the line (and gives its `post` permit back).
            self.waiting_room.remove(i);
            self.settled += 1;
            self.emit_completion(ClientEvent::PublishFailed { token, reason: 0 });
            return Ok(true);
        }
        let mine = |c: &Completion| matches!(c, Completion::Enqueued(t) | Completion::Posted(t) if *t == token);
        let Some(device_token) = self.in_flight.iter().find(|(_, (c, _))| mine(c)).map(|(t, _)| t) else { return Ok(false) };
        if !self.device.cancel(device_token)? {
            // The client had settled it already: the poll that reports that completes it.
            return Ok(false);
        }
        self.complete(device_token, Err(0));
        Ok(true)
    }

    /// Reports the outcome of the publish the device knows as `t` (`Err`: the reason code)
    /// where its completion goes.
    fn complete(&mut self, t: Token, outcome: Result<(), u8>) {
        let done = self.in_flight.remove(t).map(|(c, qos)| {
            self.awaiting_broker -= usize::from(qos != Qos::AtMostOnce);
            c
        });
        let token = match done {
            Some(Completion::Answer(w)) => {
                let _ = w.send(outcome.map_err(|reason| if reason == KEPT_IN_STORE { Error::KeptInStore } else { Error::PublishFailed(reason) }));
                return;
            }
            Some(Completion::Enqueued(token)) => token,
            Some(Completion::Posted(token)) => {
                self.settled += 1;
                token
            }
            None => return,
        };
        self.emit_completion(match outcome {
            Ok(()) => ClientEvent::Published(token),
            Err(KEPT_IN_STORE) => ClientEvent::PublishKept(token),
            Err(reason) => ClientEvent::PublishFailed { token, reason },
        });
    }

    fn poll(&mut self) -> Result<(), DeviceError> {
        let events = self.device.poll_taking(self.backlog.room() as u32)?;
        // Handing over a QoS 1 or 2 message acknowledged it: the poll sent the broker an answer.
        let acknowledged = events.iter().any(|e| matches!(e, Event::Message(m) if m.qos != Qos::AtMostOnce));
        self.room_may_open |= !events.is_empty();
        for e in events {
            match e {
                Event::Up(session_present) => {
                    self.up = true;
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                    self.emit(ClientEvent::Up { session_present });
                }
                Event::ConnectFailed(why) => {
                    let why = match self.device.platform_mut().take_failure() {
                        Some(detail) => format!("{why}: {detail}"),
                        None => why,
                    };
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Err(Error::ConnectFailed(why.clone())));
                    }
                }
                Event::Published(t) => self.complete(t, Ok(())),
                Event::PublishFailed((t, reason)) => self.complete(t, Err(reason)),
                Event::Subscribed((t, codes)) | Event::Unsubscribed((t, codes)) => {
                    if let Some(w) = self.sub_waiters.remove(&t) {
                        let _ = w.send(Ok(codes));
                    }
                }
                Event::BrokerUp(up) => {
                    for w in self.ping_waiters.drain(..) {
                        let _ = w.send(up);
                    }
                }
                Event::Down(d) => {
                    self.up = false;
                    self.emit(ClientEvent::Down(d));
                }
                Event::Message(m) => self.emit_message(m),
                Event::Link(l) => {
                    self.emit(ClientEvent::Link(l));
                }
                Event::Discarded(n) => {
                    self.emit(ClientEvent::Discarded(n));
                }
                Event::Auth((reason, data)) => {
                    self.emit(ClientEvent::Auth { reason, data });
                }
                Event::Error(e) => {
                    self.emit(ClientEvent::Error(e));
                }
            }
        }
        if self.awaiting_broker > 0 || acknowledged {
            give_way();
        }
        Ok(())
    }
}
