//! The store's flash: the first CFI flash bank of QEMU's `virt` machine (Intel command set,
//! `pflash_cfi01`), which QEMU backs with a file (`-drive if=pflash,unit=0,file=…`), so what
//! the client writes survives the emulation being killed: a power cut. The bank's first
//! block holds the boot stub QEMU starts from (see `mqtt-riscv-virt`'s `erased_flash`); the
//! store has the four after it.
//!
//! Written here rather than taken from a crate: the few commands below (program a word,
//! erase a block, read the status) are all the store needs, and the crates for CFI flash
//! target particular chips and their HALs.

use alloc::vec::Vec;

use mqtt_protocol::store::{Flash, FlashError, Geometry};

/// Bank 0 is at 0x2000_0000; the store starts one block in.
const STORE: usize = 0x2000_0000 + BLOCK as usize;
/// `virt` builds its banks of 256 KiB blocks, and from two 16-bit chips side by side: every
/// access is a 32-bit word, and a command or status is one byte for each chip.
const BLOCK: u32 = 256 * 1024;
const WORD: u32 = 4;
/// What the store is given of the bank: four blocks (the store needs three at least).
const CAPACITY: u32 = 4 * BLOCK;

const READ_ARRAY: u32 = 0x00ff_00ff;
const PROGRAM: u32 = 0x0040_0040;
const ERASE: u32 = 0x0020_0020;
const CONFIRM: u32 = 0x00d0_00d0;
const CLEAR_STATUS: u32 = 0x0050_0050;
const READY: u32 = 0x0080_0080;
/// Erase, program, voltage or lock errors, in either chip.
const FAILED: u32 = 0x003a_003a;

pub struct CfiFlash;

impl CfiFlash {
    fn word(offset: u32) -> *mut u32 {
        (STORE + offset as usize) as *mut u32
    }

    fn command(offset: u32, cmd: u32) {
        // SAFETY: a word of the store's blocks of bank 0, mapped for the firmware's whole life.
        unsafe { core::ptr::write_volatile(Self::word(offset), cmd) }
    }

    fn read_word(offset: u32) -> u32 {
        // SAFETY: as `command`.
        unsafe { core::ptr::read_volatile(Self::word(offset)) }
    }

    /// Waits for the chips to finish, then puts them back into reading the array.
    fn finish(offset: u32) -> Result<(), FlashError> {
        let status = loop {
            let s = Self::read_word(offset);
            if s & READY == READY {
                break s;
            }
        };
        let result = if status & FAILED == 0 {
            Ok(())
        } else {
            crate::println!("flash: status {status:#010x} at {offset:#x}");
            Self::command(offset, CLEAR_STATUS);
            Err(FlashError::Io)
        };
        Self::command(offset, READ_ARRAY);
        result
    }

    fn check(offset: u32, len: usize) -> Result<(), FlashError> {
        match offset.checked_add(len as u32) {
            Some(end) if len <= CAPACITY as usize && end <= CAPACITY => Ok(()),
            _ => Err(FlashError::OutOfRange),
        }
    }
}

impl Flash for CfiFlash {
    fn geometry(&self) -> Geometry {
        Geometry { capacity: CAPACITY, sector_size: BLOCK, write_size: WORD }
    }

    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        Self::check(offset, len as usize)?;
        // SAFETY: within the bank (checked), which reads as memory in read-array mode.
        let bytes = unsafe { core::slice::from_raw_parts((STORE + offset as usize) as *const u8, len as usize) };
        Ok(bytes.to_vec())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        Self::check(offset, data.len())?;
        if !offset.is_multiple_of(WORD) || !(data.len() as u32).is_multiple_of(WORD) {
            return Err(FlashError::OutOfRange);
        }
        for (i, chunk) in data.chunks_exact(WORD as usize).enumerate() {
            let at = offset + i as u32 * WORD;
            // As the chip would: a program only clears bits.
            let new = Self::read_word(at) & u32::from_le_bytes(chunk.try_into().expect("a word"));
            Self::command(at, PROGRAM);
            Self::command(at, new);
            Self::finish(at)?;
        }
        Ok(())
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        if sector >= CAPACITY / BLOCK {
            return Err(FlashError::OutOfRange);
        }
        let at = sector * BLOCK;
        Self::command(at, ERASE);
        Self::command(at, CONFIRM);
        Self::finish(at)
    }

    /// Nothing to wait for: a program or an erase is done when its status says so.
    fn sync(&mut self) -> Result<(), FlashError> {
        Ok(())
    }
}
