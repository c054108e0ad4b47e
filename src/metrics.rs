//! Prometheus metrics, registered once in the default registry, served by the operations listener
//! (`ops`). Every label that is not a configured name or an address is a typed word of
//! [`crate::reason`].

use crate::reason::{
    Attempt, Cache, ClusterOp, ClusterResult, Cut, Failure, ForwardedResult, HandshakeRefusal, Introspection, Limit,
    ProofResult, Reason, RefusedBy, StatusClass, TunnelEnd,
};
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

struct Metrics {
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    refusals: IntCounterVec,
    introspections: IntCounterVec,
    introspection_seconds: HistogramVec,
    cache_lookups: IntCounterVec,
    cache_entries: IntGaugeVec,
    passthrough: IntCounterVec,
    cuts: IntCounterVec,
    rate_limited: IntCounterVec,
    loop_connections: IntGaugeVec,
    loop_requests: IntCounterVec,
    loop_restarts: IntCounterVec,
    handshake_refusals: IntCounterVec,
    forwarded_certificates: IntCounterVec,
    crl_expired_accepted: prometheus::IntCounter,
    crl_next_update: IntGaugeVec,
    crl_expired: IntGaugeVec,
    not_after: IntGaugeVec,
    dependency_up: IntGaugeVec,
    partner_requests: IntCounterVec,
    partner_seconds: HistogramVec,
    partner_refusals: IntCounterVec,
    partner_not_after: IntGaugeVec,
    dpop_proofs: IntCounterVec,
    dpop_replay_evictions: prometheus::IntCounter,
    cluster_calls: IntCounterVec,
    cluster_seconds: HistogramVec,
    upstream_attempts: IntCounterVec,
    upstream_retries: IntCounterVec,
    upstream_ejections: IntCounterVec,
    upstream_backend_up: IntGaugeVec,
    upstream_healthy: IntGaugeVec,
    upstream_backends: IntGaugeVec,
}

