//! `tokenflood`: a load generator for what oha cannot do, one distinct access token per request
//! (the cache-miss path, and filling the cache for a memory measurement). mTLS with a p12 client
//! certificate, HTTP/1.1 keep-alive, fixed concurrency; prints one JSON line of results.
//!
//!   tokenflood --url https://api.example.com/api/transactions --connect 127.0.0.1:8443 \
//!              --p12 certs/example.client.p12 --ca certs/root.pem --tokens tokens.txt --concurrency 16
//!
//! With `--dpop-key KEY.pem` the tokens are sent with the `DPoP` scheme and a fresh proof each (RFC
//! 9449), all made before the clock starts, so that only the gateway's checks are measured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    connect: SocketAddr,
    p12: String,
    ca: String,
    tokens: String,
    concurrency: usize,
    dpop_key: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut url, mut connect, mut p12, mut ca, mut tokens, mut concurrency) = (None, None, None, None, None, 16);
    let mut dpop_key = None;
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--connect" => connect = Some(value.parse().map_err(|e| format!("--connect: {e}"))?),
            "--p12" => p12 = Some(value),
            "--ca" => ca = Some(value),
            "--tokens" => tokens = Some(value),
            "--concurrency" => concurrency = value.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--dpop-key" => dpop_key = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        connect: connect.ok_or("--connect is required")?,
        p12: p12.ok_or("--p12 is required")?,
        ca: ca.ok_or("--ca is required")?,
        tokens: tokens.ok_or("--tokens is required")?,
        concurrency,
        dpop_key,
    })
}

/// One `(Authorization, DPoP)` pair per token: a bearer token, or a DPoP token with its proof.
fn credentials(a: &Args, tokens: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    let Some(path) = &a.dpop_key else {
        return Ok(tokens.iter().map(|t| (format!("Bearer {t}"), None)).collect());
    };
    let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let key = mtls_dpop_client::ProofKey::from_pem(&pem).map_err(|e| format!("{path}: {e}"))?;
    let none = serde_json::json!({});
    Ok(tokens.iter().map(|t| (format!("DPoP {t}"), Some(key.proof("POST", &a.url, Some(t), &none)))).collect())
}

fn client(a: &Args) -> Result<reqwest::Client, String> {
    let der = std::fs::read(&a.p12).map_err(|e| format!("{}: {e}", a.p12))?;
    let identity = reqwest::Identity::from_pkcs12_der(&der, "Password1").map_err(|e| e.to_string())?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&a.ca).map_err(|e| format!("{}: {e}", a.ca))?)
        .map_err(|e| e.to_string())?;
    let host = url::Url::parse(&a.url).map_err(|e| e.to_string())?.host_str().unwrap_or_default().to_string();
    reqwest::Client::builder()
        .identity(identity)
        .tls_certs_only([ca])
        .resolve(&host, a.connect)
        .http1_only()
        .pool_max_idle_per_host(a.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let a = args()?;
    let text = std::fs::read_to_string(&a.tokens).map_err(|e| format!("{}: {e}", a.tokens))?;
    let lines: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    let tokens = Arc::new(credentials(&a, &lines)?);
    let client = client(&a)?;
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(tokens.len())));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (client, tokens, next, latencies, statuses, url) =
                (client.clone(), tokens.clone(), next.clone(), latencies.clone(), statuses.clone(), a.url.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((authorization, proof)) = tokens.get(i) else { break };
                    let t = Instant::now();
                    let mut req = client.post(&url).header("authorization", authorization);
                    if let Some(p) = proof {
                        req = req.header("dpop", p);
                    }
                    let result = req.body("{}").send().await;
                    let key = match result {
                        Ok(r) => {
                            let status = r.status().as_u16().to_string();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => "error".to_string(),
                    };
                    if let Ok(mut l) = latencies.lock() {
                        l.push(t.elapsed());
                    }
                    if let Ok(mut s) = statuses.lock() {
                        *s.entry(key).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().map_err(|e| e.to_string())?.clone();
    l.sort();
    let statuses = statuses.lock().map_err(|e| e.to_string())?.clone();
    let out = serde_json::json!({
        "requests": l.len(), "statuses": statuses, "seconds": elapsed,
        "rps": l.len() as f64 / elapsed,
        "p50_ms": percentile(&l, 0.50), "p99_ms": percentile(&l, 0.99), "p999_ms": percentile(&l, 0.999),
    });
    println!("{out}");
    Ok(())
}
