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
use serde::Deserialize;
use switchyard_core::prefix;

use crate::config::PrefixConfig;

/// The hashes for `head` and its `payload`, empty when prefixes are off or
/// the call has no prompt or affinity key. A body that is not the JSON of
/// an OpenAI request has none: the model server will answer it with its
/// own error.
pub(crate) fn of_call(config: &PrefixConfig, head: &CallHead, payload: &[u8]) -> Arc<[u64]> {
    if !config.enabled {
        return Arc::default();
    }
    if let Some((_, key)) = head.hints.iter().find(|(k, _)| k == "affinity") {
        return prefix::key_hashes(key).into();
    }
    match head.endpoint.as_deref() {
        Some("/chat/completions" | "/completions") => {}
        _ => return Arc::default(),
    }
    let Ok(body) = serde_json::from_slice::<Body>(payload) else {
        return Arc::default();
    };
    let mut tokens: Vec<&str> = Vec::new();
    for message in &body.messages {
        tokens.push(role_token(&message.role));
        match &message.content {
            Some(Content::Text(text)) => tokens.extend(text.split_whitespace()),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let Some(text) = &part.text {
                        tokens.extend(text.split_whitespace());
                    }
                }
            }
            None => {}
        }
        if tokens.len() >= config.block_tokens * config.max_blocks {
            break;
        }
    }
    match &body.prompt {
        Some(Prompt::One(text)) => tokens.extend(text.split_whitespace()),
        Some(Prompt::Many(texts)) => {
            if let Some(first) = texts.first() {
                tokens.extend(first.split_whitespace());
            }
        }
        None => {}
    }
    prefix::block_hashes(tokens, config.block_tokens, config.max_blocks).into()
}

fn role_token(role: &str) -> &'static str {
    match role {
        "system" | "developer" => "<|system|>",
        "user" => "<|user|>",
        "assistant" => "<|assistant|>",
        "tool" | "function" => "<|tool|>",
        _ => "<|other|>",
    }
}

/// The parts of an OpenAI request that make its prompt.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    prompt: Option<Prompt>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
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