/// Registration can only fail on a duplicate name, which would be a bug caught by the first test run.
#[allow(clippy::expect_used)]
static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: register_int_counter_vec!(
        "gateway_requests_total",
        "HTTP requests by route and status",
        &["route", "status"]
    )
    .expect("register gateway_requests_total"),
    request_seconds: register_histogram_vec!(
        "gateway_request_duration_seconds",
        "Time from request start to the end of the response",
        &["route"],
        BUCKETS.to_vec()
    )
    .expect("register gateway_request_duration_seconds"),
    refusals: register_int_counter_vec!(
        "gateway_refusals_total",
        "Requests refused by a filter",
        &["filter", "reason"]
    )
    .expect("register gateway_refusals_total"),
    introspections: register_int_counter_vec!(
        "gateway_introspection_requests_total",
        "Introspection calls to the identity server by result",
        &["introspection", "result"]
    )
    .expect("register gateway_introspection_requests_total"),
    introspection_seconds: register_histogram_vec!(
        "gateway_introspection_duration_seconds",
        "Introspection call latency",
        &["introspection"],
        BUCKETS.to_vec()
    )
    .expect("register gateway_introspection_duration_seconds"),
    cache_lookups: register_int_counter_vec!(
        "gateway_token_cache_lookups_total",
        "Token cache lookups: hit, miss, coalesced",
        &["introspection", "result"]
    )
    .expect("register gateway_token_cache_lookups_total"),
    cache_entries: register_int_gauge_vec!("gateway_token_cache_entries", "Tokens in the cache", &["introspection"])
        .expect("register gateway_token_cache_entries"),
    passthrough: register_int_counter_vec!(
        "gateway_passthrough_connections_total",
        "Passthrough connections by configured SNI pattern and how they ended",
        &["route", "end"]
    )
    .expect("register gateway_passthrough_connections_total"),
    cuts: register_int_counter_vec!(
        "gateway_connection_cuts_total",
        "Connections the gateway ended or refused to protect shared capacity, by reason",
        &["reason"]
    )
    .expect("register gateway_connection_cuts_total"),
    rate_limited: register_int_counter_vec!(
        "gateway_rate_limited_total",
        "Requests answered 429, by limit",
        &["limit"]
    )
    .expect("register gateway_rate_limited_total"),
    loop_connections: register_int_gauge_vec!(
        "gateway_worker_connections",
        "Connections open on each worker loop (an imbalance shows here)",
        &["loop"]
    )
    .expect("register gateway_worker_connections"),
    loop_requests: register_int_counter_vec!(
        "gateway_worker_requests_total",
        "HTTP requests served on each worker loop",
        &["loop"]
    )
    .expect("register gateway_worker_requests_total"),
    loop_restarts: register_int_counter_vec!(
        "gateway_worker_loop_restarts_total",
        "Worker loops that died (a bug: see the error log) and were replaced",
        &["loop"]
    )
    .expect("register gateway_worker_loop_restarts_total"),
    handshake_refusals: register_int_counter_vec!(
        "gateway_handshake_refusals_total",
        "TLS handshakes refused for a client certificate reason",
        &["reason"]
    )
    .expect("register gateway_handshake_refusals_total"),
    forwarded_certificates: register_int_counter_vec!(
        "gateway_forwarded_certificates_total",
        "Requests on the trusted hop's listener, by what their certificate header held",
        &["result"]
    )
    .expect("register gateway_forwarded_certificates_total"),
    crl_expired_accepted: prometheus::register_int_counter!(
        "gateway_crl_expired_accepted_total",
        "Client certificates accepted although their issuer's CRL has expired (tls.crl_expired: keep)"
    )
    .expect("register gateway_crl_expired_accepted_total"),
    crl_next_update: register_int_gauge_vec!(
        "gateway_crl_next_update_seconds",
        "nextUpdate of each loaded client CRL, seconds since the epoch",
        &["issuer"]
    )
    .expect("register gateway_crl_next_update_seconds"),
    crl_expired: register_int_gauge_vec!(
        "gateway_crl_expired",
        "1 while a loaded client CRL's nextUpdate has passed",
        &["issuer"]
    )
    .expect("register gateway_crl_expired"),
    not_after: register_int_gauge_vec!(
        "gateway_certificate_not_after_seconds",
        "notAfter of each configured certificate (by configuration key and subject), seconds since the epoch",
        &["key", "subject"]
    )
    .expect("register gateway_certificate_not_after_seconds"),
    dependency_up: register_int_gauge_vec!(
        "gateway_dependency_up",
        "1 while a dependency (an identity server) answered within metrics.ready_window",
        &["dependency"]
    )
    .expect("register gateway_dependency_up"),
    partner_requests: register_int_counter_vec!(
        "gateway_partner_requests_total",
        "HTTP requests by partner (configured names, other, none) and status class",
        &["partner", "class"]
    )
    .expect("register gateway_partner_requests_total"),
    partner_seconds: register_histogram_vec!(
        "gateway_partner_request_duration_seconds",
        "Time from request start to the end of the response, by partner",
        &["partner"],
        BUCKETS.to_vec()
    )
    .expect("register gateway_partner_request_duration_seconds"),
    partner_refusals: register_int_counter_vec!(
        "gateway_partner_refusals_total",
        "Requests the gateway refused, by partner and reason",
        &["partner", "reason"]
    )
    .expect("register gateway_partner_refusals_total"),
    partner_not_after: register_int_gauge_vec!(
        "gateway_partner_certificate_not_after_seconds",
        "Nearest notAfter among the certificates a configured partner presented in the last day",
        &["partner"]
    )
    .expect("register gateway_partner_certificate_not_after_seconds"),
    dpop_proofs: register_int_counter_vec!(
        "gateway_dpop_proofs_total",
        "DPoP proofs checked, by result (ok or the refusal reason)",
        &["result"]
    )
    .expect("register gateway_dpop_proofs_total"),
    dpop_replay_evictions: prometheus::register_int_counter!(
        "gateway_dpop_replay_evictions_total",
        "Proof ids dropped from a full replay cache before their window ended (a replay window opens)"
    )
    .expect("register gateway_dpop_replay_evictions_total"),
    cluster_calls: register_int_counter_vec!(
        "gateway_cluster_calls_total",
        "Calls to the shared-state server by operation (gcra, replay, publish) and result (ok, error, timeout)",
        &["op", "result"]
    )
    .expect("register gateway_cluster_calls_total"),
    cluster_seconds: register_histogram_vec!(
        "gateway_cluster_call_duration_seconds",
        "Time a request waited for one call to the shared-state server",
        &["op"],
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
    )
    .expect("register gateway_cluster_call_duration_seconds"),
    upstream_attempts: register_int_counter_vec!(
        "gateway_upstream_attempts_total",
        "Attempts of requests on each backend by result: ok (an answer came), connect_failed, after_send",
        &["upstream", "backend", "result"]
    )
    .expect("register gateway_upstream_attempts_total"),
    upstream_retries: register_int_counter_vec!(
        "gateway_upstream_retries_total",
        "Requests sent again to another backend, by the failure of the attempt before",
        &["upstream", "reason"]
    )
    .expect("register gateway_upstream_retries_total"),
    upstream_ejections: register_int_counter_vec!(
        "gateway_upstream_ejections_total",
        "Backends taken out of rotation after consecutive failures",
        &["upstream", "backend"]
    )
    .expect("register gateway_upstream_ejections_total"),
    upstream_backend_up: register_int_gauge_vec!(
        "gateway_upstream_backend_up",
        "1 while a backend passes its active health check, 0 while it fails it",
        &["upstream", "backend"]
    )
    .expect("register gateway_upstream_backend_up"),
    upstream_healthy: register_int_gauge_vec!(
        "gateway_upstream_healthy_backends",
        "Backends of an upstream that can be chosen now (active and passive health)",
        &["upstream"]
    )
    .expect("register gateway_upstream_healthy_backends"),
    upstream_backends: register_int_gauge_vec!(
        "gateway_upstream_backends",
        "Backends of an upstream (every address its names resolve to)",
        &["upstream"]
    )
    .expect("register gateway_upstream_backends"),
});

