//! A deterministic fuzz harness that runs in `cargo test`: every golden
//! frame of every version, with every single-byte mutation (each bit
//! flipped, the byte set to 0x00 and 0xff) and every truncation, decoded.
//! Properties, as in the coverage-guided targets of `fuzz/`: no panic,
//! nothing allocated past the frame limit (the header's length is checked
//! first), and whatever decodes encodes back to a frame that decodes.
//! A lease token's single-byte changes likewise: refused, never a panic.
//! `cargo test -p switchyard-protocol --test mutate -- --ignored` adds
//! every pair of mutated bytes of the smaller frames (millions of cases).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_protocol::{Codec, CodecError, Decoded, LeaseClaims, TokenError, WireVersion};

fn golden(version: WireVersion) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/tests/golden/v{}.hex",
        env!("CARGO_MANIFEST_DIR"),
        version.number()
    );
    std::fs::read_to_string(path)
        .expect("golden file")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let hex = l.split_once(' ').expect("NAME HEX").1;
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}

/// Decodes `bytes` and checks the properties; returns whether it decoded.
fn check(codec: &Codec, bytes: &[u8]) -> bool {
    match codec.decode(bytes) {
        Ok(Decoded::Frame { message, consumed }) => {
            assert!(consumed <= bytes.len());
            let again = codec
                .encode_to_vec(&message)
                .expect("a decoded message encodes");
            assert!(
                matches!(codec.decode(&again), Ok(Decoded::Frame { .. })),
                "re-encoded {:?} does not decode",
                message.kind()
            );
            true
        }
        Ok(Decoded::Incomplete { needed }) => {
            // The header said how long the body is; it was checked against
            // the maximum before anything else.
            assert!(needed <= codec.max_frame_len() as usize + 8);
            false
        }
        Err(CodecError::FrameTooLarge { len, max }) => {
            assert!(len > u64::from(max));
            false
        }
        Err(_) => false,
    }
}

fn mutations(frame: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..frame.len()).flat_map(move |at| {
        let flips = (0..8).map(move |bit| frame[at] ^ (1 << bit));
        flips.chain([0x00, 0xff]).map(move |byte| {
            let mut m = frame.to_vec();
            m[at] = byte;
            m
        })
    })
}

#[test]
fn every_single_byte_mutation_and_truncation_is_handled() {
    let mut cases = 0usize;
    let mut decoded = 0usize;
    for version in WireVersion::ALL {
        // A small limit, so that mutated lengths cross it.
        let codec = Codec::new(4096).with_version(version);
        for frame in golden(version) {
            for cut in 0..frame.len() {
                cases += 1;
                assert!(!check(&codec, &frame[..cut]), "a truncated frame decoded");
            }
            for m in mutations(&frame) {
                cases += 1;
                decoded += usize::from(check(&codec, &m));
            }
        }
    }
    assert!(cases > 20_000, "{cases} cases");
    eprintln!("{cases} cases, {decoded} decoded");
    assert!(decoded > 0, "some mutations still decode");
}

#[test]
#[ignore = "millions of cases; run on demand"]
fn every_pair_of_byte_mutations_is_handled() {
    let mut cases = 0usize;
    for version in WireVersion::ALL {
        let codec = Codec::new(4096).with_version(version);
        for frame in golden(version).into_iter().filter(|f| f.len() <= 64) {
            for first in mutations(&frame) {
                for second in mutations(&first) {
                    cases += 1;
                    check(&codec, &second);
                }
            }
        }
    }
    eprintln!("{cases} cases");
}

/// A signed lease token with every single byte changed (each bit flipped,
/// set to each base64url character and to `.`), and every truncation:
/// never a panic, never verified.
#[test]
fn no_single_byte_change_of_a_lease_token_verifies() {
    let key = [5u8; 32];
    let claims = LeaseClaims {
        lease_id: "0123456789abcdef0123456789abcdef".into(),
        key_id: 7,
        node_id: "node-a".into(),
        service: "echo".into(),
        tenant: "team-a".into(),
        expires_unix_ms: 1_800_000_000_000,
        max_calls: 3,
    };
    let token = claims.sign(&key);
    assert_eq!(
        LeaseClaims::verify(&token, |_| Some(key)).as_ref(),
        Ok(&claims)
    );
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let mut cases = 0usize;
    for at in 0..token.len() {
        let original = token.as_bytes()[at];
        let flips = (0..8).map(|bit| original ^ (1 << bit));
        for byte in flips.chain(alphabet.iter().copied()) {
            if byte == original {
                continue;
            }
            let mut bytes = token.clone().into_bytes();
            bytes[at] = byte;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            cases += 1;
            let got = LeaseClaims::verify(&changed, |_| Some(key));
            assert!(
                matches!(
                    got,
                    Err(TokenError::Malformed(_) | TokenError::BadSignature)
                ),
                "{changed}: {got:?}"
            );
        }
    }
    assert!(cases > token.len() * 50, "{cases} cases");
    for cut in 0..token.len() {
        assert!(LeaseClaims::verify(&token[..cut], |_| Some(key)).is_err());
    }
}
