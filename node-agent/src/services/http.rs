//! `http` and `openai` services: POST the payload to a local server; its
//! response body is the result, relayed chunk by chunk as it arrives (a
//! chunked or `text/event-stream` response streams token by token), with
//! the response's status and `Content-Type`.

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use protocol::ErrorKind;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Response, Url};

use super::reply::{self, Body, Reply, Sink};
use super::{HttpConfig, OpenAiConfig, ServiceError};
use crate::config::parse_url;

/// Largest response body read whole before the reply is sent, bytes (64
/// KiB), when its `Content-Length` says so; longer or unsized (chunked,
/// `text/event-stream`) bodies stream chunk by chunk.
const INLINE_BODY_LEN: u64 = 64 * 1024;

/// The W3C trace context header a traced call's request carries.
const TRACEPARENT: &str = "traceparent";

/// The pooled client every `http` service shares. It ignores proxy
/// environment variables: services are local to the node.
pub(crate) fn client() -> Result<Client, ServiceError> {
    Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ServiceError::internal(format!("cannot build the http client: {e}")))
}

/// An `http` service, or an `openai` one (a base URL the call's endpoint is
/// appended to).
#[derive(Debug)]
pub(crate) struct HttpService {
    client: Client,
    url: Url,
    content_type: HeaderValue,
    max_output: u64,
    /// `openai` kind: the call's endpoint is appended to `url`, and a 400
    /// or 422 from the server is the caller's bad request.
    openai: bool,
    /// `Authorization: Bearer` for the upstream (`openai` kind's
    /// `api_key`).
    authorization: Option<HeaderValue>,
    /// `openai` kind: each endpoint's URL (`url` joined with it), built
    /// once instead of on every call, in [`protocol::ENDPOINTS`]' order.
    endpoints: Vec<Result<Url, String>>,
}

impl HttpService {
    pub(crate) fn new(client: Client, config: &HttpConfig) -> Result<Self, ServiceError> {
        let url = parse_url(&config.url).map_err(ServiceError::failed)?;
        let content_type = HeaderValue::from_str(&config.content_type)
            .map_err(|e| ServiceError::failed(format!("content_type: {e}")))?;
        Ok(Self {
            client,
            url,
            content_type,
            max_output: config.max_output_bytes,
            openai: false,
            authorization: None,
            endpoints: Vec::new(),
        })
    }

