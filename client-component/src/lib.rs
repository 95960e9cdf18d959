//! The guest: thin glue between the WIT platform imports and `mqtt-protocol`.
//!
//! Each exported call takes the time (an argument on `poll` and `publish`, the clock import
//! otherwise), feeds the sans-IO client what changed (link, socket readiness, bytes), runs
//! its timers, then performs the IO it asks for and returns its events. All protocol
//! decisions live in `mqtt-protocol`; nothing here blocks.

// The guest exists only on wasm: a native build (`cargo test --workspace` builds every
// member) is an empty crate, since its exported symbol names are not valid native ones.
#![cfg(target_arch = "wasm32")]
// `no_std`: std's panic and formatting machinery would cost the component kilobytes it has
// no use for (a panic is a trap either way, and the host's watchdog handles traps).
#![no_std]

extern crate alloc;

mod convert;
mod heap;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use mqtt_protocol::store::{Flash, FlashError, Geometry};
use mqtt_protocol::{Action, Client, Event, Instant, LinkState};

wit_bindgen::generate!({
    path: "../wit",
    world: "mqtt-client",
    // Error impls only with the (never enabled) `std` feature: the guest is no_std.
    std_feature,
});

use exports::mqtt_as::client::client as api;
use mqtt_as::client::{clock, log, packet_ids, socket, storage, wifi};

/// Bytes read per `recv` call, and the most read in one `poll` so a flooding broker cannot
/// make one call unbounded (the rest is read on the next poll).
const RECV_CHUNK: u32 = 16 * 1024;
const MAX_READ_PER_POLL: usize = 256 * 1024;
/// Rounds of input → output per poll: an in-memory host can complete a socket open and a
/// CONNACK within one poll, each needing a round.
const MAX_ROUNDS: usize = 8;
/// Turns per `poll` while the application takes every message decoded (see `Glue::poll`).
const POLL_ROUNDS: usize = 4;

struct Glue {
    client: Client,
    socket: Option<u32>,
    /// The socket was opened and `status` has not said `open` yet.
    opening: bool,
    /// Bytes the host has not accepted yet, for the current socket.
    outbuf: Vec<u8>,
    link: Option<LinkState>,
    /// What `resume` said of the next `publish` call's first publishes, the first last.
    resuming: Vec<mqtt_protocol::SentId>,
}

fn now() -> Instant {
    Instant::from_millis(clock::now_ms())
}

fn warn(msg: &str) {
    log::log(log::Level::Warn, msg);
}

impl Glue {
    /// One full turn: inputs in, timers, IO out, until nothing changes. Events stay in the
    /// client until `poll` takes them, so `queue-len` bounds the messages held between two
    /// polls (discarding the oldest, or with backpressure leaving the socket unread).
    ///
    /// Every import is a boundary crossing (about 60 ns on the loopback host, more when it
    /// carries a list), so a turn makes as few as it can: the clock and the link come in as
    /// arguments (neither changes within one call), and a round reads the socket again only
    /// when the round before wrote to it (an in-memory host can answer at once; a socket that
    /// said "nothing" a moment ago and was not written to has nothing new). A read loop ends
    /// on a `recv` that returned less than it asked for (the host then wakes us when more
    /// arrives, see the WIT `recv`), or on the per-poll cap or backpressure.
    fn drive(&mut self, now: Instant, link: LinkState) {
        if self.link != Some(link) {
            self.link = Some(link);
            self.client.handle_link(now, link);
        }
        let mut read = true;
        for _ in 0..MAX_ROUNDS {
            let mut progress = read && self.read_inputs(now);
            // Runs what is due (each timer judged once; asking `poll_timeout` first would
            // judge them all twice in a round with nothing due, the usual case).
            self.client.handle_timeout(now);
            let wrote = self.write_outputs(now);
            progress |= wrote;
            // Opening: the next round asks the socket's status.
            read = wrote || self.opening;
            if !progress {
                break;
            }
        }
    }

