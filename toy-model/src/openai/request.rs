//! Reading OpenAI requests: the checks that answer 400, and what a
//! completion will say (its tokens and why it ends).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// `max_tokens` when the request has none (OpenAI's legacy default).
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 16;

/// The most tokens one completion may ask for.
pub(crate) const MAX_TOKENS: u32 = 100_000;

/// The word an answer repeats when its prompt has none.
pub(crate) const NO_WORD: &str = "token";

/// Which completion route a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `POST /v1/chat/completions`: `messages` in, `chat.completion` out.
    Chat,
    /// `POST /v1/completions`: `prompt` in, `text_completion` out.
    Text,
}

/// An error answer in OpenAI's shape: `{"error": {"message", "type",
/// "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The `type` field (`invalid_request_error`, ...).
    pub(crate) kind: &'static str,
    /// What was wrong, in lowercase.
    pub(crate) message: String,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    /// A 503: the model `name` is still loading.
    pub(crate) fn loading(name: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            message: format!("model {name} is still loading"),
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": null}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A completion request that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompletionRequest {
    /// `model`, when given (the answer echoes it).
    pub(crate) model: Option<String>,
    /// The words the answer cycles through (never empty).
    pub(crate) words: Vec<String>,
    /// The prompt's tokens: its words, those of all messages in order for a
    /// chat (what the KV cache sees).
    pub(crate) prompt: Vec<String>,
    /// The prompt's length in tokens.
    pub(crate) prompt_tokens: u32,
    /// `max_completion_tokens`, else `max_tokens`, else 16.
    pub(crate) max_tokens: u32,
    /// `stop`: the words before which the answer ends.
    pub(crate) stop: Vec<String>,
    /// `stream`.
    pub(crate) stream: bool,
    /// `stream_options.include_usage`: a usage chunk before `[DONE]`.
    pub(crate) include_usage: bool,
}

impl CompletionRequest {
    /// What the answer will say.
    pub(crate) fn plan(&self) -> Plan {
        Plan::new(self.words.clone(), self.max_tokens, &self.stop)
    }
}

/// Why a completion ended (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// It reached `max_tokens`.
    Length,
    /// Its next word was one of `stop`'s.
    Stop,
}

impl Finish {
    /// The `finish_reason` string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Stop => "stop",
        }
    }
}

/// What a completion says: `count` tokens, token `i` being word `i` (modulo
/// the number of words) and a space, then `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The prompt's words (never empty).
    words: Vec<String>,
    /// How many tokens the answer has.
    pub(crate) count: u32,
    /// Why it ends.
    pub(crate) finish: Finish,
}

impl Plan {
    /// The answer to a prompt of `words` (`token` when empty): at most
    /// `max_tokens` tokens, ending before the first word equal to one of
    /// `stop`'s strings (trimmed).
    pub(crate) fn new(mut words: Vec<String>, max_tokens: u32, stop: &[String]) -> Self {
        if words.is_empty() {
            words.push(NO_WORD.to_string());
        }
        // The words repeat: a stop word is met within the first round or
        // never.
        let stop_at = words
            .iter()
            .position(|word| stop.iter().any(|s| s.trim() == word.as_str()));
        let (count, finish) = match stop_at {
            Some(at) if (at as u64) < u64::from(max_tokens) => (at as u32, Finish::Stop),
            _ => (max_tokens, Finish::Length),
        };
        Self {
            words,
            count,
            finish,
        }
    }

    /// Token `i` (counted from 0): a word and a space.
    pub(crate) fn token(&self, i: u32) -> String {
        let word = self
            .words
            .get(i as usize % self.words.len().max(1))
            .map_or(NO_WORD, String::as_str);
        format!("{word} ")
    }

    /// The whole answer.
    pub(crate) fn text(&self) -> String {
        (0..self.count).map(|i| self.token(i)).collect()
    }
}

/// An embeddings request that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmbeddingsRequest {
    /// `model`, when given.
    pub(crate) model: Option<String>,
    /// The texts, one vector each.
    pub(crate) inputs: Vec<String>,
    /// `"encoding_format": "base64"`: vectors as base64 little-endian f32.
    pub(crate) base64: bool,
}

