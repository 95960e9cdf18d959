"""`Client`: the component, run by the calling thread.

The component never blocks and never waits: `poll` hands it the clock, it does what is due
(read, acknowledge, republish, ping, reconnect) and returns its events and when it wants to
be polled again. This class is the loop around it: `poll(timeout)` calls it, and between
calls waits on the sockets and that deadline, as paho's `loop()` does. Requests
(`publish`, `subscribe`, ...) are queued at once and go out on the next `poll`.

If the instance fails (a trap, or a call the watchdog stopped), it is replaced, as the Rust
host's `Device` replaces it: a fresh instance gets the same config, resumes the session
under the packet ids the failed one reported, subscribes again, is handed every publish
accepted and not yet completed (with room in its queue for the subscriptions besides), and
then connects if it was asked to (trying again while that fails), so nothing accepted is
lost. The application keeps its tokens: they are this class's, not the instance's.
"""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from wasmtime.component import Linker, Variant

from . import _platform
from ._config import QOS_NAMES, _record, build_config, config_value
from ._instance import Instance, Runtime, Trap, default_component
from ._store import FileFlash

# A token whose publish is kept in the store: it names the store's record, so it is the
# same in every instance (the core's `STORED_TOKEN`).
STORED_TOKEN = 1 << 63
# Restarts without a poll going through in between before the client gives up.
MAX_RESTARTS_IN_A_ROW = 3


class ClientError(Exception):
    """A request the client refused at once (`invalid`, `queue-full`, `closed`,
    `store-full`, `storage`): `kind` says which, the text why."""

    def __init__(self, kind: str, detail: Optional[str] = None):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class ClientFailed(Exception):
    """The component failed and could not be replaced (its replacement failed too)."""


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retained: bool
    #: The broker says it may have sent it before.
    dup: bool
    #: MQTT 5 properties, as the component's `publish-properties` record (None under 3.1.1).
    properties: Any = None


@dataclass
class Event:
    """What one poll reported. `kind` is the contract's event name: `up` (value: session
    present), `down` (why, as text), `message` (a `Message`), `published` (token),
    `publish-failed` ((token, reason code)), `subscribed` / `unsubscribed` ((token, codes)),
    `broker-up` (bool), `link` (state), `connect-failed` (why), `discarded` (count so far),
    `auth` ((reason code, data)), `error` (text)."""

    kind: str
    value: Any = None


def _qos(level: int) -> str:
    if level not in (0, 1, 2):
        raise ValueError(f"qos {level!r}: must be 0, 1 or 2")
    return QOS_NAMES[level]


def _down_reason(reason: Any) -> str:
    if isinstance(reason, Variant):
        return reason.tag if reason.payload is None else f"{reason.tag}: {reason.payload}"
    return str(reason)


def _event(raw: Variant) -> Event:
    tag, value = raw.tag, raw.payload
    if tag == "message":
        return Event(
            "message",
            Message(
                topic=value.topic,
                payload=bytes(value.payload),
                qos=QOS_NAMES.index(value.qos),
                retained=value.retained,
                dup=value.dup,
                properties=value.properties,
            ),
        )
    if tag == "down":
        return Event("down", _down_reason(value))
    if tag in ("subscribed", "unsubscribed"):
        token, codes = value
        return Event(tag, (token, list(codes)))
    if tag == "auth":
        code, data = value
        return Event(tag, (code, bytes(data)))
    return Event(tag, value)