/// Registers every metric now, so that `/metrics` lists them before the first request.
pub fn init() {
    LazyLock::force(&METRICS);
}

/// The series of one route's requests (`gateway_requests_total` per status and
/// `gateway_request_duration_seconds`), found in their vectors the first time the route counts
/// one and kept: a request then counts without hashing its labels and without formatting its
/// status. A series still appears in `/metrics` only once something was counted in it.
#[derive(Default)]
pub struct RouteSeries {
    seconds: OnceLock<Histogram>,
    /// A counter per status answered so far: a handful.
    statuses: Mutex<Vec<(u16, IntCounter)>>,
}

impl RouteSeries {
    pub const fn new() -> Self {
        RouteSeries { seconds: OnceLock::new(), statuses: Mutex::new(Vec::new()) }
    }

    fn status(&self, route: &str, status: u16) -> IntCounter {
        let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, counter)) = statuses.iter().find(|(s, _)| *s == status) {
            return counter.clone();
        }
        let counter = METRICS.requests.with_label_values(&[route, &status.to_string()]);
        statuses.push((status, counter.clone()));
        counter
    }
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries").finish_non_exhaustive()
    }
}

/// The series of requests no route was found for (label `-`).
pub static NO_ROUTE: RouteSeries = RouteSeries::new();

/// Counts a request of the route labelled `route`, whose series are `series`.
pub fn request(series: &RouteSeries, route: &str, status: u16, elapsed: Duration) {
    series.status(route, status).inc();
    let seconds = series.seconds.get_or_init(|| METRICS.request_seconds.with_label_values(&[route]));
    seconds.observe(elapsed.as_secs_f64());
    loop_request();
}

pub fn refusal(filter: RefusedBy, reason: Reason) {
    METRICS.refusals.with_label_values(&[filter.as_str(), reason.as_str()]).inc();
}

pub fn introspection(name: &str, result: Introspection, elapsed: Duration) {
    let m = &*METRICS;
    m.introspections.with_label_values(&[name, result.as_str()]).inc();
    m.introspection_seconds.with_label_values(&[name]).observe(elapsed.as_secs_f64());
}

