//! [`HttpTarget`]: a POST over HTTP/1.1 or HTTP/2 (reqwest, rustls).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::{CallFailure, LoadError, Target};

/// The timeout of each request unless [`HttpTarget::with_timeout`] sets
/// another: 30 s, as the SDK's calls.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What an [`HttpTarget`] sends and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTargetConfig {
    /// `http://` or `https://` URL POSTed to, e.g. the gateway's
    /// `http://127.0.0.1:4480/v1/call/echo`.
    pub url: String,
    /// The request body, the same each time.
    pub payload: Bytes,
    /// Extra headers (name, value), e.g. `x-switchyard-no-cache: true`.
    pub headers: Vec<(String, String)>,
    /// A PEM CA file trusted for `https://` besides the system's roots
    /// (e.g. the gateway's `ca.pem`).
    pub ca: Option<PathBuf>,
    /// HTTP/2: negotiated by ALPN over https, prior knowledge (h2c) over
    /// http. Otherwise HTTP/1.1 only.
    pub http2: bool,
    /// Connections: with HTTP/2, that many clients of one connection each,
    /// used in turn; with HTTP/1.1 one client keeping up to that many idle
    /// keep-alive connections (it opens one per request in flight). At
    /// least 1 is used.
    pub connections: usize,
}

/// POSTs the payload and reads the whole body; a non-2xx status is a
/// failure `http-<status>`, a connection failure `connect`, a request past
/// its timeout `timeout`, any other failure `io`.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    clients: Vec<reqwest::Client>,
    next: Arc<AtomicUsize>,
    url: reqwest::Url,
    payload: Bytes,
    headers: HeaderMap,
    timeout: Duration,
}

impl HttpTarget {
    /// Builds the clients of `config`.
    ///
    /// # Errors
    /// [`LoadError::Url`] for a bad URL, [`LoadError::Ca`] for an unreadable
    /// CA file, [`LoadError::Header`] for a header that is not valid HTTP,
    /// [`LoadError::Http`] for a client that cannot be built.
    pub fn new(config: HttpTargetConfig) -> Result<Self, LoadError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| LoadError::Url(format!("{}: {e}", config.url)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let bad = || LoadError::Header(format!("{name}: {value}"));
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?,
                HeaderValue::from_str(value.trim()).map_err(|_| bad())?,
            );
        }
        let connections = config.connections.max(1);
        let count = if config.http2 { connections } else { 1 };
        let clients = (0..count)
            .map(|_| build_client(&config, connections))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            next: Arc::new(AtomicUsize::new(0)),
            url,
            payload: config.payload,
            headers,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same target with requests timing out after `timeout` (default
    /// 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

fn build_client(
    config: &HttpTargetConfig,
    connections: usize,
) -> Result<reqwest::Client, LoadError> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections);
    if let Some(ca) = &config.ca {
        for cert in transport::tls::load_certs(ca)? {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(&cert)?);
        }
    }
    let builder = match (config.http2, config.url.starts_with("https:")) {
        (false, _) => builder.http1_only(),
        (true, false) => builder.http2_prior_knowledge(),
        // Negotiated by ALPN.
        (true, true) => builder,
    };
    Ok(builder.build()?)
}

impl Target for HttpTarget {
    async fn call(&self) -> Result<(), CallFailure> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let mut response = self.clients[turn]
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(self.payload.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(failure)?;
        // The whole body is read even for an error status: the connection
        // goes back to the pool.
        while response.chunk().await.map_err(failure)?.is_some() {}
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(CallFailure::new(format!("http-{}", status.as_u16())))
        }
    }
}

fn failure(e: reqwest::Error) -> CallFailure {
    CallFailure::new(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> HttpTargetConfig {
        HttpTargetConfig {
            url: url.into(),
            payload: Bytes::new(),
            headers: Vec::new(),
            ca: None,
            http2: false,
            connections: 0,
        }
    }

    #[test]
    fn a_bad_url_header_or_ca_is_refused_before_any_call() {
        assert!(matches!(
            HttpTarget::new(config("not a url")),
            Err(LoadError::Url(_))
        ));
        let mut bad_header = config("http://127.0.0.1:1/");
        bad_header.headers = vec![("bad name".into(), "v".into())];
        assert!(matches!(
            HttpTarget::new(bad_header),
            Err(LoadError::Header(_))
        ));
        let mut no_ca = config("https://127.0.0.1:1/");
        no_ca.ca = Some("/nonexistent/ca.pem".into());
        assert!(matches!(HttpTarget::new(no_ca), Err(LoadError::Ca(_))));
    }

    #[test]
    fn http2_uses_one_client_per_connection_and_http1_one_pool() {
        let mut h2 = config("http://127.0.0.1:1/");
        h2.http2 = true;
        h2.connections = 3;
        assert_eq!(HttpTarget::new(h2).expect("builds").clients.len(), 3);
        let mut h1 = config("http://127.0.0.1:1/");
        h1.connections = 3;
        assert_eq!(HttpTarget::new(h1).expect("builds").clients.len(), 1);
    }
}
