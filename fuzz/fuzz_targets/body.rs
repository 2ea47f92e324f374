//! Every message decoder on arbitrary bodies: the first byte picks the
//! wire version and frame kind, the rest is the body, framed with a correct
//! header so that every input reaches a body decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Codec, Decoded, FrameKind, HEADER_LEN, WireVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let version = WireVersion::ALL[usize::from(pick >> 7)];
    let Ok(kind) = FrameKind::from_byte(pick & 0x7f) else {
        return;
    };
    let Ok(len) = u32::try_from(body.len()) else {
        return;
    };
    let codec = Codec::new(1 << 20).with_version(version);
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&codec.header(kind, len).to_bytes());
    frame.extend_from_slice(body);
    if let Ok(Decoded::Frame { message, consumed }) = codec.decode(&frame) {
        assert_eq!(consumed, frame.len());
        assert_eq!(message.kind(), kind);
        let bytes = codec
            .encode_to_vec(&message)
            .expect("a decoded message encodes");
        assert!(
            codec.decode(&bytes).is_ok(),
            "re-encoded {kind:?} does not decode"
        );
    }
});
