//! Golden vectors: the bytes of one message of every kind, in every wire
//! version, checked in under `tests/golden/`. Any change to how a message is
//! encoded fails here; a v1 change breaks deployed peers and is never
//! allowed, a v2 change only by the rules in ARCHITECTURE.md ("Evolving the
//! wire"). After an intended v2 change (a new field, a new kind), rewrite
//! the files with `SWITCHYARD_BLESS=1 cargo test -p switchyard-protocol
//! --test golden` and review the diff: existing lines may only grow by the
//! new field's key and value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod samples;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use switchyard_protocol::{Codec, Decoded, Message, WireVersion};

fn golden_path(version: WireVersion) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("v{}.hex", version.number()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn read_golden(version: WireVersion) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(golden_path(version)).expect("golden file");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("NAME HEX");
            (name.to_string(), hex.to_string())
        })
        .collect()
}

/// The samples of the messages `version` has (v1 lacks the kinds added
/// with v2, such as `Drain`).
fn in_version<'a>(
    samples: &'a [(&'static str, Message)],
    version: WireVersion,
) -> Vec<(&'static str, &'a Message)> {
    samples
        .iter()
        .filter(|(_, m)| version != WireVersion::V1 || m.as_v1().is_some())
        .map(|(name, m)| (*name, m))
        .collect()
}

#[test]
fn every_message_kind_keeps_its_bytes_in_every_version() {
    let samples = samples::all();
    for version in WireVersion::ALL {
        let codec = Codec::default().with_version(version);
        if std::env::var_os("SWITCHYARD_BLESS").is_some() {
            let mut out = format!(
                "# Golden frames of wire version {}: NAME HEX (header + body).\n",
                version.number()
            );
            for (name, message) in in_version(&samples, version) {
                let bytes = codec.encode_to_vec(message).expect("encode");
                let _ = writeln!(out, "{name} {}", to_hex(&bytes));
            }
            std::fs::write(golden_path(version), out).expect("write golden file");
            continue;
        }
        let golden = read_golden(version);
        let samples = in_version(&samples, version);
        assert_eq!(
            golden.len(),
            samples.len(),
            "v{version}: one golden frame per sample message"
        );
        for (name, message) in samples {
            let hex = golden
                .get(name)
                .unwrap_or_else(|| panic!("v{version}: no golden frame for {name}"));
            let bytes = codec.encode_to_vec(message).expect("encode");
            assert_eq!(
                &to_hex(&bytes),
                hex,
                "v{version} {name}: the encoding changed"
            );
            match codec.decode(&from_hex(hex)).expect("golden frame decodes") {
                Decoded::Frame {
                    message: got,
                    consumed,
                } => {
                    // What this version carries of the sample (v1 drops
                    // the fields added later).
                    let expected = match version {
                        WireVersion::V1 => message.as_v1().expect("a v1 message"),
                        _ => message.clone(),
                    };
                    assert_eq!(got, expected, "v{version} {name}");
                    assert_eq!(consumed, bytes.len());
                }
                Decoded::Incomplete { .. } => panic!("v{version} {name}: incomplete"),
            }
        }
    }
}

#[test]
fn every_frame_kind_has_a_sample() {
    let samples = samples::all();
    for byte in 1..=u8::MAX {
        if let Ok(kind) = switchyard_protocol::FrameKind::from_byte(byte) {
            assert!(
                samples.iter().any(|(_, m)| m.kind() == kind),
                "no golden sample of {kind:?}"
            );
        }
    }
}