    fn read_inputs(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let Some(h) = self.socket else { return progress };
        if self.opening {
            match socket::status(h) {
                Ok(socket::SocketState::Connecting) => return progress,
                Ok(socket::SocketState::Open) => {
                    self.opening = false;
                    self.client.handle_socket_open(now);
                    progress = true;
                }
                Err(e) => {
                    self.drop_socket();
                    self.client.handle_socket_error(now, convert::socket_error(e));
                    return true;
                }
            }
        }
        let mut read = 0;
        // With backpressure the client may refuse more input: the socket stays unread and
        // TCP holds the broker back.
        while read < MAX_READ_PER_POLL && self.socket == Some(h) && self.client.wants_input() {
            match socket::recv(h, RECV_CHUNK) {
                Ok(bytes) if bytes.is_empty() => break,
                Ok(bytes) => {
                    read += bytes.len();
                    self.client.handle_input(now, &bytes);
                    progress = true;
                    // A short read says the host has nothing more now and will wake us
                    // when it has (see the WIT `recv`): asking again would be a crossing
                    // that finds nothing.
                    if bytes.len() < RECV_CHUNK as usize {
                        break;
                    }
                }
                Err(e) => {
                    self.drop_socket();
                    self.client.handle_socket_error(now, convert::socket_error(e));
                    return true;
                }
            }
        }
        progress
    }

    fn write_outputs(&mut self, now: Instant) -> bool {
        let mut progress = false;
        // Bytes first: they belong to the socket that is current before any action.
        progress |= self.client.transmit_into(&mut self.outbuf);
        // The host learns where the session lives, and the packet ids, before the bytes
        // that carry them leave.
        if let Some(broker) = self.client.take_session_broker() {
            packet_ids::session(broker as u32);
        }
        let ids = self.client.take_sent_ids();
        if !ids.is_empty() {
            let ids: Vec<packet_ids::InFlight> = ids.into_iter().map(convert::sent_id_to_wit).collect();
            packet_ids::sent(&ids);
        }
        self.flush(now);
        // What the socket left behind bounds how much more QoS 0 the client lets out.
        progress |= self.socket.is_some() && self.client.handle_unsent(now, self.outbuf.len());
        while let Some(action) = self.client.poll_action() {
            progress = true;
            match action {
                Action::OpenSocket { host, port, tls } => {
                    self.drop_socket();
                    let tls = tls.map(convert::tls_to_wit);
                    match socket::open(&host, port, tls.as_ref()) {
                        Ok(h) => {
                            self.socket = Some(h);
                            self.opening = true;
                        }
                        Err(e) => self.client.handle_socket_error(now, convert::socket_error(e)),
                    }
                }
                Action::CloseSocket => self.drop_socket(),
                Action::JoinWifi { ssid, password } => {
                    if let Err(e) = wifi::connect(&ssid, &password) {
                        warn(&mqtt_protocol::text!("wifi connect to `", ssid, "` failed: ", e));
                    }
                }
                Action::LeaveWifi => wifi::disconnect(),
            }
        }
        progress
    }

    fn flush(&mut self, now: Instant) {
        let Some(h) = self.socket else {
            self.outbuf.clear();
            return;
        };
        if self.opening {
            return;
        }
        while !self.outbuf.is_empty() {
            match socket::send(h, &self.outbuf) {
                Ok(0) => break,
                Ok(n) => {
                    self.outbuf.drain(..(n as usize).min(self.outbuf.len()));
                }
                Err(e) => {
                    self.drop_socket();
                    self.client.handle_socket_error(now, convert::socket_error(e));
                    break;
                }
            }
        }
    }

    fn drop_socket(&mut self) {
        if let Some(h) = self.socket.take() {
            socket::close(h);
        }
        self.opening = false;
        self.outbuf.clear();
    }

    /// Moves events into `events`, at most `max_messages` of them incoming messages;
    /// returns how many messages it moved.
    fn take_events(&mut self, events: &mut Vec<api::Event>, max_messages: u32) -> u32 {
        self.client.poll_events(max_messages, |e| {
            if let Event::Error(msg) = &e {
                warn(msg);
            }
            events.push(convert::event_to_wit(e));
        })
    }

