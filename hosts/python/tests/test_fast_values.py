"""The conversions of mqtt_component/_fast_values.py against wasmtime-py's own, value by
value: `list<u8>` on the component's `socket.send`, records on its `socket.open`."""

import ctypes
import random

import pytest
from wasmtime import Store, _ffi as ffi
from wasmtime.component import Component

from mqtt_component import _fast_values, _instance

PAYLOADS = [b"", b"\x00", bytes(range(256)), random.Random(7).randbytes(5000)]


@pytest.fixture(scope="module")
def socket_param():
    """The type of parameter `index` of the component's `socket` import `func`, and a store to
    convert in."""
    engine = _instance.Runtime.engine()
    component = Component.from_file(engine, str(_instance.default_component()))
    socket = component.type.imports(engine)["mqtt-as:client/socket@0.1.0"].ty
    store = Store(engine)

    def param(func, index):
        (_, ty) = socket.exports(engine)[func].ty.params[index]
        return ty, store

    return param


@pytest.fixture(scope="module")
def bytes_list(socket_param):
    """`send`'s `data: list<u8>`, and a store to convert in."""
    return socket_param("send", 1)


def record(fields):
    """A wasmtime-py `Record` with `fields` (WIT names) set."""
    from wasmtime.component import Record

    value = Record()
    for name, v in fields.items():
        setattr(value, name, v)
    return value


def lowered(convert, ty, store, value):
    c = ffi.wasmtime_component_val_t()
    convert(ty, store, value, ctypes.pointer(c))
    return c


def test_it_is_applied_to_the_pinned_wasmtime_py():
    assert _fast_values.apply()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)} bytes")
def test_bytes_cross_either_way_as_wasmtime_py_makes_and_reads_them(bytes_list, payload):
    ty, store = bytes_list
    fast_to_c, fast_from_c = type(ty).convert_to_c, type(ty).convert_from_c
    assert fast_to_c is not _fast_values.STOCK_TO_C
    # Each direction of ours against wasmtime-py's, and ours both ways.
    assert _fast_values.STOCK_FROM_C(ty, lowered(fast_to_c, ty, store, payload)) == payload
    assert fast_from_c(ty, lowered(_fast_values.STOCK_TO_C, ty, store, payload)) == payload
    assert fast_from_c(ty, lowered(fast_to_c, ty, store, payload)) == payload


def test_a_list_u8_takes_only_bytes_as_before(bytes_list):
    ty, store = bytes_list
    with pytest.raises(TypeError):
        lowered(type(ty).convert_to_c, ty, store, [1, 2, 3])


def test_a_type_describes_itself_once(bytes_list):
    ty, _ = bytes_list
    assert ty.element is ty.element


@pytest.mark.parametrize("text", [b"", b"bench/py/ours", "topic/\u00e9".encode()])
def test_a_name_or_string_is_copied_to_c_whole(text):
    vec = ffi.bytes_to_capi(text)
    try:
        assert ffi.to_bytes(vec) == text
    finally:
        ffi.wasm_byte_vec_delete(ctypes.byref(vec))


@pytest.fixture(scope="module")
def tls_params(socket_param):
    """`socket.open`'s `tls-params` record (strings, options, a list of strings), and a store."""
    tls, store = socket_param("open", 2)
    return tls.payload, store


@pytest.mark.parametrize(
    "fields",
    [
        {"server-name": "", "ca-file": None, "client-cert-file": None, "client-key-file": None, "alpn": []},
        {"server-name": "broker.\u00e9xample", "ca-file": "/ca.pem", "client-cert-file": "c", "client-key-file": "k", "alpn": ["x-amzn-mqtt-ca", "mqtt"]},
    ],
    ids=["empty", "full"],
)
def test_a_record_reads_back_as_wasmtime_py_reads_it(tls_params, fields):
    ty, store = tls_params
    value = record(fields)
    ours, stock = type(ty).convert_from_c, _fast_values.STOCK_RECORD_FROM_C
    assert ours is not stock
    # Ours and wasmtime-py's on the same lowered record, field by field.
    assert vars(ours(ty, lowered(type(ty).convert_to_c, ty, store, value))) == fields
    assert vars(stock(ty, lowered(type(ty).convert_to_c, ty, store, value))) == fields


def test_a_record_crosses_to_c_as_wasmtime_py_makes_it(tls_params):
    ty, store = tls_params
    fields = {"server-name": "b", "ca-file": None, "client-cert-file": "c", "client-key-file": None, "alpn": ["mqtt"]}
    value = record(fields)
    ours = type(ty).convert_to_c
    assert ours is not _fast_values.STOCK_RECORD_TO_C
    assert vars(_fast_values.STOCK_RECORD_FROM_C(ty, lowered(ours, ty, store, value))) == fields


def test_a_record_with_a_bad_field_is_refused_as_wasmtime_py_refuses_it(tls_params):
    ty, store = tls_params
    value = record({"server-name": "b", "ca-file": 7, "client-cert-file": None, "client-key-file": None, "alpn": []})
    # The second field is not a string: both refuse it the same way, and again and again (what
    # the first field made is freed each time).
    for convert in (type(ty).convert_to_c, _fast_values.STOCK_RECORD_TO_C):
        for _ in range(100):
            with pytest.raises(ValueError, match="not valid for this variant"):
                lowered(convert, ty, store, value)
