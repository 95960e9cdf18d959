//! Host-side bindings generated from `wit/mqtt.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mqtt-client",
});
