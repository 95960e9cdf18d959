"""The compiled-component cache (`_precompiled`): a later process loads what an earlier one
compiled, and anything wasmtime will not load is compiled again, never trusted."""

import pytest
from wasmtime import Config, Engine

from mqtt_component import _precompiled
from mqtt_component._instance import ENGINE_SETTINGS_KEY, default_component, new_engine

# A fresh engine each time, as in a process started later.
engine = new_engine


def exports(component) -> list:
    return sorted(component.type.exports(engine()).keys())


def test_the_first_load_compiles_and_writes_the_code_the_next_load_takes(tmp_path):
    first, how = _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, tmp_path)
    assert how == "compiled"
    files = list(tmp_path.glob("*.cwasm"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    # A fresh engine, as in a process started later.
    second, how = _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, tmp_path)
    assert how == "cache"
    assert exports(second) == exports(first)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_compiled_again_and_replaced(tmp_path, damage):
    _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, tmp_path)
    (cached,) = tmp_path.glob("*.cwasm")
    good = cached.read_bytes()
    cached.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"\x7fELF" + b"\x00" * 4096, "empty": b""}[damage])
    component, how = _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, tmp_path)
    assert how == "compiled"
    assert exports(component)
    assert cached.read_bytes() == good


def test_other_engine_settings_get_their_own_file(tmp_path):
    _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, tmp_path)
    plain = Engine(Config())
    _, how = _precompiled.load(plain, default_component(), "epoch_interruption=false", tmp_path)
    assert how == "compiled"
    assert len(list(tmp_path.glob("*.cwasm"))) == 2


def test_a_cache_that_cannot_be_written_only_costs_the_compile(tmp_path):
    # A directory that cannot be made (a file is in the way): refused even to root.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    component, how = _precompiled.load(engine(), default_component(), ENGINE_SETTINGS_KEY, blocker / "cache")
    assert how == "compiled" and exports(component)


def test_the_cache_is_off_or_where_it_is_told(monkeypatch, tmp_path):
    monkeypatch.setenv("MQTT_COMPONENT_CACHE", "off")
    assert _precompiled.cache_dir() is None
    monkeypatch.setenv("MQTT_COMPONENT_CACHE", str(tmp_path))
    assert _precompiled.cache_dir() == tmp_path
    monkeypatch.delenv("MQTT_COMPONENT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _precompiled.cache_dir() == tmp_path / "mqtt-component"
