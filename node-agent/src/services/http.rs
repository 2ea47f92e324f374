//! `http` services: POST the payload to a local server, the body is the
//! result.

use std::error::Error as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Response, Url};

use super::{HttpConfig, MAX_ERROR_MESSAGE, ServiceError};

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

/// Parses a service URL; only plain `http` is supported.
pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("url {url:?} does not parse: {e}"))?;
    match parsed.scheme() {
        "http" => Ok(parsed),
        "https" => Err(format!(
            "url {url:?}: https is not supported (the agent's http client speaks plain http to local servers)"
        )),
        other => Err(format!("url {url:?}: scheme {other:?} is not http")),
    }
}

#[derive(Debug)]
pub(crate) struct HttpService {
    client: Client,
    url: Url,
    content_type: HeaderValue,
    max_output: u64,
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
        })
    }

    /// Posts `payload`; a 2xx body is the result.
    pub(crate) async fn run(
        &self,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ServiceError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .body(payload)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.request_error(&e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            let excerpt = excerpt(response, MAX_ERROR_MESSAGE / 2).await;
            let excerpt = String::from_utf8_lossy(&excerpt);
            return Err(ServiceError::failed(format!(
                "http status {status}: {}",
                excerpt.trim()
            )));
        }
        self.body(response, timeout).await
    }

    async fn body(&self, mut response: Response, timeout: Duration) -> Result<Bytes, ServiceError> {
        let too_large =
            || ServiceError::failed(format!("response body exceeds {} bytes", self.max_output));
        let declared = response.content_length().unwrap_or(0);
        if declared > self.max_output {
            return Err(too_large());
        }
        // declared <= max_output, an in-memory bound.
        let mut body = BytesMut::with_capacity(declared as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > self.max_output {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => return Err(self.request_error(&e, timeout)),
            }
        }
    }

    fn request_error(&self, e: &reqwest::Error, timeout: Duration) -> ServiceError {
        if e.is_timeout() {
            return ServiceError::timeout(timeout);
        }
        let chain = chain(e);
        if e.is_connect() {
            ServiceError::failed(format!("cannot connect to {}: {chain}", self.url))
        } else {
            ServiceError::failed(format!("request to {} failed: {chain}", self.url))
        }
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
