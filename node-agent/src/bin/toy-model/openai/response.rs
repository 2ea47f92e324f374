//! Writing OpenAI answers: completions (whole, or chunk by chunk as
//! server-sent events), the model list.

use axum::body::Bytes;
use serde_json::{Value, json};

use super::request::{Finish, Kind};

/// The fields every completion answer and chunk starts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    /// The route, which picks the `object` type and the choice's shape.
    pub(crate) kind: Kind,
    /// `id`, the same in every chunk of one answer.
    pub(crate) id: &'a str,
    /// `created`, Unix seconds.
    pub(crate) created: u64,
    /// `model`: the request's, else the server's name.
    pub(crate) model: &'a str,
}

/// Token counts, for `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// `prompt_tokens`.
    pub(crate) prompt: u32,
    /// `completion_tokens`.
    pub(crate) completion: u32,
}

impl Usage {
    /// The `usage` object.
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
        })
    }
}

/// What one streamed chunk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    /// The first chat chunk: `delta.role` (no text yet).
    Role,
    /// One token.
    Token(&'a str),
    /// The end: `finish_reason`, no text.
    Finish(Finish),
    /// `stream_options.include_usage`: no choices, `usage`.
    Usage(Usage),
}

/// A whole answer: `chat.completion` (`choices[0].message`) or
/// `text_completion` (`choices[0].text`).
pub(crate) fn completion(head: Head<'_>, text: &str, finish: Finish, usage: Usage) -> Value {
    let choice = match head.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }),
        Kind::Text => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }),
    };
    let object = match head.kind {
        Kind::Chat => "chat.completion",
        Kind::Text => "text_completion",
    };
    json!({
        "id": head.id,
        "object": object,
        "created": head.created,
        "model": head.model,
        "choices": [choice],
        "usage": usage.json(),
    })
}

/// One streamed chunk: `chat.completion.chunk` (`choices[0].delta`) or
/// `text_completion` (`choices[0].text`).
pub(crate) fn chunk(head: Head<'_>, part: Part<'_>) -> Value {
    let (object, choices) = match head.kind {
        Kind::Chat => ("chat.completion.chunk", chat_choices(part)),
        Kind::Text => ("text_completion", text_choices(part)),
    };
    let mut chunk = json!({
        "id": head.id,
        "object": object,
        "created": head.created,
        "model": head.model,
        "choices": choices,
    });
    if let (Part::Usage(usage), Value::Object(fields)) = (part, &mut chunk) {
        fields.insert("usage".to_string(), usage.json());
    }
    chunk
}

/// A chat chunk's `choices`.
fn chat_choices(part: Part<'_>) -> Value {
    let (delta, finish) = match part {
        Part::Role => (json!({"role": "assistant", "content": ""}), None),
        Part::Token(token) => (json!({"content": token}), None),
        Part::Finish(finish) => (json!({}), Some(finish.as_str())),
        Part::Usage(_) => return json!([]),
    };
    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
}

/// A text chunk's `choices`.
fn text_choices(part: Part<'_>) -> Value {
    let (text, finish) = match part {
        Part::Role => ("", None),
        Part::Token(token) => (token, None),
        Part::Finish(finish) => ("", Some(finish.as_str())),
        Part::Usage(_) => return json!([]),
    };
    json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}])
}

/// A server-sent event carrying `data`: `data: {json}` and a blank line.
pub(crate) fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The event that ends a stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// The answer to `GET /v1/models`: the one model, `name`.
pub(crate) fn models(name: &str) -> Value {
    json!({
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "switchyard-toy-model"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: Head<'static> = Head {
        kind: Kind::Chat,
        id: "chatcmpl-toy-1",
        created: 7,
        model: "llama",
    };
    const TEXT: Head<'static> = Head {
        kind: Kind::Text,
        id: "cmpl-toy-2",
        created: 7,
        model: "llama",
    };

    #[test]
    fn whole_answers_have_openai_s_shape() {
        let usage = Usage {
            prompt: 3,
            completion: 2,
        };
        assert_eq!(
            completion(CHAT, "a b ", Finish::Length, usage),
            json!({
                "id": "chatcmpl-toy-1",
                "object": "chat.completion",
                "created": 7,
                "model": "llama",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "a b "},
                    "logprobs": null,
                    "finish_reason": "length",
                }],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })
        );
        let text = completion(TEXT, "a ", Finish::Stop, usage);
        assert_eq!(text["object"], "text_completion");
        assert_eq!(
            text["choices"],
            json!([{"index": 0, "text": "a ", "logprobs": null, "finish_reason": "stop"}])
        );
    }

    #[test]
    fn chat_chunks_have_openai_s_shape() {
        let role = chunk(CHAT, Part::Role);
        assert_eq!(
            role,
            json!({
                "id": "chatcmpl-toy-1",
                "object": "chat.completion.chunk",
                "created": 7,
                "model": "llama",
                "choices": [{
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": null,
                }],
            })
        );
        let token = chunk(CHAT, Part::Token("hi "));
        assert_eq!(token["choices"][0]["delta"], json!({"content": "hi "}));
        assert_eq!(token["choices"][0]["finish_reason"], Value::Null);
        let end = chunk(CHAT, Part::Finish(Finish::Length));
        assert_eq!(end["choices"][0]["delta"], json!({}));
        assert_eq!(end["choices"][0]["finish_reason"], "length");
        assert!(end.get("usage").is_none());
        let usage = chunk(
            CHAT,
            Part::Usage(Usage {
                prompt: 1,
                completion: 4,
            }),
        );
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
    }

    #[test]
    fn text_chunks_have_openai_s_shape() {
        let token = chunk(TEXT, Part::Token("hi "));
        assert_eq!(token["object"], "text_completion");
        assert_eq!(
            token["choices"],
            json!([{"index": 0, "text": "hi ", "logprobs": null, "finish_reason": null}])
        );
        let end = chunk(TEXT, Part::Finish(Finish::Stop));
        assert_eq!(end["choices"][0]["text"], "");
        assert_eq!(end["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn events_are_sse_data_lines() {
        assert_eq!(event(&json!({"a": 1})), Bytes::from("data: {\"a\":1}\n\n"));
        assert_eq!(DONE, b"data: [DONE]\n\n");
    }

    #[test]
    fn the_model_list_names_the_model() {
        assert_eq!(
            models("llama"),
            json!({"object": "list", "data": [{
                "id": "llama", "object": "model", "created": 0, "owned_by": "switchyard-toy-model",
            }]})
        );
    }
}
