//! The log against its promises: what was synced comes back, whatever a power cut tore.

use alloc::rc::Rc;
use alloc::string::ToString;
use core::cell::RefCell;
use std::vec::Vec;

use super::*;
use crate::codec::{PropertyValues, QoS};
use crate::rng::SplitMix64;

/// (offset, bytes before) of each write and erase not yet synced.
type Undo = Vec<(usize, Vec<u8>)>;

/// A shared flash that loses power after a number of operations: everything since the last
/// sync is lost (a write-back cache may persist later writes and not earlier ones, so the
/// worst case is all of them), and the operation the cut falls in is torn.
#[derive(Clone)]
struct CutFlash {
    inner: Rc<RefCell<MemFlash>>,
    /// (offset, bytes before) of every write and erase since the last sync.
    undo: Rc<RefCell<Undo>>,
    /// Operations left before the cut; `None` never cuts.
    left: Rc<RefCell<Option<u64>>>,
    rng: Rc<RefCell<SplitMix64>>,
}

impl CutFlash {
    fn new(g: Geometry, seed: u64) -> CutFlash {
        CutFlash {
            inner: Rc::new(RefCell::new(MemFlash::new(g))),
            undo: Rc::new(RefCell::new(Vec::new())),
            left: Rc::new(RefCell::new(None)),
            rng: Rc::new(RefCell::new(SplitMix64::new(seed))),
        }
    }
    /// True when this operation is the one the power cut falls in (or after).
    fn cut_now(&self) -> Result<bool, FlashError> {
        let mut left = self.left.borrow_mut();
        match *left {
            Some(0) => Err(FlashError::Io),
            Some(1) => {
                *left = Some(0);
                Ok(true)
            }
            Some(n) => {
                *left = Some(n - 1);
                Ok(false)
            }
            None => Ok(false),
        }
    }
    /// The power goes: what was not synced is gone.
    fn power_off(&self) {
        let mut inner = self.inner.borrow_mut();
        for (at, old) in self.undo.borrow_mut().drain(..).rev() {
            inner.bytes[at..at + old.len()].copy_from_slice(&old);
        }
    }
    fn remember(&self, at: usize, len: usize) {
        let old = self.inner.borrow().bytes[at..at + len].to_vec();
        self.undo.borrow_mut().push((at, old));
    }
    fn powered_again(&self) -> CutFlash {
        *self.left.borrow_mut() = None;
        self.clone()
    }
}

impl Flash for CutFlash {
    fn geometry(&self) -> Geometry {
        self.inner.borrow().geometry()
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        if *self.left.borrow() == Some(0) {
            return Err(FlashError::Io);
        }
        self.inner.borrow_mut().read(offset, len)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        if self.cut_now()? {
            self.power_off();
            // A seeded prefix of the bytes reaches the cells.
            let keep = self.rng.borrow_mut().below(data.len() as u64 + 1) as usize;
            // (Straight into the cells: after the rollback they may not be what the store
            // wrote over, and that is the model's doing, not a write the store made.)
            let mut inner = self.inner.borrow_mut();
            let at = offset as usize;
            for (cell, b) in inner.bytes[at..at + keep].iter_mut().zip(data) {
                *cell &= b;
            }
            return Err(FlashError::Io);
        }
        if (offset as usize) + data.len() <= self.inner.borrow().bytes.len() {
            self.remember(offset as usize, data.len());
        }
        self.inner.borrow_mut().write(offset, data)
    }
    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        if self.cut_now()? {
            self.power_off();
            // Half-erased: a seeded prefix of the sector is back to 0xFF.
            let size = self.geometry().sector_size;
            let keep = self.rng.borrow_mut().below(u64::from(size) + 1) as usize;
            let start = (sector * size) as usize;
            self.inner.borrow_mut().bytes[start..start + keep].fill(0xFF);
            return Err(FlashError::Io);
        }
        let size = self.geometry().sector_size as usize;
        if (sector as usize + 1) * size <= self.inner.borrow().bytes.len() {
            self.remember(sector as usize * size, size);
        }
        self.inner.borrow_mut().erase(sector)
    }
    fn sync(&mut self) -> Result<(), FlashError> {
        if self.cut_now()? {
            self.power_off();
            return Err(FlashError::Io);
        }
        self.undo.borrow_mut().clear();
        Ok(())
    }
}

fn geometry() -> Geometry {
    Geometry { capacity: 4 * 1024, sector_size: 1024, write_size: 4 }
}

