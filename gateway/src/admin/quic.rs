//! Admin requests over QUIC: the policy table, changing a service's policy
//! at runtime, the result cache's statistics, and purging it (changes are
//! authenticated by the admin token, and go through `crate::sync`: with
//! `[cluster]` to every gateway, refused while etcd does not answer).

use protocol::{CallError, ErrorKind, Message};

use crate::Shared;

/// The answer to an admin request (`ListPolicies`, `SetPolicy`,
/// `CacheStats` or `PurgeCache`).
pub(crate) async fn answer(shared: &Shared, request: Message) -> Message {
    match request {
        Message::ListPolicies => {
            let hosted = shared.registry.service_names();
            Message::Policies(shared.policies.table(&hosted))
        }
        Message::SetPolicy(set) => {
            if !crate::token_matches(&set.admin_token, &shared.admin_token) {
                tracing::warn!(service = %set.service, "policy change refused: wrong admin token");
                return error(ErrorKind::Unauthorized, "wrong admin token".into());
            }
            match crate::sync::set_service_policy(shared, &set.service, &set.policy).await {
                Ok(previous) => {
                    let was = previous.unwrap_or_else(|| "the default".into());
                    tracing::info!(service = %set.service, policy = %set.policy, %was, "service policy changed");
                    Message::Ack(format!(
                        "service {} now uses policy {} (was {was})",
                        set.service, set.policy
                    ))
                }
                Err(refused) => error(refused.kind(), refused.quic_message()),
            }
        }
        Message::CacheStats => Message::CacheStatsView(shared.cache.stats()),
        Message::PurgeCache(purge) => {
            if !crate::token_matches(&purge.admin_token, &shared.admin_token) {
                tracing::warn!("cache purge refused: wrong admin token");
                return error(ErrorKind::Unauthorized, "wrong admin token".into());
            }
            let service = purge.service.as_deref();
            let (entries, bytes) = match crate::sync::purge_cache(shared, service).await {
                Ok(purged) => purged,
                Err(refused) => return error(refused.kind(), refused.quic_message()),
            };
            let whose =
                service.map_or_else(|| "every service".to_string(), |s| format!("service {s}"));
            tracing::info!(whose, entries, bytes, "result cache purged");
            Message::Ack(format!(
                "purged {entries} cached results ({bytes} bytes) of {whose}"
            ))
        }
        other => error(
            ErrorKind::BadRequest,
            format!("{:?} is not an admin request", other.kind()),
        ),
    }
}

fn error(kind: ErrorKind, message: String) -> Message {
    Message::Error(CallError::new(kind, message))
}
