//! The codec decision in numbers: the same job (decode a stream of any MQTT packets, 3.1.1 or
//! 5.0, and encode each again) built for wasm32 with the component's size settings, once on
//! our codec and once on `mqtt-proto` (`bench/codec-size/`). Each probe is run on a sample
//! stream of every packet type under wasmtime, so a figure is only reported for a probe that
//! does the whole job.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use mqtt_protocol::codec::{ConnAck, Connect, Disconnect, LastWill, PubResponse, Publish, SubAck, Subscribe, Unsubscribe};
use mqtt_protocol::{Packet, PacketId, Properties, PropertyValues, ProtocolVersion, QoS, SubscribeFilter};

pub struct CodecSize {
    pub codec: &'static str,
    pub bytes: usize,
}

pub fn measure() -> anyhow::Result<Vec<CodecSize>> {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for (codec, feature) in [("this project's codec", "ours"), ("mqtt-proto 0.4", "mqtt-proto")] {
        let target = bench.join("../target/codec-size").join(feature);
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "--release", "--target", "wasm32-unknown-unknown", "--features", feature, "--manifest-path"])
            .arg(bench.join("codec-size/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .context("running cargo for the codec size probe")?;
        if !status.success() {
            bail!("building the {codec} probe failed");
        }
        let wasm = std::fs::read(target.join("wasm32-unknown-unknown/release/codec_size.wasm"))?;
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &wasm).map_err(|e| anyhow::anyhow!("compiling the {codec} probe: {e}"))?;
        for v5 in [false, true] {
            let stream = sample(v5);
            let n = run_probe(&engine, &module, &stream.concat(), v5).with_context(|| format!("running the {codec} probe"))?;
            if n != stream.len() {
                bail!("the {codec} probe round-tripped {n} of {} packets (MQTT {})", stream.len(), if v5 { "5" } else { "3.1.1" });
            }
        }
        out.push(CodecSize { codec, bytes: wasm.len() });
    }
    Ok(out)
}

fn run_probe(engine: &wasmtime::Engine, module: &wasmtime::Module, input: &[u8], v5: bool) -> anyhow::Result<usize> {
    let mut store = wasmtime::Store::new(engine, ());
    let instance = wasmtime::Instance::new(&mut store, module, &[])?;
    let memory = instance.get_memory(&mut store, "memory").context("no memory export")?;
    let alloc = instance.get_typed_func::<u32, u32>(&mut store, "input")?;
    let run = instance.get_typed_func::<(u32, u32, u32), i32>(&mut store, "run")?;
    let ptr = alloc.call(&mut store, input.len() as u32)?;
    memory.write(&mut store, ptr as usize, input)?;
    let n = run.call(&mut store, (ptr, input.len() as u32, u32::from(v5)))?;
    usize::try_from(n).map_err(|_| anyhow::anyhow!("the probe reported a decoding error"))
}

/// Every packet type, encoded by our codec (which `mqtt-proto` decodes: the protocol crate's
/// differential test checks that), with properties under MQTT 5.
fn sample(v5: bool) -> Vec<Vec<u8>> {
    let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
    let props = |p: Properties| if v5 { p } else { Properties::default() };
    let pid = PacketId::new(7).expect("non-zero");
    let resp = || PubResponse { packet_id: pid, reason: 0, properties: Properties::default() };
    let user = vec![("k".to_string(), "v".to_string())];
    let mut packets = vec![
        Packet::Connect(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            client_id: "probe".into(),
            will: Some(LastWill {
                topic: "w".into(),
                payload: b"bye".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: props(PropertyValues { will_delay_interval: Some(5), ..Default::default() }.into()),
            }),
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            properties: props(
                PropertyValues { session_expiry_interval: Some(60), receive_maximum: Some(10), user_properties: user.clone(), ..Default::default() }.into(),
            ),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0,
            properties: props(PropertyValues { topic_alias_maximum: Some(4), ..Default::default() }.into()),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: None,
            payload: b"0".to_vec(),
            properties: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: Some(pid),
            payload: b"2".to_vec(),
            properties: props(PropertyValues { content_type: Some("text".into()), user_properties: user.clone(), ..Default::default() }.into()),
        }),
        Packet::PubAck(resp()),
        Packet::PubRec(resp()),
        Packet::PubRel(resp()),
        Packet::PubComp(resp()),
        Packet::Subscribe(Subscribe {
            packet_id: pid,
            filters: vec![SubscribeFilter { filter: "a/#".into(), qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 }],
            properties: props(PropertyValues { subscription_identifiers: vec![3], ..Default::default() }.into()),
        }),
        Packet::SubAck(SubAck { packet_id: pid, codes: vec![1], properties: Properties::default() }),
        Packet::Unsubscribe(Unsubscribe { packet_id: pid, filters: vec!["a/#".into()], properties: Properties::default() }),
        Packet::UnsubAck(SubAck { packet_id: pid, codes: if v5 { vec![0] } else { vec![] }, properties: Properties::default() }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect { reason: 0, properties: Properties::default() }),
    ];
    if v5 {
        let auth = PropertyValues { authentication_method: Some("SCRAM-SHA-1".into()), authentication_data: Some(b"x".to_vec()), ..Default::default() }.into();
        packets.push(Packet::Auth(Disconnect { reason: 0x18, properties: auth }));
    }
    packets.iter().map(|p| p.encode(version)).collect()
}
