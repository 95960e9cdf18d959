"""The component's `config` record, from keyword arguments.

The keys, their types and their defaults are the core's (`hosts/config_keys.json`, made from
the Rust core's one list of keys by `host/tests/host_config_keys.rs`), so this host cannot
drift from the others: a key takes the name a scenario file or the board's `--config` file
gives it (`keepalive_s`, or `keepalive`) or the field's own (`keepalive_secs`). A value of the wrong type is
refused here, naming the key; a value of the right type that cannot work (`port = 0`) is
refused by the component's `create`, naming the key too.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from wasmtime.component import Record

_KEYS = json.loads((Path(__file__).resolve().parents[2] / "config_keys.json").read_text())["keys"]
# Every name a key answers to: its written name, its other names in a file, its field name.
_BY_NAME: Dict[str, dict] = {}
for _k in _KEYS:
    for _name in [_k["name"], _k["field"], *_k["aliases"]]:
        _BY_NAME[_name] = _k

QOS_NAMES = ["at-most-once", "at-least-once", "exactly-once"]


class ConfigError(ValueError):
    """A config value that cannot work; the text names the key."""


@dataclass
class Will:
    """The last will: sent by the broker when the connection breaks without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    #: MQTT 5 Will Delay Interval, seconds.
    delay_s: Optional[int] = None


@dataclass
class Tls:
    """TLS for `ssl = True`. Verification is always on; `ca_file` trusts a CA of your own."""

    server_name: str
    ca_file: Optional[str] = None
    client_cert_file: Optional[str] = None
    client_key_file: Optional[str] = None
    #: ALPN protocols offered, in order (AWS IoT on port 443 takes `x-amzn-mqtt-ca`).
    alpn: List[str] = field(default_factory=list)


def _record(**fields: Any) -> Record:
    r = Record()
    for name, value in fields.items():
        setattr(r, name.replace("_", "-"), value)
    return r


def _int(key: str, value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key `{key}`: expected a whole number, got {value!r}")
    if not 0 <= value < (1 << bits):
        raise ConfigError(f"config key `{key}`: {value} is out of range (0..{(1 << bits) - 1})")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config key `{key}`: expected text, got {value!r}")
    return value


def _bytes(key: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ConfigError(f"config key `{key}`: expected bytes or text, got {value!r}")


def _convert(key: str, ty: str, value: Any) -> Any:
    """A Python value as the WIT field of type `ty` (as the core's list spells it) takes it."""
    if ty.startswith("Option<"):
        return None if value is None else _convert(key, ty[len("Option<"):-1], value)
    if ty == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key `{key}`: expected true or false, got {value!r}")
        return value
    if ty in ("u16", "u32", "u64"):
        return _int(key, value, int(ty[1:]))
    if ty == "String":
        return _text(key, value)
    if ty == "Vec<u8>":
        return _bytes(key, value)
    if ty == "Vec<String>":
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key `{key}`: expected a list of text, got {value!r}")
        return [_text(key, v) for v in value]
    if ty == "Vec<(String,String)>":
        pairs = list(value.items()) if isinstance(value, dict) else value
        try:
            return [(_text(key, a), _text(key, b)) for a, b in pairs]
        except (TypeError, ValueError):
            raise ConfigError(f"config key `{key}`: expected [name, value] pairs, got {value!r}") from None
    raise ConfigError(f"config key `{key}`: this host cannot convert a value of type {ty}")


def _structured(cls: type, key: str, value: Any) -> Any:
    """`value` as a `cls` (`Will`, `Tls`): one already, or a dict of its fields."""
    if isinstance(value, dict):
        try:
            value = cls(**value)
        except TypeError as e:
            raise ConfigError(f"config key `{key}`: {e}") from None
    if not isinstance(value, cls):
        raise ConfigError(f"config key `{key}`: expected a {cls.__name__}, got {value!r}")
    return value


def _will(w: Any) -> Record:
    w = _structured(Will, "will", w)
    if w.qos not in (0, 1, 2):
        raise ConfigError(f"config key `will`: qos {w.qos!r} must be 0, 1 or 2")
    return _record(
        topic=_text("will.topic", w.topic),
        payload=_bytes("will.payload", w.payload),
        qos=QOS_NAMES[w.qos],
        retain=bool(w.retain),
        delay_secs=None if w.delay_s is None else _int("will.delay_s", w.delay_s, 32),
        properties=None,
    )


def _tls(t: Any) -> Record:
    t = _structured(Tls, "ssl_params", t)
    return _record(
        server_name=_text("ssl_params.server_name", t.server_name),
        ca_file=t.ca_file,
        client_cert_file=t.client_cert_file,
        client_key_file=t.client_key_file,
        alpn=[_text("ssl_params.alpn", a) for a in t.alpn],
    )


def build_config(server: str, client_id: str, settings: Dict[str, Any]) -> Record:
    """The `config` record: the core's defaults, `server` and `client_id`, then `settings`
    (any key by either of its names, plus `will` and `ssl_params`)."""
    values = {k["field"]: k["default"] for k in _KEYS}
    # A default is written as a file writes it (bytes as text): convert it as a value.
    values = {f: _convert(f, _BY_NAME[f]["type"], v) if v is not None else None for f, v in values.items()}
    values["server"] = _text("server", server)
    values["client_id"] = _text("client_id", client_id)
    will = tls = None
    for key, value in settings.items():
        if key == "will":
            will = None if value is None else _will(value)
            continue
        if key == "ssl_params":
            tls = None if value is None else _tls(value)
            continue
        spec = _BY_NAME.get(key)
        if spec is None:
            raise ConfigError(f"config key `{key}`: no such key")
        values[spec["field"]] = _convert(key, spec["type"], value)
    return _record(**values, ssl_params=tls, will=will)


def config_value(config: Record, name: str) -> Any:
    """A field of a `config` record by its Python name."""
    return getattr(config, name.replace("_", "-"))
