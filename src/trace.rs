//! W3C trace context (`traceparent`, `tracestate`) and, when configured, OTLP export of three
//! spans per request: the request itself, the introspection call and the upstream call.
//!
//! A caller's trace context is continued only when the caller is trusted (`tracing.trusted_sources`
//! or `tracing.trusted_partners`): a partner could otherwise pick the trace ids of the gateway's
//! own traces, or mark every request sampled and flood the collector. Everyone else starts a new
//! trace, and what they sent is never forwarded: neither W3C trace context nor the headers of
//! other tracing systems and W3C baggage ([`caller_only_headers`]), which an API's own tracing
//! would otherwise read the same way.
//!
//! Without export the gateway still propagates: it makes its own ids, so the API and the identity
//! server can join their spans to the same trace. With export, spans come from the OpenTelemetry
//! SDK (batch processor, OTLP/HTTP protobuf), which runs on a thread of its own, started after
//! pingora has daemonized (see [`ExportService`]).

use crate::config::{OtlpConfig, TracingConfig};
use async_trait::async_trait;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

pub mod context;

/// The process's exporter, set once when the export service starts.
static EXPORT: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

fn tracer() -> Option<&'static SdkTracer> {
    EXPORT.get().map(|(_, t)| t)
}

/// Who may continue a trace, and how many new traces are sampled: part of the routing, so a reload
/// changes it.
#[derive(Debug, Clone, Default)]
pub struct Tracing {
    cfg: TracingConfig,
}

impl Tracing {
    pub fn new(cfg: TracingConfig) -> Self {
        Tracing { cfg }
    }

    fn trusts(&self, source: Option<IpAddr>, partner: &str) -> bool {
        source.is_some_and(|ip| self.cfg.trusted_sources.iter().any(|n| n.contains(&ip)))
            || self.cfg.trusted_partners.iter().any(|p| p == partner)
    }

    /// Starts the request's trace: continued from a trusted caller's `traceparent`, new otherwise.
    /// `name` is the span's first name (the method); it is copied only when spans are exported.
    pub fn start(&self, headers: &http::HeaderMap, source: Option<IpAddr>, partner: &str, name: &str) -> RequestTrace {
        let trusted = self.trusts(source, partner);
        let parent = if trusted { remote_parent(headers) } else { None };
        let started = SystemTime::now();
        if let Some(tracer) = tracer() {
            let parent_cx = parent.map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc));
            let span = tracer
                .span_builder(name.to_string())
                .with_kind(SpanKind::Server)
                .with_start_time(started)
                .start_with_context(tracer, &parent_cx);
            let cx = parent_cx.with_span(span);
            let ids = cx.span().span_context().clone();
            return RequestTrace { cx: Some(cx), ids, trusted };
        }
        let (trace_id, flags, state) = match parent {
            Some(p) => (p.trace_id(), p.trace_flags(), p.trace_state().clone()),
            None => {
                let id = new_trace_id();
                (id, sampled_flag(id, self.cfg.sample_ratio), TraceState::default())
            }
        };
        RequestTrace { cx: None, ids: SpanContext::new(trace_id, new_span_id(), flags, false, state), trusted }
    }

    /// The configured share of new traces to sample.
    pub fn sample_ratio(&self) -> f64 {
        self.cfg.sample_ratio
    }
}

/// Headers of other tracing systems than W3C trace context, and W3C baggage: B3 (single and
/// multi-header), Jaeger, Sentry, Google Cloud, AWS X-Ray. Matched lower case, as `http` keeps them.
const CALLER_ONLY_HEADERS: &[&str] =
    &["baggage", "b3", "uber-trace-id", "sentry-trace", "x-cloud-trace-context", "x-amzn-trace-id"];
/// Families of such headers: B3's `x-b3-traceid`, `x-b3-spanid`, ...; Jaeger's baggage `uberctx-<key>`.
const CALLER_ONLY_PREFIXES: &[&str] = &["x-b3-", "uberctx-"];