/// Reads a completion request's body for the route `kind`.
pub(crate) fn completion(kind: Kind, body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let object = json_object(body)?;
    let model = string(&object, "model")?;
    let (words, prompt) = match kind {
        Kind::Chat => chat_prompt(&object)?,
        Kind::Text => text_prompt(&object)?,
    };
    let max_tokens = match count(&object, "max_completion_tokens")? {
        Some(n) => ("max_completion_tokens", n),
        None => (
            "max_tokens",
            count(&object, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS.into()),
        ),
    };
    let max_tokens = match max_tokens {
        (field, 0) => return Err(ApiError::invalid(format!("`{field}` must be at least 1"))),
        (field, n) if n > u64::from(MAX_TOKENS) => {
            return Err(ApiError::invalid(format!(
                "`{field}` must be at most {MAX_TOKENS}"
            )));
        }
        (_, n) => n as u32,
    };
    match count(&object, "n")? {
        None | Some(1) => {}
        Some(_) => return Err(ApiError::invalid("`n` must be 1 (one choice per request)")),
    }
    let stop = match field(&object, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("`stop` must be a string or an array of strings"))?,
        Some(_) => {
            return Err(ApiError::invalid(
                "`stop` must be a string or an array of strings",
            ));
        }
    };
    let stream = boolean(&object, "stream")?.unwrap_or(false);
    let include_usage = match field(&object, "stream_options") {
        None => false,
        Some(Value::Object(options)) => match field(options, "include_usage") {
            None => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(ApiError::invalid(
                    "`stream_options.include_usage` must be a boolean",
                ));
            }
        },
        Some(_) => return Err(ApiError::invalid("`stream_options` must be an object")),
    };
    Ok(CompletionRequest {
        model,
        words,
        prompt_tokens: u32::try_from(prompt.len()).unwrap_or(u32::MAX),
        prompt,
        max_tokens,
        stop,
        stream,
        include_usage,
    })
}

/// Reads an embeddings request's body.
pub(crate) fn embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let object = json_object(body)?;
    let model = string(&object, "model")?;
    let inputs = match field(&object, "input") {
        None => return Err(ApiError::invalid("missing `input`")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("`input` must not be empty"));
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("`input` must be a string or an array of strings"))?,
        Some(_) => {
            return Err(ApiError::invalid(
                "`input` must be a string or an array of strings",
            ));
        }
    };
    let base64 = match string(&object, "encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "`encoding_format` must be \"float\" or \"base64\"",
            ));
        }
    };
    Ok(EmbeddingsRequest {
        model,
        inputs,
        base64,
    })
}

/// How many tokens `text` counts for: its words.
pub(crate) fn token_count(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// The body as a JSON object.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::invalid("the request body must be a json object")),
        Err(e) => Err(ApiError::invalid(format!(
            "the request body is not valid json: {e}"
        ))),
    }
}

/// Field `key`, absent when missing or null (as OpenAI's API takes it).
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// An optional string field.
fn string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("`{key}` must be a string"))),
    }
}

/// An optional boolean field.
fn boolean(object: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(format!("`{key}` must be a boolean"))),
    }
}

/// An optional non-negative integer field.
fn count(object: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match field(object, key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("`{key}` must be a non-negative integer"))),
    }
}

/// A chat request's `messages`: the words of the last `user` message (of
/// the last message when none is from the user), and the words of all.
fn chat_prompt(object: &Map<String, Value>) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let messages = match field(object, "messages") {
        None => return Err(ApiError::invalid("missing `messages`")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid("`messages` must not be empty"));
        }
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(ApiError::invalid("`messages` must be an array")),
    };
    let mut texts = Vec::with_capacity(messages.len());
    let mut last_user = None;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(ApiError::invalid(format!(
                "`messages[{i}]` must be an object"
            )));
        };
        let role = match message.get("role") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(format!("missing `messages[{i}].role`")));
            }
            Some(Value::String(role)) => role,
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "`messages[{i}].role` must be a string"
                )));
            }
        };
        let text = content(message.get("content")).ok_or_else(|| {
            ApiError::invalid(format!(
                "`messages[{i}].content` must be a string or an array of content parts"
            ))
        })?;
        if role == "user" {
            last_user = Some(texts.len());
        }
        texts.push(text);
    }
    let all = texts.iter().flat_map(|text| words(text)).collect();
    let prompt = last_user
        .or(texts.len().checked_sub(1))
        .and_then(|i| texts.get(i))
        .map_or("", String::as_str);
    Ok((words(prompt), all))
}

