"""Faster value conversion for wasmtime-py 51's component API, applied once at import.

Why this exists: wasmtime-py converts every value crossing the component boundary through
ctypes, one Python call per element, and rebuilds a type's description (a variant's cases,
a list's element type) with a foreign call each time it is asked. A 16 KiB `recv` was 16,384
Python calls and a poll's list of events asked the event variant for its 14 cases once per
event; cProfile put most of a run there, not in MQTT. Three changes, invisible to callers:

- `list<u8>` (Python `bytes`) is converted as one block: the C array of values is laid out
  in a `bytearray` with slice assignments (C speed) and copied in with one `memmove`, and
  read back the same way. The values are plain `u8`s, so nothing else needs to be set.
- A type object's descriptions (cases, fields, element, payload, whether a variant needs
  tags) are computed once per object and kept: a type does not change.
- A C copy of a name or a string is made with one foreign call, not through a ctypes array
  built for each, and read back with one copy; a record's field names are encoded once per
  type, and a record is read back without them.

They are checked against wasmtime-py's own conversion in tests/test_fast_values.py. They are
applied only to the version they were written against (`requirements-test.txt` pins it): any
other version keeps wasmtime-py's code as it is.
"""

import ctypes
import functools
from importlib import metadata
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _types

# The version whose internals this was written against (and tested with).
VERSION = "51.0.0"

_VAL = ffi.wasmtime_component_val_t
_SIZE = ctypes.sizeof(_VAL)
# Where a `u8` sits in a value: the `of` union's first byte.
_U8_AT = _VAL.of.offset
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST
_RECORD_KIND = ffi.WASMTIME_COMPONENT_RECORD.value
_BOOL_KIND = ffi.WASMTIME_COMPONENT_BOOL

# wasmtime-py's own list conversions, which every list other than `list<u8>` still takes
# (and which the tests compare against).
STOCK_TO_C = _types.ListType.convert_to_c
STOCK_FROM_C = _types.ListType.convert_from_c
STOCK_RECORD_FROM_C = _types.RecordType.convert_from_c
STOCK_RECORD_TO_C = _types.RecordType.convert_to_c


def _bytes_to_c(val: Any, ptr: Any) -> None:
    if not isinstance(val, bytes):
        raise TypeError("expected bytes value")
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        layout = bytearray(n * _SIZE)
        layout[0::_SIZE] = bytes((_U8_KIND,)) * n
        layout[_U8_AT::_SIZE] = val
        ctypes.memmove(raw.data, bytes(layout), n * _SIZE)
    ptr.contents.kind = _LIST_KIND
    ptr.contents.of.list = raw


def _bytes_from_c(c: Any) -> bytes:
    items = c.of.list
    try:
        n = items.size
        if not n:
            return b""
        layout = ctypes.string_at(items.data, n * _SIZE)
        if layout[0::_SIZE] != bytes((_U8_KIND,)) * n:
            raise TypeError("a list<u8> holding something other than u8 values")
        return layout[_U8_AT::_SIZE]
    finally:
        # The elements own nothing (plain u8s): deleting the list frees the array.
        ffi.wasmtime_component_vallist_delete(ctypes.byref(items))


# `wasm_byte_vec_new` (allocate and copy in one foreign call), declared to take the bytes as
# they are: wasmtime-py's declaration wants a typed pointer, which costs a cast per call. A
# function object of our own (`dll[...]` makes a new one), so wasmtime-py's is left as it is.
_BYTE_VEC_NEW = ffi.dll["wasm_byte_vec_new"]
_BYTE_VEC_NEW.restype = None
_BYTE_VEC_NEW.argtypes = [ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p]


def _bytes_to_capi(s: Any) -> Any:
    """wasmtime-py's `bytes_to_capi` (every record field's name, every string, per value) in
    one foreign call, without the ctypes array it built for each copy. Eight of these a
    publish (six field names, the topic, the QoS) were a quarter of a publisher's time."""
    if not isinstance(s, (bytes, bytearray)):
        raise TypeError("expected bytes or bytearray")
    vec = ffi.wasm_byte_vec_t()
    _BYTE_VEC_NEW(ctypes.byref(vec), len(s), bytes(s))
    return vec


def _to_bytes(vec: Any) -> bytearray:
    """wasmtime-py's `to_bytes` (every string, enum case and variant case read back, and
    every record field's name) with one copy out of C, not an array type made per call."""
    return bytearray(ctypes.string_at(vec.data, vec.size)) if vec.size else bytearray()


def _to_str(vec: Any) -> str:
    return ctypes.string_at(vec.data, vec.size).decode("utf-8") if vec.size else ""


