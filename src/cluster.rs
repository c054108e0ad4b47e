//! State that several replicas share, on a Redis-protocol server (Redis 7, Valkey): the partners'
//! rate limits and the introspection-miss bucket (GCRA in one server-side script, so concurrent
//! replicas stay exact), the DPoP proof ids (`SET NX PX`), and revocation purges (pub/sub).
//!
//! The connection lives on a runtime of its own ([`ClusterService`], a pingora background service):
//! the worker loops send each call over a channel and wait at most `cluster.timeout` for the answer,
//! so a slow or absent server never holds a request longer than that. The client is redis-rs's
//! `ConnectionManager`: one multiplexed connection (concurrent calls are pipelined), reconnected by
//! itself. What a failed call means is each use's policy (`FailPolicy`).
//!
//! Purges: a purge on one replica is published; every replica (itself included) applies what it
//! receives. A replica whose subscription is down (closed, or silent: it must answer a `PING`
//! every second) cannot know what it missed, so it stops answering from its token cache (answers
//! are then shared for `outage_cache_ttl` only, see [`Introspector`]) until it is subscribed again,
//! and then drops every cached answer.
//!
//! [`Introspector`]: crate::request::introspect::Introspector

use crate::config::{ClusterConfig, Problem};
use crate::connection::limits::Throttle;
use crate::metrics;
use crate::reason::{ClusterOp, ClusterResult};
use crate::token::PurgeTarget;
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// GCRA (generic cell rate algorithm) on the server's clock: KEYS[1] holds the theoretical arrival
/// time in µs. ARGV[1] is the emission interval (µs per request), ARGV[2] the burst tolerance (µs).
/// Answers `{1, 0}` when allowed, `{0, wait_µs}` when not.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

/// How often the purge subscription proves it is alive, and how long its `PING` may take.
const SUBSCRIPTION_CHECK: Duration = Duration::from_secs(1);
const SUBSCRIPTION_PING_WAIT: Duration = Duration::from_secs(2);

/// The channel purges are published on, under the key prefix.
const PURGE_CHANNEL: &str = "purge";

/// Whether this process may answer from its token caches: always without a cluster; with one, only
/// while its purge subscription is live. One subscription per process, so one flag.
static CACHE_TRUSTED: AtomicBool = AtomicBool::new(true);

pub fn cache_trusted() -> bool {
    CACHE_TRUSTED.load(Ordering::Acquire)
}

/// Why a shared call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterError {
    /// No answer within `cluster.timeout`.
    Timeout,
    /// Not connected, or the server answered an error.
    Unavailable,
}

/// Why the connection to the server cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{}: {source}", path.display())]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("the URL cannot carry a password")]
    Password,
    #[error(transparent)]
    Client(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    SubscribeTimeout(Duration),
    #[error("cannot subscribe to {channel}: {error}")]
    Subscribe { channel: String, error: redis::RedisError },
}

enum Call {
    Gcra { key: String, interval_us: u64, tolerance_us: u64 },
    FirstUse { key: String, ttl_ms: u64 },
    Publish { channel: String, payload: String },
    Ping,
}

enum Answer {
    Gcra(Result<(), Duration>),
    FirstUse(bool),
    Published,
    Pong,
}

struct Job {
    call: Call,
    reply: oneshot::Sender<Result<Answer, ClusterError>>,
}

/// The handle the request path uses; cheap to share. Calls go to [`ClusterService`]'s runtime.
pub struct Cluster {
    cfg: ClusterConfig,
    jobs: mpsc::Sender<Job>,
    /// Taken once by the service that serves the calls.
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    /// The CA and client certificate, read and checked when the configuration is built.
    tls: Option<redis::TlsCertificates>,
}

/// Applies a purge received from the cluster to this process's caches.
pub type PurgeSink =
    Arc<dyn Fn(PurgeTarget) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

impl Cluster {
    /// Reads the TLS files, so that `-t` and the start name the key of one that cannot be used.
    pub fn new(cfg: ClusterConfig) -> Result<Arc<Self>, Problem> {
        let tls = tls_certificates(&cfg)?;
        // Bounded: when the server is slow, callers time out instead of queueing without end.
        let (jobs, receiver) = mpsc::channel(4096);
        Ok(Arc::new(Cluster { cfg, jobs, receiver: Mutex::new(Some(receiver)), tls }))
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// One `PING` on the calls' connection, for `/readyz` and the dependency gauge: it answers
    /// only when the server takes this gateway's TLS and password, which a TCP probe cannot tell.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.call(ClusterOp::Ping, Call::Ping).await.map(|_| ())
    }

