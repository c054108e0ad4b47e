//! A small OTLP/HTTP receiver for the tracing tests: it accepts `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest` (decoded with the `opentelemetry-proto` types, as a collector
//! would) and keeps every span it received.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Default)]
pub struct Receiver {
    pub spans: Arc<Mutex<Vec<Span>>>,
    /// The `service.name` of every resource that sent spans.
    pub services: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Listens on a free loopback port; its endpoint URL is returned with it.
    pub async fn start() -> (Receiver, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move { r.serve(stream).await });
            }
        });
        (receiver, url)
    }

    /// HTTP/1.1 keep-alive: one export request after the other.
    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut length = 0usize;
            let mut line = String::new();
            let mut first = true;
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if first {
                    assert!(line.starts_with("POST /v1/traces "), "unexpected request line {line:?}");
                    first = false;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
            self.keep(ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf body"));
            let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if stream.get_mut().write_all(answer).await.is_err() {
                return;
            }
        }
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        for rs in request.resource_spans {
            let name = rs.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name");
            if let Some(value) = name.and_then(|a| a.value.as_ref()) {
                self.services.lock().unwrap().push(format!("{:?}", value.value));
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
    }

    /// The spans of one trace (hex id), waiting up to 10 s for at least `n` of them.
    pub async fn trace(&self, trace_id: &str, n: usize) -> Vec<Span> {
        for _ in 0..100 {
            let found: Vec<Span> =
                self.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The string value of a span attribute.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let v = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}