    /// One `poll`: a full turn, then the events. With backpressure (the default) the client
    /// decodes no more than `queue-len` messages ahead of the application, so a poll that
    /// took them all turns again and takes what the input held back decodes to, instead of
    /// leaving it for the next poll: a fast application then pays one boundary crossing per
    /// `queue-len` * rounds messages, not per `queue-len`. The rounds are bounded so that a
    /// flooding broker cannot make one call unbounded.
    fn poll(&mut self, now: Instant, link: LinkState, max_messages: u32) -> Vec<api::Event> {
        let mut events = Vec::new();
        let mut left = max_messages;
        for _ in 0..POLL_ROUNDS {
            self.drive(now, link);
            // Paused: `queue-len` messages wait and input is held back behind them.
            let paused = !self.client.wants_input();
            let taken = self.take_events(&mut events, left);
            left -= taken;
            if !paused || taken == 0 || left == 0 {
                break;
            }
        }
        // Taking messages acknowledged them: the PUBACKs go now, not at the next poll (the
        // broker's window may wait on them).
        if self.client.transmit_into(&mut self.outbuf) {
            self.flush(now);
        }
        events
    }
}

/// The host's flash, through the `storage` import.
struct HostFlash;

fn flash_error(e: storage::StorageError) -> FlashError {
    match e {
        storage::StorageError::OutOfRange => FlashError::OutOfRange,
        storage::StorageError::Io => FlashError::Io,
    }
}

impl Flash for HostFlash {
    fn geometry(&self) -> Geometry {
        let g = storage::geometry();
        Geometry { capacity: g.capacity, sector_size: g.sector_size, write_size: g.write_size }
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        storage::read(offset, len).map_err(flash_error)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        storage::write(offset, data).map_err(flash_error)
    }
    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        storage::erase(sector).map_err(flash_error)
    }
    fn sync(&mut self) -> Result<(), FlashError> {
        storage::sync().map_err(flash_error)
    }
}

/// Open the store when the host has storage, and say what it held.
fn attach_storage(client: &mut Client) {
    if storage::geometry().capacity == 0 {
        return;
    }
    match client.attach_store(alloc::boxed::Box::new(HostFlash)) {
        Ok(report) => {
            for problem in &report.problems {
                warn(problem);
            }
            log::log(
                log::Level::Info,
                &mqtt_protocol::text!("store: ", report.messages, " unacknowledged publishes and ", report.received, " incoming QoS 2 ids recovered"),
            );
        }
        Err(why) => log::log(log::Level::Error, &mqtt_protocol::text!("storage unusable, running without it: ", why)),
    }
}

struct ClientResource(RefCell<Glue>);

struct Component;

impl api::Guest for Component {
    type Client = ClientResource;
}

fn api_error(e: mqtt_protocol::ApiError) -> api::ClientError {
    match e {
        mqtt_protocol::ApiError::Invalid(why) => api::ClientError::Invalid(why),
        mqtt_protocol::ApiError::QueueFull => api::ClientError::QueueFull,
        mqtt_protocol::ApiError::Closed => api::ClientError::Closed,
        mqtt_protocol::ApiError::StoreFull => api::ClientError::StoreFull,
        mqtt_protocol::ApiError::Storage(why) => api::ClientError::Storage(why),
    }
}

impl ClientResource {
    /// Runs an API call against the client at the clock's time (`publish`, the frequent
    /// one, is handed the time instead). What a call produced goes out on the next `poll`,
    /// which the contract has the host make after every request: a host handing over a
    /// burst of requests then pays one `send` for the burst instead of one per request.
    fn with<T>(&self, f: impl FnOnce(&mut Client, Instant) -> T) -> T {
        f(&mut self.0.borrow_mut().client, now())
    }

    /// [`ClientResource::with`] followed by a full turn (the link read first): for
    /// `connect` and `disconnect`, whose effect depends on the link and the socket.
    fn with_turn<T>(&self, f: impl FnOnce(&mut Client, Instant) -> T) -> T {
        let mut g = self.0.borrow_mut();
        let now = now();
        let out = f(&mut g.client, now);
        g.drive(now, convert::link_from_wit(wifi::state()));
        out
    }
}