    /// Takes one request from the shared GCRA bucket `name`/`key`: `Ok(Err(wait))` when over.
    pub async fn gcra(
        &self,
        name: &str,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> Result<Result<(), Duration>, ClusterError> {
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        // A burst of b allows b requests at once: b - 1 intervals of tolerance, plus the first.
        let tolerance_us = interval_us * u64::from(burst.max(1));
        // The partner's key hashed: a subject of any length or spelling makes one fixed-size key
        // that no other route's bucket can spell.
        let digest = crate::token::cache_key(key);
        let key = format!("{}rl:{name}:{}", self.cfg.key_prefix, hex(&digest[..16]));
        match self.call(ClusterOp::Gcra, Call::Gcra { key, interval_us, tolerance_us }).await? {
            Answer::Gcra(r) => Ok(r),
            _ => Err(ClusterError::Unavailable),
        }
    }

    /// `true` the first time `key` is set within `ttl`, on any replica.
    pub async fn first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, ClusterError> {
        let key = format!("{}jti:{}", self.cfg.key_prefix, hex(key));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        match self.call(ClusterOp::Replay, Call::FirstUse { key, ttl_ms }).await? {
            Answer::FirstUse(first) => Ok(first),
            _ => Err(ClusterError::Unavailable),
        }
    }

    /// Sends a purge to every replica.
    pub async fn publish_purge(&self, target: &PurgeTarget) -> Result<(), ClusterError> {
        let payload = serde_json::to_string(target).map_err(|_| ClusterError::Unavailable)?;
        self.call(ClusterOp::Publish, Call::Publish { channel: self.channel(), payload }).await.map(|_| ())
    }

    async fn call(&self, op: ClusterOp, call: Call) -> Result<Answer, ClusterError> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let result = match self.jobs.try_send(Job { call, reply }) {
            Err(_) => Err(ClusterError::Unavailable),
            Ok(()) => match tokio::time::timeout(self.cfg.timeout, answer).await {
                Err(_) => Err(ClusterError::Timeout),
                Ok(Err(_)) => Err(ClusterError::Unavailable),
                Ok(Ok(r)) => r,
            },
        };
        let label = match &result {
            Ok(_) => ClusterResult::Ok,
            Err(ClusterError::Timeout) => ClusterResult::Timeout,
            Err(ClusterError::Unavailable) => ClusterResult::Error,
        };
        metrics::cluster_call(op, label, started.elapsed());
        result
    }

    fn channel(&self) -> String {
        format!("{}{PURGE_CHANNEL}", self.cfg.key_prefix)
    }

    /// The server's URL with the password from `password_file`, if any.
    fn url(&self) -> Result<String, ConnectError> {
        let mut url = self.cfg.url.clone();
        if let Some(path) = &self.cfg.password_file {
            let secret = std::fs::read_to_string(path)
                .map_err(|source| ConnectError::PasswordFile { path: path.clone(), source })?;
            url.set_password(Some(secret.trim())).map_err(|_| ConnectError::Password)?;
        }
        Ok(url.to_string())
    }

    /// The client, with the configured CA and client certificate if any.
    fn client(&self) -> Result<redis::Client, ConnectError> {
        let url = self.url()?;
        let client = match &self.tls {
            None => redis::Client::open(url),
            Some(tls) => redis::Client::build_with_tls(url, tls.clone()),
        };
        Ok(client?)
    }
}

/// Serves the calls of [`Cluster`] on its own runtime, keeps the purge subscription, and reports
/// the connection's state.
pub struct ClusterService {
    cluster: Arc<Cluster>,
    purge: PurgeSink,
}

impl ClusterService {
    pub fn new(cluster: Arc<Cluster>, purge: PurgeSink) -> Self {
        ClusterService { cluster, purge }
    }
}