/// The trace and baggage headers of `headers` that only a trusted caller's request may carry on
/// (`traceparent` and `tracestate` are always replaced by the gateway's own).
pub fn caller_only_headers(headers: &http::HeaderMap) -> Vec<http::HeaderName> {
    let foreign = |n: &str| CALLER_ONLY_HEADERS.contains(&n) || CALLER_ONLY_PREFIXES.iter().any(|p| n.starts_with(p));
    headers.keys().filter(|name| foreign(name.as_str())).cloned().collect()
}

/// The trace of one request: the request span (exported, or only its ids) and its context.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    /// The context holding the exported request span; `None` without export.
    cx: Option<Context>,
    ids: SpanContext,
    /// The caller is trusted with trace context: what it sent goes on to the API.
    trusted: bool,
}

impl RequestTrace {
    /// Whether the caller is trusted with trace context (`tracing.trusted_sources` or
    /// `trusted_partners`), so that its other trace and baggage headers go on to the API.
    pub fn from_trusted_caller(&self) -> bool {
        self.trusted
    }

    pub fn trace_id(&self) -> TraceId {
        self.ids.trace_id()
    }

    /// Whether spans are exported: otherwise nothing but the ids is kept, and callers need not
    /// build names or attributes.
    pub fn exported(&self) -> bool {
        self.cx.is_some()
    }

    /// A child span for a call the gateway makes (`introspection`, `upstream`): what its
    /// `traceparent` header carries.
    pub fn child(&self, name: &'static str) -> ChildSpan {
        let Some((cx, tracer)) = self.cx.as_ref().zip(tracer()) else {
            let ids = SpanContext::new(
                self.ids.trace_id(),
                new_span_id(),
                self.ids.trace_flags(),
                false,
                self.ids.trace_state().clone(),
            );
            return ChildSpan { span: None, ids };
        };
        let span = tracer.span_builder(name).with_kind(SpanKind::Client).start_with_context(tracer, cx);
        let ids = span.span_context().clone();
        ChildSpan { span: Some(span), ids }
    }

    /// `traceparent` for a call made on behalf of this request without a span of its own.
    pub fn traceparent(&self) -> String {
        traceparent(&self.ids)
    }

    pub fn tracestate(&self) -> Option<String> {
        tracestate(&self.ids)
    }

    /// Ends the request span with what the access log knows; `name` is `METHOD route`.
    pub fn finish(&self, name: String, status: u16, attributes: Vec<KeyValue>) {
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        span.update_name(name);
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        for a in attributes {
            span.set_attribute(a);
        }
        if status >= 500 || status == 0 {
            span.set_status(Status::error(format!("status {status}")));
        }
        span.end();
    }
}

/// A call the gateway makes: the span to end when the answer is in, and the ids its
/// `traceparent` carries.
#[derive(Debug)]
pub struct ChildSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
    ids: SpanContext,
}

impl ChildSpan {
    pub fn traceparent(&self) -> String {
        traceparent(&self.ids)
    }

    pub fn tracestate(&self) -> Option<String> {
        tracestate(&self.ids)
    }

    /// Whether this span is exported (attributes are worth building).
    pub fn recording(&self) -> bool {
        self.span.is_some()
    }

    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.span {
            span.set_attribute(attribute);
        }
    }

    /// Ends the span; `failure` marks it as an error.
    pub fn end(mut self, failure: Option<&str>) {
        if let Some(span) = &mut self.span {
            if let Some(f) = failure {
                span.set_status(Status::error(f.to_string()));
            }
            span.end();
        }
    }
}

/// `00-<trace id>-<span id>-<flags>` in lower-case hex, written byte by byte: one per request
/// to the API, where `format!` would pad and format three integers.
fn traceparent(sc: &SpanContext) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, &sc.trace_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &sc.span_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &[sc.trace_flags().to_u8()]);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn tracestate(sc: &SpanContext) -> Option<String> {
    let header = sc.trace_state().header();
    (!header.is_empty()).then_some(header)
}

/// The caller's span context, when it sent exactly one valid `traceparent`.
fn remote_parent(headers: &http::HeaderMap) -> Option<SpanContext> {
    let mut values = headers.get_all("traceparent").iter();
    let (Some(value), None) = (values.next(), values.next()) else { return None };
    let parent = context::parse_traceparent(value.to_str().ok()?)?;
    let flags = TraceFlags::new(parent.flags) & TraceFlags::SAMPLED;
    let (trace_id, span_id) = (TraceId::from_bytes(parent.trace_id), SpanId::from_bytes(parent.parent_id));
    Some(SpanContext::new(trace_id, span_id, flags, true, remote_state(headers)))
}

