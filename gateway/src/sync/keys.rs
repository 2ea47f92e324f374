//! The keys of the shared run-time state, under `{prefix}/config/`, and
//! the chunking of policy components.
//!
//! | key (after `{prefix}/config/`) | value |
//! |---|---|
//! | `policies/{blake3-hex}/{index}` | chunk `index` (4 digits, from 0000) of a component, at most [`CHUNK`] bytes |
//! | `policy-names/{name}` | JSON [`PolicyRef`]: the component's hash, length and chunk count |
//! | `services/{service}/policy` | the name of the policy the service uses |
//! | `drains/{node_id}` | `1`: the node takes no new calls through any gateway |
//! | `cache-purges/{id}` | the service whose cached results to drop, or `*` for all (under a short lease) |
//! | `job-settings` | JSON `{"max_per_node": N}`: the per-node job limit |
//! | `job-templates/{name}` | a job template created over the API, JSON (`crate::jobs::shared`) |

use serde::{Deserialize, Serialize};

use crate::jobs::shared::{SETTINGS_KEY, TEMPLATES_DIR, template_key};

/// Largest chunk of a component, bytes (1 MiB: under etcd's default
/// request limit of 1.5 MiB).
pub(crate) const CHUNK: usize = 1 << 20;

/// Largest component accepted, bytes (64 MiB).
pub(crate) const MAX_COMPONENT: usize = 64 << 20;

/// What `policy-names/{name}` holds: which bytes provide the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyRef {
    /// BLAKE3 of the component, lowercase hex (64 characters).
    pub(crate) hash: String,
    /// The component's length, bytes.
    pub(crate) len: u64,
    /// How many chunks hold it (`ceil(len / CHUNK)`, at least 1).
    pub(crate) chunks: u32,
}

/// One key of the shared state, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// `policies/{hash}/{index}`.
    Chunk {
        /// The component's BLAKE3, hex.
        hash: String,
        /// The chunk's place, from 0.
        index: u32,
    },
    /// `policy-names/{name}`.
    PolicyName(String),
    /// `services/{service}/policy`.
    ServicePolicy(String),
    /// `drains/{node_id}`.
    Drain(String),
    /// `cache-purges/{id}`.
    CachePurge(String),
    /// `job-settings`.
    JobSettings,
    /// `job-templates/{name}`.
    JobTemplate(String),
}

impl Key {
    /// The key's path under `{prefix}/config/`.
    pub(crate) fn path(&self) -> String {
        match self {
            Self::Chunk { hash, index } => format!("policies/{hash}/{index:04}"),
            Self::PolicyName(name) => format!("policy-names/{name}"),
            Self::ServicePolicy(service) => format!("services/{service}/policy"),
            Self::Drain(node) => format!("drains/{node}"),
            Self::CachePurge(id) => format!("cache-purges/{id}"),
            Self::JobSettings => SETTINGS_KEY.to_string(),
            Self::JobTemplate(name) => template_key(name),
        }
    }

    /// Parses a path under `{prefix}/config/`; `None` for one this
    /// gateway does not know (a newer gateway's key) or a malformed one.
    pub(crate) fn parse(path: &str) -> Option<Self> {
        if path == SETTINGS_KEY {
            return Some(Self::JobSettings);
        }
        let (kind, rest) = path.split_once('/')?;
        let one = |rest: &str| (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string());
        match kind {
            "policies" => {
                let (hash, index) = rest.split_once('/')?;
                if !is_hash(hash) || index.len() < 4 || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Self::Chunk {
                    hash: hash.to_string(),
                    index: index.parse().ok()?,
                })
            }
            "policy-names" => one(rest).map(Self::PolicyName),
            "services" => one(rest.strip_suffix("/policy")?).map(Self::ServicePolicy),
            "drains" => one(rest).map(Self::Drain),
            "cache-purges" => one(rest).map(Self::CachePurge),
            TEMPLATES_DIR => one(rest)
                .filter(|name| protocol::job::check_job_id(name).is_ok())
                .map(Self::JobTemplate),
            _ => None,
        }
    }
}

/// Whether `s` is a BLAKE3 hash in lowercase hex.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `bytes` in chunks of at most [`CHUNK`] bytes (one empty chunk for no
/// bytes), with the reference that names them.
pub(crate) fn chunks(bytes: &[u8]) -> (PolicyRef, Vec<&[u8]>) {
    let parts: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(CHUNK).collect()
    };
    let reference = PolicyRef {
        hash: blake3::hash(bytes).to_hex().to_string(),
        len: bytes.len() as u64,
        chunks: u32::try_from(parts.len()).unwrap_or(u32::MAX),
    };
    (reference, parts)
}

/// Why stored chunks do not make up the component a [`PolicyRef`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AssembleError {
    /// The reference itself is out of bounds.
    #[error("policy reference is unusable: {0}")]
    BadRef(String),
    /// A chunk is missing (not yet written, or removed).
    #[error("chunk {index} of {hash} is missing")]
    Missing {
        /// The component's hash.
        hash: String,
        /// The missing chunk.
        index: u32,
    },
    /// The chunks do not hash to the reference's hash, or have another
    /// length.
    #[error("the chunks of {hash} do not match it (length or hash)")]
    Mismatch {
        /// The component's hash.
        hash: String,
    },
}

