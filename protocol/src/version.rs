//! Wire versions and their negotiation by ALPN.
//!
//! Each QUIC connection negotiates one wire version in its TLS handshake:
//! the client offers the ALPN ids of every version it speaks, newest first,
//! and the server picks the first of its own list that the client offers
//! (rustls' rule). The version names both the frame header's version byte
//! and the body encoding of every frame on the connection.

/// ALPN id of wire version 1 (postcard bodies, frozen).
pub const ALPN_V1: &[u8] = b"switchyard/1";
/// ALPN id of wire version 2 (CBOR bodies with numeric field keys).
pub const ALPN_V2: &[u8] = b"switchyard/2";

/// A wire version: the frame header's version byte and how bodies are
/// encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum WireVersion {
    /// Version 1: postcard bodies. Frozen: no field, message or enum
    /// variant is ever added to it (new fields are `#[serde(default, with
    /// = "crate::added")]`, so a v1 peer never sees them and they take
    /// their default when decoded from v1). Kept so that peers of the first release still work.
    V1 = 1,
    /// Version 2: each body is one CBOR item, a map keyed by field numbers
    /// (minicbor's derive): unknown keys are skipped, missing optional or
    /// defaulted fields take their default.
    #[default]
    V2 = 2,
}

impl WireVersion {
    /// Every version this crate speaks, newest first.
    pub const ALL: [WireVersion; 2] = [WireVersion::V2, WireVersion::V1];

    /// The newest version this crate speaks.
    pub const LATEST: WireVersion = WireVersion::V2;

    /// The version for a frame header's version byte, if this crate speaks
    /// it.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// The version for a negotiated ALPN id, if this crate speaks it.
    pub fn from_alpn(alpn: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.alpn() == alpn)
    }

    /// The version's ALPN id, e.g. `switchyard/2`.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::V1 => ALPN_V1,
            Self::V2 => ALPN_V2,
        }
    }

    /// The version's number, as in the frame header.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The ALPN ids to offer (client) or accept (server) when speaking at
    /// most `self`, newest first: `[switchyard/2, switchyard/1]` for
    /// [`WireVersion::V2`].
    pub fn alpn_protocols(self) -> Vec<Vec<u8>> {
        Self::ALL
            .into_iter()
            .filter(|v| *v <= self)
            .map(|v| v.alpn().to_vec())
            .collect()
    }
}

impl std::fmt::Display for WireVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Read from configuration as a number, `1` or `2`.
impl<'de> serde::Deserialize<'de> for WireVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = u8::deserialize(deserializer)?;
        Self::from_byte(number).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown wire version {number} (1 or 2)"))
        })
    }
}

impl std::str::FromStr for WireVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u8>()
            .ok()
            .and_then(Self::from_byte)
            .ok_or_else(|| format!("unknown wire version {s:?} (1 or 2)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_lists_are_newest_first() {
        assert_eq!(
            WireVersion::V2.alpn_protocols(),
            vec![b"switchyard/2".to_vec(), b"switchyard/1".to_vec()]
        );
        assert_eq!(
            WireVersion::V1.alpn_protocols(),
            vec![b"switchyard/1".to_vec()]
        );
        assert_eq!(
            WireVersion::from_alpn(b"switchyard/2"),
            Some(WireVersion::V2)
        );
        assert_eq!(WireVersion::from_alpn(b"switchyard/3"), None);
        assert_eq!("1".parse(), Ok(WireVersion::V1));
        assert!("3".parse::<WireVersion>().is_err());
    }
}
