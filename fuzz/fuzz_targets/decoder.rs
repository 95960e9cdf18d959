//! Arbitrary bytes, split at arbitrary points, into the incremental decoder of either
//! protocol version: never a panic, and never more buffered than the packet-size bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_protocol::codec::Decoder;
use mqtt_protocol::ProtocolVersion;

const MAX: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let version = if ctl & 1 == 0 { ProtocolVersion::V311 } else { ProtocolVersion::V5 };
    let chunk = usize::from(ctl >> 1).max(1);
    let mut d = Decoder::new(version, MAX);
    for piece in rest.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_packet() {
                Ok(Some(p)) => {
                    // Whatever decodes must re-encode to something that decodes the same.
                    let bytes = p.encode(version);
                    let mut again = Decoder::new(version, u32::MAX);
                    again.feed(&bytes);
                    assert_eq!(again.next_packet().ok().flatten().as_ref(), Some(&p));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= MAX as usize + chunk, "buffered {} bytes", d.buffered());
    }
});
