//! The OpenAI request shape, as the gateway reads it: one typed parse of a
//! chat, completion or embedding body, done once per call. The HTTP ingress
//! reads its `model` (which service) and `stream` (how to answer); prefix
//! hashing reads its prompt (chat messages, or the completion prompt). The
//! body goes to the model server unchanged: fields the gateway does not
//! name are not kept here, and an unexpected shape inside `messages` or
//! `prompt` reads as no prompt rather than an error (the model server
//! answers it with its own).

use serde::Deserialize;

/// The fields of an OpenAI request body the gateway reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Request {
    /// The model asked for: a service name or a `[models]` alias.
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Whether the answer streams as server-sent events.
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    /// A stream's options (`{"include_usage": true}` asks for a usage
    /// chunk at its end), as sent.
    #[serde(default)]
    pub(crate) stream_options: Option<serde_json::Value>,
    /// A chat's messages, in order.
    #[serde(default, deserialize_with = "lenient")]
    messages: Vec<Message>,
    /// A completion's prompt: one text or several.
    #[serde(default, deserialize_with = "lenient")]
    prompt: Option<Prompt>,
}

/// A chat message: who speaks, and what.
#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// A message's content: a text, or parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One part of a message's content (`{"type": "text", "text": "..."}`;
/// an image part has no text).
#[derive(Debug, Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

/// A completion's prompt.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// Reads a field as `T`, or as its default when it has another shape: a
/// body the gateway cannot read a prompt from still names its model.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

impl Request {
    /// Parses a request body.
    ///
    /// # Errors
    /// The JSON error when the body is not a JSON object.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The prompt's words as the model reads them, at most about `max`:
    /// chat messages in order, each opened by a role token (`<|user|>`),
    /// then the completion prompt (the first, when several). The words of
    /// a message that crosses `max` are all kept.
    pub(crate) fn prompt_words(&self, max: usize) -> Vec<&str> {
        let mut words: Vec<&str> = Vec::new();
        for message in &self.messages {
            words.push(role_token(&message.role));
            match &message.content {
                Some(Content::Text(text)) => words.extend(text.split_whitespace()),
                Some(Content::Parts(parts)) => {
                    for text in parts.iter().filter_map(|p| p.text.as_deref()) {
                        words.extend(text.split_whitespace());
                    }
                }
                None => {}
            }
            if words.len() >= max {
                return words;
            }
        }
        match &self.prompt {
            Some(Prompt::One(text)) => words.extend(text.split_whitespace()),
            Some(Prompt::Many(texts)) => {
                if let Some(first) = texts.first() {
                    words.extend(first.split_whitespace());
                }
            }
            None => {}
        }
        words
    }
}

/// The token that opens a message of `role`.
fn role_token(role: &str) -> &'static str {
    match role {
        "system" | "developer" => "<|system|>",
        "user" => "<|user|>",
        "assistant" => "<|assistant|>",
        "tool" | "function" => "<|tool|>",
        _ => "<|other|>",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(json: serde_json::Value) -> Request {
        Request::parse(&serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn model_stream_and_the_prompt_come_from_one_parse() {
        let r = parse(serde_json::json!({
            "model": "llama", "stream": true, "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]},
            ]
        }));
        assert_eq!(r.model.as_deref(), Some("llama"));
        assert_eq!(r.stream, Some(true));
        assert_eq!(
            r.prompt_words(100),
            ["<|system|>", "be", "brief", "<|user|>", "a", "b"]
        );
        let r = parse(serde_json::json!({"model": "m", "prompt": ["x y", "z"]}));
        assert_eq!(r.prompt_words(100), ["x", "y"]);
        assert_eq!(r.stream, None);
    }

    #[test]
    fn a_prompt_of_another_shape_is_no_prompt_not_an_error() {
        let r = parse(serde_json::json!({"model": "m", "messages": "hi", "prompt": 7}));
        assert_eq!(r.model.as_deref(), Some("m"));
        assert!(r.prompt_words(100).is_empty());
        assert!(Request::parse(b"not json").is_err());
        assert!(Request::parse(b"[1, 2]").is_err());
    }

    #[test]
    fn words_stop_after_the_message_that_reaches_the_limit() {
        let r = parse(serde_json::json!({"messages": [
            {"role": "user", "content": "a b c"},
            {"role": "user", "content": "d e f"},
        ]}));
        assert_eq!(r.prompt_words(2), ["<|user|>", "a", "b", "c"]);
    }
}