#[async_trait]
impl BackgroundService for ClusterService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(jobs) = self.cluster.receiver.lock().ok().and_then(|mut r| r.take()) else {
            log::error!("cluster: the calls are already served");
            let _ = shutdown.changed().await;
            return;
        };
        let client = match self.cluster.client() {
            Ok(c) => c,
            Err(e) => {
                log::error!("cluster: cannot use {}: {e}; shared state is unavailable", self.cluster.cfg.url);
                CACHE_TRUSTED.store(false, Ordering::Release);
                let _ = shutdown.changed().await;
                return;
            }
        };
        CACHE_TRUSTED.store(false, Ordering::Release);
        tokio::select! {
            _ = serve_calls(self.cluster.clone(), client.clone(), jobs) => {}
            _ = subscribe(self.cluster.clone(), client, self.purge.clone()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// How long calls may fail without one success before their connection is replaced. The manager
/// reconnects by itself only after an I/O error; a half-open connection (a failover that leaves the
/// old address silent, a network that drops packets) gives none, only timeouts.
const STALE_CONNECTION: Duration = Duration::from_secs(5);

/// Answers the calls, each on a task of its own so that they share the connection's pipeline.
async fn serve_calls(cluster: Arc<Cluster>, client: redis::Client, mut jobs: mpsc::Receiver<Job>) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cluster.cfg.connect_timeout))
        .set_response_timeout(Some(cluster.cfg.timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut manager = loop {
        match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(m) => break m,
            Err(e) => {
                outage_warning("connect", format!("cluster: cannot connect to {}: {e}; retrying", cluster.cfg.url));
                fail_waiting(&mut jobs);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    log::info!("cluster: connected to {}", cluster.cfg.url);
    let script = Arc::new(redis::Script::new(GCRA));
    // Since when every call has failed; None after a success.
    let failing: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    while let Some(job) = jobs.recv().await {
        if take_stale(&failing) {
            let fresh = redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone());
            match tokio::time::timeout(cluster.cfg.connect_timeout, fresh).await {
                Ok(Ok(m)) => {
                    manager = m;
                    log::warn!("cluster: calls failed for {STALE_CONNECTION:?} without an error from the connection; replaced it");
                }
                // Try again after another period of failures.
                _ => record(&failing, false),
            }
        }
        let (mut con, script, failing) = (manager.clone(), script.clone(), failing.clone());
        tokio::spawn(async move {
            let answer = run(&mut con, &script, job.call).await;
            record(&failing, answer.is_ok());
            let _ = job.reply.send(answer);
        });
    }
}

fn record(failing: &Mutex<Option<Instant>>, ok: bool) {
    let mut since = failing.lock().unwrap_or_else(|p| p.into_inner());
    match (ok, *since) {
        (true, _) => *since = None,
        (false, None) => *since = Some(Instant::now()),
        (false, Some(_)) => {}
    }
}

/// Whether calls have failed for [`STALE_CONNECTION`]; if so the clock starts again.
fn take_stale(failing: &Mutex<Option<Instant>>) -> bool {
    let mut since = failing.lock().unwrap_or_else(|p| p.into_inner());
    if since.is_some_and(|at| at.elapsed() >= STALE_CONNECTION) {
        *since = None;
        return true;
    }
    false
}

/// Answers every queued call at once while there is no connection.
fn fail_waiting(jobs: &mut mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(ClusterError::Unavailable));
    }
}

async fn run(
    con: &mut redis::aio::ConnectionManager,
    script: &redis::Script,
    call: Call,
) -> Result<Answer, ClusterError> {
    let failed = |e: redis::RedisError| {
        log::debug!("cluster: {e}");
        ClusterError::Unavailable
    };
    match call {
        Call::Gcra { key, interval_us, tolerance_us } => {
            let (allowed, wait_us): (i64, i64) =
                script.key(key).arg(interval_us).arg(tolerance_us).invoke_async(con).await.map_err(failed)?;
            let r = if allowed == 1 { Ok(()) } else { Err(Duration::from_micros(wait_us.max(0) as u64)) };
            Ok(Answer::Gcra(r))
        }
        Call::FirstUse { key, ttl_ms } => {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(con)
                .await
                .map_err(failed)?;
            Ok(Answer::FirstUse(set.is_some()))
        }
        Call::Publish { channel, payload } => {
            let _: i64 = redis::cmd("PUBLISH").arg(channel).arg(payload).query_async(con).await.map_err(failed)?;
            Ok(Answer::Published)
        }
        Call::Ping => {
            let _: String = redis::cmd("PING").query_async(con).await.map_err(failed)?;
            Ok(Answer::Pong)
        }
    }
}