def _memoize(cls: type, name: str) -> None:
    """Turns the property `name` of `cls` into one computed once per object."""
    prop = getattr(cls, name)
    if isinstance(prop, property) and prop.fget is not None:
        cached = functools.cached_property(prop.fget)
        cached.__set_name__(cls, name)
        setattr(cls, name, cached)


def apply() -> bool:
    """Installs the changes once; False (and nothing changed) on another wasmtime-py."""
    if getattr(_types, "_mqtt_fast_values", False):
        return True
    try:
        if metadata.version("wasmtime") != VERSION:
            return False
    except metadata.PackageNotFoundError:
        return False
    # Not `FuncType`'s: wasmtime-py makes one per call and asks it for its params and result
    # once.
    for cls, names in [
        (_types.ListType, ["element"]),
        (_types.RecordType, ["fields"]),
        (_types.TupleType, ["elements"]),
        (_types.VariantType, ["cases"]),
        (_types.EnumType, ["names"]),
        (_types.OptionType, ["payload"]),
        (_types.ResultType, ["ok", "err"]),
        (_types.FlagsType, ["names"]),
    ]:
        for name in names:
            _memoize(cls, name)

    def convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if self._is_bytes():
            return _bytes_to_c(val, ptr)
        return STOCK_TO_C(self, store, val, ptr)

    def convert_from_c(self: Any, c: Any) -> Any:
        if self._is_bytes():
            return _bytes_from_c(c)
        return STOCK_FROM_C(self, c)

    _types.ListType.convert_to_c = convert_to_c
    _types.ListType.convert_from_c = convert_from_c

    def record_from_c(self: Any, c: Any) -> Any:
        # wasmtime gives a record's fields in the type's order: wasmtime-py reads each name
        # back from C only to assert that it is the one it expected (nine a message). A
        # record of another length takes wasmtime-py's way, assert and all.
        fields = self.fields
        raw = c.of.record
        if c.kind != _RECORD_KIND or raw.size != len(fields):
            return STOCK_RECORD_FROM_C(self, c)
        try:
            ret = _types.Record()
            for i, (name, ty) in enumerate(fields):
                field = raw.data[i]
                setattr(ret, name, ty.convert_from_c(field.val))
                # Taken: what it owned is Python's now, so deleting the record frees only the
                # rest (as wasmtime-py marks it).
                field.val.kind = _BOOL_KIND
                field.val.of.boolean = False
            return ret
        finally:
            ffi.wasmtime_component_valrecord_delete(raw)

    _types.RecordType.convert_from_c = record_from_c

    def record_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        # wasmtime-py's, but each field's name is encoded once per type, not once per value,
        # and copied to C straight into its place in the record (six names a publish).
        fields = self.__dict__.get("_mqtt_named_fields")
        if fields is None:
            fields = self.__dict__["_mqtt_named_fields"] = [(name, name.encode("utf-8"), ty) for name, ty in self.fields]
        raw = ffi.wasmtime_component_valrecord_t()
        ffi.wasmtime_component_valrecord_new_uninit(raw, len(fields))
        i = 0
        try:
            for name, encoded, ty in fields:
                entry = raw.data[i]
                ty.convert_to_c(store, getattr(val, name), ctypes.pointer(entry.val))
                _BYTE_VEC_NEW(ctypes.byref(entry.name), len(encoded), encoded)
                i += 1
            ptr.contents.kind = ffi.WASMTIME_COMPONENT_RECORD
            ptr.contents.of.record = raw
        except BaseException:
            # As wasmtime-py cleans up: the fields not filled in own nothing (their names are
            # empty, as wasmtime makes a record's entries), and the rest is freed.
            for j in range(i, len(fields)):
                raw.data[j].val.kind = _BOOL_KIND
                raw.data[j].val.of.boolean = False
            ffi.wasmtime_component_valrecord_delete(ctypes.byref(raw))
            raise

    _types.RecordType.convert_to_c = record_to_c

    # Whether a variant's cases need tags to tell apart: worked out from its cases at every
    # value, and it cannot change.
    tagged = _types.VariantLikeType._tagged

    def memo_tagged(self: Any) -> bool:
        known = self.__dict__.get("_mqtt_tagged")
        if known is None:
            known = self.__dict__["_mqtt_tagged"] = tagged(self)
        return known

    _types.VariantLikeType._tagged = memo_tagged
    ffi.bytes_to_capi = _bytes_to_capi
    ffi.to_bytes = _to_bytes
    ffi.to_str = _to_str
    _types._mqtt_fast_values = True
    return True