/// One introspection's token cache series, kept as [`RouteSeries`] are.
#[derive(Default)]
pub struct CacheSeries {
    /// By [`Cache`], in its declaration order.
    lookups: [OnceLock<IntCounter>; Cache::ALL.len()],
    entries: OnceLock<IntGauge>,
}

impl std::fmt::Debug for CacheSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSeries").finish_non_exhaustive()
    }
}

/// A token cache lookup of the introspection `name`, whose series are `series`.
pub fn cache_lookup(series: &CacheSeries, name: &str, result: Cache, entries: u64) {
    let m = &*METRICS;
    let lookups =
        series.lookups[result as usize].get_or_init(|| m.cache_lookups.with_label_values(&[name, result.as_str()]));
    lookups.inc();
    series.entries.get_or_init(|| m.cache_entries.with_label_values(&[name])).set(entries as i64);
}

/// `route` is the configured SNI pattern, never the name a client sent.
pub fn passthrough(route: &str, end: TunnelEnd) {
    METRICS.passthrough.with_label_values(&[route, end.as_str()]).inc();
}

pub fn connection_cut(reason: Cut) {
    METRICS.cuts.with_label_values(&[reason.as_str()]).inc();
}

pub fn cluster_call(op: ClusterOp, result: ClusterResult, elapsed: Duration) {
    METRICS.cluster_calls.with_label_values(&[op.as_str(), result.as_str()]).inc();
    METRICS.cluster_seconds.with_label_values(&[op.as_str()]).observe(elapsed.as_secs_f64());
}

pub fn dpop_proof(result: ProofResult) {
    METRICS.dpop_proofs.with_label_values(&[result.as_str()]).inc();
}

pub fn dpop_replay_eviction() {
    METRICS.dpop_replay_evictions.inc();
}

pub fn rate_limited(limit: Limit) {
    METRICS.rate_limited.with_label_values(&[limit.as_str()]).inc();
}

/// `index` is a worker loop's number: at most `pingora.threads` label values.
pub fn loop_connections(index: usize, delta: i64) {
    METRICS.loop_connections.with_label_values(&[&index.to_string()]).add(delta);
}

thread_local! {
    /// The request counter of the worker loop this thread runs, if it runs one: looked up once.
    static LOOP_REQUESTS: std::cell::RefCell<Option<prometheus::IntCounter>> = const { std::cell::RefCell::new(None) };
}

/// Called by a worker loop's thread when it starts.
pub fn on_loop(index: usize) {
    let counter = METRICS.loop_requests.with_label_values(&[&index.to_string()]);
    LOOP_REQUESTS.with(|c| *c.borrow_mut() = Some(counter));
}

/// Counts a request on the worker loop of the calling thread.
fn loop_request() {
    LOOP_REQUESTS.with(|c| {
        if let Some(counter) = &*c.borrow() {
            counter.inc();
        }
    });
}

pub fn loop_restart(index: usize) {
    METRICS.loop_restarts.with_label_values(&[&index.to_string()]).inc();
}

pub fn handshake_refusal(reason: HandshakeRefusal) {
    METRICS.handshake_refusals.with_label_values(&[reason.as_str()]).inc();
}

pub fn forwarded_certificate(result: ForwardedResult) {
    METRICS.forwarded_certificates.with_label_values(&[result.as_str()]).inc();
}

pub fn crl_expired_accepted() {
    METRICS.crl_expired_accepted.inc();
}

/// Labels come from the configured files (their issuers and keys), never from clients.
/// `unix` is `None` for a CRL without `nextUpdate` (it never expires: no date to alert on).
pub fn crl_next_update(issuer: &str, unix: Option<i64>, expired: bool) {
    if let Some(unix) = unix {
        METRICS.crl_next_update.with_label_values(&[issuer]).set(unix);
    }
    METRICS.crl_expired.with_label_values(&[issuer]).set(i64::from(expired));
}

