//! A store whose flash was damaged after it was written (bits flipped, a stretch of
//! garbage, an erase cut short, a whole chip of noise) opens without panicking, gives back
//! only messages that were handed to it (it never invents one), and goes on working: what
//! it accepts after the damage survives the next power-up.
//!
//! `store::tests` covers what a power cut can leave (torn writes, half-erased sectors);
//! this is damage a power cut cannot explain, which a CRC catches but a careless recovery
//! could still trip over (a scan that trusts a length, a header that names a sector twice).

mod harness;

use std::collections::BTreeSet;

use harness::Shared;
use mqtt_protocol::store::{Geometry, Recovered, RecoveredPublish, Store, StoreError};
use mqtt_protocol::{OutgoingPublish, Properties, QoS};
use proptest::prelude::*;

const SECTOR: u32 = 1024;
const SECTORS: u32 = 4;
/// Messages accepted after the damage are numbered from here (those before, from 0).
const AFTER_DAMAGE: u32 = 1_000_000;

fn new_flash(write_size: u32) -> Shared {
    Shared::new(Geometry { capacity: SECTORS * SECTOR, sector_size: SECTOR, write_size })
}

/// Message `n`: its number is its payload, so what comes back says which it was.
fn message(n: u32) -> OutgoingPublish {
    OutgoingPublish { topic: "d/1".into(), payload: n.to_le_bytes().to_vec(), qos: QoS::AtLeastOnce, retain: false, properties: Properties::default() }
}

fn number(p: &RecoveredPublish) -> u32 {
    u32::from_le_bytes(p.publish.payload.as_slice().try_into().expect("a payload this test wrote"))
}

fn open(flash: &Shared) -> (Store, Recovered) {
    Store::open(Box::new(flash.clone())).expect("the geometry holds a log whatever the bytes say")
}

/// One step of the history written before the damage.
#[derive(Debug, Clone)]
enum Step {
    Accept,
    /// The oldest live message gets a packet id.
    Sent(u16),
    /// The live message at this index (mod the live count) is acknowledged.
    Done(usize),
    Received(u16),
    ReceivedDone(u16),
    Session(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Accept),
        2 => (1u16..=u16::MAX).prop_map(Step::Sent),
        3 => any::<usize>().prop_map(Step::Done),
        1 => (1u16..8).prop_map(Step::Received),
        1 => (1u16..8).prop_map(Step::ReceivedDone),
        1 => (0u32..3).prop_map(Step::Session),
    ]
}

/// What happened to the chip after the history was written.
#[derive(Debug, Clone)]
enum Damage {
    /// Single bits flipped, anywhere.
    Flips(Vec<(u32, u8)>),
    /// A stretch overwritten with noise.
    Noise { at: u32, bytes: Vec<u8> },
    /// An erase of one sector that stopped after `len` bytes (an erase the store did not
    /// ask for: a bootloader's, a brown-out's).
    CutErase { sector: u32, len: u32 },
    /// Every byte noise.
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let size = SECTORS * SECTOR;
    prop_oneof![
        4 => proptest::collection::vec((0..size, 0u8..8), 1..6).prop_map(Damage::Flips),
        3 => (0..size, proptest::collection::vec(any::<u8>(), 1..64)).prop_map(|(at, bytes)| Damage::Noise { at, bytes }),
        2 => (0..SECTORS, 0..SECTOR).prop_map(|(sector, len)| Damage::CutErase { sector, len }),
        1 => proptest::collection::vec(any::<u8>(), size as usize).prop_map(Damage::Garbage),
    ]
}

fn apply(flash: &Shared, damage: &Damage) {
    let bytes = &mut flash.0.borrow_mut().bytes;
    match damage {
        Damage::Flips(flips) => {
            for &(at, bit) in flips {
                bytes[at as usize] ^= 1 << bit;
            }
        }
        Damage::Noise { at, bytes: noise } => {
            for (cell, b) in bytes[*at as usize..].iter_mut().zip(noise) {
                *cell = *b;
            }
        }
        Damage::CutErase { sector, len } => {
            let start = (sector * SECTOR) as usize;
            bytes[start..start + *len as usize].fill(0xFF);
        }
        Damage::Garbage(noise) => bytes.copy_from_slice(noise),
    }
}

/// Writes `steps` to a store on `flash`; returns the numbers of every message accepted.
fn write_history(flash: &Shared, steps: &[Step]) -> BTreeSet<u32> {
    let (mut store, _) = open(flash);
    let mut accepted = BTreeSet::new();
    let mut live: Vec<(u32, u32)> = Vec::new(); // (number, key)
    for (n, s) in (0u32..).zip(steps) {
        let result = match s {
            Step::Accept => store.accept(&message(n)).map(|key| {
                accepted.insert(n);
                live.push((n, key));
            }),
            Step::Sent(pid) => live.first().map_or(Ok(()), |&(_, key)| store.sent(key, *pid)),
            Step::Done(i) if !live.is_empty() => {
                let (_, key) = live.remove(i % live.len());
                store.done(key)
            }
            Step::Done(_) => Ok(()),
            Step::Received(pid) => store.received(*pid),
            Step::ReceivedDone(pid) => store.received_done(*pid),
            Step::Session(broker) => store.session(*broker),
        };
        match result {
            Ok(()) | Err(StoreError::Full) => {}
            Err(e) => panic!("an undamaged store failed: {e:?}"),
        }
    }
    store.flush().expect("RAM flash syncs");
    accepted
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_store_opens_invents_nothing_and_keeps_what_it_takes_afterwards(
        write_size in prop_oneof![Just(1u32), Just(4), Just(16)],
        steps in proptest::collection::vec(step(), 0..120),
        damage in damage(),
        after in 1u32..40,
    ) {
        let flash = new_flash(write_size);
        let before = write_history(&flash, &steps);
        apply(&flash, &damage);

        // Power-up on the damaged chip.
        let (mut store, recovered) = open(&flash);
        for p in &recovered.outgoing {
            prop_assert!(before.contains(&number(p)), "recovered message {} was never written ({damage:?})", number(p));
        }
        let old: BTreeSet<u32> = recovered.outgoing.iter().map(number).collect();
        prop_assert_eq!(old.len(), recovered.outgoing.len(), "a message came back twice");

        // It goes on working: new messages, some of them acknowledged, through collections.
        let mut kept = BTreeSet::new();
        let mut live = Vec::new();
        for n in 0..after {
            let number = AFTER_DAMAGE + n;
            match store.accept(&message(number)) {
                Ok(key) => {
                    store.sent(key, (n % 100 + 1) as u16).expect("room for a packet id");
                    live.push((number, key));
                    kept.insert(number);
                }
                Err(StoreError::Full) => {}
                Err(e) => panic!("the store failed after damage: {e:?} ({damage:?})"),
            }
            if n % 3 == 2 && !live.is_empty() {
                let (number, key) = live.remove(0);
                store.done(key).expect("room for a done");
                kept.remove(&number);
            }
            store.flush().expect("RAM flash syncs");
        }
        drop(store);

        // And what it took after the damage survives the next power-up.
        let (_, again) = open(&flash);
        let back: BTreeSet<u32> = again.outgoing.iter().map(number).filter(|n| *n >= AFTER_DAMAGE).collect();
        prop_assert_eq!(&back, &kept, "messages accepted after the damage, lost or resurrected ({:?})", damage);
        for p in &again.outgoing {
            let n = number(p);
            prop_assert!(n >= AFTER_DAMAGE || old.contains(&n), "message {} came back from before the first recovery", n);
        }
    }
}
