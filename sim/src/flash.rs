//! Each device's simulated flash: kept across power cycles, and torn by a power cut.
//!
//! The contract is NOR flash with `sync` as the durability point, so at a power cut the
//! flash keeps only what was synced (the worst a host may do), and a cut that falls inside
//! an operation leaves what a chip would: a seeded prefix of a write, a half-erased sector.

use mqtt_host::{Flash, Geometry, MemFlash};
use mqtt_protocol::store::FlashError;
use mqtt_protocol::SplitMix64;
use serde_json::json;

use crate::scenario::CutDuring;
use crate::world::{now_ms, Shared};

/// A device's flash cells, what a power cut would take back, and a cut waiting to fall.
#[derive(Debug)]
pub struct FlashCell {
    pub mem: MemFlash,
    /// Bytes as they were before each write or erase since the last sync: (offset, old).
    undo: Vec<(u32, Vec<u8>)>,
    /// A power cut falls inside the `left`-th matching operation from now.
    armed: Option<(CutDuring, u32)>,
    /// The power is gone: every operation fails until the device boots again.
    pub dead: bool,
    rng: SplitMix64,
}

impl FlashCell {
    pub fn new(geometry: Geometry, seed: u64) -> FlashCell {
        FlashCell { mem: MemFlash::new(geometry), undo: Vec::new(), armed: None, dead: false, rng: SplitMix64::new(seed) }
    }

    /// A power cut will fall inside the next matching operation, or one of the next few
    /// (drawn from the seed) when any operation will do.
    pub fn arm(&mut self, during: CutDuring) {
        let left = if during == CutDuring::Any { self.rng.below(4) as u32 } else { 0 };
        self.armed = Some((during, left));
    }

    /// Power is lost (between operations): what was not synced is gone.
    pub fn power_off(&mut self) {
        for (offset, old) in self.undo.drain(..).rev() {
            self.mem.bytes[offset as usize..offset as usize + old.len()].copy_from_slice(&old);
        }
        self.armed = None;
        self.dead = true;
    }

    /// Booting again.
    pub fn power_on(&mut self) {
        self.dead = false;
    }

    /// Whether the armed cut falls inside this operation.
    fn cut_now(&mut self, op: CutDuring) -> bool {
        match &mut self.armed {
            Some((during, left)) if *during == op || *during == CutDuring::Any => {
                if *left == 0 {
                    return true;
                }
                *left -= 1;
                false
            }
            _ => false,
        }
    }

    /// Keeps the bytes an operation is about to change, so a power cut can take it back;
    /// `OutOfRange` (and nothing kept) when they are not all on the device.
    fn remember(&mut self, offset: u32, len: usize) -> Result<(), FlashError> {
        let at = offset as usize;
        let old = self.mem.bytes.get(at..at + len).ok_or(FlashError::OutOfRange)?.to_vec();
        self.undo.push((offset, old));
        Ok(())
    }
}

/// The flash a device's platform hands the component: its cell in the world.
pub struct SimFlash {
    pub world: Shared,
    pub device: usize,
    pub name: String,
    pub host: String,
}

impl SimFlash {
    /// Runs `op` on the cell; if the armed cut falls inside it, `torn` leaves what the
    /// interrupted operation would, the power goes, and the device is cut off the network
    /// at once (no FIN: the timeline crashes it shortly after, as for any power cut).
    fn with<T>(
        &mut self,
        kind: CutDuring,
        op: impl FnOnce(&mut FlashCell) -> Result<T, FlashError>,
        torn: impl FnOnce(&mut FlashCell),
    ) -> Result<T, FlashError> {
        let mut w = self.world.lock();
        let Some(cell) = w.flash.get_mut(self.device).and_then(Option::as_mut) else { return Err(FlashError::Io) };
        if cell.dead {
            return Err(FlashError::Io);
        }
        if !cell.cut_now(kind) {
            return op(cell);
        }
        cell.power_off();
        torn(cell);
        w.rec.power_cuts.push(now_ms());
        let w_brokers = w.brokers;
        w.log(now_ms(), &self.name, "power_cut", json!({ "inside": kind.name() }));
        drop(w);
        for broker in crate::runner::broker_names(w_brokers) {
            turmoil::partition(self.host.as_str(), broker.as_str());
        }
        Err(FlashError::Io)
    }
}

impl Flash for SimFlash {
    fn geometry(&self) -> Geometry {
        let w = self.world.lock();
        w.flash.get(self.device).and_then(Option::as_ref).map(|c| c.mem.geometry()).unwrap_or_default()
    }

    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        let mut w = self.world.lock();
        match w.flash.get_mut(self.device).and_then(Option::as_mut) {
            Some(cell) if !cell.dead => cell.mem.read(offset, len),
            _ => Err(FlashError::Io),
        }
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.with(
            CutDuring::Write,
            |cell| {
                cell.remember(offset, data.len())?;
                cell.mem.write(offset, data)
            },
            |cell| {
                // A seeded prefix of the bytes reaches the cells (all of them, at times: the
                // write completed and the power failed before it returned).
                let keep = cell.rng.below(data.len() as u64 + 1) as usize;
                // Straight into the cells, not through `write`: after the rollback they may
                // hold what an unsynced erase had cleared, and that is the model's doing.
                let at = offset as usize;
                if let Some(cells) = cell.mem.bytes.get_mut(at..at + keep) {
                    cells.iter_mut().zip(data).for_each(|(c, b)| *c &= b);
                }
            },
        )
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        self.with(
            CutDuring::Erase,
            |cell| {
                let size = cell.mem.geometry().sector_size;
                cell.remember(sector.checked_mul(size).ok_or(FlashError::OutOfRange)?, size as usize)?;
                cell.mem.erase(sector)
            },
            |cell| {
                // Half-erased: a seeded prefix of the sector is back to 0xFF.
                let size = cell.mem.geometry().sector_size;
                let keep = cell.rng.below(u64::from(size) + 1) as usize;
                let start = (sector * size) as usize;
                cell.mem.bytes[start..start + keep].fill(0xFF);
            },
        )
    }

    fn sync(&mut self) -> Result<(), FlashError> {
        self.with(
            CutDuring::Sync,
            |cell| {
                cell.undo.clear();
                Ok(())
            },
            |_| {},
        )
    }
}
