//! What survives a power cut: a log on NOR flash of the QoS 1/2 publishes the application
//! handed over and the broker has not acknowledged, their packet ids, the incoming QoS 2
//! ids between PUBREC and PUBREL, and the broker the session lives on once a failover moved
//! it (those ids mean something only in that broker's session).
//!
//! Why by hand and not `sequential-storage` (which was tried first): its flash traits fix
//! the sector and write sizes at compile time, and one component runs on every host, each
//! with its own flash (4 KiB sectors on an ESP32, 128 KiB on some STM32s, a file on Linux),
//! so the geometry must be read at run time from the `storage` import. Its API is also
//! async, which the synchronous imports would have to drive with an executor of our own.
//!
//! # Layout
//! The sectors form a ring. Each sector in use starts with a header (`MQS1`, a sequence
//! number that grows with every sector opened, the next key, a CRC; both wrap at `u32::MAX`:
//! they are compared as serial numbers) and holds records appended in order
//! (see `record`); records never span sectors. Nothing is ever overwritten: forgetting a
//! message appends a `Done` record. When the ring has no free sector left after opening
//! one, the oldest sector is collected: its live records are copied into the new one, an
//! `Erasing` record naming it is written and synced, and it is erased.
//!
//! # Power cuts
//! - A torn record fails its CRC: the scan of that sector stops there (reported), and
//!   appending goes on in a fresh sector.
//! - A torn sector header (or a half-erased sector) reads as a free sector.
//! - A cut during collection leaves the copies (duplicates are harmless: replay is
//!   idempotent) and, once the `Erasing` record is durable, the old sector is ignored
//!   whatever an interrupted erase left in it.
//! - Recovery with no free sector (cut between opening a sector and collecting the oldest)
//!   finishes the collection, skipping records the new sector already holds.
//!
//! The client syncs before anything depends on a record: before `publish` returns its
//! token and `cancel` its answer, before a PUBLISH or PUBREC goes out, before a message is
//! handed over.

mod flash;
mod record;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

pub use flash::{Flash, FlashError, Geometry, MemFlash};
use record::{crc32, frame, pad, publish_of, Head, Kind, Record, FRAMING};

use crate::codec::PacketId;
use crate::text;
use crate::types::OutgoingPublish;

const MAGIC: [u8; 4] = *b"MQS1";
/// Magic, sequence number, next key, CRC. The next key is the high-water mark of keys:
/// recovery must never hand out a key that a dead record still names.
const HEADER: u32 = 16;
/// Fewest sectors: one being written, one free to open, one to collect into.
pub const MIN_SECTORS: u32 = 3;

/// Why the store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No room for another message until some are acknowledged.
    Full,
    /// A record of this many bytes can never fit a sector.
    TooLarge(u32),
    /// The flash failed.
    Flash(FlashError),
}

impl From<FlashError> for StoreError {
    fn from(e: FlashError) -> StoreError {
        StoreError::Flash(e)
    }
}

/// A publish the store gave back on start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredPublish {
    /// Its store key (the order it was accepted in).
    pub key: u32,
    /// The message.
    pub publish: OutgoingPublish,
    /// The packet id it went out with, if it did.
    pub pid: Option<PacketId>,
    /// QoS 2: PUBREC came; only PUBREL/PUBCOMP is left.
    pub released: bool,
}

/// What the log held at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Unacknowledged publishes, oldest first.
    pub outgoing: Vec<RecoveredPublish>,
    /// Incoming QoS 2 packet ids between PUBREC and PUBREL.
    pub received: Vec<u16>,
    /// The broker the session lives on (0: `server`, then `servers`).
    pub session: u32,
    /// Damage found (torn or corrupt records, unreadable sectors), one sentence each.
    pub problems: Vec<String>,
}

/// What [`crate::Client::attach_store`] found, for the host's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Unacknowledged publishes queued again.
    pub messages: u32,
    /// Incoming QoS 2 exchanges restored.
    pub received: u32,
    /// Damage found, one sentence each.
    pub problems: Vec<String>,
}

/// What a live outgoing message costs and where it stands (a mirror of what recovery
/// would rebuild, for collection and the budget).
#[derive(Debug, Clone, Copy)]
struct Live {
    key: u32,
    pid: u16,
    released: bool,
    cost: u32,
}

