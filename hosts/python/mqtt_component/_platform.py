"""The interfaces the component imports, for a Python process: real non-blocking sockets
(TCP, TLS through the standard `ssl` module), the monotonic clock, a link that is always up
(the operating system manages it), flash in a file or none, and logging.

Each function is what the WIT contract (`wit/mqtt.wit`) asks of a host; the component calls
them from inside `client.poll`, so none of them may block.
"""

import concurrent.futures
import errno
import ipaddress
import logging
import os
import selectors
import socket
import ssl
import time
from typing import Callable, Dict, List, Optional, Tuple

from wasmtime.component import LinkerInstance, Record, Variant

log = logging.getLogger("mqtt_component")

# The package and version every interface name carries (the WIT file's first line).
PACKAGE = "mqtt-as:client"
VERSION = "0.1.0"

# Most bytes one `recv` returns: more than the component asks for at once.
MAX_RECV = 64 * 1024


def allowed_brokers(server: str, port: Optional[int], ssl_on: bool, servers: List[str]) -> List[Tuple[str, int]]:
    """The (host, port) pairs the client may open: `server` and every failover broker, each
    port defaulting as the config's `port` says (1883, or 8883 with `ssl`). A connection
    anywhere else is refused `not-permitted`, as the Rust hosts refuse it."""
    default = port if port is not None else (8883 if ssl_on else 1883)
    out = [(server, default)]
    for s in servers:
        host, sep, p = s.rpartition(":")
        if sep and p.isdigit() and host and not host.endswith(":"):
            out.append((host.strip("[]"), int(p)))
        else:
            out.append((s.strip("[]"), default))
    return out


def _error_name(e: BaseException) -> str:
    """A Python socket exception as the contract's `socket-error`."""
    if isinstance(e, ssl.SSLError) or isinstance(e, ssl.CertificateError):
        return "tls-failed"
    if isinstance(e, socket.gaierror):
        return "dns-failed"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(e, TimeoutError):
        return "timed-out"
    if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return "unreachable"
    return "other"


def _errno_name(code: int) -> str:
    # OSError(errno, text) builds the matching subclass (ConnectionRefusedError, ...).
    return _error_name(OSError(code, os.strerror(code)))


