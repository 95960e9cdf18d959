"""One instance of the component, its calls bounded by the watchdog.

Every call gets a budget on wasmtime's epoch clock, which a thread of this module advances:
a call that runs away (a bug) traps after about a second instead of hanging its host, as
under the Rust host's `Watchdog::Clock`. A trap ends the instance; `Client` replaces it.
"""

import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

from wasmtime import Config as EngineConfig, Engine, Store, WasmtimeError
from wasmtime.component import Component, Linker, ResourceAny, Variant

from . import _fast_values, _platform, _precompiled

# wasmtime-py's conversions, a byte and a type description at a time, were most of a run's
# time (see _fast_values).
_fast_values.apply()

# The epoch advances every `TICK_S`; a call may run `CALL_TICKS` ticks (the Rust host's
# figures): a legitimate call takes microseconds, so only a runaway reaches it.
TICK_S = 0.1
CALL_TICKS = 10

_INTERFACE = f"{_platform.PACKAGE}/client@{_platform.VERSION}"


class Trap(Exception):
    """The instance failed inside a call (a trap, or the watchdog stopped it)."""


def default_component() -> Path:
    """`MQTT_COMPONENT`, or the component committed in this repository (`host/component/`)."""
    named = os.environ.get("MQTT_COMPONENT")
    if named:
        return Path(named)
    return Path(__file__).resolve().parents[3] / "host" / "component" / "mqtt_client.wasm"


# Every engine setting, in one place: applied to the engine, and the key `_precompiled` files
# the compiled code under (code compiled under other settings does not load).
ENGINE_SETTINGS = {"epoch_interruption": True}
ENGINE_SETTINGS_KEY = ",".join(f"{name}={value}" for name, value in sorted(ENGINE_SETTINGS.items()))


def new_engine() -> Engine:
    """An engine with `ENGINE_SETTINGS`."""
    config = EngineConfig()
    for name, value in ENGINE_SETTINGS.items():
        setattr(config, name, value)
    return Engine(config)


class Runtime:
    """One engine for every client of the process, the components it compiled, and the
    thread that advances its epoch."""

    _lock = threading.Lock()
    _engine: Optional[Engine] = None
    _components: dict = {}

    @classmethod
    def engine(cls) -> Engine:
        with cls._lock:
            if cls._engine is None:
                cls._engine = new_engine()
                threading.Thread(target=cls._tick, args=(cls._engine,), name="mqtt-component-epoch", daemon=True).start()
            return cls._engine

    @staticmethod
    def _tick(engine: Engine) -> None:
        while True:
            time.sleep(TICK_S)
            engine.increment_epoch()

    @classmethod
    def component(cls, path: Path) -> Component:
        engine = cls.engine()
        key = str(path)
        with cls._lock:
            if key not in cls._components:
                cls._components[key], _ = _precompiled.load(engine, path, ENGINE_SETTINGS_KEY, _precompiled.cache_dir())
            return cls._components[key]


class Instance:
    """A fresh instance of `component` on `linker`, its client made from `config`. Raises
    `Variant` errors of `create` as they are (the caller names them)."""

    def __init__(self, linker: Linker, component: Component, config: Any):
        self.store = Store(Runtime.engine())
        self._funcs: dict = {}
        # Instantiating runs the component's start-up code: it needs a budget too.
        self.store.set_epoch_deadline(CALL_TICKS)
        try:
            self._instance = linker.instantiate(self.store, component)
        except WasmtimeError as e:
            raise Trap(f"instantiating: {e}") from e
        self.starve_next = False
        created = self.call("[static]client.create", config)
        self.client: Optional[ResourceAny] = None if isinstance(created, Variant) else created
        self.refused = created if isinstance(created, Variant) else None

    def _func(self, name: str):
        f = self._funcs.get(name)
        if f is None:
            iface = self._instance.get_export_index(self.store, _INTERFACE)
            index = self._instance.get_export_index(self.store, name, iface)
            f = self._instance.get_func(self.store, index) if index is not None else None
            if f is None:
                raise Trap(f"the component exports no `{name}`")
            self._funcs[name] = f
        return f

    def call(self, name: str, *args: Any) -> Any:
        f = self._func(name)
        # A test can make the next call trap at once, as a runaway would after its budget.
        self.store.set_epoch_deadline(0 if self.starve_next else CALL_TICKS)
        self.starve_next = False
        try:
            result = f(self.store, *args)
            f.post_return(self.store)
        except WasmtimeError as e:
            raise Trap(f"in `{name}`: {e}") from e
        return result

    def method(self, name: str, *args: Any) -> Any:
        return self.call(f"[method]client.{name}", self.client, *args)

    def drop(self) -> None:
        if self.client is not None:
            try:
                self.client.drop(self.store)
            except WasmtimeError:
                pass
            self.client = None
