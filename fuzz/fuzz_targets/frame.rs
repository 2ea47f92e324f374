//! The frame codec on arbitrary bytes, in both wire versions (the first
//! input byte picks one): never panics, never allocates past the frame
//! limit, and whatever decodes encodes back to a frame that decodes to the
//! same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Codec, Decoded, WireVersion};

/// 64 KiB: run with `-malloc_limit_mb` well above it.
const MAX_FRAME_LEN: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let version = WireVersion::ALL[usize::from(pick) % WireVersion::ALL.len()];
    let codec = Codec::new(MAX_FRAME_LEN).with_version(version);
    // A stream of frames, as a receiver reads them.
    while let Ok(Decoded::Frame { message, consumed }) = codec.decode(rest) {
        let bytes = codec
            .encode_to_vec(&message)
            .expect("a decoded message encodes");
        match codec.decode(&bytes) {
            Ok(Decoded::Frame { message: again, .. }) => {
                // NaN floats never compare equal; compare their encodings.
                if again != message {
                    assert_eq!(codec.encode_to_vec(&again).expect("encodes"), bytes);
                }
            }
            other => panic!("re-encoded {:?} does not decode: {other:?}", message.kind()),
        }
        rest = &rest[consumed..];
    }
});