/// Keeps the purge subscription. While it is down, the token caches are not trusted; once it is
/// back, every cached answer is dropped (purges may have been missed meanwhile).
async fn subscribe(cluster: Arc<Cluster>, client: redis::Client, purge: PurgeSink) {
    let channel = cluster.channel();
    let mut delay = Duration::from_millis(200);
    loop {
        match open_subscription(&client, &channel, cluster.cfg.connect_timeout).await {
            Ok((sink, stream)) => {
                // Whatever was cached before this moment may have missed a purge.
                purge(PurgeTarget::All).await;
                CACHE_TRUSTED.store(true, Ordering::Release);
                log::info!("cluster: subscribed to {channel}; token caches are trusted again");
                delay = Duration::from_millis(200);
                let why = listen(sink, stream, &purge).await;
                CACHE_TRUSTED.store(false, Ordering::Release);
                log::warn!("cluster: the purge subscription {why}; token caches are bypassed until it is back");
            }
            Err(e) => {
                outage_warning("subscribe", format!("cluster: no purge subscription ({e}); token caches are bypassed"))
            }
        }
        CACHE_TRUSTED.store(false, Ordering::Release);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// A connection in subscribed mode, within `within`: a server that accepts and then hangs must not
/// hold the loop.
async fn open_subscription(
    client: &redis::Client,
    channel: &str,
    within: Duration,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), ConnectError> {
    let setup = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match tokio::time::timeout(within, setup).await {
        Err(_) => Err(ConnectError::SubscribeTimeout(within)),
        Ok(Err(error)) => Err(ConnectError::Subscribe { channel: channel.to_string(), error }),
        Ok(Ok(parts)) => Ok(parts),
    }
}

/// Applies purges until the subscription ends or stops answering a `PING`. A half-open connection
/// (a hung server, a network that drops packets) delivers nothing and reports no error, so silence
/// alone is never trusted: a purge can be missed for at most one check and one ping's wait.
async fn listen(
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
    purge: &PurgeSink,
) -> &'static str {
    let mut check = tokio::time::interval(SUBSCRIPTION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => apply(&msg, purge).await,
                None => return "ended",
            },
            _ = check.tick() => {
                // Messages that arrive meanwhile wait in the stream's queue.
                let ping = tokio::time::timeout(SUBSCRIPTION_PING_WAIT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return "stopped answering";
                }
            }
        }
    }
}

/// `cluster.ca` and the client certificate as the TLS library takes them (PEM, the key in
/// PKCS#8); the key must match the certificate.
fn tls_certificates(cfg: &ClusterConfig) -> Result<Option<redis::TlsCertificates>, Problem> {
    if cfg.ca.is_none() && cfg.client_identity.is_none() {
        return Ok(None);
    }
    let root_cert =
        cfg.ca.as_deref().map(crate::pki::certs_pem).transpose().map_err(|e| Problem::new("cluster.ca", e))?;
    let client_tls = match &cfg.client_identity {
        None => None,
        Some((cert, key)) => {
            let pkey = crate::pki::read_key(key).map_err(|e| Problem::new("cluster.client_key", e))?;
            let leaf = crate::pki::read_certs(cert).map_err(|e| Problem::new("cluster.client_certificate", e))?;
            if !leaf[0].public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false) {
                let why = format!("{} does not match the certificate {}", key.display(), cert.display());
                return Err(Problem::new("cluster.client_key", why));
            }
            let (client_cert, client_key) =
                crate::pki::pem_identity(cert, key).map_err(|e| Problem::new("cluster.client_certificate", e))?;
            Some(redis::ClientTlsConfig { client_cert, client_key })
        }
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A retry's warning, at most once a minute for each kind: an outage of an hour is a few dozen
/// lines, not thousands. Coming back is logged at INFO every time.
fn outage_warning(kind: &'static str, line: String) {
    static THROTTLE: LazyLock<Throttle<&'static str>> = LazyLock::new(|| Throttle::new(Duration::from_secs(60)));
    match THROTTLE.admit(kind) {
        Some(0) => log::warn!("{line}"),
        Some(held) => log::warn!("{line} ({held} more since the last such line)"),
        None => {}
    }
}

async fn apply(msg: &redis::Msg, purge: &PurgeSink) {
    let Ok(payload) = msg.get_payload::<String>() else { return };
    match serde_json::from_str::<PurgeTarget>(&payload) {
        Ok(target) => purge(target).await,
        Err(e) => log::warn!("cluster: ignoring a purge message that is not a purge target: {e}"),
    }
}
