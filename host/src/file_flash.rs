//! Flash kept in a file, for hosts with a filesystem (the board's `--store`): NOR rules
//! on top of a regular file, `sync` is `fsync`.
//!
//! The file is self-describing: a small header (magic and geometry) and then the flash
//! image, so a store made with one geometry is never read with another.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mqtt_protocol::store::{Flash, FlashError, Geometry};

use crate::store_lock::StoreLock;

const MAGIC: &[u8; 8] = b"MQFLASH1";
/// Where the image starts; the header is magic, capacity, sector size, write size.
const DATA: u64 = 64;

/// Most bytes a store file holds: far more than a device's store partition, and a bound on
/// what a header with flipped bits can make the file grow to (or ask to read) when opened.
pub const MAX_CAPACITY: u32 = 16 * 1024 * 1024;

/// `Err` (why) for a geometry a store file cannot have: one no store can (the store's own
/// rules), or more than [`MAX_CAPACITY`]. Applied to what a caller asks for and to what a
/// header says.
fn usable(g: Geometry) -> Result<(), String> {
    g.check()?;
    if g.capacity > MAX_CAPACITY {
        return Err(format!("{} bytes is more than a store file holds ({MAX_CAPACITY})", g.capacity));
    }
    Ok(())
}

/// Whether a file's first bytes (up to the magic's length) may be this store's header,
/// damaged: cut short while the file was made (a prefix of the magic, or zeros a file
/// system left), or the whole magic with a few bits flipped. Any other file is not ours to
/// overwrite; random bytes come within 4 bits of the 64-bit magic about once in 2^40 (a
/// shorter start must match exactly: one byte is within 4 bits of a third of all bytes).
fn could_be_our_header(start: &[u8]) -> bool {
    let flipped: u32 = start.iter().zip(MAGIC).map(|(a, b)| (a ^ b).count_ones()).sum();
    MAGIC.starts_with(start) || (start.len() == MAGIC.len() && flipped <= 4) || start.iter().all(|b| *b == 0)
}

/// The geometry a new store file gets: 64 KiB in 4 KiB sectors, as a small partition on an
/// ESP32's flash.
pub const DEFAULT_GEOMETRY: Geometry = Geometry { capacity: 64 * 1024, sector_size: 4096, write_size: 4 };

/// Flash in a file. Counts what a chip would wear.
pub struct FileFlash {
    /// Before `file`: removed while the `flock` is still held.
    _lock: Option<StoreLock>,
    file: File,
    path: PathBuf,
    geometry: Geometry,
    /// Bytes programmed, sectors erased, syncs, since it was opened.
    pub bytes_written: u64,
    pub erases: u64,
    pub syncs: u64,
}

/// What opening a store file found wrong and repaired; the log records recover the rest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileRepairs {
    pub notes: Vec<String>,
}

impl FileFlash {
    /// Open `path`, or create it erased with `geometry`. An existing file keeps its own
    /// geometry. A file cut short is extended with erased bytes, and a damaged header (its
    /// magic a few bits off or cut short, or a geometry no store can have) is rewritten
    /// with `geometry`: both are reported in the repairs, and the client recovers whatever
    /// records are intact. A file that is not a store at all is refused and left as it is
    /// (`InvalidData`): a mistyped path must not cost someone their file. The file is locked
    /// while open: a second `open` of it, in this process or another, fails (`ResourceBusy`),
    /// as it does while a Node client has it (`PATH.lock`, which this makes too: see
    /// `store_lock.rs`).
    pub fn open(path: &Path, geometry: Geometry) -> std::io::Result<(FileFlash, FileRepairs)> {
        let invalid = |kind, why: String| std::io::Error::new(kind, why);
        usable(geometry).map_err(|why| invalid(std::io::ErrorKind::InvalidInput, why))?;
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // Two clients on one store would each take the other's records for their own, and
        // erase them: a second opener (a run started again while the first still runs,
        // say) is refused. The lock goes with the file when it is closed, or the process
        // dies, so a crash leaves nothing to clean up.
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => {
                    invalid(std::io::ErrorKind::ResourceBusy, "in use by another client (it is locked); one store serves one client".to_string())
                }
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let mut repairs = FileRepairs::default();
        let lock = StoreLock::take(path, &mut repairs.notes)?;
        let len = file.metadata()?.len();
        let mut header = [0u8; 20];
        let have = (len as usize).min(header.len());
        file.read_exact(&mut header[..have])?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let found = Geometry { capacity: word(8), sector_size: word(12), write_size: word(16) };
        let geometry = if have == header.len() && &header[..8] == MAGIC && usable(found).is_ok() {
            found
        } else {
            if len > 0 {
                if !could_be_our_header(&header[..have.min(MAGIC.len())]) {
                    return Err(invalid(
                        std::io::ErrorKind::InvalidData,
                        format!("not a store file (it does not begin with {}); left as it is: remove it or give another path", String::from_utf8_lossy(MAGIC)),
                    ));
                }
                repairs.notes.push(format!(
                    "{}: the header is damaged; rewritten for {} bytes in {}-byte sectors",
                    path.display(),
                    geometry.capacity,
                    geometry.sector_size
                ));
            }
            file.seek(SeekFrom::Start(0))?;
            file.write_all(MAGIC)?;
            for v in [geometry.capacity, geometry.sector_size, geometry.write_size] {
                file.write_all(&v.to_le_bytes())?;
            }
            geometry
        };
        let want = DATA + u64::from(geometry.capacity);
        let len = file.metadata()?.len();
        if len < want {
            if len > DATA {
                repairs.notes.push(format!("{}: {} of {} bytes; the rest reads as erased", path.display(), len - DATA, geometry.capacity));
            }
            file.seek(SeekFrom::Start(len.max(DATA)))?;
            file.write_all(&vec![0xFF; (want - len.max(DATA)) as usize])?;
        }
        file.sync_all()?;
        Ok((FileFlash { _lock: lock, file, path: path.to_path_buf(), geometry, bytes_written: 0, erases: 0, syncs: 0 }, repairs))
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u32, len: usize) -> Result<u64, FlashError> {
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.geometry.capacity) {
            return Err(FlashError::OutOfRange);
        }
        Ok(DATA + u64::from(offset))
    }

    fn io<T>(&self, what: &str, r: std::io::Result<T>) -> Result<T, FlashError> {
        r.map_err(|e| {
            tracing::error!("store file {}: {what} failed: {e}", self.path.display());
            FlashError::Io
        })
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        self.file.read_exact(buf)
    }

    fn write_at(&mut self, at: u64, buf: &[u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(buf)
    }
}

