//! The allocator, counting what is in use and the most ever in use: how much RAM wasmtime,
//! the component and the network stack need is this board's one figure for a smaller one.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

pub struct CountingHeap {
    inner: embedded_alloc::LlffHeap,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingHeap {
    pub const fn empty() -> CountingHeap {
        CountingHeap { inner: embedded_alloc::LlffHeap::empty(), in_use: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// # Safety
    /// Once, before any allocation, with memory nothing else uses.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: as this function's contract.
        unsafe { self.inner.init(start, size) }
    }

    /// Bytes allocated now, and the most at any time so far.
    pub fn usage(&self) -> (usize, usize) {
        (self.in_use.load(Ordering::Relaxed), self.peak.load(Ordering::Relaxed))
    }
}

// SAFETY: every call goes to `LlffHeap`; the counters only watch.
unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            let now = self.in_use.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}
