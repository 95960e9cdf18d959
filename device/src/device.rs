//! One running client component, with the watchdog.
//!
//! Every call into the guest gets a fresh budget from the component's [`Watchdog`] (about a
//! second of wall-clock time, or a fuel allowance). If the guest traps or runs out of its
//! budget, the instance is thrown away and a new one is made from the same `InstancePre`,
//! given the same config, connected if it was, re-subscribed, and handed again every
//! publish the old one had accepted but not completed — so nothing accepted is lost. With
//! storage, the fresh instance gets the stored ones back from the store, under the same
//! tokens, and only the rest are handed over. This is the role the NO_NET bridge's host
//! plays when it reboots its ESP8266.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};

use wasmtime::component::ResourceAny;
use wasmtime::Store;

use crate::bindings::exports::mqtt_as::client::client::{ClientError, Config, Event, GuestClient, Polled, Qos, Stats, SubscribeProperties, Subscription};
use crate::bindings::mqtt_as::client::{clock, log, packet_ids, socket, storage, wifi};
use crate::bindings::MqttClient;
use crate::engine_config::Watchdog;
use crate::platform::DevicePlatform;
use crate::program::Program;
use crate::token_map::TokenMap;
use crate::{DownReason, LinkState, SocketError, SocketState, TlsParams};

/// Identifies a request. The device hands out its own tokens (the core's type), which
/// survive restarts of the instance; the guest's do not, and never reach the application.
pub use mqtt_protocol::Token;

/// Default fuel for one call under [`Watchdog::Fuel`]: far more than any legitimate poll
/// needs (see the `boundary` benchmark for measured figures), small enough to stop a runaway
/// loop in well under a second.
pub const DEFAULT_FUEL_PER_CALL: u64 = 500_000_000;

/// Restarts without a poll going through in between before the device gives up
/// ([`DeviceError::GaveUp`]): a failure that every fresh instance meets at once would
/// otherwise restart them for ever, as fast as the host can poll. The Python and Node hosts
/// stop at the same count.
pub const MAX_RESTARTS_IN_A_ROW: u32 = 3;

/// Ticks of the epoch a call may run under [`Watchdog::Clock`]: it traps after between
/// `CALL_TICKS - 1` and `CALL_TICKS` of them. The host advances the epoch every 100 ms (its
/// `epoch_ticker`), so a legitimate call, which takes microseconds (milliseconds for a poll
/// full of input), is not trapped even on a host descheduled for a while.
pub const CALL_TICKS: u64 = 10;

/// The store's data: the platform, and the handles the instance has open (closed for it
/// if it dies).
pub struct HostState<P: ?Sized> {
    platform: Option<Box<P>>,
    open_handles: Vec<u32>,
    name: String,
    memory: MemoryWatch,
    /// What `packet-ids.sent` said since the device last took it (under guest tokens).
    sent_ids: Vec<packet_ids::InFlight>,
    /// What `packet-ids.session` last said, if it spoke since the device last took it.
    session_broker: Option<u32>,
}

impl<P: DevicePlatform + ?Sized> HostState<P> {
    fn new(platform: Box<P>, name: String, max_memory: usize) -> Self {
        let memory = MemoryWatch { bytes: 0, max: max_memory };
        HostState { platform: Some(platform), open_handles: Vec::new(), name, memory, sent_ids: Vec::new(), session_broker: None }
    }
}

/// Most linear memory one instance may have, unless its [`Program`] says otherwise
/// ([`Program::with_memory_limit`]). The client bounds its own buffers (queue,
/// in-flight, max packet size) far below this; the cap is the backstop that turns a runaway
/// allocation into a failed `memory.grow` (the guest aborts, the watchdog restarts it)
/// instead of a host that swaps.
pub const MAX_GUEST_MEMORY: usize = 64 << 20;

/// Sees every growth of the guest's linear memory: its current size, and the cap.
struct MemoryWatch {
    bytes: usize,
    max: usize,
}

impl wasmtime::ResourceLimiter for MemoryWatch {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            return Ok(false);
        }
        self.bytes = desired;
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl<P: DevicePlatform + ?Sized> HostState<P> {
    fn p(&mut self) -> &mut P {
        // Only `Device::restart` takes the platform, and it moves it into the next store
        // before any further call.
        self.platform.as_deref_mut().expect("platform present outside a restart")
    }

    /// Closes the connections the instance left open: it failed, and cannot close them.
    fn close_open_handles(&mut self) {
        for h in core::mem::take(&mut self.open_handles) {
            self.p().close(h);
        }
    }
}

impl<P: DevicePlatform + ?Sized> socket::Host for HostState<P> {
    fn open(&mut self, host: String, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        let h = self.p().open(&host, port, tls)?;
        self.open_handles.push(h);
        Ok(h)
    }
    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        self.p().status(handle)
    }
    fn send(&mut self, handle: u32, data: Vec<u8>) -> Result<u32, SocketError> {
        self.p().send(handle, &data)
    }
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        self.p().recv(handle, max)
    }
    fn close(&mut self, handle: u32) {
        self.open_handles.retain(|h| *h != handle);
        self.p().close(handle)
    }
}

impl<P: DevicePlatform + ?Sized> clock::Host for HostState<P> {
    fn now_ms(&mut self) -> u64 {
        self.p().now_ms()
    }
    fn wall_ms(&mut self) -> Option<u64> {
        self.p().wall_ms()
    }
}

impl<P: DevicePlatform + ?Sized> wifi::Host for HostState<P> {
    fn state(&mut self) -> LinkState {
        self.p().state()
    }
    fn connect(&mut self, ssid: String, password: String) -> Result<(), String> {
        self.p().connect(&ssid, &password)
    }
    fn disconnect(&mut self) {
        self.p().disconnect()
    }
    fn rssi(&mut self) -> Option<i32> {
        self.p().rssi()
    }
}

fn storage_error(e: mqtt_protocol::store::FlashError) -> storage::StorageError {
    match e {
        mqtt_protocol::store::FlashError::OutOfRange => storage::StorageError::OutOfRange,
        mqtt_protocol::store::FlashError::Io => storage::StorageError::Io,
    }
}