/// The log. See the module documentation.
pub struct Store {
    flash: Box<dyn Flash>,
    sector: u32,
    write: u32,
    header: u32,
    /// Room kept at the end of every sector for the `Erasing` record of a collection.
    reserve: u32,
    /// Per sector: its sequence number while in use.
    used: Vec<Option<u32>>,
    /// Erased by us since start-up and not written since: opening it needs no erase.
    erased: Vec<bool>,
    head: Option<u32>,
    head_off: u32,
    next_seq: u32,
    next_key: u32,
    dirty: bool,
    outgoing: Vec<Live>,
    received: Vec<u16>,
    /// The broker the session lives on, as the last `Session` record says (0 without one).
    session: u32,
    live_bytes: u64,
    budget: u64,
}

fn align(n: u32, w: u32) -> u32 {
    n.div_ceil(w) * w
}

/// Whether serial number `a` comes before `b`. Keys and sector sequence numbers count up
/// for the life of the flash and wrap at `u32::MAX` (a device storing 1,000 publishes a
/// second gets there in 50 days), so they are compared as serial numbers (RFC 1982): `b`
/// is later when it is less than half the range ahead. That order is total over what
/// recovery reads: collection keeps only live records and recent headers, all written
/// within far fewer than 2^31 publishes (and sectors opened) of each other.
fn before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// The later of two serial numbers.
fn later(a: u32, b: u32) -> u32 {
    if before(a, b) {
        b
    } else {
        a
    }
}

impl Store {
    /// Opens the log on `flash`, recovering what it holds. `Err` when the geometry cannot
    /// hold a log (the text says why); a damaged log is not an error: what is intact is
    /// recovered and the damage listed in [`Recovered::problems`].
    pub fn open(flash: Box<dyn Flash>) -> Result<(Store, Recovered), String> {
        let g = flash.geometry();
        g.check()?;
        let w = g.write_size.max(1);
        let n = g.sectors();
        let header = align(HEADER, w);
        let reserve = align(Record::Erasing { seq: 0 }.encode().len() as u32 + FRAMING, w);
        let mut store = Store {
            flash,
            sector: g.sector_size,
            write: w,
            header,
            reserve,
            used: vec![None; n as usize],
            erased: vec![false; n as usize],
            head: None,
            head_off: 0,
            next_seq: 1,
            next_key: 1,
            dirty: false,
            outgoing: Vec::new(),
            received: Vec::new(),
            session: 0,
            live_bytes: 0,
            budget: u64::from(n - 2) * u64::from(g.sector_size - header - reserve),
        };
        let recovered = store.recover().map_err(|e| text!("storage failed while recovering: ", flash_text(e)))?;
        Ok((store, recovered))
    }

