//! OpenTelemetry traces of Switchyard calls, shared by the gateway and the
//! node agent: the `[tracing]` configuration, a [`Tracer`] exporting spans
//! over OTLP/HTTP (protobuf) in batches, and the W3C trace context
//! (`traceparent`) that carries a call's trace between processes.
//!
//! Tracing is off unless `otlp_endpoint` is set: an off [`Tracer`] makes
//! no spans, allocates nothing and starts no thread, so every call site
//! costs one branch. When on, the spans of a call are a handful, made with
//! explicit start and end times (so no span object has to travel with the
//! call through its stages), exported by the SDK's batch processor from
//! its own thread.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

pub use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde::{Deserialize, Serialize};

/// The OTLP/HTTP path of traces, appended to `otlp_endpoint`.
const TRACES_PATH: &str = "/v1/traces";

/// `[tracing]`: where spans go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector,
    /// Jaeger, Tempo...), e.g. `http://127.0.0.1:4318`; spans are posted to
    /// its `/v1/traces` as protobuf. Default `None`: tracing is off.
    pub otlp_endpoint: Option<String>,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The OTLP exporter could not be built (a bad endpoint URL).
    #[error("otlp exporter for {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        message: String,
    },
}

/// Makes the spans of one program (`service.name` its resource), or none
/// when tracing is off. Cloning is cheap (shared).
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("on", &self.is_on()).finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Exports what is still batched; a receiver that is gone only costs
        // the exporter's timeout.
        let _ = self.provider.shutdown();
    }
}

impl Tracer {
    /// A tracer that makes no spans.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts exporting to `config.otlp_endpoint` (off when it is `None`),
    /// as `service_name` (`switchyard-gateway`, `switchyard-agent`). The
    /// batch processor's thread posts every 5 s (`OTEL_BSP_SCHEDULE_DELAY`,
    /// ms) or per 512 spans.
    ///
    /// # Errors
    /// [`OtelError::Exporter`] when the endpoint is not a URL the exporter
    /// can use.
    pub fn start(config: &TracingConfig, service_name: &'static str) -> Result<Self, OtelError> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else {
            return Ok(Self::off());
        };
        let url = traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| OtelError::Exporter {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        let tracer = provider.tracer("switchyard");
        Ok(Self {
            inner: Some(Arc::new(Inner { provider, tracer })),
        })
    }

    /// Whether spans are made (an endpoint is configured).
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts span `name` of `kind` at `start`, a child of `parent` (a new
    /// trace when `parent` is empty), with the attributes `attributes`
    /// returns (called only when tracing is on). Ends when
    /// [`Span::end`]ed or dropped.
    pub fn span(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Parent,
        start: SystemTime,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        let Some(inner) = &self.inner else {
            return Span::none();
        };
        let cx = match &parent.0 {
            Some(context) => Context::new().with_remote_span_context(context.clone()),
            None => Context::new(),
        };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes())
            .start_with_context(&inner.tracer, &cx);
        Span { inner: Some(span) }
    }

    /// Records span `name` that ran from `start` to `end`, a child of
    /// `parent`, as [`Tracer::span`] then [`Span::end_at`].
    pub fn record(
        &self,
        name: &'static str,
        parent: &Parent,
        start: SystemTime,
        end: SystemTime,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) {
        if self.is_on() {
            self.span(name, SpanKind::Internal, parent, start, attributes)
                .end_at(end);
        }
    }

    /// Exports the spans batched so far, waiting for the receiver.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.provider.force_flush();
        }
    }
}

pub use opentelemetry::trace::SpanKind as Kind;

/// The span a new span is the child of: a remote caller's (from its
/// `traceparent`) or one of this process's. Empty: the new span starts a
/// trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parent(Option<SpanContext>);

impl Parent {
    /// The parent a W3C `traceparent` value names
    /// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`); empty for
    /// `None` or a value that is not one (as the W3C says: a malformed
    /// header starts a new trace). Versions above `00` are read by their
    /// first four fields.
    pub fn from_traceparent(traceparent: Option<&str>) -> Self {
        Self(traceparent.and_then(parse_traceparent))
    }

    /// Whether there is no parent (the next span starts a trace).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The `traceparent` value naming this span, `None` when empty.
    pub fn traceparent(&self) -> Option<String> {
        self.0.as_ref().map(format_traceparent)
    }

    /// Its trace id, 32 lowercase hex digits, `None` when empty.
    pub fn trace_id(&self) -> Option<String> {
        self.0.as_ref().map(|c| c.trace_id().to_string())
    }
}

/// A span being timed; ends when [`Span::end`]ed, [`Span::end_at`] or
/// dropped. An off tracer's spans are empty and cost nothing.
#[derive(Debug, Default)]
pub struct Span {
    inner: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// An empty span (tracing off).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this span records (tracing on and the trace sampled).
    pub fn is_recording(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_recording())
    }

    /// This span as the parent of others (empty for an empty span).
    pub fn parent(&self) -> Parent {
        Parent(
            self.inner
                .as_ref()
                .map(|s| s.span_context().clone())
                .filter(SpanContext::is_valid),
        )
    }

    /// The `traceparent` value naming this span, for the next hop; `None`
    /// for an empty span.
    pub fn traceparent(&self) -> Option<String> {
        self.parent().traceparent()
    }

    /// Sets attribute `key` to `value`.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(span) = &mut self.inner {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, saying why.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.inner {
            span.set_status(Status::error(why));
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        drop(self);
    }

    /// Ends the span at `end`.
    pub fn end_at(mut self, end: SystemTime) {
        if let Some(span) = &mut self.inner {
            span.end_with_timestamp(end);
        }
    }
}

/// The traces URL of an OTLP/HTTP base endpoint (kept as is when it names
/// `/v1/traces` already).
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    // Version ff is invalid; version 00 has exactly four fields.
    if !hex(version, 2)
        || version.eq_ignore_ascii_case("ff")
        || (version == "00" && parts.next().is_some())
        || !hex(trace_id, 32)
        || !hex(span_id, 16)
        || !hex(flags, 2)
        || trace_id.bytes().any(|b| b.is_ascii_uppercase())
        || span_id.bytes().any(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    context.is_valid().then_some(context)
}

fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

#[cfg(test)]
mod tests;
