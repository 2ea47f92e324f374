//! A tree of gateways: a gateway registers with its parent as a node whose
//! services are its own fleet's ([`crate::NodeSpec::gateway`]), and tells
//! it when they change ([`Respec`]); the parent tells its gateway children
//! which gateways are above them ([`Ancestry`]), so that no gateway
//! becomes its own ancestor.
//!
//! Streams, on the child's connection to its parent:
//! - control stream (the child's first): `Register` with
//!   `node.gateway = true`, answered by `Registered` whose
//!   [`crate::Registered::ancestry`] names the parent and the gateways
//!   above it; then, besides `Stats` and `Load`, [`crate::Message::Respec`]
//!   from the child whenever its fleet's services change (only to a parent
//!   whose `Registered::takes_respec` is set) and
//!   [`crate::Message::Ancestry`] from the parent whenever its own ancestry
//!   changes;
//! - a call to the child is a dispatch stream as to any node, its
//!   [`crate::DispatchHead`] carrying the caller's tenant, priority and
//!   hints, its [`crate::ReplyHead::path`] naming the gateways and node
//!   below the child that served it.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, NodeSpec};

/// Most gateways on one path from a root to a node (a child at a depth
/// past it is refused).
pub const MAX_DEPTH: usize = 32;

/// Node → gateway on the control stream: what the node hosts now (its
/// services and slots changed while registered; the id must stay the
/// same). Calls in flight keep running; the gateway offers new calls by
/// the new spec. A child gateway sends it when its fleet's services or
/// their capacity change (v2, only to a gateway whose `Registered` set
/// `takes_respec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Respec {
    /// The node's spec now.
    #[n(0)]
    pub node: NodeSpec,
}

/// Gateway → child gateway on the control stream: the gateways above the
/// child now, nearest first (its parent, then the parent's parent, ...),
/// at most [`MAX_DEPTH`]. A child that finds its own id there is in a loop
/// and leaves (v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Ancestry {
    /// Gateway ids, nearest first.
    #[n(0)]
    pub gateways: Vec<String>,
}

impl Respec {
    /// Checks the spec as a registration's ([`NodeSpec::validate`]).
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken rule.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.node.validate()
    }
}

/// Checks a list of gateway ids (an ancestry, a result's path): at most
/// [`MAX_DEPTH`] names, each a valid name.
///
/// # Errors
/// [`CodecError::Invalid`] naming `what`.
pub(crate) fn check_path(what: &str, ids: &[String]) -> Result<(), CodecError> {
    if ids.len() > MAX_DEPTH {
        return Err(CodecError::Invalid(format!(
            "{what} names at most {MAX_DEPTH} gateways, got {}",
            ids.len()
        )));
    }
    for id in ids {
        check_name(what, id)?;
    }
    Ok(())
}

impl Ancestry {
    /// Checks its length and names.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] past [`MAX_DEPTH`] or for a bad name.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_path("ancestry", &self.gateways)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ancestry_is_bounded_and_named() {
        let ok = Ancestry {
            gateways: vec!["site-a".into(), "root".into()],
        };
        assert!(ok.validate().is_ok());
        let deep = Ancestry {
            gateways: (0..=MAX_DEPTH).map(|i| format!("g{i}")).collect(),
        };
        assert!(deep.validate().is_err());
        let empty_name = Ancestry {
            gateways: vec![String::new()],
        };
        assert!(empty_name.validate().is_err());
    }
}
