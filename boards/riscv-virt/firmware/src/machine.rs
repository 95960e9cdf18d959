//! QEMU's `virt` machine as this firmware uses it: the console UART, the machine timer, the
//! test device that ends the emulation, and the virtio-mmio slots. Addresses are those of
//! QEMU's `hw/riscv/virt.c`; the one thing read at run time is the device tree's
//! `bootargs` (see `args.rs`).
//!
//! The UART and the timer are a register or two each: written here rather than taken from a
//! crate, whose generality (interrupts, FIFOs, other boards) this firmware does not use.

use core::fmt;

const UART0: usize = 0x1000_0000;
/// The CLINT's `mtime`, counting at 10 MHz on `virt`, and hart 0's `mtimecmp`.
const MTIME: usize = 0x0200_bff8;
const MTIMECMP: usize = 0x0200_4000;
const MTIME_HZ: u64 = 10_000_000;
/// SiFive's test finisher: a write ends QEMU with an exit status.
const FINISHER: usize = 0x0010_0000;
/// The platform-level interrupt controller; context 0 is hart 0 in machine mode.
const PLIC: usize = 0x0c00_0000;
const PLIC_ENABLE_0: usize = PLIC + 0x2000;
const PLIC_THRESHOLD_0: usize = PLIC + 0x20_0000;
const PLIC_CLAIM_0: usize = PLIC + 0x20_0004;
/// The interrupt of the first virtio-mmio slot; slot `i` has `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: usize = 1;
/// The first of eight virtio-mmio transports, each 0x1000 apart.
const VIRTIO_MMIO_BASE: usize = 0x1000_1000;
pub const VIRTIO_MMIO_SIZE: usize = 0x1000;
pub const VIRTIO_MMIO_SLOTS: usize = 8;

/// The address of virtio-mmio slot `slot`.
pub fn virtio_mmio(slot: usize) -> usize {
    VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SIZE
}

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
    mtime() / (MTIME_HZ / 1000)
}

/// The 64-bit `mtime`: one access on RV64; on RV32 its high half read again until it did not
/// change while the low half was read (a carry between the two reads would tear it).
fn mtime() -> u64 {
    // SAFETY: the CLINT's `mtime`, mapped at this address on `virt`.
    unsafe {
        if cfg!(target_pointer_width = "64") {
            core::ptr::read_volatile(MTIME as *const u64)
        } else {
            loop {
                let high = core::ptr::read_volatile((MTIME + 4) as *const u32);
                let low = core::ptr::read_volatile(MTIME as *const u32);
                if core::ptr::read_volatile((MTIME + 4) as *const u32) == high {
                    break (u64::from(high) << 32) | u64::from(low);
                }
            }
        }
    }
}

/// Routes interrupt `irq` to hart 0, so that it ends a `wfi` (see `idle_until`).
pub fn route_interrupt(irq: usize) {
    // SAFETY: the PLIC's priority, enable and threshold registers for context 0 on `virt`.
    unsafe {
        core::ptr::write_volatile((PLIC + 4 * irq) as *mut u32, 1);
        let enable = (PLIC_ENABLE_0 + 4 * (irq / 32)) as *mut u32;
        core::ptr::write_volatile(enable, core::ptr::read_volatile(enable) | 1 << (irq % 32));
        core::ptr::write_volatile(PLIC_THRESHOLD_0 as *mut u32, 0);
        riscv::register::mie::set_mext();
    }
}

/// Takes every interrupt the PLIC holds for hart 0 (claimed and completed), once the devices
/// behind them have been answered: otherwise the next `wfi` would end at once.
pub fn settle_interrupts() {
    // SAFETY: context 0's claim/complete register on `virt`.
    unsafe {
        loop {
            let irq = core::ptr::read_volatile(PLIC_CLAIM_0 as *const u32);
            if irq == 0 {
                break;
            }
            core::ptr::write_volatile(PLIC_CLAIM_0 as *mut u32, irq);
        }
    }
}

/// Lets the hart sleep (`wfi`) until `ms` on the timer or an interrupt routed to it (a frame
/// from the NIC), whichever comes first. The interrupts are enabled in `mie` only to end the
/// `wfi`: with `mstatus.MIE` clear none is taken, so no handler runs. Where the firmware would
/// otherwise spin, this keeps the core (and QEMU's host thread) idle, as a battery-powered
/// board must be.
pub fn idle_until(ms: u64) {
    let now = mtime();
    let until = ms.saturating_mul(MTIME_HZ / 1000);
    if until <= now {
        return;
    }
    riscv::interrupt::machine::disable();
    // SAFETY: enabling the timer interrupt in `mie`; never taken, as above.
    unsafe { riscv::register::mie::set_mtimer() };
    set_mtimecmp(until);
    // One wake-up, whatever woke it: the caller looks at the network and the clock.
    riscv::asm::wfi();
    // Pending no more.
    set_mtimecmp(u64::MAX);
}

/// Sets hart 0's `mtimecmp`. On RV32 in two writes, the high half first set to its maximum so
/// that no value between the two writes is one the timer has passed.
fn set_mtimecmp(at: u64) {
    // SAFETY: hart 0's `mtimecmp` on `virt`.
    unsafe {
        if cfg!(target_pointer_width = "64") {
            core::ptr::write_volatile(MTIMECMP as *mut u64, at);
        } else {
            core::ptr::write_volatile((MTIMECMP + 4) as *mut u32, u32::MAX);
            core::ptr::write_volatile(MTIMECMP as *mut u32, at as u32);
            core::ptr::write_volatile((MTIMECMP + 4) as *mut u32, (at >> 32) as u32);
        }
    }
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
