//! An async handle on a [`Device`], shaped like mqtt_as: `connect().await`,
//! `publish(..).await` that returns when the broker acknowledged, and an event stream for
//! messages, up/down and link changes.
//!
//! The device runs in its own tokio task, which polls it when a command arrives, the
//! platform's wakeup fires, or the client's deadline passes.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::device::{Device, DeviceError, Publish, Token};
use crate::{DownReason, Event, LinkState, Message, Qos, Stats, Subscription};

/// What the application hears about without asking.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Up { session_present: bool },
    Down(DownReason),
    Message(Message),
    Link(LinkState),
    /// Incoming messages discarded so far because the queue was full.
    Discarded(u64),
    Error(String),
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
    #[error("the client task has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Command {
    Connect(Reply<()>),
    Publish(Publish, Reply<()>),
    Subscribe(Vec<Subscription>, Reply<Vec<u8>>),
    Unsubscribe(Vec<String>, Reply<Vec<u8>>),
    BrokerUp(oneshot::Sender<bool>),
    Stats(oneshot::Sender<Option<Stats>>),
    Disconnect(oneshot::Sender<()>),
}

pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
}

/// Longest sleep between polls when the platform offers no wakeup.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Longest sleep between polls otherwise: link changes (read by the `wifi` import) are
/// noticed within this time.
const LINK_POLL: Duration = Duration::from_millis(1000);

impl Client {
    /// Move `device` into a task on the current tokio runtime.
    pub fn spawn(device: Device) -> Client {
        let (commands, rx) = mpsc::unbounded_channel();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(Driver::new(device, tx).run(rx));
        Client { commands, events }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Returns when the broker accepted the connection; fails if this first attempt fails.
    pub async fn connect(&self) -> Result<(), Error> {
        self.ask(Command::Connect).await
    }

    /// QoS 1/2: returns when the broker acknowledged (across any outages in between).
    pub async fn publish(&self, topic: &str, payload: &[u8], qos: Qos, retain: bool) -> Result<(), Error> {
        let p = Publish { topic: topic.into(), payload: payload.into(), qos, retain, properties: None, deadline_ms: None };
        self.publish_with(p).await
    }

    pub async fn publish_with(&self, p: Publish) -> Result<(), Error> {
        self.ask(|r| Command::Publish(p, r)).await
    }

    /// Returns the granted QoS / reason code per filter.
    pub async fn subscribe(&self, subs: Vec<Subscription>) -> Result<Vec<u8>, Error> {
        self.ask(|r| Command::Subscribe(subs, r)).await
    }

    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<Vec<u8>, Error> {
        self.ask(|r| Command::Unsubscribe(filters, r)).await
    }

    /// Ping the broker; true when it answered within `response_time`.
    pub async fn broker_up(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::BrokerUp(tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).ok()?;
        rx.await.ok().flatten()
    }

    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Disconnect(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The next message, up/down or link change; `None` once the client task stopped.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Hands the event stream to another task (one that reports up/down while this one
    /// publishes, say); [`Client::next_event`] on this client returns `None` from then on.
    pub fn take_events(&mut self) -> Events {
        let (_, closed) = mpsc::unbounded_channel();
        Events(std::mem::replace(&mut self.events, closed))
    }
}

/// A client's event stream, taken with [`Client::take_events`].
pub struct Events(mpsc::UnboundedReceiver<ClientEvent>);

impl Events {
    /// The next event; `None` once the client task stopped.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.0.recv().await
    }
}

struct Driver {
    device: Device,
    events: mpsc::UnboundedSender<ClientEvent>,
    connect_waiters: Vec<Reply<()>>,
    publish_waiters: BTreeMap<Token, Reply<()>>,
    sub_waiters: BTreeMap<Token, Reply<Vec<u8>>>,
    ping_waiters: Vec<oneshot::Sender<bool>>,
}

impl Driver {
    fn new(device: Device, events: mpsc::UnboundedSender<ClientEvent>) -> Self {
        Driver {
            device,
            events,
            connect_waiters: Vec::new(),
            publish_waiters: BTreeMap::new(),
            sub_waiters: BTreeMap::new(),
            ping_waiters: Vec::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let wake = self.device.platform_mut().wakeup();
        loop {
            if let Err(e) = self.poll() {
                let _ = self.events.send(ClientEvent::Error(e.to_string()));
                return;
            }
            let now = self.device.platform_mut().now_ms();
            let deadline = self.device.next_deadline().ok().flatten();
            let mut wait = deadline.map_or(Duration::from_secs(3600), |d| Duration::from_millis(d.saturating_sub(now)));
            wait = wait.min(if wake.is_none() { IDLE_POLL } else { LINK_POLL });
            let notified = async {
                match &wake {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => {
                        let _ = self.device.disconnect();
                        return;
                    }
                },
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect(reply) => match self.device.connect() {
                Ok(()) => self.connect_waiters.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Publish(p, reply) => match self.device.publish(p) {
                Ok(token) => {
                    self.publish_waiters.insert(token, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Subscribe(subs, reply) => match self.device.subscribe(subs) {
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
                let _ = self.poll();
                let _ = reply.send(());
            }
        }
    }

    fn poll(&mut self) -> Result<(), DeviceError> {
        for e in self.device.poll()? {
            match e {
                Event::Up(session_present) => {
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                    let _ = self.events.send(ClientEvent::Up { session_present });
                }
                Event::ConnectFailed(why) => {
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Err(Error::ConnectFailed(why.clone())));
                    }
                }
                Event::Published(t) => {
                    if let Some(w) = self.publish_waiters.remove(&t) {
                        let _ = w.send(Ok(()));
                    }
                }
                Event::PublishFailed((t, reason)) => {
                    if let Some(w) = self.publish_waiters.remove(&t) {
                        let _ = w.send(Err(Error::PublishFailed(reason)));
                    }
                }
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
                    let _ = self.events.send(ClientEvent::Down(d));
                }
                Event::Message(m) => {
                    let _ = self.events.send(ClientEvent::Message(m));
                }
                Event::Link(l) => {
                    let _ = self.events.send(ClientEvent::Link(l));
                }
                Event::Discarded(n) => {
                    let _ = self.events.send(ClientEvent::Discarded(n));
                }
                Event::Error(e) => {
                    let _ = self.events.send(ClientEvent::Error(e));
                }
            }
        }
        Ok(())
    }
}