class _Sock:
    """One connection: `resolving` while its name is looked up on the resolver thread, then
    `connecting` until the TCP connect (and the TLS handshake) is done."""

    def __init__(self, tls: Optional[ssl.SSLContext], server_name: Optional[str]):
        self.sock: Optional[socket.socket] = None
        self.tls = tls
        self.server_name = server_name
        self.state = "resolving"  # resolving, connecting, handshake, open, failed
        self.error: Optional[str] = None
        # The lookup's answer, while `resolving`.
        self.lookup: Optional[concurrent.futures.Future] = None
        # What the selector should wait for on this socket besides readability.
        self.wants_write = True

    def fail(self, name: str) -> str:
        self.state = "failed"
        self.error = name
        return name


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Sockets:
    """The `socket` interface over the standard library, with a selector the client waits on:
    a socket is watched for reading once open, and for writing while it connects or while a
    `send` was cut short (the component tries the rest on the next poll)."""

    def __init__(self, allowed: List[Tuple[str, int]], verify: bool = True):
        self.allowed = allowed
        self.verify = verify
        self.socks: Dict[int, _Sock] = {}
        self.next = 0
        self.selector = selectors.DefaultSelector()
        # A name is looked up on a thread of its own, as the Rust hosts do: `getaddrinfo`
        # blocks for as long as DNS takes, and `open` is called from inside `poll`. The
        # thread writes a byte to `_wake` when an answer is in, so a `wait` ends at once.
        self._resolver: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._wake, self._woken = socket.socketpair()
        self._wake.setblocking(False)
        self._woken.setblocking(False)
        self.selector.register(self._woken, selectors.EVENT_READ)

    # -- what the client's wait loop uses -------------------------------------------------

    def _watch(self, s: _Sock) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if s.wants_write else 0)
        try:
            self.selector.modify(s.sock, events)
        except KeyError:
            self.selector.register(s.sock, events)

    def _forget(self, s: _Sock) -> None:
        if s.sock is None:
            return
        try:
            self.selector.unregister(s.sock)
        except (KeyError, ValueError):
            pass

    def watching(self) -> bool:
        """Whether any socket is open, opening or being resolved (something `wait` can wake
        for)."""
        # (The selector always holds the resolver's wake-up socket.)
        return len(self.selector.get_map()) > 1 or any(s.state == "resolving" for s in self.socks.values())

    def wait(self, timeout: Optional[float]) -> bool:
        """Waits up to `timeout` seconds for any socket to move, or a name's answer; true
        when one did."""
        moved = bool(self.selector.select(timeout))
        try:
            while self._woken.recv(64):
                pass
        except (BlockingIOError, OSError):
            pass
        return moved

    def _resolved(self, _future: concurrent.futures.Future) -> None:
        # On the resolver thread.
        try:
            self._wake.send(b"!")
        except OSError:
            pass  # closed meanwhile, or already a byte waiting: either way nothing to wake

    def close_handles(self) -> None:
        """Closes every connection (a failed instance can no longer close its own)."""
        for h in list(self.socks):
            self.close(h)

    def close_all(self) -> None:
        self.close_handles()
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)
        self.selector.close()
        self._wake.close()
        self._woken.close()

    # -- the contract ---------------------------------------------------------------------

    def open(self, host: str, port: int, tls) -> object:
        if (host, port) not in self.allowed:
            log.warning("refused a connection to %s:%d: not a configured broker", host, port)
            return "not-permitted"
        context = None
        server_name = None
        if tls is not None:
            try:
                context = self._tls_context(tls)
            except (OSError, ssl.SSLError) as e:
                log.warning("TLS set-up failed: %s", e)
                return "tls-failed"
            server_name = getattr(tls, "server-name")
        s = _Sock(context, server_name)
        if _is_address(host):
            # Nothing to look up (`getaddrinfo` answers an address at once): connect now.
            error = self._connect(s, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            if error is not None:
                return error
        else:
            if self._resolver is None:
                self._resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="mqtt-resolver")
            s.lookup = self._resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
            s.lookup.add_done_callback(self._resolved)
        self.next += 1
        self.socks[self.next] = s
        return self.next

    def _connect(self, s: _Sock, resolve: Callable[[], list]) -> Optional[str]:
        """Starts the TCP connect of `s` to the first of the addresses `resolve` answers (a
        `getaddrinfo`, or the resolver's result); the error to answer, or None."""
        try:
            infos = resolve()
        except OSError as e:
            log.info("resolving a broker's address failed: %s", e)
            return s.fail("dns-failed")
        family, kind, proto, _, addr = infos[0]
        raw = socket.socket(family, kind, proto)
        raw.setblocking(False)
        # Every MQTT packet leaves at once, as the Rust hosts send them (TCP_NODELAY).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = raw.connect_ex(addr)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raw.close()
            return s.fail(_errno_name(code))
        s.sock = raw
        s.state = "connecting"
        self._watch(s)
        return None

    def _tls_context(self, tls) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca = getattr(tls, "ca-file")
        if ca is not None:
            context.load_verify_locations(cafile=ca)
        cert, key = getattr(tls, "client-cert-file"), getattr(tls, "client-key-file")
        if cert is not None:
            context.load_cert_chain(certfile=cert, keyfile=key)
        alpn = list(getattr(tls, "alpn"))
        if alpn:
            context.set_alpn_protocols(alpn)
        if not self.verify:
            log.warning("TLS certificate verification is off (the host was told so)")
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def status(self, handle: int) -> object:
        s = self.socks.get(handle)
        if s is None:
            return "bad-handle"
        if s.state == "resolving":
            if not s.lookup.done():
                return "connecting"
            error = self._connect(s, s.lookup.result)
            if error is not None:
                return error
        if s.state == "connecting":
            code = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code not in (0, errno.EINPROGRESS):
                self._forget(s)
                return s.fail(_errno_name(code))
            try:
                s.sock.getpeername()
            except OSError:
                return "connecting"  # not connected yet
            if s.tls is None:
                s.state = "open"
                s.wants_write = False
                self._watch(s)
            else:
                self._forget(s)
                try:
                    s.sock = s.tls.wrap_socket(s.sock, server_hostname=s.server_name, do_handshake_on_connect=False)
                except (OSError, ssl.SSLError) as e:
                    return s.fail(_error_name(e))
                s.state = "handshake"
                self._watch(s)
        if s.state == "handshake":
            try:
                s.sock.do_handshake()
            except ssl.SSLWantReadError:
                s.wants_write = False
                self._watch(s)
                return "connecting"
            except ssl.SSLWantWriteError:
                s.wants_write = True
                self._watch(s)
                return "connecting"
            except (OSError, ssl.SSLError) as e:
                self._forget(s)
                log.warning("TLS handshake failed: %s", e)
                return s.fail(_error_name(e))
            s.state = "open"
            s.wants_write = False
            self._watch(s)
        if s.state == "failed":
            return s.error
        return "connecting" if s.state != "open" else "open"

    def _usable(self, handle: int):
        """The socket, or the error to answer for it (unknown, or failed before)."""
        s = self.socks.get(handle)
        if s is None:
            return "bad-handle"
        return s.error if s.state == "failed" else s

    def send(self, handle: int, data: bytes) -> object:
        s = self._usable(handle)
        if not isinstance(s, _Sock):
            return s
        if s.state != "open":
            return 0
        try:
            n = s.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0
        except OSError as e:
            self._forget(s)
            return s.fail(_error_name(e))
        # Cut short: wake the client when the socket can take more.
        short = n < len(data)
        if short != s.wants_write:
            s.wants_write = short
            self._watch(s)
        return n

    def recv(self, handle: int, max_len: int) -> object:
        """Reads until the socket has nothing more or `max_len` is reached: a short answer
        tells the component there is nothing more now (the contract's `recv`)."""
        s = self._usable(handle)
        if not isinstance(s, _Sock):
            return s
        if s.state != "open":
            return b""
        out = bytearray()
        want = min(max_len, MAX_RECV)
        while len(out) < want:
            try:
                chunk = s.sock.recv(want - len(out))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as e:
                self._forget(s)
                if out:
                    # Hand over what came first; the failure is reported on the next call.
                    s.fail(_error_name(e))
                    break
                return s.fail(_error_name(e))
            if not chunk:
                self._forget(s)
                if out:
                    s.fail("closed")
                    break
                return s.fail("closed")
            out += chunk
        return bytes(out)

    def close(self, handle: int) -> None:
        s = self.socks.pop(handle, None)
        if s is None:
            return
        if s.lookup is not None:
            s.lookup.cancel()  # the answer, if it comes, goes nowhere
        self._forget(s)
        if s.sock is not None:
            try:
                s.sock.close()
            except OSError:
                pass