/// Forgets every CRL's series before the bundle's are set again: a CRL taken out of the bundle must
/// not keep an alert firing.
pub fn clear_crls() {
    METRICS.crl_next_update.reset();
    METRICS.crl_expired.reset();
}

/// The same for the configured certificates, before a check sets them again.
pub fn clear_certificates() {
    METRICS.not_after.reset();
}

/// `dependency` is a configured name (`introspection.NAME`).
pub fn dependency_up(dependency: &str, up: bool) {
    METRICS.dependency_up.with_label_values(&[dependency]).set(i64::from(up));
}

/// One partner label's request series, kept as [`RouteSeries`] are.
#[derive(Default)]
pub struct PartnerSeries {
    /// By [`StatusClass`], in its declaration order.
    classes: [OnceLock<IntCounter>; StatusClass::ALL.len()],
    seconds: OnceLock<Histogram>,
}

impl std::fmt::Debug for PartnerSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerSeries").finish_non_exhaustive()
    }
}

/// `partner` is a configured name, `other` or `none`; `series` are its series.
pub fn partner_request(series: &PartnerSeries, partner: &str, status: u16, elapsed: Duration, refused: Option<Reason>) {
    let m = &*METRICS;
    let class = StatusClass::of(status);
    let requests =
        series.classes[class as usize].get_or_init(|| m.partner_requests.with_label_values(&[partner, class.as_str()]));
    requests.inc();
    series.seconds.get_or_init(|| m.partner_seconds.with_label_values(&[partner])).observe(elapsed.as_secs_f64());
    if let Some(reason) = refused {
        m.partner_refusals.with_label_values(&[partner, reason.as_str()]).inc();
    }
}

pub fn partner_not_after(partner: &str, unix: i64) {
    METRICS.partner_not_after.with_label_values(&[partner]).set(unix);
}

pub fn certificate_not_after(key: &str, subject: &str, unix: i64) {
    METRICS.not_after.with_label_values(&[key, subject]).set(unix);
}

/// The counter of one backend's attempts that ended with `result`, kept by the caller so that a
/// request does not look its labels up.
pub fn upstream_attempts(upstream: &str, backend: &str, result: Attempt) -> prometheus::IntCounter {
    METRICS.upstream_attempts.with_label_values(&[upstream, backend, result.as_str()])
}

/// A backend's health and ejection series, made when it is first resolved: up until a check
/// fails, no ejection.
pub fn upstream_backend_new(upstream: &str, backend: &str) {
    METRICS.upstream_ejections.with_label_values(&[upstream, backend]);
    METRICS.upstream_backend_up.with_label_values(&[upstream, backend]).set(1);
}

pub fn upstream_retry(upstream: &str, reason: Failure) {
    METRICS.upstream_retries.with_label_values(&[upstream, reason.as_str()]).inc();
}

pub fn upstream_ejection(upstream: &str, backend: &str) {
    METRICS.upstream_ejections.with_label_values(&[upstream, backend]).inc();
}

pub fn upstream_backend_up(upstream: &str, backend: &str, up: bool) {
    METRICS.upstream_backend_up.with_label_values(&[upstream, backend]).set(i64::from(up));
}

pub fn upstream_healthy_backends(upstream: &str, healthy: usize, total: usize) {
    METRICS.upstream_healthy.with_label_values(&[upstream]).set(healthy as i64);
    METRICS.upstream_backends.with_label_values(&[upstream]).set(total as i64);
}

/// The default registry in Prometheus text format: (status, content type, body).
pub fn encode() -> (u16, String, Vec<u8>) {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    let status = match encoder.encode(&prometheus::gather(), &mut body) {
        Ok(()) => 200,
        Err(_) => 500,
    };
    (status, encoder.format_type().to_string(), body)
}

// ---- Revocation of client certificates (OCSP, fetched CRLs): `crate::revocation`. ----

use crate::reason::CertStatus;
use crate::revocation::{crl::CrlFetch, ocsp::OcspResult};

struct RevocationMetrics {
    ocsp_checks: IntCounterVec,
    ocsp_seconds: Histogram,
    crl_fetches: IntCounterVec,
    fetched_crl_next_update: IntGaugeVec,
    refusals: IntCounterVec,
    soft_served: IntCounterVec,
}