impl api::GuestClient for ClientResource {
    fn create(config: api::Config) -> Result<api::Client, api::ClientError> {
        let config = convert::config_from_wit(config).map_err(api::ClientError::Invalid)?;
        let mut client = Client::new(config).map_err(|e| api::ClientError::Invalid(e.message()))?;
        attach_storage(&mut client);
        client.report_sent_ids();
        let glue = Glue { client, socket: None, opening: false, outbuf: Vec::new(), link: None, resuming: Vec::new() };
        Ok(api::Client::new(ClientResource(RefCell::new(glue))))
    }

    fn connect(&self) -> Result<(), api::ClientError> {
        self.with_turn(|c, now| c.connect(now)).map_err(api_error)
    }

    fn publish(&self, now_ms: u64, publishes: Vec<api::Publish>) -> Vec<Result<u64, api::ClientError>> {
        // The time is the host's, passed in (see the WIT `publish`).
        let now = Instant::from_millis(now_ms);
        let glue = &mut *self.0.borrow_mut();
        let results = publishes
            .into_iter()
            .map(|p| {
                let deadline = p.deadline_ms.map(Instant::from_millis);
                match glue.resuming.pop() {
                    Some(sent) => glue.client.resume_publish(now, convert::publish_from_wit(p), sent),
                    None => glue.client.publish(now, convert::publish_from_wit(p), deadline),
                }
                .map_err(api_error)
            })
            .collect();
        // What `resume` said is for this call only.
        glue.resuming.clear();
        results
    }

    fn resume(&self, broker: u32, publishes: Vec<packet_ids::InFlight>) {
        let mut g = self.0.borrow_mut();
        if let Err(mqtt_protocol::ApiError::Invalid(why)) = g.client.resume_session(broker as usize) {
            warn(&why);
        }
        // Last first, so that `publish` pops them in order.
        g.resuming = publishes.into_iter().rev().map(convert::sent_id_from_wit).collect();
    }

    fn cancel(&self, token: u64) -> bool {
        self.with(|c, _| c.cancel(token))
    }

    fn stored(&self, token: u64) -> bool {
        self.0.borrow_mut().client.stored(token)
    }

    fn subscribe(&self, subscriptions: Vec<api::Subscription>, properties: Option<api::SubscribeProperties>) -> Result<u64, api::ClientError> {
        let filters = subscriptions.into_iter().map(convert::subscription_from_wit).collect();
        let properties = convert::subscribe_properties_from_wit(properties);
        self.with(|c, now| c.subscribe(now, filters, properties)).map_err(api_error)
    }

    fn authenticate(&self, data: Vec<u8>) -> Result<(), api::ClientError> {
        self.with(|c, now| c.authenticate(now, data)).map_err(api_error)
    }

    fn unsubscribe(&self, filters: Vec<String>) -> Result<u64, api::ClientError> {
        self.with(|c, now| c.unsubscribe(now, filters)).map_err(api_error)
    }

    fn disconnect(&self) {
        self.with_turn(|c, now| c.disconnect(now))
    }

    fn is_connected(&self) -> bool {
        self.0.borrow().client.is_connected()
    }

    fn broker_up(&self) {
        self.with(|c, now| c.broker_up(now))
    }

    fn poll(&self, now_ms: u64, link: api::LinkState, max_messages: u32) -> api::Polled {
        let mut g = self.0.borrow_mut();
        let events = g.poll(Instant::from_millis(now_ms), convert::link_from_wit(link), max_messages);
        api::Polled { events, next_deadline: g.client.poll_timeout().map(Instant::as_millis) }
    }

    fn stats(&self) -> api::Stats {
        convert::stats_to_wit(self.0.borrow().client.stats())
    }
}

export!(Component);

/// talc instead of std's dlmalloc: ~3 KiB smaller in the component (measured with
/// twiggy), and it coalesces freed blocks, which a client running for months needs. The
/// heap starts in the initial memory's unused tail ([`heap`]); small blocks are recycled
/// before they reach talc ([`heap::Recycling`]).
#[global_allocator]
// AssumeUnlockable: a component instance is single-threaded wasm; nothing can contend.
static ALLOCATOR: heap::Recycling<talc::Talck<talc::locking::AssumeUnlockable, heap::InitialTailThenGrow>> =
    heap::Recycling::new(talc::Talc::new(heap::InitialTailThenGrow::new()).lock());

/// A panic is a bug; it traps, and the host restarts the instance with what it accepted.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