/// The platform's flash, or none: capacity 0, and every access out of range.
impl<P: DevicePlatform + ?Sized> storage::Host for HostState<P> {
    fn geometry(&mut self) -> storage::Layout {
        let g = self.p().storage().map(|f| f.geometry()).unwrap_or_default();
        storage::Layout { capacity: g.capacity, sector_size: g.sector_size, write_size: g.write_size }
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, storage::StorageError> {
        self.p().storage().ok_or(storage::StorageError::OutOfRange)?.read(offset, len).map_err(storage_error)
    }
    fn write(&mut self, offset: u32, data: Vec<u8>) -> Result<(), storage::StorageError> {
        self.p().storage().ok_or(storage::StorageError::OutOfRange)?.write(offset, &data).map_err(storage_error)
    }
    fn erase(&mut self, sector: u32) -> Result<(), storage::StorageError> {
        self.p().storage().ok_or(storage::StorageError::OutOfRange)?.erase(sector).map_err(storage_error)
    }
    fn sync(&mut self) -> Result<(), storage::StorageError> {
        self.p().storage().ok_or(storage::StorageError::OutOfRange)?.sync().map_err(storage_error)
    }
}

/// A guest has at most 65,535 packet ids in flight, so more reports than that between two
/// polls are repeats; beyond it they are dropped rather than kept without bound.
const MAX_SENT_IDS: usize = 1 << 16;

impl<P: DevicePlatform + ?Sized> packet_ids::Host for HostState<P> {
    fn sent(&mut self, publishes: Vec<packet_ids::InFlight>) {
        let room = MAX_SENT_IDS.saturating_sub(self.sent_ids.len());
        self.sent_ids.extend(publishes.into_iter().take(room));
    }

    fn session(&mut self, broker: u32) {
        self.session_broker = Some(broker);
    }
}

impl<P: DevicePlatform + ?Sized> log::Host for HostState<P> {
    fn log(&mut self, level: log::Level, message: String) {
        // Not `p()`: the name is borrowed beside the platform.
        let HostState { platform, name, .. } = self;
        platform.as_deref_mut().expect("platform present outside a restart").log(name, level, &message);
    }
}

/// A publish as handed to [`Device::publish`]; kept until it completes, for replay. The
/// contract's own record, so that a batch of them is handed to the component as it is.
pub use crate::bindings::exports::mqtt_as::client::client::Publish;

impl Publish {
    /// A publish with no retain, no MQTT 5 properties and no deadline.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: Qos) -> Self {
        Publish { topic: topic.into(), payload: payload.into(), qos, retain: false, properties: None, deadline_ms: None }
    }

    /// The broker keeps it as the topic's retained message.
    pub fn retained(mut self) -> Self {
        self.retain = true;
        self
    }
}