_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _layout(capacity: int, sector: int, write: int) -> Record:
    r = Record()
    setattr(r, "capacity", capacity)
    setattr(r, "sector-size", sector)
    setattr(r, "write-size", write)
    return r


class PacketIds:
    """What the instance said of its packet ids: (guest token, packet id, released) since
    the last `take`, and the broker its session lives on (when it said)."""

    def __init__(self) -> None:
        self.reported: List[Tuple[int, int, bool]] = []
        self.broker: Optional[int] = None

    def sent(self, publishes) -> None:
        self.reported += [(p.token, getattr(p, "packet-id"), p.released) for p in publishes]

    def session(self, broker: int) -> None:
        self.broker = broker


def define_imports(root: LinkerInstance, sockets: Sockets, flash, ids: PacketIds) -> None:
    """Every import the component needs, defined on the linker's root; `flash` is a
    `FileFlash` or None."""

    def iface(name: str):
        return root.add_instance(f"{PACKAGE}/{name}@{VERSION}")

    with iface("socket") as i:
        i.add_func("open", lambda _s, host, port, tls: sockets.open(host, port, tls))
        # Both of `status`'s cases are enums (text), so wasmtime-py wants them tagged.
        i.add_func("status", lambda _s, h: _tagged(sockets.status(h), ("connecting", "open")))
        i.add_func("send", lambda _s, h, data: sockets.send(h, data))
        i.add_func("recv", lambda _s, h, n: sockets.recv(h, n))
        i.add_func("close", lambda _s, h: sockets.close(h))
    with iface("clock") as i:
        i.add_func("now-ms", lambda _s: now_ms())
        i.add_func("wall-ms", lambda _s: time.time_ns() // 1_000_000)
    with iface("wifi") as i:
        # The operating system manages the link: it is up, and joining is not ours to do.
        i.add_func("state", lambda _s: "up")
        i.add_func("connect", lambda _s, ssid, pw: None)
        i.add_func("disconnect", lambda _s: None)
        i.add_func("rssi", lambda _s: None)
    with iface("storage") as i:
        if flash is None:
            # No flash: capacity 0, so the client keeps nothing across a restart of the
            # process (the contract's "host without storage"); nothing else is called.
            i.add_func("geometry", lambda _s: _layout(0, 4096, 4))
        else:
            i.add_func("geometry", lambda _s: _layout(flash.capacity, flash.sector_size, flash.write_size))
        i.add_func("read", lambda _s, off, n: flash.read(off, n) if flash else "out-of-range")
        i.add_func("write", lambda _s, off, data: flash.write(off, data) if flash else "out-of-range")
        i.add_func("erase", lambda _s, sector: flash.erase(sector) if flash else "out-of-range")
        i.add_func("sync", lambda _s: flash.sync() if flash else None)
    with iface("packet-ids") as i:
        # What a fresh instance needs to resume the session if this one fails (`Client`
        # keeps it; see the contract's `packet-ids`).
        i.add_func("sent", lambda _s, publishes: ids.sent(publishes))
        i.add_func("session", lambda _s, broker: ids.session(broker))
    with iface("log") as i:
        i.add_func("log", lambda _s, level, message: log.log(_LEVELS.get(level, logging.INFO), "%s", message))


def _tagged(value: str, ok: tuple) -> Variant:
    return Variant("ok", value) if value in ok else Variant("err", value)


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000
