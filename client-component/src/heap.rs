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

/// Small blocks freed to talc and asked for again at once are the guest's commonest
/// allocations (a topic, a payload, a packet, an event list: several per message), and
/// talc's bins, tags and gap bookkeeping were about a third of the guest's time in the
/// QoS 1 benchmark (perf, guest with names). Freed blocks of up to `GRAIN * CLASSES` bytes go
/// onto a free list per size class instead, and the next allocation of that class pops one:
/// a few loads and stores. Written here rather than taken from a crate: it is a thin layer
/// over talc's own `GlobalAlloc`, with no heap of its own, in a component 124 bytes under
/// its size tripwire.
///
/// The lists keep at most `KEEP_BYTES` between them (only blocks that were in use at once
/// before); past that, blocks go back to talc, which coalesces them, so a burst of small
/// allocations does not pin memory that larger ones could use later (the reason for talc in
/// the first place). One budget for all the classes rather than a count per class: a burst of
/// PUBACKs frees a window's topics and payloads together (two classes, a hundred blocks each
/// in the benchmark), and a count of 32 per class sent two of every seven allocations to
/// talc, about 550 instructions a pair (callgrind, guest with names).
///
/// `realloc` is the trait's own (allocate, copy, free): routing it to talc's in-place growth
/// for large blocks cost about 600 bytes of component, for no difference the `boundary`
/// benchmark could see.
pub struct Recycling<A> {
    inner: A,
    lists: core::cell::UnsafeCell<FreeLists>,
}

const GRAIN: usize = 16;
const CLASSES: usize = 16;
/// A wasm page: about what the lists could pin before, with 32 blocks in each class (68 KiB).
const KEEP_BYTES: usize = 64 * 1024;

struct FreeLists {
    /// Per class, the first free block; each free block's first word points to the next.
    heads: [*mut u8; CLASSES],
    /// The bytes of all the listed blocks.
    kept: usize,
}

// SAFETY: a component instance is single-threaded wasm; nothing can contend.
unsafe impl<A> Sync for Recycling<A> {}

impl<A> Recycling<A> {
    pub const fn new(inner: A) -> Self {
        Recycling { inner, lists: core::cell::UnsafeCell::new(FreeLists { heads: [core::ptr::null_mut(); CLASSES], kept: 0 }) }
    }
}

/// The class of a layout the lists serve (at most 8-aligned, 1 to `GRAIN * CLASSES` bytes),
/// and the layout its blocks all have in talc.
fn class(layout: Layout) -> Option<(usize, Layout)> {
    // Size 0 wraps to a class far out of range.
    let c = layout.size().wrapping_sub(1) / GRAIN;
    if c >= CLASSES || layout.align() > 8 {
        return None;
    }
    // SAFETY: a non-zero multiple of 16 with alignment 8 is a valid layout.
    Some((c, unsafe { Layout::from_size_align_unchecked((c + 1) * GRAIN, 8) }))
}

unsafe impl<A: core::alloc::GlobalAlloc> core::alloc::GlobalAlloc for Recycling<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((c, block)) = class(layout) else { return unsafe { self.inner.alloc(layout) } };
        // SAFETY: single-threaded, and no reference into the lists outlives this call.
        let lists = unsafe { &mut *self.lists.get() };
        let p = lists.heads[c];
        if p.is_null() {
            return unsafe { self.inner.alloc(block) };
        }
        // SAFETY: a listed block is free, at least a word long and 8-aligned; its first
        // word is the next one.
        lists.heads[c] = unsafe { *(p as *mut *mut u8) };
        lists.kept -= block.size();
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some((c, block)) = class(layout) else { return unsafe { self.inner.dealloc(p, layout) } };
        // SAFETY: as in `alloc`.
        let lists = unsafe { &mut *self.lists.get() };
        if lists.kept + block.size() > KEEP_BYTES {
            return unsafe { self.inner.dealloc(p, block) };
        }
        // SAFETY: the block is the caller's to give up, `block`-sized and 8-aligned.
        unsafe { *(p as *mut *mut u8) = lists.heads[c] };
        lists.heads[c] = p;
        lists.kept += block.size();
    }
}