impl crate::Subscription {
    /// A subscription to `filter` at `qos`, the MQTT 5 options at their defaults (what
    /// MQTT 3.1.1 means): local messages delivered, retain flag as the broker sets it,
    /// retained messages sent at subscribe.
    pub fn new(filter: impl Into<String>, qos: Qos) -> Self {
        crate::Subscription { filter: filter.into(), qos, no_local: false, retain_as_published: false, retain_handling: 0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The client refused the call (bad argument, queue full, closed).
    #[error("{}", client_error_text(.0))]
    Client(ClientError),
    /// Instantiating a fresh instance failed: the component cannot run on this host.
    #[error("could not instantiate the component: {0:#}")]
    Instantiate(anyhow::Error),
    /// The fresh instance failed too while it was being given back the subscriptions and
    /// publishes of the one that failed (it cannot hold them, say): restarting again would
    /// only repeat that, so the device gives up and says so.
    #[error("the component failed again while being restarted: {0:#}")]
    RestartFailed(anyhow::Error),
    /// Every instance failed at once, more than [`MAX_RESTARTS_IN_A_ROW`] times without a
    /// poll going through: the device stopped (its connections closed), and every later call
    /// answers this.
    #[error("{0}; the device stopped")]
    GaveUp(String),
}

impl DeviceError {
    /// The same error again, for each publish of a call that failed as a whole.
    fn duplicate(&self) -> DeviceError {
        match self {
            DeviceError::Client(e) => DeviceError::Client(e.clone()),
            DeviceError::Instantiate(e) => DeviceError::Instantiate(anyhow::anyhow!("{e:#}")),
            DeviceError::RestartFailed(e) => DeviceError::RestartFailed(anyhow::anyhow!("{e:#}")),
            DeviceError::GaveUp(why) => DeviceError::GaveUp(why.clone()),
        }
    }
}

fn client_error_text(e: &ClientError) -> String {
    match e {
        ClientError::Invalid(why) => format!("invalid: {why}"),
        ClientError::QueueFull => "outgoing queue full".into(),
        ClientError::Closed => "client closed by disconnect".into(),
        ClientError::StoreFull => "store full: no room until some publishes are acknowledged".into(),
        ClientError::Storage(why) => format!("storage: {why}"),
    }
}

/// Every broker `config` names, `server` first then `servers`, with its port: the
/// addresses a host lets the component open (one rule, the core's).
pub fn brokers(config: &Config) -> Vec<(String, u16)> {
    let ours =
        mqtt_protocol::Config { server: config.server.clone(), port: config.port, ssl: config.ssl, servers: config.servers.clone(), ..Default::default() };
    (0..ours.brokers()).map(|i| ours.broker(i)).collect()
}

/// A subscription change waiting for the broker's answer.
#[derive(Clone)]
enum Request {
    Subscribe(Vec<Subscription>, Option<SubscribeProperties>),
    Unsubscribe(Vec<String>),
}

struct Live<P: ?Sized + 'static> {
    store: Store<HostState<P>>,
    instance: MqttClient,
    client: ResourceAny,
}

pub struct Device<P: DevicePlatform + ?Sized> {
    component: Program<P>,
    config: Config,
    live: Live<P>,
    fuel_per_call: u64,
    /// One-shot fuel budget for the next call (fault injection).
    next_call_fuel: Option<u64>,
    /// Every poll runs out of fuel (fault injection: see [`Device::starve_polls`]).
    starve_polls: bool,
    /// Restarts since a poll last went through (see [`MAX_RESTARTS_IN_A_ROW`]).
    failing: u32,
    /// Why the device stopped, once it gave up.
    gave_up: Option<String>,
    connect_requested: bool,
    /// A restart's fresh instance is connecting on the application's behalf (until `Up`, or
    /// the application's own `connect` or `disconnect`): a failed attempt is retried by us,
    /// not reported as `ConnectFailed`, which answers the application's own `connect`.
    restarted: bool,
    /// A restart is replaying state into a fresh instance: a failure now is not retried.
    restarting: bool,
    /// The application was told `Up` and no `Down` since: a restart, which closes the
    /// connection, says `Down` first (see [`Device::restart`]).
    reported_up: bool,
    /// Some instance was up once: the power-up purge (`clean_init`) is behind this client
    /// (see [`Device::replay_config`]).
    ever_up: bool,
    /// When to try again to connect a restarted instance whose first attempt failed.
    retry_connect_at: Option<u64>,
    /// The guest's deadline as the last `poll` returned it; `None` once another guest call
    /// may have moved it (a request waits to go out until the next poll).
    deadline_after_poll: Option<Option<u64>>,
    /// `deadline_after_poll` as it was before the current guest call: a request the client
    /// refused changed nothing, and the deadline stands (a driver waiting for room would
    /// otherwise be told to poll at once, over and over).
    deadline_before_call: Option<Option<u64>>,
    next_token: Token,
    guest_to_host: TokenMap<Token>,
    /// Moved here from the call that handed it over, once the component took it (a
    /// restart inside that call is handled by the call: see [`Device::try_publish_many`]).
    unacked: TokenMap<Publish>,
    /// For the publishes in `unacked` that are in flight: the packet id each went out under
    /// and whether (QoS 2) PUBREC came, as the guest last said (`packet-ids.sent`), so that
    /// a restart hands each to the fresh instance under its id (see the WIT `packet-ids`).
    packet_ids: TokenMap<(u16, bool)>,
    /// The broker the session (and those packet ids) lives on, as the guest last said
    /// (`packet-ids.session`; 0, the first, until it speaks): a restart resumes it there.
    session_broker: u32,
    /// What is subscribed, request by request with its properties and host token, to
    /// replay after a restart (a filter subscribed again or unsubscribed leaves its older
    /// request).
    subscriptions: Vec<(Token, Vec<Subscription>, Option<SubscribeProperties>)>,
    /// Subscribe and unsubscribe requests handed to the client and not yet answered
    /// (SUBACK/UNSUBACK), recorded before the guest is called, like `unacked`: a restart,
    /// even one inside the very call that made the request, hands each to the fresh
    /// instance under its host token, so it completes exactly once.
    requests: BTreeMap<Token, Request>,
    restarts: u64,
    /// What a restart handed back and the fresh instance refused (see
    /// [`Device::replays_refused`]).
    replays_refused: u64,
    /// Events produced while handling a restart, returned by the next poll.
    backlog: Vec<Event>,
}

/// Gives the next guest call its budget: `fuel` under [`Watchdog::Fuel`], [`CALL_TICKS`] of
/// the clock under [`Watchdog::Clock`]. `starved` (fault injection): too little to run, so
/// the call traps; under the clock that is a deadline already passed, which traps at the
/// call's first check.
fn arm<P: ?Sized>(store: &mut Store<HostState<P>>, watchdog: Watchdog, fuel: u64, starved: bool) -> wasmtime::Result<()> {
    match watchdog {
        Watchdog::Fuel => store.set_fuel(fuel),
        // Epochs are 64-bit atomics; a target without them (RV32IMAC) runs under fuel.
        #[cfg(target_has_atomic = "64")]
        Watchdog::Clock => {
            store.set_epoch_deadline(if starved { 0 } else { CALL_TICKS });
            Ok(())
        }
        #[cfg(not(target_has_atomic = "64"))]
        Watchdog::Clock => {
            let _ = starved;
            Err(wasmtime::format_err!("the clock watchdog needs 64-bit atomics, which this target lacks: run under fuel"))
        }
    }
}

fn instantiate<P: DevicePlatform + ?Sized>(component: &Program<P>, state: HostState<P>, config: &Config, fuel: u64) -> anyhow::Result<Live<P>> {
    let mut store = Store::new(&component.engine, state);
    store.limiter(|s| &mut s.memory);
    arm(&mut store, component.watchdog, fuel, false)?;
    let instance = component.pre.instantiate(&mut store)?;
    arm(&mut store, component.watchdog, fuel, false)?;
    let created = instance.mqtt_as_client_client().client().call_create(&mut store, config)?;
    match created {
        Ok(client) => Ok(Live { store, instance, client }),
        Err(e) => Err(anyhow::Error::new(DeviceError::Client(e))),
    }
}

impl<P: DevicePlatform + ?Sized> Device<P> {
    /// Instantiate the component on `platform` and create the client. A bad config is
    /// reported as [`DeviceError::Client`] with the key and the reason.
    pub fn new(component: &impl AsRef<Program<P>>, platform: Box<P>, config: Config, name: &str) -> Result<Self, DeviceError> {
        let component = component.as_ref();
        let state = HostState::new(platform, name.into(), component.max_memory);
        let live = instantiate(component, state, &config, DEFAULT_FUEL_PER_CALL).map_err(|e| match e.downcast::<DeviceError>() {
            Ok(d) => d,
            Err(e) => DeviceError::Instantiate(e),
        })?;
        Ok(Device {
            component: component.clone(),
            config,
            live,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            next_call_fuel: None,
            starve_polls: false,
            failing: 0,
            gave_up: None,
            connect_requested: false,
            restarted: false,
            restarting: false,
            reported_up: false,
            ever_up: false,
            retry_connect_at: None,
            deadline_after_poll: None,
            deadline_before_call: None,
            next_token: 1,
            guest_to_host: TokenMap::new(),
            unacked: TokenMap::new(),
            packet_ids: TokenMap::new(),
            session_broker: 0,
            subscriptions: Vec::new(),
            requests: BTreeMap::new(),
            restarts: 0,
            replays_refused: 0,
            backlog: Vec::new(),
        })
    }

