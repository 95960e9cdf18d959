//! QEMU's `virt` machine as this firmware uses it: the console UART, the machine timer, the
//! test device that ends the emulation, and the virtio-mmio slots. Addresses are those of
//! QEMU's `hw/riscv/virt.c`; the one thing read at run time is the device tree's
//! `bootargs` (see `args.rs`).
//!
//! The UART and the timer are a register or two each: written here rather than taken from a
//! crate, whose generality (interrupts, FIFOs, other boards) this firmware does not use.

use core::fmt;

const UART0: usize = 0x1000_0000;
/// The CLINT's `mtime`, counting at 10 MHz on `virt`.
const MTIME: usize = 0x0200_bff8;
const MTIME_HZ: u64 = 10_000_000;
/// SiFive's test finisher: a write ends QEMU with an exit status.
const FINISHER: usize = 0x0010_0000;
/// The first of eight virtio-mmio transports, each 0x1000 apart.
pub const VIRTIO_MMIO_BASE: usize = 0x1000_1000;
pub const VIRTIO_MMIO_SIZE: usize = 0x1000;
pub const VIRTIO_MMIO_SLOTS: usize = 8;

/// The 16550 console: a byte waits for the transmit holding register to empty.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: the UART's registers, mapped at these addresses on `virt`.
            unsafe {
                while core::ptr::read_volatile((UART0 + 5) as *const u8) & 0x20 == 0 {}
                core::ptr::write_volatile(UART0 as *mut u8, b);
            }
        }
        Ok(())
    }
}

/// Prints a line on the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::machine::Console, $($arg)*);
    }};
}

/// Milliseconds since reset, from the machine timer (monotonic).
pub fn now_ms() -> u64 {
    // SAFETY: the CLINT's 64-bit `mtime`, read in one access on RV64.
    let ticks = unsafe { core::ptr::read_volatile(MTIME as *const u64) };
    ticks / (MTIME_HZ / 1000)
}

/// Ends the emulation: status 0 for success, anything else for failure.
pub fn exit(status: u16) -> ! {
    let word: u32 = if status == 0 { 0x5555 } else { (u32::from(status) << 16) | 0x3333 };
    // SAFETY: the test finisher's register on `virt`.
    unsafe { core::ptr::write_volatile(FINISHER as *mut u32, word) };
    loop {
        core::hint::spin_loop();
    }
}
