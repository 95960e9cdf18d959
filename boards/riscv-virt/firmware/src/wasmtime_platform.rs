//! What wasmtime asks of a platform without an OS (its `custom` platform API, without the
//! optional virtual-memory and signal parts): thread-local pointers, one slot (a second
//! only with component-model async, which this firmware leaves out). It runs on one hart
//! with no threads, so statics hold them.

use core::sync::atomic::{AtomicPtr, Ordering};

static TLS: [AtomicPtr<u8>; 2] = [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())];

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    TLS.get(slot).map_or(core::ptr::null_mut(), |p| p.load(Ordering::Relaxed))
}

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(p) = TLS.get(slot) {
        p.store(ptr, Ordering::Relaxed);
    }
}
