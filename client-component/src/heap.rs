//! Where the guest's heap comes from.
//!
//! talc's own wasm handler only ever takes memory from `memory.grow`, so the rest of the
//! initial memory — everything between the end of the static data (`__heap_base`) and the
//! end of the second page, about 59 KiB — would sit unused while the instance grows a third
//! page for its first allocation. This handler claims that tail first and grows afterwards,
//! extending the same heap, so a connected client fits in the memory it starts with
//! (measured by `mqtt-bench`, guarded by a host test).

use core::alloc::Layout;

use talc::{OomHandler, Span, Talc};

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and the static data.
    static __heap_base: u8;
}

pub struct InitialTailThenGrow {
    heap: Span,
    tail_claimed: bool,
}

// SAFETY: the span only describes memory this handler owns; the instance is single-threaded.
unsafe impl Send for InitialTailThenGrow {}

impl InitialTailThenGrow {
    pub const fn new() -> Self {
        InitialTailThenGrow { heap: Span::empty(), tail_claimed: false }
    }
}

impl OomHandler for InitialTailThenGrow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        if !talc.oom_handler.tail_claimed {
            talc.oom_handler.tail_claimed = true;
            // Only the address of the linker symbol is taken, never its value.
            let base = core::ptr::addr_of!(__heap_base) as *mut u8;
            let end = (core::arch::wasm32::memory_size::<0>() * PAGE) as *mut u8;
            if (end as usize).saturating_sub(base as usize) >= PAGE / 16 {
                // SAFETY: nothing else uses memory between `__heap_base` and the end of the
                // initial pages: the stack sits below the data, and this is the only claim.
                if let Ok(heap) = unsafe { talc.claim(Span::new(base, end)) } {
                    talc.oom_handler.heap = heap;
                    return Ok(());
                }
            }
        }
        let required = (layout.size() + 8).max(layout.align() * 2);
        let pages = required.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow::<0>(pages);
        if previous == usize::MAX {
            return Err(());
        }
        let old_end = (previous * PAGE) as *mut u8;
        let new_end = old_end.wrapping_add(pages * PAGE);
        let heap = talc.oom_handler.heap;
        match heap.get_base_acme() {
            // SAFETY: the grown pages follow the heap directly and belong to no one else.
            Some((base, acme)) if acme == old_end => talc.oom_handler.heap = unsafe { talc.extend(heap, Span::new(base, new_end)) },
            // SAFETY: fresh pages from memory.grow, at least one page: room for talc's metadata.
            _ => talc.oom_handler.heap = unsafe { talc.claim(Span::new(old_end, new_end)) }?,
        }
        Ok(())
    }
}
