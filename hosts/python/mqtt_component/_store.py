"""Flash in a file, for `Client(..., store="path")`: what the client accepted and the broker
has not acknowledged survives the process (a crash, a kill, a power cut), and the next
client on the file sends it.

The file is the one the Rust hosts keep (`mqtt-board --store`, `mqtt_host::FileFlash`): a
64-byte header (the magic `MQFLASH1`, then capacity, sector size and write size, little
endian) and the flash image, with NOR rules (a write keeps `old & new`, an erase sets a
sector to 0xff). The component itself lays its records out in the image and recovers them,
so the same file serves either host.

One store serves one client: a second opener would take the first's records for its own
and erase them. This host locks the file itself (`flock`), as the Rust host does; Node
cannot, so its host marks a store it has with a file beside it, `PATH.lock`, holding
`PID HOST`. This host makes that file too (`PID python`), so that a Node client keeps off
its store, and refuses a store whose lock file a live Node process wrote. One a Rust or
Python process left is stale (that process would hold the `flock` if it still had the
store) and is taken over, as is one whose process is gone (`_take_lock`).
"""

import fcntl
import logging
import os
from typing import Optional, Tuple

log = logging.getLogger("mqtt_component")

MAGIC = b"MQFLASH1"
DATA = 64
MAX_CAPACITY = 16 * 1024 * 1024
# The geometry a new file gets: 64 KiB in 4 KiB sectors, a small partition on an ESP32.
DEFAULT_CAPACITY, DEFAULT_SECTOR, DEFAULT_WRITE = 64 * 1024, 4096, 4
MIN_SECTORS = 3


class StoreError(OSError):
    """The store file cannot be used: not a store, in use, or a geometry no store can have."""


def _usable(capacity: int, sector: int, write: int) -> Optional[str]:
    """Why no store can have this geometry, or None (the core's rules, `Geometry::check`)."""
    if write < 1 or write & (write - 1) or write > 256:
        return f"storage write size {write} is not a power of two up to 256"
    if sector < 256 or sector % write:
        return f"storage sector size {sector} is under 256 bytes or not a multiple of the write size"
    if capacity % sector or capacity // sector < MIN_SECTORS:
        return f"storage of {capacity} bytes is not at least {MIN_SECTORS} whole sectors of {sector}"
    if capacity > MAX_CAPACITY:
        return f"{capacity} bytes is more than a store file holds ({MAX_CAPACITY})"
    return None


def _could_be_our_header(start: bytes) -> bool:
    """A header cut short while the file was made, zeros a file system left, or the magic
    with a few bits flipped: repaired. Anything else is someone's file, left alone."""
    flipped = sum(bin(a ^ b).count("1") for a, b in zip(start, MAGIC))
    return MAGIC.startswith(start) or (len(start) == len(MAGIC) and flipped <= 4) or all(b == 0 for b in start)


# What this host writes in a lock file after its pid, and the hosts that also hold the
# store's `flock` while they have it.
_HOST = "python"
_FLOCKING_HOSTS = ("rust", "python")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(path) -> Optional[Tuple[str, bytes]]:
    """Makes `PATH.lock` for the store at `path`, whose `flock` the caller holds: its path
    and what it holds, or None when none can be made (a read-only directory; logged).
    Raises `StoreError` while a live Node client has the store; takes over a stale file."""
    lock = f"{path}.lock"
    content = f"{os.getpid()} {_HOST}\n".encode()
    # A few tries: another opener may take over a stale file at the same moment.
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(lock, "rb") as f:
                    words = f.read().decode(errors="replace").split()
            except FileNotFoundError:
                continue  # gone again meanwhile: the next try makes it
            pid = int(words[0]) if words and words[0].isdigit() and int(words[0]) > 0 else None
            host = words[1] if len(words) > 1 else "node"  # Node wrote the pid alone before
            if pid is None:
                why = "it names no process"
            elif host in _FLOCKING_HOSTS:
                why = f"process {pid} ({host}) no longer has the store"
            elif _alive(pid):
                raise StoreError(
                    f"{path}: in use by another client (process {pid}, the {host} host, holds {lock}); "
                    "one store serves one client (if that process is not a client of this store, remove the file)"
                )
            else:
                why = f"process {pid} ({host}) is gone"
            log.warning("%s: took over the lock file: %s", lock, why)
            try:
                os.remove(lock)
            except FileNotFoundError:
                pass
            continue
        except OSError as e:
            log.warning("%s: no lock file made (%s): a Node client would not see that this one has the store", lock, e)
            return None
        try:
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
        except OSError:
            # What was made goes with the failure: left cut short, it would name no process
            # until the next opener took it over.
            try:
                os.remove(lock)
            except OSError:
                pass
            raise
        return lock, content
    raise StoreError(f"{lock}: another client is taking this store at the same moment")


