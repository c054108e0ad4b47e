//! W3C trace context and OTLP export, whole process: a trusted caller's trace is continued, an
//! untrusted one's is not; the request, introspection and upstream spans reach a real OTLP/HTTP
//! receiver with the right parent links, and the API and the identity server receive the
//! `traceparent` of the span that called them.

mod common;

use common::otlp::{attribute, hex, Receiver};
use common::{yaml, Options, System, API};
use std::net::IpAddr;
use std::time::Duration;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn traced_system() -> (System, Receiver) {
    let (receiver, endpoint) = Receiver::start().await;
    let tracing = format!(
        "{{otlp_endpoint: '{endpoint}', export_interval: 200ms, service_name: gw-under-test, \
         trusted_sources: ['127.0.0.2/32']}}"
    );
    let opts = Options { patches: vec![("tracing", yaml::parse(&tracing))], ..Default::default() };
    (tokio::task::block_in_place(|| System::start_with(opts)), receiver)
}

async fn echo(sys: &System, from: &str, token: &str, traceparent: &str) -> serde_json::Value {
    let client = sys.client_builder(Some("example.client.p12")).local_address(from.parse::<IpAddr>().ok()).build();
    let r = client
        .unwrap()
        .get(format!("https://{API}/api/echo"))
        .bearer_auth(token)
        .header("traceparent", traceparent)
        .header("tracestate", "caller=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn parts(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    (p[1].to_string(), p[2].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_callers_trace_is_continued_and_exported_with_parent_links() {
    let (sys, receiver) = traced_system().await;
    let token = sys.token("example.client.p12", "partner-client").await;
    let body = echo(&sys, "127.0.0.2", &token, &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")).await;
    let sent = body["headers"]["traceparent"].as_str().expect("the API gets a traceparent").to_string();
    let (trace, upstream_span) = parts(&sent);
    assert_eq!(trace, CALLER_TRACE, "the trusted caller's trace goes on");
    assert_eq!(body["headers"]["tracestate"], "caller=1");
    let stats = sys.idsvr_stats().await;
    let (intro_trace, intro_span) = parts(stats["last_traceparent"].as_str().expect("introspection got one"));
    assert_eq!(intro_trace, CALLER_TRACE);

    let spans = receiver.trace(CALLER_TRACE, 3).await;
    let by_kind = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name || s.name.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} span in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
    };
    let request = by_kind("GET ");
    let introspection = by_kind("introspection");
    let upstream = by_kind("upstream");
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN, "the request span's parent is the caller's span");
    assert_eq!(hex(&introspection.parent_span_id), hex(&request.span_id));
    assert_eq!(hex(&upstream.parent_span_id), hex(&request.span_id));
    assert_eq!(hex(&upstream.span_id), upstream_span, "the API's traceparent names the upstream span");
    assert_eq!(hex(&introspection.span_id), intro_span, "the identity server's names the introspection span");
    assert_eq!(attribute(request, "http.response.status_code").as_deref(), Some("200"));
    assert!(request.start_time_unix_nano <= upstream.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= request.end_time_unix_nano);
    assert!(receiver.services.lock().unwrap().iter().any(|s| s.contains("gw-under-test")));

    // A cached token: no introspection span, the two others.
    let again = format!("00-{CALLER_TRACE}-1111111111111111-01");
    let body = echo(&sys, "127.0.0.2", &token, &again).await;
    assert_eq!(parts(body["headers"]["traceparent"].as_str().unwrap()).0, CALLER_TRACE);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let children = receiver.trace(CALLER_TRACE, 5).await;
    let second: Vec<_> = children.iter().filter(|s| hex(&s.parent_span_id) == "1111111111111111").collect();
    assert_eq!(second.len(), 1, "one request span under the second call's parent");
    let under = children.iter().filter(|s| s.parent_span_id == second[0].span_id).count();
    assert_eq!(under, 1, "a cache hit calls only the API");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_callers_trace_context_is_replaced_not_forwarded() {
    let (sys, receiver) = traced_system().await;
    let token = sys.token("example.client.p12", "partner-client").await;
    let body = echo(&sys, "127.0.0.1", &token, &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")).await;
    let sent = body["headers"]["traceparent"].as_str().unwrap().to_string();
    let (trace, _) = parts(&sent);
    assert_ne!(trace, CALLER_TRACE, "a partner cannot choose the gateway's trace");
    assert!(body["headers"].get("tracestate").is_none(), "an untrusted tracestate is dropped: {body}");
    let spans = receiver.trace(&trace, 3).await;
    assert_eq!(spans.len(), 3, "request, introspection, upstream");
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).expect("the request span is a root");
    assert!(root.name.starts_with("GET"));
    assert!(receiver.trace(CALLER_TRACE, 0).await.is_empty(), "nothing was exported under the caller's trace");
}

#[tokio::test]
async fn without_export_the_gateway_still_propagates_its_own_trace() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let body = echo(&sys, "127.0.0.1", &token, &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")).await;
    let sent = body["headers"]["traceparent"].as_str().expect("a traceparent without export too");
    let (trace, span) = parts(sent);
    assert_ne!(trace, CALLER_TRACE, "no source is trusted by default");
    assert_eq!((trace.len(), span.len()), (32, 16));
    assert!(sent.ends_with("-01"), "new traces are sampled at the default ratio 1.0: {sent}");
    let stats = sys.idsvr_stats().await;
    assert_eq!(parts(stats["last_traceparent"].as_str().unwrap()).0, trace, "the same trace at the identity server");
}

/// Issue 29: the headers of other tracing systems and W3C baggage went on to the API from any
/// caller. They are dropped like an untrusted `traceparent`, and a trusted caller's go on.
#[tokio::test(flavor = "multi_thread")]
async fn other_trace_and_baggage_headers_reach_the_api_only_from_a_trusted_caller() {
    let (sys, _receiver) = traced_system().await;
    let token = sys.token("example.client.p12", "partner-client").await;
    let sent = [
        ("baggage", "tenant=evil"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("uber-trace-id", "80f198ee56343ba8:e457b5a2e4d86bd1:0:1"),
        ("uberctx-tenant", "evil"),
        ("sentry-trace", "771a43a4192642f0b136d5159a501700-b6b8a7f4a9e4b4e1-1"),
        ("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1"),
        ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
    ];
    for (from, forwarded) in [("127.0.0.1", false), ("127.0.0.2", true)] {
        let client = sys.client_builder(Some("example.client.p12")).local_address(from.parse::<IpAddr>().ok()).build();
        let mut req = client.unwrap().get(format!("https://{API}/api/echo")).bearer_auth(&token);
        for (name, value) in sent {
            req = req.header(name, value);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        for (name, value) in sent {
            let got = body["headers"].get(name).and_then(|v| v.as_str());
            match forwarded {
                false => assert!(got.is_none(), "{name} from an untrusted caller reached the API: {body}"),
                true => assert_eq!(got, Some(value), "{name} from a trusted caller: {body}"),
            }
        }
    }
}
