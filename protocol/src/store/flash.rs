//! The flash the store writes to: the shape of the WIT `storage` import, NOR rules.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::text;

/// How a flash device is laid out (the WIT `storage.geometry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Bytes in all; 0 means the host has no storage (the client keeps nothing across a
    /// power cut, as before).
    pub capacity: u32,
    /// Bytes per erase sector; `capacity` is a whole number of them.
    pub sector_size: u32,
    /// Smallest write: every write starts at a multiple of it and is a multiple of it long.
    pub write_size: u32,
}

impl Geometry {
    /// Number of erase sectors.
    pub fn sectors(&self) -> u32 {
        self.capacity.checked_div(self.sector_size).unwrap_or(0)
    }

    /// `Err` (saying why) when flash of this shape cannot hold the log: the rules
    /// [`super::Store::open`] applies, here so that a host can check a geometry it reads
    /// from somewhere (a file's header) before it trusts it. A write size of 0 counts as 1.
    /// Always inlined: `Store::open` is its one caller in the component, and as a call of
    /// its own it cost 29 more bytes of component than inlined (41 in all).
    #[inline(always)]
    pub fn check(self) -> Result<(), String> {
        let g = self;
        let w = g.write_size.max(1);
        if !w.is_power_of_two() || w > 256 {
            return Err(text!("storage write size ", g.write_size, " is not a power of two up to 256"));
        }
        if g.sector_size < 256 || !g.sector_size.is_multiple_of(w) {
            return Err(text!("storage sector size ", g.sector_size, " is under 256 bytes or not a multiple of the write size"));
        }
        if !g.capacity.is_multiple_of(g.sector_size) || g.sectors() < super::MIN_SECTORS {
            return Err(text!("storage of ", g.capacity, " bytes is not at least ", super::MIN_SECTORS, " whole sectors of ", g.sector_size));
        }
        Ok(())
    }
}

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the device, or not aligned to `write_size`.
    OutOfRange,
    /// The device (or the file behind it) failed; the host logs the detail.
    Io,
}

/// NOR flash as the store sees it. Erased bytes read `0xFF`; a write can only clear bits
/// (a host stores `old & new`, as the chip would); `erase` sets a whole sector back to
/// `0xFF`; `sync` returns once everything written before it survives a power cut.
pub trait Flash {
    /// Its layout; constant for the device's life.
    fn geometry(&self) -> Geometry;
    /// `len` bytes from `offset`.
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError>;
    /// Program `data` at `offset` (both aligned to `write_size`).
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError>;
    /// Erase sector `sector` (its index, not its offset).
    fn erase(&mut self, sector: u32) -> Result<(), FlashError>;
    /// Make everything written so far durable.
    fn sync(&mut self) -> Result<(), FlashError>;
}

/// Flash in RAM, for tests and hosts that simulate one. Counts what a chip would wear.
#[derive(Debug, Clone)]
pub struct MemFlash {
    geometry: Geometry,
    /// The cells.
    pub bytes: Vec<u8>,
    /// Bytes programmed so far.
    pub bytes_written: u64,
    /// Sectors erased so far.
    pub erases: u64,
    /// Writes that tried to set a bit back to 1 (a bug in whoever wrote: NOR cannot).
    pub violations: u64,
}

impl MemFlash {
    /// Erased flash of this layout.
    pub fn new(geometry: Geometry) -> MemFlash {
        MemFlash { geometry, bytes: vec![0xFF; geometry.capacity as usize], bytes_written: 0, erases: 0, violations: 0 }
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, FlashError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(FlashError::OutOfRange)?;
        if end > self.bytes.len() {
            return Err(FlashError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl Flash for MemFlash {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        let r = self.range(offset, len as usize)?;
        Ok(self.bytes[r].to_vec())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let w = self.geometry.write_size.max(1);
        if !offset.is_multiple_of(w) || !(data.len() as u32).is_multiple_of(w) {
            return Err(FlashError::OutOfRange);
        }
        let r = self.range(offset, data.len())?;
        for (cell, new) in self.bytes[r].iter_mut().zip(data) {
            if *cell & new != *new {
                self.violations += 1;
            }
            *cell &= new;
        }
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        let size = self.geometry.sector_size;
        let r = self.range(sector.checked_mul(size).ok_or(FlashError::OutOfRange)?, size as usize)?;
        self.bytes[r].fill(0xFF);
        self.erases += 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), FlashError> {
        Ok(())
    }
}