fn message(n: u32) -> OutgoingPublish {
    let qos = if n.is_multiple_of(3) { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
    let properties = PropertyValues { message_expiry_interval: n.is_multiple_of(5).then_some(n), ..Default::default() }.into();
    OutgoingPublish { topic: "t/".to_string() + &n.to_string(), payload: alloc::vec![n as u8; (n % 90) as usize], qos, retain: n.is_multiple_of(7), properties }
}

fn open(flash: &CutFlash) -> (Store, Recovered) {
    Store::open(Box::new(flash.clone())).expect("geometry is valid")
}

#[test]
fn a_fresh_flash_recovers_nothing() {
    let (_, r) = open(&CutFlash::new(geometry(), 1));
    assert_eq!(r, Recovered::default());
}

#[test]
fn geometry_that_cannot_hold_a_log_is_refused_with_a_reason() {
    for (g, why) in [
        (Geometry { capacity: 2048, sector_size: 1024, write_size: 4 }, "at least 3 whole sectors"),
        (Geometry { capacity: 4096, sector_size: 1000, write_size: 4 }, "at least 3 whole sectors"),
        (Geometry { capacity: 4096, sector_size: 1024, write_size: 3 }, "power of two"),
        (Geometry { capacity: 1024, sector_size: 128, write_size: 4 }, "under 256 bytes"),
    ] {
        let e = Store::open(Box::new(MemFlash::new(g))).err().expect("refused");
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn what_was_accepted_and_not_done_comes_back_in_order_with_its_ids() {
    let flash = CutFlash::new(geometry(), 1);
    let (mut s, _) = open(&flash);
    let keys: Vec<u32> = (0..6).map(|n| s.accept(&message(n)).unwrap()).collect();
    s.sent(keys[0], 11).unwrap();
    s.sent(keys[3], 14).unwrap();
    s.released(keys[3]).unwrap();
    s.done(keys[1]).unwrap();
    s.received(7).unwrap();
    s.received(8).unwrap();
    s.received_done(7).unwrap();
    s.flush().unwrap();
    drop(s);
    let (s, r) = open(&flash);
    let got: Vec<(u32, Option<u16>, bool)> = r.outgoing.iter().map(|p| (p.key, p.pid.map(PacketId::get), p.released)).collect();
    assert_eq!(got, [(keys[0], Some(11), false), (keys[2], None, false), (keys[3], Some(14), true), (keys[4], None, false), (keys[5], None, false)]);
    assert_eq!(r.outgoing[2].publish, message(3));
    assert_eq!(r.received, [8]);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(s.outgoing_len(), 5);
}

/// `n` messages accepted and done, each synced: the ring goes round many times.
fn churn(s: &mut Store, n: u32) {
    for i in 0..n {
        let key = s.accept(&message(i)).unwrap();
        s.done(key).unwrap();
        s.flush().unwrap();
    }
}

#[test]
fn the_broker_the_session_moved_to_comes_back_and_survives_collection() {
    let flash = CutFlash::new(geometry(), 1);
    let (mut s, _) = open(&flash);
    s.session(1).unwrap();
    s.flush().unwrap();
    drop(s);
    let (mut s, r) = open(&flash);
    assert_eq!(r.session, 1);
    // Far more records than the log holds: the ring goes round, collecting the sector with
    // the `Session` record many times over.
    churn(&mut s, 500);
    drop(s);
    let (mut s, r) = open(&flash);
    assert_eq!(r.session, 1, "kept live through collection");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // Back on the first broker: the record says so, and later collections may drop it.
    s.session(0).unwrap();
    s.flush().unwrap();
    drop(s);
    let (mut s, r) = open(&flash);
    assert_eq!(r.session, 0);
    churn(&mut s, 500);
    drop(s);
    assert_eq!(open(&flash).1.session, 0);
}

#[test]
fn a_long_run_wraps_the_ring_collects_and_wears_evenly() {
    let flash = CutFlash::new(geometry(), 1);
    let (mut s, _) = open(&flash);
    let mut live = std::collections::VecDeque::new();
    for n in 0..2_000u32 {
        let key = s.accept(&message(n)).unwrap();
        s.sent(key, (n % 60_000 + 1) as u16).unwrap();
        live.push_back(key);
        // A few stay unacknowledged for a long time; the rest are acknowledged soon.
        if live.len() > 4 {
            let k = live.remove(1).unwrap();
            s.done(k).unwrap();
        }
        s.flush().unwrap();
    }
    let erases = flash.inner.borrow().erases;
    assert!(erases > 10, "the ring went round ({erases} erases)");
    drop(s);
    let (_, r) = open(&flash);
    assert_eq!(r.outgoing.iter().map(|p| p.key).collect::<Vec<_>>(), live.iter().copied().collect::<Vec<_>>());
    assert_eq!(r.outgoing[0].publish, message(0), "the oldest survived every collection");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(flash.inner.borrow().violations, 0, "never wrote over programmed cells");
}

/// Flash as a long-lived device leaves it: `keys` keys and `sectors` sector sequence
/// numbers short of their wrap at `u32::MAX`, written into a header and a record.
fn age(flash: &CutFlash, keys: u32, sectors: u32) {
    let (mut s, _) = open(flash);
    s.next_key = u32::MAX - keys;
    s.next_seq = u32::MAX - sectors;
    churn(&mut s, 1);
}

#[test]
fn keys_and_sector_numbers_wrapping_at_u32_max_keep_their_order_and_are_never_reused() {
    let flash = CutFlash::new(geometry(), 1);
    age(&flash, 3, 1);
    let (mut s, r) = open(&flash);
    assert!(r.outgoing.is_empty() && r.problems.is_empty(), "{r:?}");
    let mut live = std::collections::VecDeque::new();
    let mut live_in: Vec<u16> = Vec::new();
    let mut handed: Vec<u32> = Vec::new();
    for n in 0..2_000u32 {
        let key = s.accept(&message(n)).unwrap();
        assert!(!handed.contains(&key), "key {key} handed out twice");
        handed.push(key);
        live.push_back(key);
        // The first message (accepted before the wrap) stays unacknowledged throughout.
        if live.len() > 4 {
            let k = live.remove(1).unwrap();
            s.done(k).unwrap();
        }
        // Incoming ids whose records must replay in log order, across sectors whose
        // sequence numbers wrapped.
        let pid = (n % 5 + 1) as u16;
        if n % 2 == 0 {
            s.received(pid).unwrap();
            live_in.retain(|p| *p != pid);
            live_in.push(pid);
        } else {
            s.received_done(pid).unwrap();
            live_in.retain(|p| *p != pid);
        }
        s.flush().unwrap();
        if n % 250 == 249 {
            drop(s);
            let (again, r) = open(&flash);
            s = again;
            assert_eq!(r.outgoing.iter().map(|p| p.key).collect::<Vec<_>>(), live.iter().copied().collect::<Vec<_>>(), "after {n}");
            let mut received = r.received.clone();
            received.sort_unstable();
            let mut expected = live_in.clone();
            expected.sort_unstable();
            assert_eq!(received, expected, "after {n}");
            assert!(r.problems.is_empty(), "{:?}", r.problems);
        }
    }
    assert!(handed.contains(&u32::MAX) && handed.contains(&0), "the keys wrapped");
    assert!(flash.inner.borrow().erases > 10, "the sector numbers wrapped");
    assert_eq!(open(&flash).1.outgoing[0].publish, message(0), "the oldest came back first");
}

#[test]
fn a_full_store_refuses_and_takes_more_once_messages_are_done() {
    let flash = CutFlash::new(geometry(), 1);
    let (mut s, _) = open(&flash);
    let mut keys = Vec::new();
    let refused = loop {
        match s.accept(&message(89)) {
            Ok(k) => keys.push(k),
            Err(e) => break e,
        }
        assert!(keys.len() < 1_000);
    };
    assert_eq!(refused, StoreError::Full);
    assert!(keys.len() >= 5, "{} fit", keys.len());
    for k in keys.drain(..3) {
        s.done(k).unwrap();
    }
    s.accept(&message(89)).expect("room again");
    let big = OutgoingPublish { payload: alloc::vec![0; 2_000], ..message(1) };
    assert!(matches!(s.accept(&big), Err(StoreError::TooLarge(_))));
}

#[test]
fn power_cuts_anywhere_lose_nothing_synced_and_never_break_recovery() {
    let g = Geometry { capacity: 3 * 512, sector_size: 512, write_size: 8 };
    let (mut damaged, mut erases, mut violations) = (0, 0, 0);
    for seed in 0..400u64 {
        let flash = CutFlash::new(g, seed);
        if seed % 2 == 1 {
            // Half the runs on a long-lived device's flash: keys wrap within the first life
            // and sector numbers within the first few sectors.
            age(&flash, 150, 2);
        }
        let mut rng = SplitMix64::new(seed);
        // Synced and not told done: must come back. Ever attempted: may.
        let (mut must, mut may): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let (mut must_in, mut may_in): (Vec<u16>, Vec<u16>) = (Vec::new(), Vec::new());
        // Several lives, each ending in a cut at a random flash operation.
        for life in 0..4 {
            let (mut s, r) = open(&flash.powered_again());
            damaged += usize::from(!r.problems.is_empty());
            let ctx = |what: &str| std::format!("seed {seed} life {life}: {what}; problems {:?}", r.problems);
            for k in &must {
                assert!(r.outgoing.iter().any(|p| p.key == *k), "{}", ctx(&std::format!("key {k} lost")));
            }
            for p in &r.outgoing {
                assert!(may.contains(&p.key), "{}", ctx(&std::format!("key {} from nowhere", p.key)));
                assert!(before(p.key, s.next_key()), "{}", ctx("a live key would be handed out again"));
            }
            for pid in &must_in {
                assert!(r.received.contains(pid), "{}", ctx(&std::format!("incoming id {pid} lost")));
            }
            for pid in &r.received {
                assert!(may_in.contains(pid), "{}", ctx(&std::format!("incoming id {pid} from nowhere")));
            }
            let mut live: Vec<u32> = r.outgoing.iter().map(|p| p.key).collect();
            let mut live_in = r.received.clone();
            *flash.left.borrow_mut() = Some(1 + rng.below(300));
            for step in 0..400u32 {
                let mut refused_in = None;
                // A cut during `done` may or may not have made it durable.
                let (mut forgetting, mut forgetting_in) = (None, None);
                let result = match rng.below(6) {
                    0..=2 => {
                        may.push(s.next_key());
                        s.accept(&message(step)).map(|k| live.push(k))
                    }
                    3 if !live.is_empty() => {
                        let k = live.remove(rng.below(live.len() as u64) as usize);
                        forgetting = Some(k);
                        s.done(k)
                    }
                    4 => {
                        let pid = 1 + rng.below(20) as u16;
                        may_in.push(pid);
                        if !live_in.contains(&pid) {
                            live_in.push(pid);
                            refused_in = Some(pid);
                        }
                        s.received(pid)
                    }
                    _ => {
                        let pid = 1 + rng.below(20) as u16;
                        live_in.retain(|p| *p != pid);
                        forgetting_in = Some(pid);
                        s.received_done(pid)
                    }
                };
                match result.and_then(|()| s.flush()) {
                    // Durable now: what the store holds live must come back.
                    Ok(()) => {
                        must = live.clone();
                        must_in = live_in.clone();
                    }
                    // Refused: nothing was written (a refused `done` leaves a record that
                    // may come back, which `may` allows).
                    Err(StoreError::Full) => live_in.retain(|p| Some(*p) != refused_in),
                    Err(_) => {
                        erases += flash.inner.borrow().erases;
                        must.retain(|k| Some(*k) != forgetting);
                        must_in.retain(|p| Some(*p) != forgetting_in);
                        break;
                    }
                }
            }
        }
        violations += flash.inner.borrow().violations;
    }
    assert_eq!(violations, 0, "a write over programmed cells (NOR would keep old & new)");
    // Not vacuous: cuts tore records and sectors, and the ring went round.
    assert!(damaged > 100, "{damaged} lives began with damage");
    assert!(erases > 1_000, "{erases} erases");
}

#[test]
fn a_later_write_that_survived_an_earlier_one_is_never_written_over() {
    // Two records appended without a sync between them; the power fails inside the second:
    // the first is rolled back (never synced) while a prefix of the second reached the
    // cells, past the point where the records now seem to end.
    let flash = CutFlash::new(geometry(), 7);
    let (mut s, _) = open(&flash);
    s.accept(&message(1)).unwrap();
    s.flush().unwrap();
    s.received(5).unwrap();
    *flash.left.borrow_mut() = Some(1);
    assert!(s.received(6).is_err(), "the cut falls inside this write");
    drop(s);
    let (mut s, r) = open(&flash.powered_again());
    assert_eq!(r.outgoing.len(), 1, "the synced publish is back");
    assert!(r.received.is_empty(), "neither unsynced id is");
    for n in 2..40 {
        let k = s.accept(&message(n)).unwrap();
        s.flush().unwrap();
        s.done(k).unwrap();
        s.flush().unwrap();
    }
    assert_eq!(flash.inner.borrow().violations, 0, "appending never wrote over the torn prefix");
    drop(s);
    let (_, r) = open(&flash);
    assert_eq!(r.outgoing.len(), 1);
}