impl Flash for FileFlash {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        let at = self.check(offset, len as usize)?;
        let mut buf = vec![0u8; len as usize];
        let r = self.read_at(at, &mut buf);
        self.io("read", r)?;
        Ok(buf)
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let w = self.geometry.write_size.max(1);
        if !offset.is_multiple_of(w) || !(data.len() as u32).is_multiple_of(w) {
            return Err(FlashError::OutOfRange);
        }
        let at = self.check(offset, data.len())?;
        // NOR: the cells keep `old & new`.
        let mut cells = vec![0u8; data.len()];
        let r = self.read_at(at, &mut cells);
        self.io("read", r)?;
        cells.iter_mut().zip(data).for_each(|(c, d)| *c &= d);
        let r = self.write_at(at, &cells);
        self.io("write", r)?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        let size = self.geometry.sector_size;
        let at = self.check(sector.checked_mul(size).ok_or(FlashError::OutOfRange)?, size as usize)?;
        let r = self.write_at(at, &vec![0xFF; size as usize]);
        self.io("erase", r)?;
        self.erases += 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), FlashError> {
        let r = self.file.sync_data();
        self.io("fsync", r)?;
        self.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_reads_erased_and_keeps_nor_rules_and_its_geometry() {
        let dir = std::env::temp_dir().join(format!("mqtt-file-flash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store");
        let _ = std::fs::remove_file(&path);
        let (mut f, repairs) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap();
        assert!(repairs.notes.is_empty());
        assert_eq!(f.read(0, 8).unwrap(), vec![0xFF; 8]);
        f.write(4, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
        f.write(4, &[0xF0, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!(f.read(4, 4).unwrap(), vec![0x00, 0xF0, 0xFF, 0x00]);
        assert_eq!(f.write(2, &[0; 4]), Err(FlashError::OutOfRange), "unaligned");
        f.erase(0).unwrap();
        assert_eq!(f.read(4, 4).unwrap(), vec![0xFF; 4]);
        drop(f);
        // Reopened with another geometry asked for: the file's own wins.
        let other = Geometry { capacity: 8192, sector_size: 1024, write_size: 1 };
        let (f, _) = FileFlash::open(&path, other).unwrap();
        assert_eq!(f.geometry(), DEFAULT_GEOMETRY);
        drop(f);
        // Cut short: extended with erased bytes, and said so.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(DATA + 100).unwrap();
        let (mut f, repairs) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap();
        assert!(repairs.notes[0].contains("100 of 65536 bytes"), "{repairs:?}");
        assert_eq!(f.read(DEFAULT_GEOMETRY.capacity - 4, 4).unwrap(), vec![0xFF; 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn header(magic: &[u8; 8], g: Geometry) -> Vec<u8> {
        let mut h = magic.to_vec();
        for v in [g.capacity, g.sector_size, g.write_size] {
            h.extend(v.to_le_bytes());
        }
        h
    }

    /// What a power cut while the file was made, a flipped bit or a geometry no store can
    /// have leaves is repaired; anything else is someone else's file, refused untouched.
    #[test]
    fn a_damaged_header_is_rewritten_and_a_file_that_is_no_store_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut flipped = *MAGIC;
        flipped[5] ^= 0x81;
        let huge = Geometry { capacity: 1 << 30, ..DEFAULT_GEOMETRY };
        let damaged: [(&str, Vec<u8>); 6] = [
            ("cut short in the magic", MAGIC[..5].to_vec()),
            ("cut short in the geometry", MAGIC[..].iter().copied().chain([0, 0, 1]).collect()),
            ("zeros", vec![0; 40]),
            ("two bits flipped", header(&flipped, DEFAULT_GEOMETRY)),
            ("capacity 0", header(MAGIC, Geometry { capacity: 0, ..DEFAULT_GEOMETRY })),
            ("a gigabyte", header(MAGIC, huge)),
        ];
        for (what, bytes) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let (f, repairs) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(f.geometry(), DEFAULT_GEOMETRY, "{what}");
            assert!(repairs.notes[0].contains("the header is damaged"), "{what}: {repairs:?}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), DATA + u64::from(DEFAULT_GEOMETRY.capacity), "{what}");
        }
        for foreign in [&b"#!/bin/sh\necho hello\n"[..], b"x", b"MQTT is a protocol"] {
            std::fs::write(&path, foreign).unwrap();
            let e = FileFlash::open(&path, DEFAULT_GEOMETRY).err().expect("refused");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("not a store file"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), foreign, "left as it was");
        }
        // One client at a time: a second opener is refused until the first closes it.
        std::fs::remove_file(&path).unwrap();
        let (first, _) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap();
        let e = FileFlash::open(&path, DEFAULT_GEOMETRY).err().expect("locked");
        assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
        assert!(e.to_string().contains("in use by another client"), "{e}");
        drop(first);
        FileFlash::open(&path, DEFAULT_GEOMETRY).expect("free again once closed");
        // A geometry no store can have is the caller's mistake: refused before the file is
        // touched.
        std::fs::remove_file(&path).unwrap();
        for bad in [Geometry { sector_size: 100, ..DEFAULT_GEOMETRY }, huge] {
            let e = FileFlash::open(&path, bad).err().expect("refused");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            assert!(!path.exists());
        }
    }

    /// A Node client marks a store it has with `PATH.lock` (it cannot `flock`): while its
    /// process lives, this host refuses the store, as Node refuses one this host has. A lock
    /// file whose process is gone, or one a host that `flock`s left behind, is taken over
    /// and reported; this host's own goes when the store closes.
    #[test]
    fn a_store_a_node_client_has_is_refused_and_a_stale_lock_file_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.bin");
        let lock = crate::store_lock::lock_path(&path);
        assert_eq!(lock, dir.path().join("store.bin.lock"));
        let me = std::process::id();

        let (flash, repairs) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap();
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), format!("{me} rust\n"));
        assert!(repairs.notes.is_empty(), "{:?}", repairs.notes);
        drop(flash);
        assert!(!lock.exists(), "removed with the store");

        // A live Node client (this test's own pid stands for its process, which lives),
        // in the format Node writes now and the one it wrote before: refused, the file and
        // the store left as they are.
        let before = std::fs::read(&path).unwrap();
        for text in [format!("{me} node\n"), format!("{me}\n")] {
            std::fs::write(&lock, &text).unwrap();
            let e = FileFlash::open(&path, DEFAULT_GEOMETRY).err().expect("refused while the Node client lives");
            assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
            assert!(e.to_string().contains(&format!("process {me}, the node host")), "{e}");
            assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }

        // Taken over: a Node client's whose process is gone (no pid is this high on Linux),
        // one a Rust or Python process left (that process would hold the flock if it still
        // had the store), an empty or garbled one.
        for (text, why) in [
            ("999999999 node\n", "process 999999999 (node) is gone"),
            (&format!("{me} rust\n"), &format!("process {me} (rust) no longer has the store")),
            (&format!("{me} python\n"), &format!("process {me} (python) no longer has the store")),
            ("", "it names no process"),
            ("garbage", "it names no process"),
        ] {
            std::fs::write(&lock, text).unwrap();
            let (flash, repairs) = FileFlash::open(&path, DEFAULT_GEOMETRY).unwrap();
            assert_eq!(repairs.notes, vec![format!("{}: took over the lock file: {why}", lock.display())]);
            assert_eq!(std::fs::read_to_string(&lock).unwrap(), format!("{me} rust\n"));
            drop(flash);
            assert!(!lock.exists());
        }

        // A lock file that is a link to nowhere can be neither made nor read: refused after a
        // few tries, not tried for ever.
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &lock).unwrap();
        let e = FileFlash::open(&path, DEFAULT_GEOMETRY).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
        assert!(e.to_string().contains("another client is taking this store at the same moment"), "{e}");
    }
}
