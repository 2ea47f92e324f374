//! `GET /v1/models` and `GET /v1/models/{id}`: the model services the fleet
//! serves now (services of agent kind `openai`, which register as models)
//! and the `[models]` aliases of them, in OpenAI's shape:
//!
//! ```json
//! {"id": "llama", "object": "model", "created": 1765000000, "owned_by": "switchyard"}
//! ```
//!
//! `created` is when this gateway first saw the model served (Unix
//! seconds: the registration of the first node that served it); an alias
//! has its model's, and names it in `root` (as vLLM does). Other services
//! (`command`, `http`, built-ins) are not models and are not listed; a
//! tenant sees only the models it may call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::http_error::HttpError;

/// Who the listed models belong to, as `owned_by` says.
const OWNER: &str = "switchyard";

/// When the gateway first saw each model served, Unix seconds. Its names
/// come from agents' registrations (authenticated), never from callers.
#[derive(Debug, Default)]
pub(crate) struct FirstSeen(Mutex<HashMap<String, u64>>);

impl FirstSeen {
    /// The model's `created`: the earliest of what was recorded and
    /// `since` (when a node serving it now registered), recorded.
    fn created(&self, model: &str, since: u64) -> u64 {
        let Ok(mut seen) = self.0.lock() else {
            return since;
        };
        match seen.get_mut(model) {
            Some(first) => {
                *first = (*first).min(since);
                *first
            }
            None => {
                seen.insert(model.to_string(), since);
                since
            }
        }
    }
}

/// One listed model.
fn card(id: &str, created: u64, root: Option<&str>) -> Value {
    let mut card = json!({"id": id, "object": "model", "created": created, "owned_by": OWNER});
    if let Some(root) = root {
        card["root"] = root.into();
    }
    card
}

/// The models `tenant` may call now, by id.
fn listed(shared: &Shared, tenant: &crate::tenants::Tenant) -> BTreeMap<String, Value> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The registration of the longest-connected node serving each model.
    let mut since: BTreeMap<String, u64> = BTreeMap::new();
    for node in shared.registry.views(Instant::now()) {
        let registered = now.saturating_sub(node.connected_ms / 1000);
        for service in node.spec.services.into_iter().filter(|s| s.model) {
            let at = since.entry(service.name).or_insert(registered);
            *at = (*at).min(registered);
        }
    }
    let created: BTreeMap<String, u64> = since
        .into_iter()
        .map(|(model, at)| {
            let first = shared.first_seen.created(&model, at);
            (model, first)
        })
        .collect();
    let mut out = BTreeMap::new();
    for (model, at) in &created {
        if tenant.allows(model) {
            out.insert(model.clone(), card(model, *at, None));
        }
    }
    for (alias, model) in &shared.config.models {
        if let Some(at) = created.get(model)
            && tenant.allows(model)
        {
            out.insert(alias.clone(), card(alias, *at, Some(model)));
        }
    }
    out
}

/// The caller's tenant, or the refusal's answer (boxed: it is large).
fn tenant(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Arc<crate::tenants::Tenant>, Box<Response>> {
    crate::calls::authenticate(shared, crate::tenants::api_key(headers).as_deref())
        .map_err(|refused| Box::new(refused.into_response()))
}

/// `GET /v1/models`: OpenAI's list shape.
pub(super) async fn list(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&shared, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return *refused,
    };
    let data: Vec<Value> = listed(&shared, &tenant).into_values().collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model, or 404 `model_not_found` in OpenAI's
/// error shape.
pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&shared, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return *refused,
    };
    match listed(&shared, &tenant).remove(&id) {
        Some(card) => Json(card).into_response(),
        None => HttpError::new(
            StatusCode::NOT_FOUND,
            format!("the model {id:.256} does not exist or no node serves it now"),
        )
        .code("model_not_found")
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_the_first_time_seen() {
        let seen = FirstSeen::default();
        assert_eq!(seen.created("m", 100), 100);
        assert_eq!(seen.created("m", 200), 100, "a later node changes nothing");
        assert_eq!(seen.created("m", 50), 50, "an earlier registration wins");
        assert_eq!(seen.created("other", 300), 300);
    }
}
