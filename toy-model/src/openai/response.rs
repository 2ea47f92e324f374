//! Writing OpenAI answers: completions (whole, or chunk by chunk as
//! server-sent events), embeddings, the model list.

use axum::body::Bytes;
use base64::Engine as _;
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
    /// `prompt_tokens_details.cached_tokens`: the prompt tokens found in the
    /// KV cache.
    pub(crate) cached: u32,
}

impl Usage {
    /// The `usage` object.
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
            "prompt_tokens_details": {"cached_tokens": self.cached},
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

/// The answer to `/v1/embeddings`: one vector per input, as floats or (with
/// `base64`) as the base64 of their little-endian f32 bytes.
pub(crate) fn embeddings(
    model: &str,
    vectors: &[Vec<f32>],
    base64: bool,
    prompt_tokens: u32,
) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// A unit vector of `dim` floats made from `text` alone: a 64-bit FNV-1a
/// hash of it seeds a SplitMix64 sequence, one number in [-1, 1) per float,
/// then the whole is scaled to length 1.
pub(crate) fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let raw: Vec<f64> = (0..dim)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 53 bits as a fraction in [0, 1), then [-1, 1).
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        // Never seen in practice; still a unit vector.
        let mut unit = vec![0.0; dim];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        return unit;
    }
    raw.iter().map(|x| (x / norm) as f32).collect()
}

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
            cached: 0,
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
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                          "prompt_tokens_details": {"cached_tokens": 0}},
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
                prompt: 32,
                completion: 4,
                cached: 16,
            }),
        );
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 36);
        assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
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
    fn embeddings_are_deterministic_unit_vectors() {
        for dim in [1, 8, 300] {
            let vector = embedding("hello world", dim);
            assert_eq!(vector.len(), dim);
            let norm: f64 = vector.iter().map(|x| f64::from(*x).powi(2)).sum();
            assert!((norm - 1.0).abs() < 1e-5, "norm² {norm}");
            assert_eq!(vector, embedding("hello world", dim));
        }
        assert_ne!(embedding("hello", 8), embedding("hellp", 8));
        assert_eq!(embedding("", 4).len(), 4);
    }

    #[test]
    fn the_embeddings_answer_has_openai_s_shape() {
        let vectors = vec![vec![1.0_f32, 0.0], vec![0.0, -1.0]];
        let answer = embeddings("e", &vectors, false, 3);
        assert_eq!(
            answer,
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
                    {"object": "embedding", "index": 1, "embedding": [0.0, -1.0]},
                ],
                "model": "e",
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            })
        );
        let answer = embeddings("e", &vectors[..1], true, 1);
        // 1.0f32 = 0x3f800000, little-endian, then 0.0.
        assert_eq!(answer["data"][0]["embedding"], "AACAPwAAAAA=");
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
