//! Look-aside leases: a client asks for a node of a service, the gateway
//! admits the request exactly like a call (tenant checks, the queue with
//! positions, the service's policy picks among nodes with a free slot,
//! realtime → `occupied`), has the picked node hold a slot for it
//! ([`hold`]), and answers with the node's direct address and a token it
//! signs ([`keys`]); the client then calls the node itself. The lease takes
//! its slot like a call in flight until the node ends it; this gateway
//! keeps its active leases ([`table`]) to list and release them.
//!
//! Front ends (QUIC streams, the HTTP ingress, the admin API) call
//! [`lease`] and [`release`]; this room sits above [`crate::calls`], whose
//! waiting loop and slot ending it reuses.

mod hold;
pub(crate) mod keys;
mod table;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::{CallError, ErrorKind, LeaseClaims, LeaseGrant, LeaseHold, LeaseRequest};

use crate::Shared;
use crate::calls::{Admitted, Caller, Failure};
use crate::config::LeasesConfig;
use crate::telemetry::labels;
use keys::KeyRing;
pub(crate) use table::LeaseInfo;
use table::Table;

/// Most times one lease request is offered to a node when the node
/// cannot hold it (no direct port, its control stream is gone).
const MAX_HOLD_ATTEMPTS: usize = 8;

/// This gateway's leases: its signing keys and its active leases.
pub(crate) struct Leases {
    keys: Arc<KeyRing>,
    table: Table,
}

impl Leases {
    /// Starts the key ring (rotated on a task of the current runtime)
    /// with `config`'s periods; no lease yet.
    pub(crate) fn start(config: &LeasesConfig) -> Self {
        Self {
            keys: KeyRing::start(
                Duration::from_secs(u64::from(config.key_rotate_s)),
                Duration::from_millis(u64::from(config.max_ttl_ms)),
            ),
            table: Table::default(),
        }
    }

