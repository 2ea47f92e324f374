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
    _permit: InFlightPermit,
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
        _permit: admitted.permit,
    })
}