/// Registration can only fail on a duplicate name, which would be a bug caught by the first test run.
#[allow(clippy::expect_used)]
static REVOCATION: LazyLock<RevocationMetrics> = LazyLock::new(|| {
    let m = RevocationMetrics {
        ocsp_checks: register_int_counter_vec!(
            "gateway_ocsp_checks_total",
            "OCSP checks of client certificates by result (cached: answered from the cache)",
            &["result"]
        )
        .expect("register gateway_ocsp_checks_total"),
        ocsp_seconds: prometheus::register_histogram!(
            "gateway_ocsp_responder_latency_seconds",
            "Time an OCSP responder took to answer (or to fail)",
            BUCKETS.to_vec()
        )
        .expect("register gateway_ocsp_responder_latency_seconds"),
        crl_fetches: register_int_counter_vec!(
            "gateway_crl_fetches_total",
            "Fetches of CRLs from distribution points and configured URLs by result",
            &["result"]
        )
        .expect("register gateway_crl_fetches_total"),
        fetched_crl_next_update: register_int_gauge_vec!(
            "gateway_fetched_crl_next_update_seconds",
            "nextUpdate of the last good CRL fetched from each URL (0: none)",
            &["url"]
        )
        .expect("register gateway_fetched_crl_next_update_seconds"),
        refusals: register_int_counter_vec!(
            "gateway_revocation_refusals_total",
            "Client certificates refused by the revocation check (OCSP, fetched CRLs), by reason",
            &["reason"]
        )
        .expect("register gateway_revocation_refusals_total"),
        soft_served: register_int_counter_vec!(
            "gateway_revocation_soft_served_total",
            "Client certificates served without a revocation answer under revocation.policy: soft",
            &["reason"]
        )
        .expect("register gateway_revocation_soft_served_total"),
    };
    for r in OcspResult::ALL {
        m.ocsp_checks.with_label_values(&[r.as_str()]);
    }
    for r in CrlFetch::ALL {
        m.crl_fetches.with_label_values(&[r.as_str()]);
    }
    m
});

/// Makes the revocation series exist from the start (a rate needs its zero).
pub fn revocation_init() {
    LazyLock::force(&REVOCATION);
}

pub fn ocsp_check(result: OcspResult) {
    REVOCATION.ocsp_checks.with_label_values(&[result.as_str()]).inc();
}

pub fn ocsp_latency(elapsed: Duration) {
    REVOCATION.ocsp_seconds.observe(elapsed.as_secs_f64());
}

pub fn crl_fetch(result: CrlFetch) {
    REVOCATION.crl_fetches.with_label_values(&[result.as_str()]).inc();
}

pub fn fetched_crl_next_update(url: &str, next_update: Option<i64>) {
    REVOCATION.fetched_crl_next_update.with_label_values(&[url]).set(next_update.unwrap_or(0));
}

pub fn revocation_refusal(status: CertStatus) {
    REVOCATION.refusals.with_label_values(&[status.as_str()]).inc();
}

pub fn revocation_soft_served(status: CertStatus) {
    REVOCATION.soft_served.with_label_values(&[status.as_str()]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept series are indexed by the words' discriminants: each word has its own slot.
    #[test]
    fn kept_series_have_a_slot_for_every_word() {
        for (i, class) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
        for (i, result) in Cache::ALL.iter().enumerate() {
            assert_eq!(*result as usize, i);
        }
    }

    #[test]
    fn a_route_counts_each_status_in_its_own_series() {
        let series = RouteSeries::new();
        let label = "metrics-test.example.com/kept/";
        for status in [200, 200, 404, 0] {
            request(&series, label, status, Duration::from_millis(1));
        }
        let count = |status: &str| METRICS.requests.with_label_values(&[label, status]).get();
        assert_eq!((count("200"), count("404"), count("0")), (2, 1, 1));
        assert_eq!(METRICS.request_seconds.with_label_values(&[label]).get_sample_count(), 4);
    }
}
