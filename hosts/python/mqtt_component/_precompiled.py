"""The component compiled once per machine, not once per process.

Compiling the component with wasmtime's Cranelift takes ~175 ms at every start of a Python
process; loading the machine code a previous start compiled takes well under a millisecond.
So the first process to load a component writes what it compiled to a cache directory, and
later ones load that (as the Rust host embeds code precompiled at build time).

The file's name is a hash of everything the code depends on: the component's bytes, the
wasmtime-py version and the engine settings. wasmtime checks again on load that the code was
compiled by this wasmtime, for this engine's settings and this CPU; anything it refuses
(another version's file, a truncated or damaged one) is compiled afresh and written over.

What is loaded is machine code that runs in this process, as a `.so` would: the directory
must be the user's own (`$MQTT_COMPONENT_CACHE`, else `$XDG_CACHE_HOME/mqtt-component`, else
`~/.cache/mqtt-component`). `MQTT_COMPONENT_CACHE=off` turns the cache off.
"""

import hashlib
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Optional, Tuple

from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component


def cache_dir() -> Optional[Path]:
    """Where compiled components are kept, or None when the cache is off."""
    named = os.environ.get("MQTT_COMPONENT_CACHE")
    if named == "off":
        return None
    if named:
        return Path(named)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mqtt-component"


def load(engine: Engine, path: Path, settings: str, directory: Optional[Path]) -> Tuple[Component, str]:
    """The component at `path` for `engine` (made with `settings`, which name everything
    about it that changes the code), and how it was got: "cache" or "compiled"."""
    wasm = path.read_bytes()
    if directory is None:
        return Component(engine, wasm), "compiled"
    key = hashlib.sha256()
    for part in (wasm, version("wasmtime").encode(), settings.encode()):
        key.update(len(part).to_bytes(8, "little"))
        key.update(part)
    cached = directory / f"{path.stem}-{key.hexdigest()[:32]}.cwasm"
    if cached.exists():
        try:
            return Component.deserialize_file(engine, str(cached)), "cache"
        except WasmtimeError:
            pass  # Not code this wasmtime can run (damaged, or made elsewhere): made again below.
    component = Component(engine, wasm)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then renamed: a process that starts meanwhile
        # finds either no file or a complete one.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", delete=False) as f:
            f.write(component.serialize())
        os.replace(f.name, cached)
    except OSError:
        pass  # A cache that cannot be written only costs the next start its compile.
    return component, "compiled"
