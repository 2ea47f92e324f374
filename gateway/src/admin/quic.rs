//! Admin requests over QUIC: the policy table, changing a service's policy
//! at runtime, the result cache's statistics, and purging it (changes are
//! authenticated by the admin token).

use protocol::{CallError, ErrorKind, Message};

use crate::Shared;

/// The answer to an admin request (`ListPolicies`, `SetPolicy`,
/// `CacheStats` or `PurgeCache`).
pub(crate) fn answer(shared: &Shared, request: Message) -> Message {
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
            if let Err(e) = protocol::NodeSpec::validate_name("service name", &set.service) {
                return error(ErrorKind::BadRequest, e.to_string());
            }
            match shared
                .policies
                .set_service_policy(&set.service, &set.policy)
            {
                Ok(previous) => {
                    let was = previous.unwrap_or_else(|| "the default".into());
                    tracing::info!(service = %set.service, policy = %set.policy, %was, "service policy changed");
                    Message::Ack(format!(
                        "service {} now uses policy {} (was {was})",
                        set.service, set.policy
                    ))
                }
                Err(message) => error(ErrorKind::BadRequest, message),
            }
        }
        Message::CacheStats => Message::CacheStatsView(shared.cache.stats()),
        Message::PurgeCache(purge) => {
            if !crate::token_matches(&purge.admin_token, &shared.admin_token) {
                tracing::warn!("cache purge refused: wrong admin token");
                return error(ErrorKind::Unauthorized, "wrong admin token".into());
            }
            let service = purge.service.as_deref();
            if let Some(service) = service
                && let Err(e) = protocol::NodeSpec::validate_name("service name", service)
            {
                return error(ErrorKind::BadRequest, e.to_string());
            }
            let (entries, bytes) = shared.cache.purge(service);
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
