//! Handing back to the kernel the pages of embedded bytes that were needed only once.

/// Asks the kernel to reclaim the pages that lie wholly inside `bytes` (part of the binary's
/// read-only data): they count in the process's resident memory once read, and stay there
/// unless memory runs short. `MADV_PAGEOUT` rather than `MADV_DONTNEED`: it reclaims without
/// discarding, so the bytes read the same if they are ever read again (the binary's pages
/// come back from its file), even where a loader put them in anonymous memory (a packed
/// binary), which is then left as it is. Advice only: a kernel before 5.4, or another OS,
/// keeps the pages, and nothing else changes.
pub fn release(bytes: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = rustix::param::page_size();
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: the range is whole pages inside `bytes`, which lives as long as the
            // process and is never written; `MADV_PAGEOUT` changes what is resident, not what
            // the memory holds.
            let _ = unsafe { rustix::mm::madvise(start as *mut core::ffi::c_void, end - start, rustix::mm::Advice::LinuxPageOut) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}