    fn recover(&mut self) -> Result<Recovered, FlashError> {
        let mut out = Recovered::default();
        // (sequence number, sector), oldest first: kept in order as found, by insertion
        // (a handful of sectors; `sort` would cost the component kilobytes of code).
        let mut sectors: Vec<(u32, u32)> = Vec::new();
        // The latest key named anywhere, plus one: with serial numbers there is no lowest
        // value to start from, so the first one found is where it starts.
        let mut next_key: Option<u32> = None;
        let mut raise = |key: u32| next_key = Some(next_key.map_or(key, |n| later(n, key)));
        for i in 0..self.used.len() as u32 {
            let h = self.flash.read(i * self.sector, HEADER)?;
            if h[..4] == MAGIC && crc32(&[&h[..12]]).to_le_bytes() == h[12..16] {
                raise(u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
                let seq = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                sectors.insert(sectors.partition_point(|(s, _)| before(*s, seq)), (seq, i));
            } else if h.iter().any(|b| *b != 0xFF) {
                out.problems.push(text!("storage sector ", i, " has no valid header (torn or half-erased): treated as free"));
            }
        }
        let mut scans = Vec::new();
        let mut erasing = Vec::new();
        for &(seq, i) in &sectors {
            let scan = self.scan(i)?;
            if let Some(at) = scan.damage {
                out.problems.push(text!("storage sector ", i, ": damaged record at byte ", at, " (a torn write?); the rest of the sector is skipped"));
            }
            erasing.extend(scan.heads().filter(|(h, _)| h.is(Kind::Erasing)).map(|(h, _)| h.n));
            scans.push((seq, i, scan));
            self.next_seq = seq.wrapping_add(1);
        }
        // Replay, oldest first. Outgoing keys are never reused, so their records commute;
        // incoming ids are, so their records apply in log order.
        let mut publishes: Vec<(u32, OutgoingPublish, usize)> = Vec::new();
        let mut sent: Vec<(u32, u16)> = Vec::new();
        let mut released: Vec<u32> = Vec::new();
        let mut done: Vec<u32> = Vec::new();
        for (seq, i, scan) in &scans {
            if erasing.contains(seq) {
                continue;
            }
            self.used[*i as usize] = Some(*seq);
            self.head = Some(*i);
            self.head_off = scan.end;
            for (h, body) in scan.heads() {
                let key = h.n;
                match h.kind {
                    k if k == Kind::Publish as u8 => {
                        raise(key.wrapping_add(1));
                        let at = publishes.partition_point(|(k, ..)| before(*k, key));
                        if publishes.get(at).is_some_and(|(k, ..)| *k == key) {
                            continue;
                        }
                        match publish_of(body) {
                            Some(p) => publishes.insert(at, (key, p, body.len())),
                            None => out.problems.push(text!("storage sector ", i, ": a stored publish does not decode; skipped")),
                        }
                    }
                    k if k == Kind::Sent as u8 => match sent.iter_mut().find(|(k, _)| *k == key) {
                        Some(s) => s.1 = h.pid,
                        None => sent.push((key, h.pid)),
                    },
                    k if k == Kind::Released as u8 => released.push(key),
                    k if k == Kind::Done as u8 => {
                        raise(key.wrapping_add(1));
                        done.push(key);
                    }
                    k if k == Kind::Received as u8 && !self.received.contains(&h.pid) => self.received.push(h.pid),
                    k if k == Kind::ReceivedDone as u8 => self.received.retain(|p| *p != h.pid),
                    k if k == Kind::ClearReceived as u8 => self.received.clear(),
                    k if k == Kind::Session as u8 => self.session = h.n,
                    _ => {}
                }
            }
        }
        if let Some(key) = next_key {
            self.next_key = key;
        }
        for (key, publish, body) in publishes {
            if done.contains(&key) {
                continue;
            }
            let pid = sent.iter().find(|(k, _)| *k == key).map(|(_, p)| *p);
            let released = released.contains(&key) && pid.is_some();
            let cost = self.cost(body);
            self.live_bytes += u64::from(cost);
            self.outgoing.push(Live { key, pid: pid.unwrap_or(0), released, cost });
            out.outgoing.push(RecoveredPublish { key, publish, pid: pid.and_then(PacketId::new), released });
        }
        self.live_bytes += u64::from(self.small()) * (self.received.len() as u64 + u64::from(self.session != 0));
        out.received = self.received.clone();
        out.session = self.session;
        // A cut between opening a sector and collecting the oldest: finish the collection.
        if self.head.is_some() && self.used.iter().all(Option::is_some) {
            let victim = self.after(self.head);
            if let Err(e) = self.collect(victim) {
                out.problems.push(text!("storage could not finish collecting sector ", victim, ": ", error_text(&e)));
            }
        }
        Ok(out)
    }

    /// The records of sector `i` that read back intact, and where appending may go on
    /// (the sector's end if its records stop at damage).
    fn scan(&mut self, i: u32) -> Result<Scan, FlashError> {
        let bytes = self.flash.read(i * self.sector, self.sector)?;
        let mut scan = Scan { bytes, bodies: Vec::new(), end: self.sector, damage: None };
        let mut off = self.header as usize;
        while off + FRAMING as usize <= scan.bytes.len() {
            let len = u16::from_le_bytes([scan.bytes[off], scan.bytes[off + 1]]);
            if len == 0xFFFF {
                // The end of the records, and appending may go on here, if the rest of the
                // sector is erased. A write-back cache (a file's) may have persisted a later
                // write and not an earlier one: bytes programmed past this point must never
                // be written over, so the sector is then full.
                if scan.bytes[off..].iter().all(|b| *b == 0xFF) {
                    scan.end = off as u32;
                } else {
                    scan.damage = Some(off as u32);
                }
                break;
            }
            let end = off + 2 + usize::from(len);
            let valid = end + 4 <= scan.bytes.len()
                && crc32(&[&scan.bytes[off..end]]).to_le_bytes() == scan.bytes[end..end + 4]
                && Head::read(&scan.bytes[off + 2..end]).is_some();
            if !valid {
                scan.damage = Some(off as u32);
                break;
            }
            scan.bodies.push((off + 2, end));
            off = align(end as u32 + 4, self.write) as usize;
        }
        Ok(scan)
    }

    fn after(&self, sector: Option<u32>) -> u32 {
        sector.map_or(0, |h| (h + 1) % self.used.len() as u32)
    }

    fn small(&self) -> u32 {
        align(Record::Sent { key: 0, pid: 0 }.encode().len() as u32 + FRAMING, self.write)
    }

    /// A live outgoing message's share of the log: its record (of `body` bytes), its
    /// packet id, its PUBREC.
    fn cost(&self, body: usize) -> u32 {
        align(body as u32 + FRAMING, self.write) + 2 * self.small()
    }

    /// The application hands over a publish: append it (not yet synced). Returns its key.
    pub fn accept(&mut self, publish: &OutgoingPublish) -> Result<u32, StoreError> {
        let key = self.next_key;
        let body = Record::Publish { key, publish }.encode();
        let max = self.sector - self.header - self.reserve;
        let size = align(body.len() as u32 + FRAMING, self.write);
        if body.len() > usize::from(u16::MAX - 1) || size > max {
            return Err(StoreError::TooLarge(max - FRAMING));
        }
        let cost = self.cost(body.len());
        if self.live_bytes + u64::from(cost) > self.budget {
            return Err(StoreError::Full);
        }
        self.append(&body)?;
        self.next_key = self.next_key.wrapping_add(1);
        self.live_bytes += u64::from(cost);
        self.outgoing.push(Live { key, pid: 0, released: false, cost });
        Ok(key)
    }

    /// The live message `key` names.
    #[inline(never)] // one copy for `sent`, `released` and `keeps`
    fn live(&mut self, key: u32) -> Option<&mut Live> {
        self.outgoing.iter_mut().find(|l| l.key == key)
    }

    /// Whether the message `key` names is still kept (not yet done).
    pub fn keeps(&mut self, key: u32) -> bool {
        self.live(key).is_some()
    }

    /// Its packet id.
    pub fn sent(&mut self, key: u32, pid: u16) -> Result<(), StoreError> {
        let Some(l) = self.live(key) else { return Ok(()) };
        l.pid = pid;
        self.append(&Record::Sent { key, pid }.encode())
    }

    /// QoS 2: PUBREC came.
    pub fn released(&mut self, key: u32) -> Result<(), StoreError> {
        let Some(l) = self.live(key) else { return Ok(()) };
        l.released = true;
        self.append(&Record::Released { key }.encode())
    }

    /// Acknowledged, failed or given up: forget it.
    pub fn done(&mut self, key: u32) -> Result<(), StoreError> {
        let Some(i) = self.outgoing.iter().position(|l| l.key == key) else { return Ok(()) };
        self.live_bytes -= u64::from(self.outgoing.remove(i).cost);
        self.append(&Record::Done { key }.encode())
    }

    /// An incoming QoS 2 message is about to be handed over and PUBREC sent.
    pub fn received(&mut self, pid: u16) -> Result<(), StoreError> {
        if self.received.contains(&pid) {
            return Ok(());
        }
        self.append(&Record::Received { pid }.encode())?;
        self.received.push(pid);
        self.live_bytes += u64::from(self.small());
        Ok(())
    }

    /// PUBREL came for it.
    pub fn received_done(&mut self, pid: u16) -> Result<(), StoreError> {
        let before = self.received.len();
        self.received.retain(|p| *p != pid);
        if self.received.len() == before {
            return Ok(());
        }
        self.live_bytes -= u64::from(self.small());
        self.append(&Record::ReceivedDone { pid }.encode())
    }

    /// The broker has no session: no incoming id is owed anything.
    pub fn clear_received(&mut self) -> Result<(), StoreError> {
        if self.received.is_empty() {
            return Ok(());
        }
        self.live_bytes -= u64::from(self.small()) * self.received.len() as u64;
        self.received.clear();
        self.append(&Record::ClearReceived.encode())
    }

    /// The session lives on `broker` now. Only a session away from the first broker keeps
    /// a live record (the first is where a log without one starts).
    pub fn session(&mut self, broker: u32) -> Result<(), StoreError> {
        if broker == self.session {
            return Ok(());
        }
        let small = u64::from(self.small());
        self.live_bytes = self.live_bytes + small * u64::from(broker != 0) - small * u64::from(self.session != 0);
        self.session = broker;
        self.append(&Record::Session { broker }.encode())
    }

    /// Make every record appended so far durable (one sync for however many there are).
    /// A failed sync is reported once, not retried: what it covered may or may not have
    /// survived (as with `fsync`, a retry would not say), and the next records get a sync
    /// of their own.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.flash.sync()?;
        Ok(())
    }

