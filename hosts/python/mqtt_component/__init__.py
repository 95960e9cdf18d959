"""The resilient MQTT client component (`host/component/mqtt_client.wasm`), hosted in
Python with wasmtime-py: the same bytes the simulator and the Rust hosts run."""

from ._client import Client, ClientError, ClientFailed, Event, Message
from ._config import ConfigError, Tls, Will
from ._store import StoreError

__all__ = ["Client", "ClientError", "ClientFailed", "ConfigError", "Event", "Message", "StoreError", "Tls", "Will"]