/// Puts the component `reference` names back together from `chunks`
/// (index → bytes) and checks its length and hash.
///
/// # Errors
/// An [`AssembleError`] for a reference out of bounds (a length over
/// [`MAX_COMPONENT`], a chunk count that does not fit it), a missing
/// chunk, or bytes that do not match.
pub(crate) fn assemble(
    reference: &PolicyRef,
    chunks: &std::collections::BTreeMap<u32, Vec<u8>>,
) -> Result<Vec<u8>, AssembleError> {
    let len = usize::try_from(reference.len)
        .ok()
        .filter(|len| *len <= MAX_COMPONENT)
        .ok_or_else(|| AssembleError::BadRef(format!("length {} bytes", reference.len)))?;
    let expected = len.div_ceil(CHUNK).max(1);
    if !is_hash(&reference.hash) || reference.chunks as usize != expected {
        return Err(AssembleError::BadRef(format!(
            "hash {:.64} with {} chunks for {len} bytes",
            reference.hash, reference.chunks
        )));
    }
    let mut bytes = Vec::with_capacity(len);
    for index in 0..reference.chunks {
        let chunk = chunks.get(&index).ok_or_else(|| AssembleError::Missing {
            hash: reference.hash.clone(),
            index,
        })?;
        if bytes.len() + chunk.len() > len {
            return Err(AssembleError::Mismatch {
                hash: reference.hash.clone(),
            });
        }
        bytes.extend_from_slice(chunk);
    }
    if bytes.len() != len || blake3::hash(&bytes).to_hex().as_str() != reference.hash {
        return Err(AssembleError::Mismatch {
            hash: reference.hash.clone(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn keys_round_trip() {
        let hash = blake3::hash(b"x").to_hex().to_string();
        for key in [
            Key::Chunk {
                hash: hash.clone(),
                index: 0,
            },
            Key::Chunk {
                hash: hash.clone(),
                index: 12345,
            },
            Key::PolicyName("least-request".into()),
            Key::ServicePolicy("llama-3".into()),
            Key::Drain("gpu-node-1".into()),
            Key::CachePurge("0192f3a4".into()),
            Key::JobSettings,
            Key::JobTemplate("nightly-report".into()),
        ] {
            assert_eq!(Key::parse(&key.path()), Some(key.clone()), "{}", key.path());
        }
        assert_eq!(
            Key::Chunk { hash, index: 7 }.path().rsplit('/').next(),
            Some("0007")
        );
        assert_eq!(Key::JobSettings.path(), "job-settings");
        assert_eq!(Key::JobTemplate("n".into()).path(), "job-templates/n");
    }

    #[test]
    fn unknown_and_malformed_keys_are_skipped() {
        for path in [
            "",
            "policies",
            "policies/abc/0000",
            "policies/ABCDEF/0000",
            &format!("policies/{}/7", "a".repeat(64)),
            &format!("policies/{}/00x1", "a".repeat(64)),
            "policy-names/",
            "policy-names/a/b",
            "services/llama",
            "services/llama/weights",
            "services//policy",
            "drains/",
            "job-settings/x",
            "job-templates/",
            "job-templates/a/b",
            "job-templates/not a name",
            "job-template/x",
        ] {
            assert_eq!(Key::parse(path), None, "{path:?}");
        }
    }

    #[test]
    fn components_are_cut_in_chunks_of_at_most_a_mebibyte() {
        let bytes: Vec<u8> = (0..(2 * CHUNK + 10)).map(|i| (i % 251) as u8).collect();
        let (reference, parts) = chunks(&bytes);
        assert_eq!(reference.chunks, 3);
        assert_eq!(reference.len, bytes.len() as u64);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [CHUNK, CHUNK, 10]
        );
        let stored: BTreeMap<u32, Vec<u8>> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, p.to_vec()))
            .collect();
        assert_eq!(assemble(&reference, &stored).expect("whole"), bytes);
        // Exactly one chunk's worth, and nothing at all.
        assert_eq!(chunks(&bytes[..CHUNK]).0.chunks, 1);
        let (empty, parts) = chunks(b"");
        assert_eq!((empty.chunks, parts.len()), (1, 1));
    }

    #[test]
    fn missing_changed_or_oversized_chunks_are_refused() {
        let bytes = vec![7u8; CHUNK + 1];
        let (reference, parts) = chunks(&bytes);
        let mut stored: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        stored.insert(0, parts[0].to_vec());
        assert!(matches!(
            assemble(&reference, &stored),
            Err(AssembleError::Missing { index: 1, .. })
        ));
        stored.insert(1, vec![8u8]);
        assert!(matches!(
            assemble(&reference, &stored),
            Err(AssembleError::Mismatch { .. })
        ));
        stored.insert(1, vec![7u8; CHUNK]);
        assert!(matches!(
            assemble(&reference, &stored),
            Err(AssembleError::Mismatch { .. })
        ));
        let huge = PolicyRef {
            len: u64::MAX,
            ..reference.clone()
        };
        assert!(matches!(
            assemble(&huge, &stored),
            Err(AssembleError::BadRef(_))
        ));
        let wrong_count = PolicyRef {
            chunks: 1,
            ..reference
        };
        assert!(matches!(
            assemble(&wrong_count, &stored),
            Err(AssembleError::BadRef(_))
        ));
    }
}