    /// The fuel each call gets under [`Watchdog::Fuel`] (no effect under the clock).
    pub fn set_fuel_per_call(&mut self, fuel: u64) {
        self.fuel_per_call = fuel;
    }

    /// Fault injection: give only `fuel` to the next guest call (under [`Watchdog::Clock`],
    /// a deadline already passed), so it runs out and the watchdog has to recover (tests
    /// and scenarios use this to prove recovery works).
    pub fn starve_next_call(&mut self, fuel: u64) {
        self.next_call_fuel = Some(fuel);
    }

    /// Fault injection: every poll from now on runs out of fuel (`false` ends it), as a
    /// component would that fails at each poll: the device restarts the instance, and gives
    /// up after [`MAX_RESTARTS_IN_A_ROW`] restarts with no poll going through.
    pub fn starve_polls(&mut self, starve: bool) {
        self.starve_polls = starve;
    }

    /// How many times the watchdog replaced the instance.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Publishes and subscriptions a restart handed back that the fresh instance refused
    /// (each also reported: a `PublishFailed` or an `Error`). It has the failed instance's
    /// config and takes back what that one held, so this stays 0; the simulator checks it
    /// on every run (a refused publish is failed, not lost, and the loss check lets it by).
    pub fn replays_refused(&self) -> u64 {
        self.replays_refused
    }

    /// Publishes accepted and not yet completed (acknowledged, failed or cancelled).
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Size of the instance's linear memory now, in bytes (64 KiB pages).
    pub fn memory_bytes(&self) -> usize {
        self.live.store.data().memory.bytes
    }

    pub fn platform_mut(&mut self) -> &mut P {
        self.live.store.data_mut().p()
    }

