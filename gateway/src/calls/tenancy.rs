//! Which tenant a call belongs to, and whether it may run now: its API key
//! names the tenant (`[[tenants]]`), whose services, in-flight cap, rate
//! and priority ceiling apply (see [`crate::tenants`]). Checked before the
//! call's payload is read or it queues, for QUIC and HTTP callers alike.

use std::sync::Arc;
use std::time::Instant;

use protocol::CallHead;

use super::Refused;
use crate::Shared;
use crate::tenants::{InFlightPermit, Tenant, TenantError};

/// A call its tenant admitted: counted in the tenant's in-flight calls
/// until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The tenant's name, for the queue's turns and the metrics.
    pub(crate) tenant: Arc<str>,
    /// A job's call: its deadline is its watchdog, up to `[jobs]
    /// max_watchdog_s` rather than `max_timeout_ms`.
    pub(crate) job: bool,
    /// Told the node's id each time the call is sent to a node (a job's
    /// attempt records where it runs).
    pub(crate) on_dispatch: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The node it must not go to: the child gateway that handed it up.
    pub(crate) exclude: Option<switchyard_core::NodeKey>,
    _permit: Option<InFlightPermit>,
}

impl Admitted {
    /// A job's call for `tenant`, admitted when the job was submitted (its
    /// rate and in-flight limits applied then, not at each attempt).
    pub(crate) fn job(
        tenant: Arc<str>,
        on_dispatch: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Self {
        Self {
            tenant,
            job: true,
            on_dispatch: Some(on_dispatch),
            exclude: None,
            _permit: None,
        }
    }
}

impl Admitted {
    /// A call a parent gateway sent this one, as its tenant `tenant`: the
    /// entry gateway checked the caller's key and applied its tenant's
    /// limits; this gateway trusts its parent (whose certificate it
    /// checked when it dialled it) and applies none again. A call a child
    /// gateway handed up (rebalancing; the child is `exclude`) is trusted
    /// the same way: the child checked its caller.
    pub(crate) fn from_parent(tenant: Arc<str>, exclude: Option<switchyard_core::NodeKey>) -> Self {
        Self {
            tenant,
            job: false,
            on_dispatch: None,
            exclude,
            _permit: None,
        }
    }
}

impl From<TenantError> for Refused {
    fn from(error: TenantError) -> Self {
        Self {
            retry_after: error.retry_after(),
            error: error.into(),
            tenant: None,
        }
    }
}

/// The tenant an API key names (the anonymous tenant when the gateway has
/// none).
///
/// # Errors
/// [`Refused`] (`unauthorized`) for a missing or unknown key.
pub(crate) fn authenticate(shared: &Shared, key: Option<&str>) -> Result<Arc<Tenant>, Refused> {
    Ok(shared.tenants.authenticate(key)?)
}

/// Admits `head` for its tenant: checks its key, the services it may
/// call, its in-flight cap and its rate, and lowers the call's priority to
/// the tenant's `max_priority`. The key is taken out of the head, so that
/// nothing keeps or logs it.
///
/// # Errors
/// [`Refused`]: `unauthorized`, `forbidden` or `rate limited` (with when to
/// retry).
pub(crate) fn admit(shared: &Shared, head: &mut CallHead) -> Result<Admitted, Refused> {
    let tenant = authenticate(shared, head.api_key.take().as_deref())?;
    let admitted = tenant
        .admit(&head.service, head.priority, Instant::now())
        .map_err(|e| Refused {
            tenant: Some(tenant.name().clone()),
            ..e.into()
        })?;
    head.priority = admitted.priority;
    Ok(Admitted {
        tenant: tenant.name().clone(),
        job: false,
        on_dispatch: None,
        exclude: None,
        _permit: Some(admitted.permit),
    })
}