/// A message's `content` as text: a string, null (no text), or an array of
/// content parts (the `text` of its `{"type": "text"}` parts); `None` when
/// it is none of these.
fn content(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                let part = part.as_object()?;
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(part.get("text")?.as_str()?),
                    Some(_) => {}
                    None => return None,
                }
            }
            Some(texts.join(" "))
        }
        Some(_) => None,
    }
}

/// A text request's `prompt`: its words, twice (the answer's and the
/// prompt's).
fn text_prompt(object: &Map<String, Value>) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let prompt = match field(object, "prompt") {
        None => return Err(ApiError::invalid("missing `prompt`")),
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => return Err(ApiError::invalid("`prompt` must not be empty")),
            [Value::String(s)] => s.as_str(),
            items if items.iter().all(Value::is_string) => {
                return Err(ApiError::invalid(
                    "`prompt` must be one string (one prompt per request)",
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    "`prompt` must be a string or an array of strings",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                "`prompt` must be a string or an array of strings",
            ));
        }
    };
    let words = words(prompt);
    Ok((words.clone(), words))
}

/// The words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<CompletionRequest, ApiError> {
        completion(Kind::Chat, body.to_string().as_bytes())
    }

    fn text(body: Value) -> Result<CompletionRequest, ApiError> {
        completion(Kind::Text, body.to_string().as_bytes())
    }

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        let error = result.expect_err("a 400");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.kind, "invalid_request_error");
        error.message
    }

    #[test]
    fn a_chat_request_takes_the_last_user_message_and_the_defaults() {
        let request = chat(json!({
            "model": "llama",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": null},
            ],
        }))
        .expect("valid");
        assert_eq!(request.model.as_deref(), Some("llama"));
        assert_eq!(request.words, ["hello", "there"]);
        assert_eq!(request.prompt_tokens, 4);
        assert_eq!(request.prompt, ["be", "brief", "hello", "there"]);
        assert_eq!(request.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(!request.stream);
        assert!(!request.include_usage);
        assert!(request.stop.is_empty());
    }

    #[test]
    fn a_chat_request_reads_content_parts_and_its_options() {
        let request = chat(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "one two"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "three"},
            ]}],
            "max_completion_tokens": 5,
            "max_tokens": 99,
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["x", "y"],
            "n": 1,
        }))
        .expect("valid");
        assert_eq!(request.model, None);
        assert_eq!(request.words, ["one", "two", "three"]);
        assert_eq!(request.max_tokens, 5);
        assert!(request.stream && request.include_usage);
        assert_eq!(request.stop, ["x", "y"]);
    }

    #[test]
    fn a_text_request_takes_its_prompt() {
        let request = text(json!({"prompt": "a b c", "max_tokens": 3, "stop": "c"})).expect("ok");
        assert_eq!(request.words, ["a", "b", "c"]);
        assert_eq!(request.prompt_tokens, 3);
        assert_eq!(request.prompt, ["a", "b", "c"]);
        assert_eq!(request.max_tokens, 3);
        assert_eq!(request.stop, ["c"]);
        let request = text(json!({"prompt": ["x y"]})).expect("one prompt in an array");
        assert_eq!(request.words, ["x", "y"]);
    }

    #[test]
    fn bad_completion_requests_say_what_is_wrong() {
        assert!(message(completion(Kind::Chat, b"not json")).contains("not valid json"));
        assert!(message(chat(json!([1]))).contains("json object"));
        assert_eq!(message(chat(json!({}))), "missing `messages`");
        assert_eq!(
            message(chat(json!({"messages": "hi"}))),
            "`messages` must be an array"
        );
        assert_eq!(
            message(chat(json!({"messages": []}))),
            "`messages` must not be empty"
        );
        assert_eq!(
            message(chat(json!({"messages": [1]}))),
            "`messages[0]` must be an object"
        );
        assert_eq!(
            message(chat(json!({"messages": [{"content": "hi"}]}))),
            "missing `messages[0].role`"
        );
        assert!(
            message(chat(json!({"messages": [{"role": "user", "content": 3}]})))
                .starts_with("`messages[0].content` must be")
        );
        let hi = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            message(chat(json!({"messages": hi, "model": 1}))),
            "`model` must be a string"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "max_tokens": "3"}))),
            "`max_tokens` must be a non-negative integer"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "max_tokens": -1}))),
            "`max_tokens` must be a non-negative integer"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "max_completion_tokens": 0}))),
            "`max_completion_tokens` must be at least 1"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "max_tokens": 100_001}))),
            "`max_tokens` must be at most 100000"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "stream": "yes"}))),
            "`stream` must be a boolean"
        );
        assert_eq!(
            message(chat(
                json!({"messages": hi, "stream_options": {"include_usage": 1}})
            )),
            "`stream_options.include_usage` must be a boolean"
        );
        assert_eq!(
            message(chat(json!({"messages": hi, "stop": [1]}))),
            "`stop` must be a string or an array of strings"
        );
        assert!(message(chat(json!({"messages": hi, "n": 2}))).starts_with("`n` must be 1"));
        assert_eq!(message(text(json!({}))), "missing `prompt`");
        assert_eq!(
            message(text(json!({"prompt": [1, 2]}))),
            "`prompt` must be a string or an array of strings"
        );
        assert!(message(text(json!({"prompt": ["a", "b"]}))).contains("one prompt"));
        assert!(message(text(json!({"prompt": 7}))).starts_with("`prompt` must be"));
    }

    #[test]
    fn null_fields_count_as_absent() {
        let request =
            text(json!({"prompt": "hi", "max_tokens": null, "stream": null, "stop": null}))
                .expect("valid");
        assert_eq!(request.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(!request.stream);
    }

    #[test]
    fn tokens_cycle_through_the_words_up_to_max_tokens() {
        let words = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let plan = Plan::new(words.clone(), 5, &[]);
        assert_eq!(plan.count, 5);
        assert_eq!(plan.finish, Finish::Length);
        assert_eq!(plan.token(0), "a ");
        assert_eq!(plan.token(4), "b ");
        assert_eq!(plan.text(), "a b c a b ");
        assert_eq!(plan, Plan::new(words, 5, &[]), "deterministic");
        let plan = Plan::new(Vec::new(), 2, &[]);
        assert_eq!(plan.text(), "token token ");
    }

    #[test]
    fn a_stop_word_ends_the_answer_before_it() {
        let words: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let plan = Plan::new(words.clone(), 10, &["c ".to_string()]);
        assert_eq!((plan.count, plan.finish), (2, Finish::Stop));
        assert_eq!(plan.text(), "a b ");
        // max_tokens first: the stop word is not reached.
        let plan = Plan::new(words.clone(), 2, &["c".to_string()]);
        assert_eq!((plan.count, plan.finish), (2, Finish::Length));
        let plan = Plan::new(words, 10, &["a".to_string()]);
        assert_eq!(
            (plan.count, plan.finish, plan.text()),
            (0, Finish::Stop, String::new())
        );
    }

    #[test]
    fn embeddings_requests_take_a_string_or_strings() {
        let request = embeddings(br#"{"input": "hi", "model": "e"}"#).expect("valid");
        assert_eq!(request.inputs, ["hi"]);
        assert_eq!(request.model.as_deref(), Some("e"));
        assert!(!request.base64);
        let request =
            embeddings(br#"{"input": ["a", "b"], "encoding_format": "base64"}"#).expect("valid");
        assert_eq!(request.inputs, ["a", "b"]);
        assert!(request.base64);
        assert_eq!(message(embeddings(b"{}")), "missing `input`");
        assert_eq!(
            message(embeddings(br#"{"input": []}"#)),
            "`input` must not be empty"
        );
        assert_eq!(
            message(embeddings(br#"{"input": [[1, 2]]}"#)),
            "`input` must be a string or an array of strings"
        );
        assert!(
            message(embeddings(br#"{"input": "a", "encoding_format": "int8"}"#))
                .starts_with("`encoding_format` must be")
        );
        assert!(message(embeddings(b"{")).contains("not valid json"));
    }

    #[test]
    fn errors_have_openai_s_shape() {
        assert_eq!(
            ApiError::invalid("bad").body(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "code": null}})
        );
        let loading = ApiError::loading("llama");
        assert_eq!(loading.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(loading.message, "model llama is still loading");
    }
}
