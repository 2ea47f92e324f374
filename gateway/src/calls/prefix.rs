//! A call's prefix hashes: what a cache-aware policy matches against the
//! prompts each node was sent (`switchyard_core::prefix`).
//!
//! - The hint `affinity=KEY` (any service): one block holding the key.
//! - A call on the OpenAI chat or completions endpoint (the HTTP ingress
//!   sets it; SDK callers of an `openai` service may): the prompt's words,
//!   chat messages in order, each opened by a role token (`<|user|>`), so
//!   a conversation that resends its history shares the blocks of the
//!   turns before.
//! - Anything else: none (the payload is not parsed).

use std::sync::Arc;

use protocol::CallHead;
use switchyard_core::prefix;

use crate::config::PrefixConfig;
use crate::openai;

/// The hashes for `head` and its `payload`, empty when prefixes are off or
/// the call has no prompt or affinity key. A body that is not the JSON of
/// an OpenAI request has none: the model server will answer it with its
/// own error.
pub(crate) fn of_call(config: &PrefixConfig, head: &CallHead, payload: &[u8]) -> Arc<[u64]> {
    if !config.enabled || affinity(head).is_some() || !has_prompt(head) {
        return of_request(config, head, None);
    }
    match openai::Request::parse(payload) {
        Ok(request) => of_request(config, head, Some(&request)),
        Err(_) => Arc::default(),
    }
}

/// The hashes for `head` whose body was already parsed as `request`
/// (`None`: not an OpenAI request): the `affinity` hint's when it has one,
/// else the prompt's on the chat and completions endpoints.
pub(crate) fn of_request(
    config: &PrefixConfig,
    head: &CallHead,
    request: Option<&openai::Request>,
) -> Arc<[u64]> {
    if !config.enabled {
        return Arc::default();
    }
    if let Some(key) = affinity(head) {
        return prefix::key_hashes(key).into();
    }
    match request {
        Some(request) if has_prompt(head) => {
            let words = request.prompt_words(config.block_tokens * config.max_blocks);
            prefix::block_hashes(words, config.block_tokens, config.max_blocks).into()
        }
        _ => Arc::default(),
    }
}

/// The call's `affinity` hint, if any.
fn affinity(head: &CallHead) -> Option<&str> {
    head.hints
        .iter()
        .find(|(k, _)| k == "affinity")
        .map(|(_, v)| v.as_str())
}

/// Whether the call's endpoint takes a prompt (chat, completions).
fn has_prompt(head: &CallHead) -> bool {
    matches!(
        head.endpoint.as_deref(),
        Some("/chat/completions" | "/completions")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(endpoint: Option<&str>, hints: &[(&str, &str)]) -> CallHead {
        let mut head = CallHead::new("m", 0, 1000);
        head.endpoint = endpoint.map(Into::into);
        head.hints = hints
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        head
    }

    fn config(block_tokens: usize) -> PrefixConfig {
        PrefixConfig {
            block_tokens,
            ..PrefixConfig::default()
        }
    }

    fn chat(turns: &[(&str, &str)]) -> Vec<u8> {
        let messages: Vec<_> = turns
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"model": "m", "messages": messages})).unwrap()
    }

    #[test]
    fn a_conversation_shares_the_blocks_of_its_earlier_turns() {
        let chat_head = head(Some("/chat/completions"), &[]);
        let first = chat(&[("system", "be brief"), ("user", "one two three four five")]);
        let later = chat(&[
            ("system", "be brief"),
            ("user", "one two three four five"),
            ("assistant", "six seven eight"),
            ("user", "nine ten"),
        ]);
        let a = of_call(&config(4), &chat_head, &first);
        let b = of_call(&config(4), &chat_head, &later);
        // 2 role tokens + 7 words = 9 tokens: 2 whole blocks of 4.
        assert_eq!(a.len(), 2);
        // 4 role tokens + 12 words = 16 tokens: 4 blocks, the first 2 shared.
        assert_eq!(b.len(), 4);
        assert_eq!(a[..], b[..2]);
    }

    #[test]
    fn completion_prompts_and_content_parts_count() {
        let body =
            serde_json::to_vec(&serde_json::json!({"model": "m", "prompt": "a b c d"})).unwrap();
        assert_eq!(
            of_call(&config(2), &head(Some("/completions"), &[]), &body).len(),
            2
        );
        let parts = serde_json::to_vec(&serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a b c"}, {"type": "image_url"}]}
        ]}))
        .unwrap();
        assert_eq!(
            of_call(&config(2), &head(Some("/chat/completions"), &[]), &parts).len(),
            2
        );
    }

    #[test]
    fn affinity_wins_and_other_calls_have_none() {
        let body = chat(&[("user", "a b c d e f g h")]);
        let with_key = head(Some("/chat/completions"), &[("affinity", "user-7")]);
        assert_eq!(
            of_call(&config(2), &with_key, &body)[..],
            prefix::key_hashes("user-7")[..]
        );
        assert!(of_call(&config(2), &head(None, &[]), &body).is_empty());
        assert!(of_call(&config(2), &head(Some("/embeddings"), &[]), &body).is_empty());
        assert!(
            of_call(
                &config(2),
                &head(Some("/chat/completions"), &[]),
                b"not json"
            )
            .is_empty()
        );
        let off = PrefixConfig {
            enabled: false,
            ..config(2)
        };
        assert!(of_call(&off, &with_key, &body).is_empty());
    }
}
