//! The same job on either codec: decode a byte stream of MQTT packets (any packet, 3.1.1 or
//! 5.0) and encode each packet again. Built as a wasm cdylib with the component's size
//! profile, once per codec; `mqtt-bench` reports the two sizes (protocol/README.md says why
//! the project has its own codec, and this is the measurement behind it).

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

/// Decodes every packet in `input` and appends each one re-encoded to `out`; returns how many.
#[cfg(feature = "ours")]
fn roundtrip(input: &[u8], v5: bool, out: &mut Vec<u8>) -> Option<usize> {
    use mqtt_protocol::codec::Decoder;
    use mqtt_protocol::ProtocolVersion;
    let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
    let mut decoder = Decoder::new(version, u32::MAX);
    decoder.feed(input);
    let mut n = 0;
    while let Some(packet) = decoder.next_packet().ok()? {
        out.extend_from_slice(&packet.encode(version));
        n += 1;
    }
    Some(n)
}

#[cfg(feature = "mqtt-proto")]
fn roundtrip(input: &[u8], v5: bool, out: &mut Vec<u8>) -> Option<usize> {
    let mut rest = input;
    let mut n = 0;
    while !rest.is_empty() {
        let used = if v5 {
            let p = mqtt_proto::v5::Packet::decode(rest).ok()??;
            out.extend_from_slice(p.encode().ok()?.as_ref());
            p.encode_len().ok()?
        } else {
            let p = mqtt_proto::v3::Packet::decode(rest).ok()??;
            out.extend_from_slice(p.encode().ok()?.as_ref());
            p.encode_len().ok()?
        };
        rest = rest.get(used..)?;
        n += 1;
    }
    Some(n)
}

static mut OUT: Vec<u8> = Vec::new();

/// Room for the host to write its input.
#[no_mangle]
pub extern "C" fn input(len: usize) -> *mut u8 {
    let mut v = Vec::with_capacity(len);
    let p = v.as_mut_ptr();
    core::mem::forget(v);
    p
}

/// Round-trips `len` bytes at `ptr`; returns the number of packets, or -1 on an error.
#[no_mangle]
pub extern "C" fn run(ptr: *mut u8, len: usize, v5: u32) -> i32 {
    // SAFETY: `ptr` came from `input(len)` and the host filled `len` bytes.
    let input = unsafe { Vec::from_raw_parts(ptr, len, len) };
    // SAFETY: single-threaded wasm; nothing else touches OUT during this call.
    let out = unsafe { &mut *core::ptr::addr_of_mut!(OUT) };
    out.clear();
    roundtrip(&input, v5 != 0, out).map_or(-1, |n| n as i32)
}

// The same allocator for both, so the difference is the codec's.
#[global_allocator]
// SAFETY: single-threaded wasm, and nothing else manages its memory.
static ALLOCATOR: talc::Talck<talc::locking::AssumeUnlockable, talc::WasmHandler> = talc::Talc::new(unsafe { talc::WasmHandler::new() }).lock();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