    /// The key the next accepted publish gets.
    #[cfg(test)]
    fn next_key(&self) -> u32 {
        self.next_key
    }

    /// Outgoing messages the log holds now.
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.len()
    }

    fn append(&mut self, body: &[u8]) -> Result<(), StoreError> {
        let bytes = frame(body, self.write);
        let size = bytes.len() as u32;
        // Each round opens one sector and collects at most one; a log that is all live data
        // (fragmented past the budget) gives up after going once round the ring.
        for _ in 0..=self.used.len() {
            if self.head.is_some() && self.head_off + size + self.reserve <= self.sector {
                return self.put(&bytes);
            }
            self.advance()?;
        }
        Err(StoreError::Full)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(h) = self.head else { return Err(StoreError::Full) };
        // Advance past the record first: if the write fails half-way, whatever it left is
        // never written over (NOR could not take it back), and the next record goes after.
        let at = h * self.sector + self.head_off;
        self.head_off += bytes.len() as u32;
        self.dirty = true;
        self.flash.write(at, bytes)?;
        Ok(())
    }

    /// Open the next sector; if that leaves none free, collect the oldest.
    fn advance(&mut self) -> Result<(), StoreError> {
        let next = self.after(self.head);
        if self.used[next as usize].is_some() {
            return Err(StoreError::Full);
        }
        if !self.erased[next as usize] {
            self.flash.erase(next)?;
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let mut header = Vec::with_capacity(self.header as usize);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&seq.to_le_bytes());
        header.extend_from_slice(&self.next_key.to_le_bytes());
        header.extend_from_slice(&crc32(&[&header]).to_le_bytes());
        pad(&mut header, self.write);
        self.erased[next as usize] = false;
        self.used[next as usize] = Some(seq);
        self.head = Some(next);
        self.head_off = self.header;
        self.dirty = true;
        self.flash.write(next * self.sector, &header)?;
        let oldest = self.after(Some(next));
        if self.used[oldest as usize].is_some() {
            self.collect(oldest)?;
        }
        Ok(())
    }

    fn is_live(&self, h: &Head) -> bool {
        let live = self.outgoing.iter().find(|l| l.key == h.n);
        match h.kind {
            k if k == Kind::Publish as u8 => live.is_some(),
            k if k == Kind::Sent as u8 => live.is_some_and(|l| l.pid == h.pid),
            k if k == Kind::Released as u8 => live.is_some_and(|l| l.released),
            k if k == Kind::Received as u8 => self.received.contains(&h.pid),
            // Collection goes oldest first, so a record it drops has none older left behind
            // it: a log whose last word is dropped starts out on the first broker, as it should.
            k if k == Kind::Session as u8 => h.n == self.session && self.session != 0,
            _ => false,
        }
    }

    /// Copy the live records of `victim` (the oldest sector) to the head, mark it as being
    /// erased, sync, erase it.
    fn collect(&mut self, victim: u32) -> Result<(), StoreError> {
        let Some(seq) = self.used[victim as usize] else { return Ok(()) };
        let old = self.scan(victim)?;
        // Copies an interrupted collection already made (the head is then the sector it
        // was copying into): compared byte for byte, they are not copied twice.
        let present = match self.head {
            Some(h) => self.scan(h)?,
            None => Scan::default(),
        };
        for (h, body) in old.heads() {
            if self.is_live(&h) && !present.heads().any(|(_, b)| b == body) {
                let bytes = frame(body, self.write);
                if self.head_off + bytes.len() as u32 + self.reserve > self.sector {
                    return Err(StoreError::Full);
                }
                self.put(&bytes)?;
            }
        }
        // The reserve is exactly for this record.
        let bytes = frame(&Record::Erasing { seq }.encode(), self.write);
        self.put(&bytes)?;
        self.flush()?;
        self.flash.erase(victim)?;
        self.used[victim as usize] = None;
        self.erased[victim as usize] = true;
        Ok(())
    }
}

/// One sector read back: its bytes and where each intact record's body lies.
#[derive(Default)]
struct Scan {
    bytes: Vec<u8>,
    bodies: Vec<(usize, usize)>,
    /// Where appending may go on.
    end: u32,
    /// Offset of the first damaged record, if any.
    damage: Option<u32>,
}

impl Scan {
    fn heads(&self) -> impl Iterator<Item = (Head, &[u8])> {
        self.bodies.iter().filter_map(|&(a, b)| {
            let body = &self.bytes[a..b];
            Some((Head::read(body)?, body))
        })
    }
}

fn flash_text(e: FlashError) -> &'static str {
    match e {
        FlashError::OutOfRange => "access out of range",
        FlashError::Io => "I/O error",
    }
}

/// A sentence for a store error.
pub fn error_text(e: &StoreError) -> String {
    match e {
        StoreError::Full => "store full".into(),
        StoreError::TooLarge(max) => text!("larger than the store's largest record (", max, " bytes)"),
        StoreError::Flash(e) => text!("storage failed: ", flash_text(*e)),
    }
}

#[cfg(test)]
mod tests;