    /// Runs one guest call with a fresh budget; a trap restarts the instance and
    /// returns `None`. `f` gets the client export, the store and the client resource.
    fn guarded<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&GuestClient, &mut Store<HostState<P>>, ResourceAny) -> wasmtime::Result<T>,
    ) -> Result<Option<T>, DeviceError> {
        if let Some(why) = &self.gave_up {
            return Err(DeviceError::GaveUp(why.clone()));
        }
        self.deadline_before_call = self.deadline_after_poll.take();
        let starved = self.next_call_fuel.take();
        let fuel = starved.unwrap_or(self.fuel_per_call);
        arm(&mut self.live.store, self.component.watchdog, fuel, starved.is_some()).map_err(|e| DeviceError::Instantiate(e.into()))?;
        let l = &mut self.live;
        match f(&l.instance.mqtt_as_client_client().client(), &mut l.store, l.client) {
            Ok(v) => Ok(Some(v)),
            Err(trap) if self.restarting => Err(DeviceError::RestartFailed(anyhow::Error::from(trap).context(format!("in `{what}`")))),
            Err(trap) => {
                self.failing += 1;
                if self.failing > MAX_RESTARTS_IN_A_ROW {
                    return Err(self.give_up(format!(
                        "the component failed {} times in a row, the last in `{what}`: {:#}",
                        self.failing,
                        anyhow::Error::from(trap)
                    )));
                }
                self.restarting = true;
                let r = self.restart(what, trap.into());
                self.restarting = false;
                r.map(|()| None)
            }
        }
    }

    /// Stops the device for good: the failed instance's connections are closed, and every
    /// later call answers `why`.
    fn give_up(&mut self, why: String) -> DeviceError {
        let state = self.live.store.data_mut();
        state.close_open_handles();
        let name = state.name.clone();
        state.p().log(&name, log::Level::Error, &why);
        self.gave_up = Some(why.clone());
        DeviceError::GaveUp(why)
    }

    fn restart(&mut self, what: &str, why: anyhow::Error) -> Result<(), DeviceError> {
        self.restarts += 1;
        // What the failed instance said of its packet ids, up to the moment it failed (it
        // says it before the bytes leave, so no id is on the wire unreported).
        self.take_sent_ids();
        let state = self.live.store.data_mut();
        state.close_open_handles();
        let name = state.name.clone();
        let mut platform = state.platform.take().expect("platform present");
        platform.log(&name, log::Level::Warn, &format!("component failed in `{what}` ({why:#}); restarting it"));
        let fresh = HostState::new(platform, name, self.component.max_memory);
        let live = instantiate(&self.component, fresh, &self.replay_config(), self.fuel_per_call).map_err(DeviceError::Instantiate)?;
        self.live = live;
        self.restarted = true;
        // Publishes the store keeps name their record, not the instance: the fresh one has
        // them back under the same tokens.
        let mut stored = core::mem::take(&mut self.guest_to_host);
        stored.retain(|guest, _| guest & mqtt_protocol::STORED_TOKEN != 0);
        // The old instance's connection was closed above, and it can no longer say so: an
        // application (or a driver deciding whether a publish can wait for the window)
        // would otherwise take the fresh instance's `Up` as a second one on a link that
        // never went.
        if core::mem::take(&mut self.reported_up) {
            self.backlog.push(Event::Down(DownReason::Socket(SocketError::Closed)));
        }
        self.backlog.push(Event::Error(format!("component restarted after a failure in `{what}`: {why:#}")));
        // What the store gave back keeps its token and is not handed over again: that would
        // send it twice, the second time under a new packet id (a duplicate even at QoS 2).
        // Asked before anything else: from `connect` on, any call may complete some of them
        // (a platform whose connection comes up at once, a broker that answers inside the
        // call), and a record closed then is one the broker has, not one to send again.
        let mut from_store = BTreeSet::new();
        for (guest, token) in stored {
            if self.guarded("stored", |api, store, c| api.call_stored(store, c, guest))? == Some(true) {
                self.guest_to_host.insert(guest, token);
                from_store.insert(token);
            }
        }
        // In flight first, under their packet ids, and before the connection that may resume
        // the session they belong to.
        let resumed = self.resume_in_flight()?;
        // What the broker already answered first (no token waits for these answers), then
        // the requests still waiting, in the order they were made, each under its token.
        let answered: Vec<_> = self.answered_subscriptions().cloned().collect();
        for (_, subs, props) in answered {
            if let Some(Err(e)) = self.call_subscribe(&subs, props.as_ref())? {
                // Nothing waits for its answer any more: said, so that the application
                // knows the subscription is gone and can make it again.
                self.replays_refused += 1;
                let filters: Vec<&str> = subs.iter().map(|s| s.filter.as_str()).collect();
                self.backlog.push(Event::Error(format!("replay after restart refused: the subscription to {filters:?}: {}", client_error_text(&e))));
            }
        }
        for (token, request) in self.requests.clone() {
            if let Err(e) = self.hand_over_request(token, &request)? {
                // As for publishes below: report it, and complete the token with the
                // spec's failure code for each filter, never leave it waiting.
                const FAILED: u8 = mqtt_protocol::ReasonCode::UNSPECIFIED_ERROR.0;
                self.requests.remove(&token);
                self.backlog.push(Event::Error(format!("replay after restart refused: {}", client_error_text(&e))));
                self.backlog.push(match request {
                    Request::Subscribe(subs, _) => Event::Subscribed((token, vec![FAILED; subs.len()])),
                    Request::Unsubscribe(filters) => Event::Unsubscribed((token, vec![FAILED; filters.len()])),
                });
            }
        }
        // What the store no longer kept (above) is handed over like a publish without
        // storage: its record was closed by an answer that died with the instance before a
        // poll reported it (a duplicate then, as without storage), or the fresh instance could
        // not open the store (then nothing is lost).
        for (token, p) in self.unacked.clone() {
            if from_store.contains(&token) || resumed.contains(&token) {
                continue;
            }
            if let Some(Err(e)) = self.hand_over(token, core::slice::from_ref(&p))?.and_then(|mut r| r.pop()) {
                self.fail_replay(token, &client_error_text(&e));
            }
        }
        // Last: with no connection, nothing the replay handed over is answered, nor is there
        // an `Up` or a `Link` yet, and those count against `max_queued` until a poll hands
        // them over (with a platform that connects at once, a `connect` before the replay
        // filled the fresh instance's queue and the last publishes were refused).
        if self.connect_requested {
            self.call_connect()?;
        }
        Ok(())
    }

    /// The subscriptions the broker answered: no token waits for them, and a restart makes
    /// them again on its own account (those still waiting are handed over as requests).
    fn answered_subscriptions(&self) -> impl Iterator<Item = &(Token, Vec<Subscription>, Option<SubscribeProperties>)> {
        self.subscriptions.iter().filter(|(t, ..)| !self.requests.contains_key(t))
    }

    /// The config a fresh instance gets after a restart: the application's, with room for
    /// the answered subscriptions it is given again besides what the failed instance held.
    /// Those count against `max_queued` in the fresh instance until answered (they did not
    /// in the failed one), so without the room, a full queue lost its last publishes to
    /// `QueueFull` across a restart.
    ///
    /// And, once the client was up on a session the broker keeps after the power-up
    /// connection (`clean` false), `clean_init` false: the power-up purge is done, and the
    /// fresh instance resumes that session. Before, with mqtt_as's usual `clean_init = true,
    /// clean = false`, it purged the session again, and the broker dropped what it held for the
    /// client, the messages the failed instance had not yet handed over among them
    /// (`scenarios/guest-trap-in-a-session-kept-after-power-up.toml`). Never the other way:
    /// with `clean_init` false and `clean` true the failed instance may still be on its
    /// power-up connection, whose session the broker keeps, and the fresh one resumes it
    /// (`guest-trap-resends-under-its-packet-ids.toml`); if it had reconnected since, that
    /// session is gone and resuming finds none. Not with an empty client id either (MQTT 5,
    /// the broker assigns one): the fresh instance does not know the id the session is under,
    /// and the core refuses a kept session without a stable id (found by `explore`).
    fn replay_config(&self) -> Config {
        let answered = self.answered_subscriptions().count();
        let mut config = self.config.clone();
        config.max_queued = config.max_queued.saturating_add(u32::try_from(answered).unwrap_or(u32::MAX));
        if self.ever_up && !config.clean && !config.client_id.is_empty() {
            config.clean_init = false;
        }
        config
    }

    /// Tells the fresh instance the broker the failed one's session lives on, and hands it
    /// every unacknowledged publish whose packet id the failed one reported, in the order
    /// they were handed over, under that id; returns their tokens.
    /// One it refuses fails ([`Device::fail_replay`]), as in [`Device::restart`].
    fn resume_in_flight(&mut self) -> Result<BTreeSet<Token>, DeviceError> {
        let mut tokens = Vec::new();
        let mut publishes = Vec::new();
        let mut ids = Vec::new();
        for (token, p) in self.unacked.iter() {
            if let Some(&(packet_id, released)) = self.packet_ids.get(token) {
                tokens.push(token);
                publishes.push(p.clone());
                // The guest's token here is ignored (see the WIT `resume`).
                ids.push(packet_ids::InFlight { token: 0, packet_id, released });
            }
        }
        // Nothing to say: a fresh instance's session is on the first broker anyway.
        if publishes.is_empty() && self.session_broker == 0 {
            return Ok(Default::default());
        }
        let broker = self.session_broker;
        let results = match self.guarded("resume", |api, store, c| api.call_resume(store, c, broker, &ids))? {
            Some(()) if publishes.is_empty() => None,
            Some(()) => self.guarded("resume", |api, store, c| {
                let now = store.data_mut().p().now_ms();
                api.call_publish(store, c, now, &publishes)
            })?,
            None => None,
        }
        .unwrap_or_default();
        let mut resumed = BTreeSet::new();
        for (i, token) in tokens.into_iter().enumerate() {
            match results.get(i) {
                Some(Ok(guest)) => {
                    self.guest_to_host.insert(*guest, token);
                    resumed.insert(token);
                }
                refused => {
                    let why = match refused {
                        Some(Err(e)) => client_error_text(e),
                        _ => "the component gave no answer for this publish".to_string(),
                    };
                    self.fail_replay(token, &why);
                    resumed.insert(token);
                }
            }
        }
        Ok(resumed)
    }

    /// A publish the fresh instance refused though the old one accepted it (same config, so
    /// it is already failing again): reported and completed, never dropped silently.
    fn fail_replay(&mut self, token: Token, why: &str) {
        self.replays_refused += 1;
        self.unacked.remove(token);
        self.packet_ids.remove(token);
        self.backlog.push(Event::Error(format!("replay after restart refused: {why}")));
        self.backlog.push(Event::PublishFailed((token, 0)));
    }

    /// Moves what the guest reported of its packet ids (under its tokens) into
    /// `packet_ids` (under the host's), for the publishes still unacknowledged, and where
    /// their session lives.
    fn take_sent_ids(&mut self) {
        if let Some(broker) = self.live.store.data_mut().session_broker.take() {
            self.session_broker = broker;
        }
        let mut ids = core::mem::take(&mut self.live.store.data_mut().sent_ids);
        for s in ids.drain(..) {
            if let Some(&host) = self.guest_to_host.get(s.token)
                && self.unacked.get(host).is_some()
            {
                self.packet_ids.insert(host, (s.packet_id, s.released));
            }
        }
        self.live.store.data_mut().sent_ids = ids;
    }

    fn call_connect(&mut self) -> Result<(), DeviceError> {
        match self.guarded("connect", |api, store, c| api.call_connect(store, c))? {
            Some(Err(e)) => Err(DeviceError::Client(e)),
            _ => Ok(()),
        }
    }

    /// Start connecting; `ClientEvent::Up` or `ConnectFailed` follows from `poll`.
    pub fn connect(&mut self) -> Result<(), DeviceError> {
        self.connect_requested = true;
        // The application's own attempt: its failure is its to hear of, and it replaces any
        // retry we were to make for it.
        self.restarted = false;
        self.retry_connect_at = None;
        self.call_connect()
    }

    /// Gives publishes to the current instance under the host tokens `first`, `first + 1`
    /// and so on: one result per publish (a component that answers fewer refuses the rest).
    /// `None`: the instance died in the call and was restarted.
    fn hand_over(&mut self, first: Token, ps: &[Publish]) -> Result<Option<Vec<Result<(), ClientError>>>, DeviceError> {
        let r = self.guarded("publish", |api, store, c| {
            let now = store.data_mut().p().now_ms();
            api.call_publish(store, c, now, ps)
        })?;
        let Some(mut results) = r else { return Ok(None) };
        results.resize(ps.len(), Err(ClientError::Invalid("the component gave no answer for this publish".into())));
        if results.iter().all(|r| r.is_err()) {
            // Nothing was taken: nothing waits to go out, and the deadline stands.
            self.deadline_after_poll = self.deadline_before_call;
        }
        Ok(Some(
            results
                .into_iter()
                .zip(first..)
                .map(|(r, token)| {
                    r.map(|guest| {
                        self.guest_to_host.insert(guest, token);
                    })
                })
                .collect(),
        ))
    }

    /// What a guest call that took a request returned, seen under the host token `token`:
    /// its guest token is mapped to `token`. `None` means the instance died in the call and
    /// the restart already handed the request over again (it was recorded in `requests`
    /// before the call).
    fn adopt(&mut self, token: Token, r: Option<Result<u64, ClientError>>) -> Result<(), ClientError> {
        if matches!(r, Some(Err(_))) {
            self.deadline_after_poll = self.deadline_before_call;
        }
        if let Some(guest) = r.transpose()? {
            self.guest_to_host.insert(guest, token);
        }
        Ok(())
    }

    /// Queue a publish; its token is completed by `Event::Published` / `PublishFailed`.
    pub fn publish(&mut self, p: Publish) -> Result<Token, DeviceError> {
        self.try_publish(p).map_err(|refused| refused.0)
    }

    /// [`Device::publish`] that hands the publish back when the client refuses it, so that
    /// it can be offered again (the Rust host's async `Client` waits for room on `QueueFull`).
    pub fn try_publish(&mut self, p: Publish) -> Result<Token, Box<(DeviceError, Publish)>> {
        let mut results = self.try_publish_many(vec![p]);
        results.pop().expect("one result per publish")
    }

    /// [`Device::try_publish`] for several publishes, in order, in one call into the
    /// component (each call across the boundary costs about as much as a publish inside
    /// it): one result per publish, in order. Each is judged on its own, but after a refusal
    /// other than `Invalid` (the queue full, the client closed, the instance gone) no later
    /// publish is taken, and each is refused the same way.
    pub fn try_publish_many(&mut self, mut ps: Vec<Publish>) -> Vec<Result<Token, Box<(DeviceError, Publish)>>> {
        let mut next = self.next_token;
        self.next_token += ps.len() as Token;
        let mut results = Vec::with_capacity(ps.len());
        // As many as there is room for, and more while the client refused some as invalid
        // (which takes no place): one call unless it did.
        while !ps.is_empty() {
            let rest = ps.split_off(ps.len().min(self.room()));
            if ps.is_empty() {
                ps = rest;
                break;
            }
            let n = ps.len() as Token;
            let taken = self.hand_over_recorded(next, core::mem::replace(&mut ps, rest));
            next += n;
            let only_invalid = taken.iter().all(|r| r.as_ref().err().is_none_or(|b| matches!(b.0, DeviceError::Client(ClientError::Invalid(_)))));
            results.extend(taken);
            if !only_invalid {
                break;
            }
        }
        // What is left is refused as the last publish that stopped the loop was (closed, say,
        // or the instance gone), or for want of room. It is not recorded: a batch the
        // instance could not take because it was gone was recorded for a later restart only
        // as far as there was room (before, the rest of the call was recorded too, past
        // `max_queued`, and a refusal such as `Closed` was answered `QueueFull` for the rest).
        let stop = results.iter().rev().find_map(|r| r.as_ref().err().filter(|b| !matches!(b.0, DeviceError::Client(ClientError::Invalid(_)))));
        let why = stop.map_or(DeviceError::Client(ClientError::QueueFull), |b| b.0.duplicate());
        results.extend(ps.into_iter().map(|p| Err(Box::new((why.duplicate(), p)))));
        results
    }

    /// Places left for the application's requests: `max_queued` less the publishes and
    /// subscription changes it handed over that have not completed. The instance holds no
    /// more than that already, but after a restart it may take more: the fresh one is given
    /// room for the subscriptions it makes again (see [`Device::replay_config`]), and keeps
    /// it once they are answered. Held to the config's figure, the next restart has room for
    /// all of it again (before, each restart let the application add as many publishes as
    /// there were subscriptions, and the one after refused them: found by explore, seed 5207).
    fn room(&self) -> usize {
        (self.config.max_queued as usize).saturating_sub(self.unacked.len() + self.requests.len())
    }

    /// [`Device::try_publish_many`] once the room is known to be there: hands `ps` over
    /// under `first`, `first + 1`… and records those taken.
    fn hand_over_recorded(&mut self, first: Token, ps: Vec<Publish>) -> Vec<Result<Token, Box<(DeviceError, Publish)>>> {
        if ps.is_empty() {
            return Vec::new();
        }
        let results = match self.hand_over(first, &ps) {
            Ok(Some(results)) => results,
            // The instance died in the call, and the restart could not give these to the
            // fresh one: they were not recorded yet. Each is now, then handed over alone, as
            // a restart hands over what is recorded.
            Ok(None) => return ps.into_iter().zip(first..).map(|(p, token)| self.record_and_hand_over(token, p)).collect(),
            // The instance is gone for good: recorded as they were, for a later restart.
            Err(e) => {
                return ps
                    .into_iter()
                    .zip(first..)
                    .map(|(p, token)| {
                        self.unacked.insert(token, p.clone());
                        Err(Box::new((e.duplicate(), p)))
                    })
                    .collect()
            }
        };
        results
            .into_iter()
            .zip(ps)
            .zip(first..)
            .map(|((r, p), token)| match r {
                Ok(()) => {
                    self.unacked.insert(token, p);
                    Ok(token)
                }
                Err(e) => Err(Box::new((DeviceError::Client(e), p))),
            })
            .collect()
    }

    /// Records `p` under `token`, then hands it to the instance: a restart inside this call
    /// gives it to the fresh instance from the record.
    fn record_and_hand_over(&mut self, token: Token, p: Publish) -> Result<Token, Box<(DeviceError, Publish)>> {
        self.unacked.insert(token, p.clone());
        match self.hand_over(token, core::slice::from_ref(&p)) {
            Ok(r) => match r.and_then(|mut r| r.pop()) {
                Some(Err(e)) => {
                    self.unacked.remove(token);
                    Err(Box::new((DeviceError::Client(e), p)))
                }
                _ => Ok(token),
            },
            // The instance is gone for good; the publish stays recorded as it was.
            Err(e) => Err(Box::new((e, p))),
        }
    }

    pub fn subscribe(&mut self, subs: Vec<Subscription>) -> Result<Token, DeviceError> {
        self.subscribe_with(subs, None)
    }

    /// Subscribe with MQTT 5 properties (subscription identifier, user properties).
    pub fn subscribe_with(&mut self, subs: Vec<Subscription>, properties: Option<SubscribeProperties>) -> Result<Token, DeviceError> {
        let token = self.request(Request::Subscribe(subs.clone(), properties.clone()))?;
        self.forget_filters(|f| subs.iter().any(|s| s.filter == f));
        self.subscriptions.push((token, subs, properties));
        Ok(token)
    }

    pub fn unsubscribe(&mut self, filters: Vec<String>) -> Result<Token, DeviceError> {
        let token = self.request(Request::Unsubscribe(filters.clone()))?;
        self.forget_filters(|f| filters.iter().any(|x| x == f));
        Ok(token)
    }

    /// Records a subscription change under a new token, then gives it to the client.
    fn request(&mut self, request: Request) -> Result<Token, DeviceError> {
        if self.room() == 0 {
            return Err(DeviceError::Client(ClientError::QueueFull));
        }
        let token = self.next_token;
        self.next_token += 1;
        self.requests.insert(token, request.clone());
        let r = self.hand_over_request(token, &request);
        if !matches!(r, Ok(Ok(()))) {
            self.requests.remove(&token);
        }
        r?.map_err(DeviceError::Client)?;
        Ok(token)
    }

    /// Gives a recorded request to the current instance under the host token `token`.
    fn hand_over_request(&mut self, token: Token, request: &Request) -> Result<Result<(), ClientError>, DeviceError> {
        let r = match request {
            Request::Subscribe(subs, props) => self.call_subscribe(subs, props.as_ref())?,
            Request::Unsubscribe(filters) => self.guarded("unsubscribe", |api, store, c| api.call_unsubscribe(store, c, filters))?,
        };
        Ok(self.adopt(token, r))
    }

    fn call_subscribe(&mut self, subs: &[Subscription], props: Option<&SubscribeProperties>) -> Result<Option<Result<u64, ClientError>>, DeviceError> {
        self.guarded("subscribe", |api, store, c| api.call_subscribe(store, c, subs, props))
    }

    /// Drops the filters `gone` names from the recorded requests, and requests left empty.
    fn forget_filters(&mut self, gone: impl Fn(&str) -> bool) {
        for (_, subs, _) in &mut self.subscriptions {
            subs.retain(|s| !gone(&s.filter));
        }
        self.subscriptions.retain(|(_, subs, _)| !subs.is_empty());
    }

    /// Stop waiting for a publish (see the WIT `cancel`).
    pub fn cancel(&mut self, token: Token) -> Result<bool, DeviceError> {
        let Some(publish) = self.unacked.remove(token) else { return Ok(false) };
        self.packet_ids.remove(token);
        let guest = self.guest_to_host.iter().find(|(_, h)| **h == token).map(|(g, _)| g);
        let Some(guest) = guest else { return Ok(true) };
        // A trap restarts the instance without this publish (it left `unacked` above): cancelled.
        let cancelled = self.guarded("cancel", |api, store, c| api.call_cancel(store, c, guest))?.unwrap_or(true);
        if cancelled {
            self.guest_to_host.remove(guest);
        } else {
            // The guest had settled it already: its event still names this token.
            self.unacked.insert(token, publish);
        }
        Ok(cancelled)
    }

    pub fn disconnect(&mut self) -> Result<(), DeviceError> {
        self.connect_requested = false;
        // A retry of a restart's failed reconnect is the host standing in for an application
        // that wanted the connection; it no longer does (before, the retry's `connect` met
        // the closed client and failed the next `poll`: found by explore, seed 301).
        self.retry_connect_at = None;
        self.restarted = false;
        let call = |api: &GuestClient, store: &mut Store<HostState<P>>, c| api.call_disconnect(store, c);
        if self.guarded("disconnect", call)?.is_none() {
            // The instance died inside the call; the fresh one was given back what was
            // accepted: close it too, so those requests fail now instead of waiting forever.
            self.guarded("disconnect", call)?;
        }
        Ok(())
    }

    /// MQTT 5 enhanced authentication: answer the broker's challenge (`Event::Auth` with
    /// 0x18), or start a re-authentication when connected.
    pub fn authenticate(&mut self, data: &[u8]) -> Result<(), DeviceError> {
        let r = self.guarded("authenticate", |api, store, c| api.call_authenticate(store, c, data))?;
        match r {
            Some(Err(e)) => Err(DeviceError::Client(e)),
            _ => Ok(()),
        }
    }

    pub fn broker_up(&mut self) -> Result<(), DeviceError> {
        self.guarded("broker-up", |api, store, c| api.call_broker_up(store, c))?;
        Ok(())
    }

    pub fn is_connected(&mut self) -> Result<bool, DeviceError> {
        let r = self.guarded("is-connected", |api, store, c| api.call_is_connected(store, c))?;
        Ok(r.unwrap_or(false))
    }

    pub fn stats(&mut self) -> Result<Option<Stats>, DeviceError> {
        self.guarded("stats", |api, store, c| api.call_stats(store, c))
    }

    /// Platform-clock time at which `poll` must run again: the deadline the last poll
    /// returned, or now when the client was called since (what it was asked for goes out
    /// on the next poll).
    pub fn next_deadline(&mut self) -> Result<Option<u64>, DeviceError> {
        let d = match self.deadline_after_poll {
            Some(d) => d,
            None => Some(self.platform_mut().now_ms()),
        };
        Ok(match (d, self.retry_connect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The config the client was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Run the client: read, time out, send. Returns what happened, with host tokens.
    pub fn poll(&mut self) -> Result<Vec<Event>, DeviceError> {
        self.poll_taking(u32::MAX)
    }

    /// [`Device::poll`] returning at most `max_messages` incoming messages; the rest wait
    /// in the client, bounded by `queue_len` (see the WIT `poll`).
    pub fn poll_taking(&mut self, max_messages: u32) -> Result<Vec<Event>, DeviceError> {
        if let Some(at) = self.retry_connect_at {
            let now = self.platform_mut().now_ms();
            if now >= at {
                self.retry_connect_at = None;
                self.call_connect()?;
            }
        }
        self.platform_mut().flush();
        // The clock and the link go in as arguments (see the WIT `poll`).
        let poll = |api: &GuestClient, store: &mut Store<HostState<P>>, c| {
            let p = store.data_mut().p();
            let (now, link) = (p.now_ms(), p.state());
            api.call_poll(store, c, now, link, max_messages)
        };
        let mut polled = self.guarded_poll(poll)?;
        if polled.is_none() {
            // The instance died in the call, and the fresh one was given back what the
            // application had asked for: its poll puts that on the wire now.
            polled = self.guarded_poll(poll)?;
        }
        if polled.is_some() {
            self.failing = 0;
        }
        let before = core::mem::take(&mut self.backlog);
        // After a second restart (`None`) the fresh instance's deadline is asked for again.
        self.deadline_after_poll = polled.as_ref().map(|p| p.next_deadline);
        // Translated where they lie: an event is over 200 bytes (a message and its
        // properties), and moving each into a new list was a copy per event (callgrind).
        let mut events = polled.map(|p| p.events).unwrap_or_default();
        events.retain_mut(|e| self.translate(e));
        // After the completions: a publish that completed in this poll needs no id kept.
        self.take_sent_ids();
        let mut out = if before.is_empty() {
            events
        } else {
            let mut out = before;
            out.append(&mut events);
            out
        };
        out.append(&mut self.backlog);
        Ok(out)
    }

    /// One `poll` into the guest, starved of fuel under [`Device::starve_polls`].
    fn guarded_poll(
        &mut self,
        poll: impl FnOnce(&GuestClient, &mut Store<HostState<P>>, ResourceAny) -> wasmtime::Result<Polled>,
    ) -> Result<Option<Polled>, DeviceError> {
        if self.starve_polls {
            self.next_call_fuel = Some(0);
        }
        self.guarded("poll", poll)
    }

    /// Guest tokens → host tokens; completes `unacked`; hides what a restart caused. False
    /// when the event is not the application's (a token the host never gave out).
    fn translate(&mut self, e: &mut Event) -> bool {
        match e {
            Event::Published(t) | Event::PublishFailed((t, _)) => match self.guest_to_host.remove(*t) {
                Some(h) => {
                    self.unacked.remove(h);
                    self.packet_ids.remove(h);
                    *t = h;
                }
                None => return false,
            },
            Event::Subscribed((t, _)) | Event::Unsubscribed((t, _)) => match self.guest_to_host.remove(*t) {
                Some(h) => {
                    self.requests.remove(&h);
                    *t = h;
                }
                None => return false,
            },
            Event::Up(_) => {
                self.restarted = false;
                self.reported_up = true;
                self.ever_up = true;
            }
            Event::Down(_) => self.reported_up = false,
            Event::ConnectFailed(why) if self.restarted => {
                // The application's connect succeeded long ago; a restarted instance's
                // first attempt failing is an outage like any other: retry.
                let now = self.platform_mut().now_ms();
                self.retry_connect_at = Some(now + u64::from(self.config.backoff_max_ms.min(5_000)));
                *e = Event::Error(format!("reconnect after restart failed: {why}"));
            }
            _ => {}
        }
        true
    }
}

/// The contract's config from the core's: every key by name from the core's list (the record
/// literal is whole, so a WIT field in neither that list nor here is a compile error), with no
/// TLS parameters and no will, which the core's config does not carry.
impl From<mqtt_protocol::Config> for Config {
    fn from(core: mqtt_protocol::Config) -> Config {
        macro_rules! from_core {
            ([$d:ident] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {
                Config { $($key: $d.$key,)* ssl_params: None, will: None }
            };
        }
        mqtt_protocol::with_config_keys!(from_core; core)
    }
}