    pub(crate) fn openai(client: Client, config: &OpenAiConfig) -> Result<Self, ServiceError> {
        let url = parse_url(&config.base_url).map_err(ServiceError::failed)?;
        let authorization = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| ServiceError::failed("api_key is not a header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let base = url.as_str().trim_end_matches('/');
        let endpoints = protocol::ENDPOINTS
            .iter()
            .map(|endpoint| {
                Url::parse(&format!("{base}{endpoint}"))
                    .map_err(|e| format!("joining {base} and {endpoint}: {e}"))
            })
            .collect();
        Ok(Self {
            client,
            url,
            content_type: HeaderValue::from_static("application/json"),
            max_output: config.max_output_bytes,
            openai: true,
            authorization,
            endpoints,
        })
    }

    /// Whether this is an `openai` service (a model server's base URL).
    pub(crate) fn is_openai(&self) -> bool {
        self.openai
    }

    /// Where a call goes: the service's URL, or for an `openai` service its
    /// base URL followed by the call's `endpoint` (`/chat/completions` when
    /// none).
    fn url_for(&self, endpoint: Option<&str>) -> Result<Url, ServiceError> {
        if !self.openai {
            return Ok(self.url.clone());
        }
        let endpoint = endpoint.unwrap_or(protocol::ENDPOINTS[0]);
        let Some(at) = protocol::ENDPOINTS.iter().position(|e| *e == endpoint) else {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                format!("endpoint {endpoint:.64} is not an openai endpoint"),
            ));
        };
        match self.endpoints.get(at) {
            Some(Ok(url)) => Ok(url.clone()),
            Some(Err(e)) => Err(ServiceError::internal(e.clone())),
            None => Err(ServiceError::internal(format!("no url for {endpoint}"))),
        }
    }

    /// Posts `payload` and streams a 2xx response's body as it arrives,
    /// with the response's status and `Content-Type`. The request (body
    /// included) is bounded by `timeout`; dropping the stream aborts it.
    ///
    /// # Errors
    /// `ServiceFailed` for a connection failure or a non-2xx status (with an
    /// excerpt of the body), `BadRequest` for an `openai` service's 400 or
    /// 422, `Timeout`.
    pub(crate) async fn start(
        &self,
        payload: Bytes,
        timeout: Duration,
        endpoint: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<Reply, ServiceError> {
        let url = self.url_for(endpoint)?;
        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .body(payload)
            .timeout(timeout);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(value) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            request = request.header(TRACEPARENT, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| request_error(&url, &e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error_status(response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= protocol::limits::MAX_CONTENT_TYPE_LEN)
            .map(str::to_string);
        let max_output = self.max_output;
        // A small body of known length is read here, whole: no task and
        // channel to stream it, which saves the agent CPU on every such call.
        if let Some(len) = response.content_length()
            && len <= INLINE_BODY_LEN.min(max_output)
        {
            let body = response
                .bytes()
                .await
                .map_err(|e| request_error(&url, &e, timeout))?;
            return Ok(Reply {
                content_type,
                status: Some(status.as_u16()),
                body: Body::Whole(body),
            });
        }
        let chunks = reply::stream(move |sink| body(response, url, max_output, timeout, sink));
        Ok(Reply {
            content_type,
            status: Some(status.as_u16()),
            body: Body::Stream(chunks),
        })
    }
}

impl HttpService {
    /// The error for a response with a non-2xx status: `BadRequest` for an
    /// `openai` service's 400 or 422, else `ServiceFailed`, with the status
    /// and an excerpt of the body in the message; the status and, when the
    /// body is JSON of at most [`protocol::limits::MAX_ERROR_BODY_LEN`]
    /// bytes, the body itself ride along for the caller.
    async fn error_status(&self, response: Response) -> ServiceError {
        let status = response.status();
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let max = protocol::limits::MAX_ERROR_BODY_LEN;
        let bytes = excerpt(response, max + 1).await;
        let text = String::from_utf8_lossy(&bytes);
        let kind = match status.as_u16() {
            400 | 422 if self.openai => ErrorKind::BadRequest,
            _ => ErrorKind::ServiceFailed,
        };
        let mut e = ServiceError::new(kind, format!("http status {status}: {}", text.trim()));
        e.status = Some(status.as_u16());
        if json && bytes.len() <= max && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
        {
            e.body = Some(text.into_owned());
        }
        e
    }
}

/// Hands the response body to `sink` chunk by chunk as it arrives.
async fn body(
    mut response: Response,
    url: Url,
    max_output: u64,
    timeout: Duration,
    sink: Sink,
) -> Result<(), ServiceError> {
    let too_large = || ServiceError::failed(format!("response body exceeds {max_output} bytes"));
    if response.content_length().unwrap_or(0) > max_output {
        return Err(too_large());
    }
    let mut total = 0u64;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if total > max_output {
                    return Err(too_large());
                }
                if sink.data(chunk).await.is_err() {
                    // The call was dropped: dropping the response aborts it.
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(request_error(&url, &e, timeout)),
        }
    }
}

fn request_error(url: &Url, e: &reqwest::Error, timeout: Duration) -> ServiceError {
    if e.is_timeout() {
        let mut error = ServiceError::timeout(timeout);
        // Timed out connecting: nothing of the request was written.
        error.not_run = e.is_connect();
        return error;
    }
    let chain = chain(e);
    if e.is_connect() {
        // No connection, so nothing of the request was written.
        let mut error = ServiceError::failed(format!("cannot connect to {url}: {chain}"));
        error.not_run = true;
        error
    } else {
        ServiceError::failed(format!("request to {url} failed: {chain}"))
    }
}

/// The first `max` bytes of the body, for error messages; read errors end it.
async fn excerpt(mut response: Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(max - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// An error and its sources on one line (reqwest's own message is terse).
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