    /// The signing keys.
    pub(crate) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The active leases, the oldest grant first.
    pub(crate) fn list(&self) -> Vec<LeaseInfo> {
        self.table.list()
    }
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReleaseError {
    /// The token is not one this gateway signed, or names another lease.
    #[error("{0}")]
    Token(String),
    /// This gateway holds no such lease (it ended, or another gateway
    /// granted it).
    #[error("no lease {0} on this gateway")]
    Unknown(String),
}

impl ReleaseError {
    /// The error a QUIC client is answered with: `unauthorized` for a bad
    /// token, `bad request` for an unknown lease.
    pub(crate) fn to_call_error(&self) -> CallError {
        let kind = match self {
            Self::Token(_) => ErrorKind::Unauthorized,
            Self::Unknown(_) => ErrorKind::BadRequest,
        };
        CallError::new(kind, self.to_string())
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> CallError {
    CallError::new(kind, message.into())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The lease request's checks and settings, before it is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Terms {
    max_calls: u32,
    ttl_ms: u32,
    idle_ms: u32,
    /// How long to wait for a node, ms.
    timeout_ms: u32,
}

/// Checks `request` against the protocol and `[leases]`, and settles its
/// defaults (`default_timeout_ms` when it names no wait, cut to
/// `max_timeout_ms`).
fn terms(
    config: &LeasesConfig,
    request: &LeaseRequest,
    default_timeout_ms: u32,
    max_timeout_ms: u32,
) -> Result<Terms, CallError> {
    if !config.enabled {
        return Err(error(
            ErrorKind::BadRequest,
            "leases are disabled on this gateway ([leases] enabled = false)",
        ));
    }
    request
        .validate()
        .map_err(|e| error(ErrorKind::BadRequest, e.to_string()))?;
    if request.head.lease.is_some() {
        return Err(error(
            ErrorKind::BadRequest,
            "a lease request carries no lease token",
        ));
    }
    let max_calls = request.calls();
    if max_calls > config.max_calls {
        return Err(error(
            ErrorKind::BadRequest,
            format!(
                "max_calls {max_calls} exceeds this gateway's maximum of {}",
                config.max_calls
            ),
        ));
    }
    let timeout_ms = match request.head.timeout_ms {
        0 => default_timeout_ms,
        asked => asked,
    }
    .clamp(1, max_timeout_ms.max(1));
    Ok(Terms {
        max_calls,
        ttl_ms: config.ttl_of(request.ttl_ms),
        idle_ms: request.idle_ms,
        timeout_ms,
    })
}

/// Grants a lease on a node of `request.head.service` to the tenant that
/// `admitted` (the caller ran [`crate::calls::admit`] on the head, which
/// took its API key): waits for a slot like a call, sending `caller` its
/// queue positions, has the picked node hold the slot, and signs the
/// token. The lease keeps the tenant's in-flight place until it ends.
/// `arrived` is when the request was read (its wait counts from there).
///
/// # Errors
/// [`Failure::Reply`] with a call's refusals (`unknown service`, `no node
/// available`, `occupied`, `overloaded`, `timeout`, the policy's), `bad
/// request` for a request that breaks a limit, the node's error when it
/// refuses the hold for another reason than being full; [`Failure::Gone`]
/// when the caller leaves while it waits.
pub(crate) async fn lease(
    shared: &Arc<Shared>,
    request: LeaseRequest,
    admitted: Admitted,
    caller: &mut impl Caller,
    arrived: Instant,
) -> Result<LeaseGrant, Failure> {
    let service = request.head.service.clone();
    let tenant = admitted.tenant.clone();
    let result = grant(shared, request, admitted, caller, arrived).await;
    let (node, policy, outcome) = match &result {
        Ok(grant) => (grant.node_id.as_str(), grant.policy.as_str(), "ok"),
        Err(Failure::Reply(e)) => ("", "", crate::telemetry::outcome(Err(e.kind))),
        Err(Failure::Gone) => ("", "", "client_gone"),
        Err(Failure::Cut(..)) => ("", "", "node_lost"),
    };
    // A lease counts as one call, its duration the wait for its grant.
    crate::calls::record_call(
        &service,
        node,
        policy,
        outcome,
        &tenant,
        crate::calls::ms(arrived.elapsed()),
    );
    result
}

async fn grant(
    shared: &Arc<Shared>,
    request: LeaseRequest,
    admitted: Admitted,
    caller: &mut impl Caller,
    arrived: Instant,
) -> Result<LeaseGrant, Failure> {
    let config = &shared.config;
    let terms = terms(
        &config.leases,
        &request,
        config.http.timeout_ms,
        config.max_timeout_ms,
    )?;
    leasable(shared, &request.head.service)?;
    let head = Arc::new(request.head);
    let deadline = arrived + Duration::from_millis(u64::from(terms.timeout_ms));
    let timed_out = || {
        error(
            ErrorKind::Timeout,
            format!("no node within {} ms", terms.timeout_ms),
        )
    };
    let lease_id = format!("{:032x}", rand::random::<u128>());
    let hold = LeaseHold {
        lease_id: lease_id.clone(),
        service: head.service.clone(),
        tenant: admitted.tenant.to_string(),
        max_calls: terms.max_calls,
        idle_ms: terms.idle_ms,
        ttl_ms: terms.ttl_ms,
        policy: String::new(),
        max_payload: config.max_payload_bytes,
    };
    let call_id = shared.next_call_id.fetch_add(1, Ordering::Relaxed);
    let ticket = shared
        .scheduler
        .admit(&head, &admitted.tenant, call_id, Arc::from([]), false);
    let held = hold::hold_slot(
        shared,
        hold::HoldAsk {
            head: &head,
            tenant: &admitted.tenant,
            call_id,
            deadline,
            hold,
        },
        ticket,
        caller,
        &timed_out,
    )
    .await?;
    let hold::Held {
        guard,
        picked,
        words,
        direct,
    } = held;
    let node_id = guard.node().spec.id.clone();
    let now_ms = unix_ms();
    let expires_unix_ms = now_ms + u64::from(terms.ttl_ms);
    let (key_id, key) = shared.leases.keys.current();
    let claims = LeaseClaims {
        lease_id: lease_id.clone(),
        key_id,
        node_id: node_id.clone(),
        service: head.service.clone(),
        tenant: admitted.tenant.to_string(),
        expires_unix_ms,
        max_calls: terms.max_calls,
    };
    let token = claims.sign(&key);
    let (entry, ended) = shared.leases.table.insert(LeaseInfo {
        lease_id: lease_id.clone(),
        service: head.service.clone(),
        node_id: node_id.clone(),
        tenant: admitted.tenant.to_string(),
        max_calls: terms.max_calls,
        granted_unix_ms: now_ms,
        expires_unix_ms,
    });
    let service_label = labels::service(&head.service);
    metrics::counter!("leases_granted_total", "service" => service_label.clone()).increment(1);
    metrics::gauge!("leases_active", "service" => service_label.clone()).increment(1.0);
    let policy = picked.policy_name.clone();
    tokio::spawn(hold::keep(hold::Holding {
        shared: shared.clone(),
        guard,
        picked,
        words,
        entry,
        ended,
        admitted,
        service_label,
        expires: Instant::now() + Duration::from_millis(u64::from(terms.ttl_ms)),
    }));
    Ok(LeaseGrant {
        lease_id,
        node_id,
        direct,
        token,
        ttl_ms: terms.ttl_ms,
        expires_unix_ms,
        max_calls: terms.max_calls,
        idle_ms: terms.idle_ms,
        policy,
        queue_ms: crate::calls::ms(arrived.elapsed()),
        gateway: shared.cluster.name().to_string(),
    })
}

/// Refuses at once a lease of a service whose nodes all lack a direct
/// port (it would wait its whole timeout for none); a service no node
/// hosts is left to the scheduler's usual answer.
fn leasable(shared: &Shared, service: &str) -> Result<(), CallError> {
    let mut hosts = shared
        .registry
        .all()
        .into_iter()
        .filter(|node| node.services.contains_key(service))
        .peekable();
    if hosts.peek().is_some() && hosts.all(|node| node.direct.is_none()) {
        return Err(error(
            ErrorKind::NoNodeAvailable,
            format!("no node of {service} takes direct calls (none registered a [direct] port)"),
        ));
    }
    Ok(())
}

/// Releases the lease `token` names (and, when given, that must be
/// `lease_id`): checks the token with this gateway's keys, resets the
/// lease's hold stream (the node ends the lease) and waits up to 2 s for
/// the node to say it ended.
///
/// # Errors
/// [`ReleaseError::Token`] for a token this gateway did not sign (or one
/// for another lease than `lease_id`), [`ReleaseError::Unknown`] when this
/// gateway holds no such lease.
pub(crate) async fn release(
    shared: &Shared,
    token: &str,
    lease_id: Option<&str>,
) -> Result<(), ReleaseError> {
    let now = Instant::now();
    let claims = LeaseClaims::verify(token, |id| shared.leases.keys.key(id, now))
        .map_err(|e| ReleaseError::Token(e.to_string()))?;
    if let Some(id) = lease_id
        && id != claims.lease_id
    {
        return Err(ReleaseError::Token(format!(
            "the lease token is for another lease than {id:.64}"
        )));
    }
    let entry = shared
        .leases
        .table
        .get(&claims.lease_id)
        .ok_or_else(|| ReleaseError::Unknown(claims.lease_id.clone()))?;
    entry.release.notify_one();
    let mut ended = entry.ended.clone();
    let _ = tokio::time::timeout(hold::RELEASE_WAIT, ended.wait_for(|e| *e)).await;
    Ok(())
}

/// Releases lease `lease_id` whose grant could not be delivered (the
/// client left): nobody holds its token.
pub(crate) fn abandon(shared: &Shared, lease_id: &str) {
    if let Some(entry) = shared.leases.table.get(lease_id) {
        entry.release.notify_one();
    }
}

/// Help texts of the lease series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!("leases_granted_total", "Leases granted, by service.");
    metrics::describe_counter!(
        "leases_ended_total",
        "Leases ended, by service and reason (used, expired, idle, released, draining, node_lost, other)."
    );
    metrics::describe_gauge!(
        "leases_active",
        "Leases this gateway granted that hold a slot now, by service."
    );
}

#[cfg(test)]
mod tests;