/// The caller's `tracestate`, its header lines joined with commas as W3C says; empty when any
/// line does not parse, since a state read in part must not be forwarded.
fn remote_state(headers: &http::HeaderMap) -> TraceState {
    let lines: Option<Vec<&str>> = headers.get_all("tracestate").iter().map(|v| v.to_str().ok()).collect();
    let joined = lines.map(|l| l.join(","));
    let members = joined.as_deref().and_then(context::parse_tracestate);
    members.and_then(|m| TraceState::from_key_value(m).ok()).unwrap_or_default()
}

/// Every bit random: a UUID's fixed version and variant bits would skew ratio sampling.
fn new_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes())
}

fn new_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes())
}

/// The same rule as OpenTelemetry's trace-id ratio sampler: the low 63 bits of the id against the
/// ratio, so every service that samples by ratio keeps the same traces.
fn sampled_flag(id: TraceId, ratio: f64) -> TraceFlags {
    let low = u64::from_be_bytes(id.to_bytes()[8..].try_into().unwrap_or([0; 8])) >> 1;
    let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
    if ratio >= 1.0 || low < bound {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

/// Why the OTLP exporter did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("the exporter was already started")]
    AlreadyStarted,
}

/// Starts the OTLP exporter once pingora runs (after it daemonized: the batch processor's thread
/// would not survive the fork), and flushes what is left when the process stops.
pub struct ExportService {
    cfg: OtlpConfig,
    sample_ratio: f64,
}

impl ExportService {
    pub fn new(cfg: OtlpConfig, sample_ratio: f64) -> Self {
        ExportService { cfg, sample_ratio }
    }

    fn install(&self) -> Result<(), ExportError> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(self.cfg.endpoint.as_str())
            .with_timeout(self.cfg.timeout)
            .build()?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(self.cfg.interval).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(self.sample_ratio),
        ));
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(self.cfg.service_name.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "mtls-gateway");
        EXPORT.set((provider, tracer)).map_err(|_| ExportError::AlreadyStarted)
    }
}

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        match self.install() {
            Ok(()) => log::info!("tracing: exporting spans to {} every {:?}", self.cfg.endpoint, self.cfg.interval),
            // The service still lives until shutdown: pingora logs an early return as "exited".
            Err(e) => log::error!(
                "tracing: cannot start the OTLP exporter for {}: {e}; spans are not exported",
                self.cfg.endpoint
            ),
        }
        let _ = shutdown.changed().await;
        if let Some((provider, _)) = EXPORT.get() {
            // The SDK's flush blocks on its export thread.
            let provider = provider.clone();
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                log::warn!("tracing: the last spans may be lost: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn other_tracing_systems_headers_are_only_a_trusted_callers() {
        let h = headers(&[
            ("baggage", "user=1"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-sampled", "1"),
            ("uber-trace-id", "a:b:0:1"),
            ("uberctx-user", "x"),
            ("sentry-trace", "771a43a4192642f0b136d5159a501700-b6b8a7f4a9e4b4e1-1"),
            ("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1"),
            ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
            ("traceparent", PARENT),
            ("x-b3", "not a family member"),
            ("authorization", "Bearer x"),
        ]);
        let mut names: Vec<String> = caller_only_headers(&h).iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "b3",
                "baggage",
                "sentry-trace",
                "uber-trace-id",
                "uberctx-user",
                "x-amzn-trace-id",
                "x-b3-sampled",
                "x-b3-traceid",
                "x-cloud-trace-context"
            ]
        );
        let trusted = TracingConfig { trusted_sources: vec!["127.0.0.2/32".parse().unwrap()], ..Default::default() };
        let t = Tracing::new(trusted);
        assert!(t.start(&h, "127.0.0.2".parse().ok(), "-", "GET").from_trusted_caller());
        assert!(!t.start(&h, "127.0.0.1".parse().ok(), "-", "GET").from_trusted_caller());
    }

    #[test]
    fn traceparent_is_the_w3c_form_of_the_ids() {
        for (trace, span, flags) in [
            (u128::MAX, u64::MAX, 1u8),
            (1, 0x0a, 0),
            (0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7, 1),
        ] {
            let (trace, span) = (TraceId::from(trace), SpanId::from(span));
            let sc = SpanContext::new(trace, span, TraceFlags::new(flags), false, TraceState::default());
            assert_eq!(traceparent(&sc), format!("00-{trace}-{span}-{flags:02x}"));
        }
        let parsed = context::parse_traceparent(PARENT).unwrap();
        let sc = SpanContext::new(
            TraceId::from_bytes(parsed.trace_id),
            SpanId::from_bytes(parsed.parent_id),
            TraceFlags::new(parsed.flags),
            false,
            TraceState::default(),
        );
        assert_eq!(traceparent(&sc), PARENT);
    }

    fn trusting(cidr: &str) -> Tracing {
        Tracing::new(TracingConfig { trusted_sources: vec![cidr.parse().unwrap()], ..Default::default() })
    }

    #[test]
    fn a_trusted_caller_continues_its_trace_and_the_child_gets_a_new_span() {
        let h = headers(&[("traceparent", PARENT), ("tracestate", "vendor=abc")]);
        let t = trusting("10.0.0.0/8").start(&h, Some("10.1.2.3".parse().unwrap()), "other", "GET");
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = t.child("upstream").traceparent();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && child.ends_with("-01"), "{child}");
        assert!(!child.contains("00f067aa0ba902b7"), "the child has its own span id: {child}");
        assert_eq!(t.tracestate().as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn tracestate_lines_are_joined_and_a_broken_one_drops_the_state() {
        let ip = Some("10.1.2.3".parse().unwrap());
        let h = headers(&[("traceparent", PARENT), ("tracestate", "a=1, b=2"), ("tracestate", "c=3")]);
        let t = trusting("10.0.0.0/8").start(&h, ip, "other", "GET");
        assert_eq!(t.tracestate().as_deref(), Some("a=1,b=2,c=3"));
        let h = headers(&[("traceparent", PARENT), ("tracestate", "a=1"), ("tracestate", "B=2")]);
        let t = trusting("10.0.0.0/8").start(&h, ip, "other", "GET");
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "the parent still counts");
        assert_eq!(t.tracestate(), None);
    }

    #[test]
    fn an_untrusted_caller_or_a_broken_header_starts_a_new_trace() {
        let h = headers(&[("traceparent", PARENT), ("tracestate", "vendor=abc")]);
        let untrusted = trusting("10.0.0.0/8").start(&h, Some("192.0.2.1".parse().unwrap()), "acme", "GET");
        assert_ne!(untrusted.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(untrusted.tracestate(), None, "an untrusted tracestate is never forwarded");
        let by_partner = Tracing::new(TracingConfig { trusted_partners: vec!["acme".into()], ..Default::default() });
        assert_eq!(
            by_partner.start(&h, None, "acme", "GET").trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let ip = Some("10.0.0.1".parse().unwrap());
        for bad in [
            headers(&[("traceparent", PARENT), ("traceparent", PARENT)]),
            headers(&[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")]),
            headers(&[("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]),
            headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")]),
        ] {
            let t = trusting("10.0.0.0/8").start(&bad, ip, "other", "GET");
            assert_ne!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            assert!(t.trace_id() != TraceId::INVALID);
        }
    }

    #[test]
    fn the_sample_ratio_decides_new_traces_only() {
        let none = Tracing::new(TracingConfig { sample_ratio: 0.0, ..Default::default() });
        assert!(none.start(&headers(&[]), None, "other", "GET").traceparent().ends_with("-00"));
        let all = Tracing::new(TracingConfig::default());
        assert!(all.start(&headers(&[]), None, "other", "GET").traceparent().ends_with("-01"));
        let half = (0..400).filter(|_| sampled_flag(new_trace_id(), 0.5).is_sampled()).count();
        assert!((120..280).contains(&half), "{half} of 400 sampled at 0.5");
    }
}
