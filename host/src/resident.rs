//! Handing back to the kernel the pages of embedded bytes that were needed only once.

/// Drops from the process's resident memory the pages that lie wholly inside `bytes` (part
/// of the binary's read-only data): once read they count in its peak memory for the rest of
/// its life, unless memory runs short.
///
/// `MADV_DONTNEED` unmaps them; the kernel's page cache keeps the file's pages, so a later
/// read faults them back in, the same bytes. That holds only where a file backs them: in
/// anonymous memory (a packed binary that unpacks itself) the same advice would zero them,
/// so the bytes are released only when `/proc/self/maps` shows them in a read-only mapping
/// of a file. (`MADV_PAGEOUT` would need no such check, but the kernel ignores it for a file
/// the process may not write, such as a binary installed by root, and where it does act it
/// drops the pages from the page cache too, so the next load reads them from disk.)
pub fn release(bytes: &'static [u8]) {
    #[cfg(target_os = "linux")]
    linux::release(bytes);
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

#[cfg(target_os = "linux")]
mod linux {
    pub fn release(bytes: &'static [u8]) {
        let page = rustix::param::page_size();
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end <= start || !file_backed(start, end) {
            return;
        }
        // SAFETY: whole pages inside `bytes`, which lives as long as the process and is never
        // written, in a read-only private mapping of a file (checked above): after
        // `MADV_DONTNEED` a read finds the file's bytes again, which are what was there.
        // Only what is resident changes. Advice: an error leaves the pages as they were.
        let _ = unsafe { rustix::mm::madvise(start as *mut core::ffi::c_void, end - start, rustix::mm::Advice::LinuxDontNeed) };
    }

    /// Whether one read-only mapping of a file covers `start..end`, by `/proc/self/maps`.
    fn file_backed(start: usize, end: usize) -> bool {
        std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.lines().any(|line| covers(line, start, end)))
    }

    /// One line of `/proc/PID/maps`: `start-end perms offset dev inode [path]`. A file's
    /// mapping has an inode; a writable one may hold pages changed from the file's.
    pub(super) fn covers(line: &str, start: usize, end: usize) -> bool {
        let mut fields = line.split_ascii_whitespace();
        // The inode is the fifth field: `nth(2)` steps over the offset and the device.
        let (Some(range), Some(perms), Some(inode)) = (fields.next(), fields.next(), fields.nth(2)) else { return false };
        let Some((lo, hi)) = range.split_once('-') else { return false };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) else {
            return false;
        };
        lo <= start && end <= hi && inode != "0" && perms.starts_with('r') && !perms.contains('w')
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::covers;

    #[test]
    fn only_a_read_only_mapping_of_a_file_that_holds_the_whole_range_is_released() {
        let rodata = "5615c4dff000-5615c534a000 r--p 00000000 fd:01 1311247   /usr/bin/mqtt-board";
        assert!(covers(rodata, 0x5615c4e00000, 0x5615c4f00000));
        assert!(covers(rodata, 0x5615c4dff000, 0x5615c534a000), "the whole mapping");
        assert!(!covers(rodata, 0x5615c4e00000, 0x5615c534b000), "runs past its end");
        assert!(!covers(rodata, 0x5615c4dfe000, 0x5615c4e00000), "starts before it");
        let anonymous = "7f55796d4000-7f55798d5000 r--p 00000000 00:00 0";
        assert!(!covers(anonymous, 0x7f55796d4000, 0x7f55796d5000), "no file: the advice would zero it");
        let writable = "5615c61e6000-5615c6257000 rw-p 013e6000 fd:01 1311247   /usr/bin/mqtt-board";
        assert!(!covers(writable, 0x5615c61e6000, 0x5615c61e7000), "its pages may differ from the file's");
        assert!(!covers("garbage", 0, 1));
        assert!(!covers("", 0, 1));
    }
}