def _release_lock(taken: Optional[Tuple[str, bytes]]) -> None:
    """Removes a lock file `_take_lock` made, if it is still this process's."""
    if taken is None:
        return
    lock, content = taken
    try:
        with open(lock, "rb") as f:
            if f.read() == content:
                os.remove(lock)
    except OSError:
        pass


class FileFlash:
    def __init__(self, path: str, capacity: int = DEFAULT_CAPACITY, sector_size: int = DEFAULT_SECTOR, write_size: int = DEFAULT_WRITE):
        why = _usable(capacity, sector_size, write_size)
        if why:
            raise StoreError(why)
        self.path = path
        self._lock = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # One store serves one client: a second opener would take the first's records
            # for its own and erase them. The lock goes with the process.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{path}: in use by another client (it is locked); one store serves one client") from None
            self._lock = _take_lock(path)
            size = os.fstat(fd).st_size
            header = os.pread(fd, 20, 0)
            found = [int.from_bytes(header[i : i + 4], "little") for i in (8, 12, 16)] if len(header) == 20 else None
            if found and header[:8] == MAGIC and _usable(*found) is None:
                capacity, sector_size, write_size = found
            else:
                if size > 0:
                    if not _could_be_our_header(header[: len(MAGIC)]):
                        raise StoreError(f"{path}: not a store file (it does not begin with MQFLASH1); left as it is: remove it or give another path")
                    log.warning("%s: the header is damaged; rewritten for %d bytes in %d-byte sectors", path, capacity, sector_size)
                os.pwrite(fd, MAGIC + b"".join(v.to_bytes(4, "little") for v in (capacity, sector_size, write_size)), 0)
            want = DATA + capacity
            size = os.fstat(fd).st_size
            if size < want:
                if size > DATA:
                    log.warning("%s: %d of %d bytes; the rest reads as erased", path, size - DATA, capacity)
                start = max(size, DATA)
                os.pwrite(fd, b"\xff" * (want - start), start)
            os.fsync(fd)
        except BaseException:
            _release_lock(self._lock)
            os.close(fd)
            raise
        self.fd = fd
        self.capacity, self.sector_size, self.write_size = capacity, sector_size, write_size

    def _at(self, offset: int, length: int) -> Optional[int]:
        return DATA + offset if offset + length <= self.capacity else None

    def _io(self, what: str, run):
        try:
            return run()
        except OSError as e:
            log.error("store file %s: %s failed: %s", self.path, what, e)
            return "io"

    # The contract's `storage` interface: each returns the value, or the error's name.

    def read(self, offset: int, length: int):
        at = self._at(offset, length)
        if at is None:
            return "out-of-range"
        return self._io("read", lambda: os.pread(self.fd, length, at))

    def write(self, offset: int, data: bytes):
        if offset % self.write_size or len(data) % self.write_size:
            return "out-of-range"
        at = self._at(offset, len(data))
        if at is None:
            return "out-of-range"

        def program():
            # NOR: the cells keep `old & new`.
            old = os.pread(self.fd, len(data), at)
            cells = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(len(data), "little")
            os.pwrite(self.fd, cells, at)

        return self._io("write", program)

    def erase(self, sector: int):
        at = self._at(sector * self.sector_size, self.sector_size)
        if at is None:
            return "out-of-range"
        return self._io("erase", lambda: os.pwrite(self.fd, b"\xff" * self.sector_size, at) and None)

    def sync(self):
        return self._io("fsync", lambda: os.fsync(self.fd))

    def close(self) -> None:
        _release_lock(self._lock)
        self._lock = None
        if self.fd is not None:
            os.close(self.fd)  # the flock goes with it
            self.fd = None