class Client:
    """A resilient MQTT client: the component, with this process's sockets and clock.

    ``Client("broker.local", "sensor-1", keepalive_s=30, clean=False)`` takes every config key
    the other hosts take, by the name a settings file gives it or by its field name, plus
    ``will=Will(...)`` and ``ssl_params=Tls(...)``. Defaults are the core's: nothing the
    client acknowledged is ever dropped (``backpressure``), 1883 (8883 with ``ssl``).

    ``store="client.flash"`` keeps what the client accepted and the broker has not yet
    acknowledged in that file (the Rust hosts' store format), so a process that dies (killed,
    crashed, power cut) loses none of it: the next client on the file sends it. Without a
    store, accepted messages survive outages and failures of the component while the
    process lives.

    Nothing happens until ``poll``: call it in a loop (``for event in client.events(): ...``).
    """

    def __init__(
        self, server: str, client_id: str, *, store: Union[str, Path, None] = None, component: Union[str, Path, None] = None, **settings: Any
    ):
        self.config = build_config(server, client_id, settings)
        self._flash = FileFlash(str(store)) if store is not None else None
        self._live: Optional[Instance] = None
        self._sockets: Optional[_platform.Sockets] = None
        try:
            allowed = _platform.allowed_brokers(
                server, config_value(self.config, "port"), config_value(self.config, "ssl"), config_value(self.config, "servers")
            )
            self._sockets = _platform.Sockets(allowed)
            self._ids = _platform.PacketIds()
            self._component = Runtime.component(Path(component) if component is not None else default_component())
            self._linker = Linker(Runtime.engine())
            with self._linker.root() as root:
                _platform.define_imports(root, self._sockets, self._flash, self._ids)
            self._live = self._fresh_instance()
        except BaseException:
            # Refused (or failed) before it ran: the store file's lock must not outlive it.
            self.close()
            raise
        self._max_messages = config_value(self.config, "queue_len")
        self._failed: Optional[str] = None
        self.restarts = 0
        self._failing = 0  # restarts since a poll last went through
        # The application's tokens, and what they stand for until completed, so that a fresh
        # instance can be handed all of it. Tokens of stored publishes are the store's own.
        self._next_token = 1
        self._to_host: Dict[int, Optional[int]] = {}  # guest token -> ours (None: not the app's)
        self._unacked: Dict[int, Any] = {}  # token -> the `publish` record, in order
        self._packet_ids: Dict[int, Tuple[int, bool]] = {}  # token -> (packet id, released)
        self._requests: Dict[int, Tuple[str, Any]] = {}  # token -> ("subscribe"|"unsubscribe", arg)
        self._subscribed: List[Any] = []  # answered subscriptions, to make again
        self._session_broker = 0
        self._connect_requested = False
        self._reported_up = False
        self._ever_up = False
        self._backlog: List[Event] = []
        # After a restart, a failed first attempt of the fresh instance is an outage like
        # any other (the application's connect succeeded before), retried for it until `up`
        # or until the application calls `connect` or `disconnect` itself: whether that
        # holds, and when to try again.
        self._restarted = False
        self._retry_connect_at: Optional[int] = None

    # -- the instance and its replacement ------------------------------------------------

    def _fresh_instance(self, room: int = 0, was_up: bool = False) -> Instance:
        """`room`: places in its queue beyond the config's `max_queued` (see `_restart`).
        `was_up`: an instance of this client was up once, so the power-up purge
        (`clean_init`) is behind it: on a session kept after it (`clean` false) the fresh
        instance resumes the session instead of purging it again, and with it what the broker
        held for the client (as the Rust host does; see its `Device::replay_config`). Not with
        an empty client id: the fresh instance does not know the id the broker assigned."""
        config = self.config
        resume = was_up and not config_value(config, "clean") and config_value(config, "client_id") != ""
        if room or resume:
            config = copy.copy(config)
            setattr(config, "max-queued", config_value(config, "max_queued") + room)
            if resume:
                setattr(config, "clean-init", False)
        live = Instance(self._linker, self._component, config)
        if live.refused is not None:
            raise ClientError(live.refused.tag, live.refused.payload)
        return live

    def _call(self, name: str, *args: Any) -> Any:
        """A method of the instance; if the instance fails, it is replaced and the call is
        not made again (`None` is returned: the replacement was handed what the call would
        have done, or the call was a poll, made again by the caller's loop)."""
        self._usable()
        try:
            return self._live.method(name, *args)
        except Trap as why:
            self._restart(why)
            return None

    def _usable(self) -> None:
        """Raises when no call can be made: the client failed for good, or was closed."""
        if self._failed:
            raise ClientFailed(self._failed)
        if self._live is None:
            raise ClientError("closed", "close() was called")

    def _restart(self, why: Trap) -> None:
        """Replaces the failed instance (see the module's comment); a failure while doing it
        ends the client, and so does a fresh instance failing again before a poll of it went
        through (a failure that every instance meets would otherwise restart them for ever)."""
        self._take_ids()
        self._sockets.close_handles()
        self.restarts += 1
        self._restarted = True
        self._failing += 1
        if self._failing > MAX_RESTARTS_IN_A_ROW:
            self._failed = f"the component failed {self._failing} times in a row, the last {why}"
            raise ClientFailed(self._failed)
        try:
            # The answered subscriptions it is given again count against `max_queued` in the
            # fresh instance until answered (they did not in the failed one): without room
            # for them, a full queue lost its last publishes to `queue-full` here.
            self._live = self._fresh_instance(room=len(self._subscribed), was_up=self._ever_up)
            if self._reported_up:
                # The old connection went with the old instance, which can no longer say so.
                self._reported_up = False
                self._backlog.append(Event("down", "socket: closed"))
            self._backlog.append(Event("error", f"component restarted after a failure {why}"))
            old_to_host, self._to_host = self._to_host, {}
            # What the store gave back keeps its token and is not handed over again (that
            # would send it twice); what it no longer keeps is handed over with the rest.
            # Asked first: once connected, the fresh instance may complete some of them
            # within any call, and a record closed then is not one to hand over again.
            stored = set()
            for guest in old_to_host:
                if guest & STORED_TOKEN and self._live.method("stored", guest):
                    self._to_host[guest] = guest
                    stored.add(guest)
            resumed = self._resume_in_flight()
            for subs in self._subscribed:
                self._map(self._refused(self._live.method("subscribe", subs, None)), None)
            for token, (kind, arg) in self._requests.items():
                answer = self._live.method(kind, arg, None) if kind == "subscribe" else self._live.method(kind, arg)
                self._map(self._refused(answer), token)
            rest = [(t, p) for t, p in self._unacked.items() if t not in resumed and t not in stored]
            if rest:
                results = self._live.method("publish", _platform.now_ms(), [p for _, p in rest])
                for (token, _), result in zip(rest, results):
                    self._replayed(token, result)
            # Last: before it connects nothing handed over is answered, and there is no `up`
            # yet, which would count against `max_queued` until a poll handed it over.
            if self._connect_requested:
                self._refused(self._live.method("connect"))
        except (Trap, ClientError) as e:
            self._failed = f"the component failed ({why}) and its replacement failed too: {e}"
            raise ClientFailed(self._failed) from e

    def _resume_in_flight(self) -> set:
        """Hands the fresh instance every unacknowledged publish the failed one had sent,
        under its packet id, before it connects (MQTT-4.4.0-1); returns their tokens."""
        in_flight = [(t, p) for t, p in self._unacked.items() if t in self._packet_ids]
        if not in_flight and self._session_broker == 0:
            return set()
        ids = [_record(token=0, packet_id=self._packet_ids[t][0], released=self._packet_ids[t][1]) for t, _ in in_flight]
        self._live.method("resume", self._session_broker, ids)
        if not in_flight:
            return set()
        results = self._live.method("publish", _platform.now_ms(), [p for _, p in in_flight])
        for (token, _), result in zip(in_flight, results):
            self._replayed(token, result)
        return {t for t, _ in in_flight}

    def _replayed(self, token: int, result: Any) -> None:
        if isinstance(result, Variant):
            # Refused by an instance with the same config: it fails now, never silently.
            self._unacked.pop(token, None)
            self._packet_ids.pop(token, None)
            self._backlog.append(Event("error", f"replay after restart refused: {result.tag}"))
            self._backlog.append(Event("publish-failed", (token, 0)))
        else:
            self._to_host[result] = token

    def _take_ids(self) -> None:
        """What the instance said of its packet ids, under the application's tokens."""
        if self._ids.broker is not None:
            self._session_broker = self._ids.broker
            self._ids.broker = None
        for guest, packet_id, released in self._ids.reported:
            token = self._to_host.get(guest)
            if token is not None and token in self._unacked:
                self._packet_ids[token] = (packet_id, released)
        self._ids.reported = []

    def _map(self, guest: int, token: Optional[int]) -> None:
        self._to_host[guest] = token

    def _new_token(self, guest: int) -> int:
        """The application's token for what the instance took under `guest`."""
        if guest & STORED_TOKEN:
            token = guest
        else:
            token = self._next_token
            self._next_token += 1
        self._to_host[guest] = token
        return token

    @staticmethod
    def _refused(result: Any) -> Any:
        if isinstance(result, Variant):
            raise ClientError(result.tag, result.payload)
        return result

    def _translate(self, e: Event) -> Optional[Event]:
        """The instance's event under the application's tokens (None: not the application's,
        such as the answer to a subscription made again after a restart)."""
        if e.kind == "up":
            self._reported_up = True
            self._ever_up = True
            self._restarted = False
        elif e.kind == "down":
            self._reported_up = False
        elif e.kind == "connect-failed" and self._restarted and self._connect_requested:
            # As the Rust host does: the host stands in for the application that wanted the
            # connection, and tries again (the instance itself never retries a first attempt).
            backoff = min(config_value(self.config, "backoff_max_ms"), 5_000)
            self._retry_connect_at = _platform.now_ms() + backoff
            return Event("error", f"reconnect after restart failed: {e.value}")
        if e.kind not in ("published", "publish-failed", "subscribed", "unsubscribed"):
            return e
        guest = e.value if e.kind == "published" else e.value[0]
        # A token the instance had before this host knew it (a stored publish recovered at
        # start-up) is the store's, and the application's as it is.
        token = self._to_host.pop(guest, guest)
        if e.kind in ("published", "publish-failed"):
            # Done with, here, even when the store keeps it for the next client (code 1):
            # a fresh instance has it from the store, and handing it over again would store
            # it twice (the next client then sent it twice, at QoS 2 too).
            self._unacked.pop(token, None)
            self._packet_ids.pop(token, None)
        else:
            request = self._requests.pop(token, None) if token is not None else None
            if e.kind == "subscribed" and request is not None:
                self._subscribed.append(request[1])
            if e.kind == "unsubscribed" and request is not None:
                gone = set(request[1])
                self._subscribed = [kept for kept in ([s for s in subs if s.filter not in gone] for subs in self._subscribed) if kept]
        if token is None:
            return None
        return Event(e.kind, token if e.kind == "published" else (token,) + tuple(e.value[1:]))

    # -- the application's side ---------------------------------------------------------

    def connect(self) -> None:
        """Start connecting (it goes on in `poll`; `up` or `connect-failed` tells how it went)."""
        self._connect_requested = True
        # The application's own attempt: its failure is its to hear of (`connect-failed`),
        # and it replaces any retry made for it after a restart.
        self._restarted = False
        self._retry_connect_at = None
        self._refused(self._call("connect"))

    def publish(self, topic: str, payload: Union[bytes, str], qos: int = 1, retain: bool = False) -> int:
        """Queue a publish; returns its token, reported later by a `published` event (QoS 1:
        PUBACK; QoS 2: PUBCOMP; QoS 0: written) or `publish-failed`. Raises `ClientError`
        when the client refuses it."""
        result = self.publish_many([(topic, payload, qos, retain)])[0]
        if isinstance(result, ClientError):
            raise result
        return result

    def publish_many(self, publishes: Iterable[Tuple[str, Union[bytes, str], int, bool]]) -> List[Union[int, ClientError]]:
        """Queue several publishes in one call: one answer per publish, in order, its token or
        the `ClientError` that refused it. Each is judged on its own: one refused as invalid
        does not stop those after it; after any other refusal (`queue-full`, `closed`), none
        is taken, and each is refused the same way."""
        records = []
        for topic, payload, qos, retain in publishes:
            data = payload.encode() if isinstance(payload, str) else bytes(payload)
            records.append(_record(topic=topic, payload=data, qos=_qos(qos), retain=bool(retain), properties=None, deadline_ms=None))
        self._usable()
        answers: List[Union[int, ClientError]] = []
        stop = ClientError("queue-full")
        # As many as there is room for (see `_room`), and more while the client refused some
        # as invalid, which takes no place: one call unless it did.
        while len(answers) < len(records) and self._room() > 0:
            start = len(answers)
            offered = records[start : start + self._room()]
            results = self._call("publish", _platform.now_ms(), offered)
            if results is None:
                # The instance failed in this call; its replacement knows nothing of these.
                results = self._call("publish", _platform.now_ms(), offered)
            if results is None:
                raise ClientFailed("the component failed twice in a row taking these publishes")
            for record, result in zip(offered, results):
                if isinstance(result, Variant):
                    answers.append(ClientError(result.tag, result.payload))
                else:
                    token = self._new_token(result)
                    self._unacked[token] = record
                    answers.append(token)
            refusals = [a for a in answers[start:] if isinstance(a, ClientError) and a.kind != "invalid"]
            if refusals or len(results) < len(offered):
                stop = refusals[-1] if refusals else stop
                break
        return answers + [ClientError(stop.kind, stop.detail) for _ in records[len(answers) :]]

    def subscribe(self, filters: Union[str, Sequence[Tuple[str, int]]], qos: int = 1) -> int:
        """Subscribe to one filter (at `qos`) or to several `(filter, qos)` pairs; returns the
        token a `subscribed` event reports with the broker's answer."""
        pairs = [(filters, qos)] if isinstance(filters, str) else list(filters)
        subs = [_record(filter=f, qos=_qos(q), no_local=False, retain_as_published=False, retain_handling=0) for f, q in pairs]
        return self._request("subscribe", subs)

    def unsubscribe(self, filters: Union[str, Sequence[str]]) -> int:
        return self._request("unsubscribe", [filters] if isinstance(filters, str) else list(filters))

    def _room(self) -> int:
        """Places left for the application's requests: `max_queued` less the publishes and
        subscription changes it handed over that have not completed. The instance holds no
        more than that already, but after a restart it may take more: the fresh one is given
        room for the subscriptions it makes again, and keeps it once they are answered. Held
        to the config's figure, the next restart has room for all of it again."""
        return max(0, config_value(self.config, "max_queued") - len(self._unacked) - len(self._requests))

    def _request(self, kind: str, arg: Any) -> int:
        def ask():
            return self._live.method(kind, arg, None) if kind == "subscribe" else self._live.method(kind, arg)

        self._usable()
        if self._room() == 0:
            raise ClientError("queue-full", None)
        try:
            guest = self._refused(ask())
        except Trap as why:
            self._restart(why)
            guest = self._refused(ask())
        token = self._new_token(guest)
        self._requests[token] = (kind, arg)
        return token

    def disconnect(self) -> None:
        """Send DISCONNECT (no will) on the next poll and stop; unacknowledged publishes are
        reported `publish-failed` (code 1 with a store: kept for the next client)."""
        self._connect_requested = False
        self._restarted = False
        self._retry_connect_at = None
        restarts = self.restarts
        self._call("disconnect")
        if self.restarts != restarts:
            # The instance failed inside the call: the fresh one was handed back what was
            # accepted, and is closed too, so that those fail now (as Rust's `Device` does).
            # Before, it was left open, taking publishes that would never be sent.
            self._call("disconnect")

    def is_connected(self) -> bool:
        return bool(self._call("is-connected"))

    def stats(self) -> dict:
        s = self._call("stats") or self._call("stats")
        out = {k.replace("-", "_"): v for k, v in vars(s).items()} if s is not None else {}
        out["restarts"] = self.restarts
        return out

    def poll(self, timeout: Optional[float] = None) -> List[Event]:
        """Run the client until it has something to report or `timeout` seconds pass (None:
        until it reports something). Returns the events, possibly none."""
        end = None if timeout is None else _platform.now_ms() + int(timeout * 1000)
        while True:
            if self._retry_connect_at is not None and _platform.now_ms() >= self._retry_connect_at:
                self._retry_connect_at = None
                self._refused(self._call("connect"))
            polled = self._call("poll", _platform.now_ms(), "up", self._max_messages)
            if polled is not None:
                self._failing = 0
            self._take_ids()
            events, self._backlog = self._backlog, []
            deadline = None
            if polled is not None:
                deadline = polled.__dict__["next-deadline"]
                events += [_event(e) for e in polled.events]
            events = [t for t in (self._translate(e) for e in events) if t is not None]
            if events:
                return events
            if polled is None:
                continue  # replaced: poll the fresh instance at once
            now = _platform.now_ms()
            wake = deadline
            if self._retry_connect_at is not None:
                wake = self._retry_connect_at if wake is None else min(wake, self._retry_connect_at)
            if end is not None:
                if now >= end:
                    return []
                wake = end if wake is None else min(wake, end)
            if wake is None and not self._sockets.watching():
                return []  # nothing can happen: no socket, no deadline (closed, say)
            self._sockets.wait(None if wake is None else max(0, wake - now) / 1000)

    def events(self, timeout: Optional[float] = None):
        """Every event, as it comes, until `timeout` seconds pass with none (None: forever)."""
        while True:
            got = self.poll(timeout)
            if not got:
                return
            yield from got

    def close(self) -> None:
        """Drop the instance and close its sockets (no DISCONNECT: call `disconnect` and poll
        first for a clean end). With a store, what was not acknowledged stays in it."""
        if self._live is not None:
            self._live.drop()
            self._live = None
        if self._sockets is not None:
            self._sockets.close_all()
            self._sockets = None
        if self._flash is not None:
            self._flash.close()
            self._flash = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
