//! `mtls-gateway admin purge …`: calls the admin listener of one gateway (`--address`) or of every
//! replica (`--replicas NAME:PORT`, each name resolved to all its addresses, as a headless service
//! gives them), and reports each replica on a JSON line. The exit status is 0 only when every
//! replica purged: a replica that was not reached may still serve the token.

use super::protocol::{thumbprint, token_id, AdminError, PurgeAnswer, PurgeRequest};
use crate::pki::{error_chain, PkiError};
use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The default admin address, the one the shipped configuration comments suggest.
const DEFAULT_ADDRESS: &str = "127.0.0.1:9443";

/// `mtls-gateway admin ACTION`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Drop cached introspection answers on one gateway or on every replica
    ///
    /// The next request with a purged token asks the identity server again. Prints one JSON line
    /// per replica; exits 0 only when every replica purged.
    Purge(PurgeArgs),
}

/// `admin purge`: exactly one target, where to call, and one way to authenticate.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["token", "token_id", "thumbprint", "all"])))]
#[command(group(ArgGroup::new("auth").required(true).args(["cert", "secret_file"])))]
pub struct PurgeArgs {
    /// The access token itself (hashed at once, never logged)
    // Tokens, their ids and thumbprints are base64url: one may well start with `-`.
    #[arg(long, value_name = "T", allow_hyphen_values = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    token: Option<String>,
    /// The access log's token= value, or a longer prefix of the token's hash
    #[arg(long, value_name = "ID", allow_hyphen_values = true, value_parser = token_id)]
    token_id: Option<String>,
    /// With --token-id: purge even when the id matches several cached tokens
    #[arg(long, requires = "token_id")]
    several: bool,
    /// Every token bound to this client certificate (its x5t#S256)
    #[arg(long, value_name = "X5T", allow_hyphen_values = true, value_parser = thumbprint)]
    thumbprint: Option<String>,
    /// With --thumbprint: also end that certificate's open connections
    #[arg(long, requires = "thumbprint")]
    end_connections: bool,
    /// Every cached token
    #[arg(long)]
    all: bool,
    /// The admin listener of one gateway (repeatable) [default: 127.0.0.1:9443]
    #[arg(long, value_name = "HOST:PORT")]
    address: Vec<String>,
    /// Every replica: each NAME resolved to all its addresses, as a headless service gives them
    #[arg(long, value_name = "NAME:PORT[,NAME:PORT...]")]
    replicas: Vec<String>,
    /// The name the admin listener's certificate must carry [default: the host of each address]
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// The CA bundle that verifies the admin listener's certificate
    #[arg(long, value_name = "FILE", required = true)]
    ca: PathBuf,
    /// A client certificate of a subject the admin listener allows (with --key)
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The key of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// A file that holds the admin listener's secret (sent as a bearer token)
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    secret_file: Option<PathBuf>,
}

impl PurgeArgs {
    fn request(&self) -> PurgeRequest {
        PurgeRequest {
            token: self.token.clone(),
            token_id: self.token_id.clone(),
            thumbprint: self.thumbprint.clone(),
            all: self.all,
            end_connections: self.end_connections,
            several: self.several,
        }
    }

    /// `HOST:PORT` specs, each resolved to every address it has.
    fn targets(&self) -> Vec<String> {
        let replicas = self.replicas.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|s| !s.is_empty());
        let mut targets: Vec<String> = self.address.iter().cloned().chain(replicas.map(String::from)).collect();
        if targets.is_empty() && self.replicas.is_empty() {
            targets.push(DEFAULT_ADDRESS.into());
        }
        targets
    }

    /// What clap's rules cannot say: the target checked by the code the listener runs, and
    /// `--replicas` naming at least one replica.
    fn check(&self) -> Result<(), clap::Error> {
        if let Err(e) = self.request().target() {
            return Err(usage_error(ErrorKind::ArgumentConflict, e));
        }
        if self.targets().is_empty() {
            return Err(usage_error(ErrorKind::InvalidValue, "--replicas needs NAME:PORT"));
        }
        Ok(())
    }
}

/// An error in clap's words, with the usage of `admin purge`.
fn usage_error(kind: ErrorKind, message: impl std::fmt::Display) -> clap::Error {
    #[derive(clap::Parser)]
    #[command(name = "mtls-gateway admin purge")]
    struct Purge {
        #[command(flatten)]
        args: PurgeArgs,
    }
    Purge::command().error(kind, message)
}

/// Runs an admin command.
pub fn command(command: AdminCommand) -> ExitCode {
    let AdminCommand::Purge(args) = command;
    if let Err(e) = args.check() {
        let _ = e.print();
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("mtls-gateway admin: {e}");
            ExitCode::from(1)
        }
    }
}

/// Why a replica has no address to call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Unresolved {
    #[error("resolves to nothing")]
    Nothing,
    /// The resolver's own words.
    #[error("{0}")]
    Lookup(String),
}

/// Why one replica's call did not purge.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
    #[error(transparent)]
    Ca(#[from] PkiError),
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The client could not be built, or the answer not read.
    #[error(transparent)]
    Client(#[from] reqwest::Error),
    /// The call itself failed: with its causes, where the TLS or connect error is.
    #[error("{}", error_chain(.0))]
    Send(reqwest::Error),
    #[error("not a purge answer: {0}")]
    NotAnAnswer(serde_json::Error),
    #[error("{status}: {error}: {message}")]
    Refused { status: reqwest::StatusCode, error: String, message: String },
    #[error("{0}")]
    Status(reqwest::StatusCode),
    #[error("the call did not finish")]
    Unfinished,
}

/// One replica to call: how it is named in the report, its address, and the TLS name to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replica {
    label: String,
    address: Result<SocketAddr, Unresolved>,
    server_name: String,
}

/// Each spec resolved to every address it has, each address once; a name that resolves to nothing
/// is a failed replica.
async fn replicas(specs: &[String], server_name: Option<&str>) -> Vec<Replica> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        let host = spec.rsplit_once(':').map_or(spec.as_str(), |(h, _)| h).trim_matches(['[', ']']);
        let name = server_name.unwrap_or(host).to_string();
        match tokio::net::lookup_host(spec.as_str()).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    out.push(Replica {
                        label: spec.clone(),
                        address: Err(Unresolved::Nothing),
                        server_name: name.clone(),
                    });
                }
                for addr in addrs.into_iter().filter(|a| seen.insert(*a)) {
                    let label = if addr.to_string() == *spec { spec.clone() } else { format!("{spec} ({addr})") };
                    out.push(Replica { label, address: Ok(addr), server_name: name.clone() });
                }
            }
            Err(e) => out.push(Replica {
                label: spec.clone(),
                address: Err(Unresolved::Lookup(e.to_string())),
                server_name: name,
            }),
        }
    }
    out
}

async fn run(args: PurgeArgs) -> ExitCode {
    let replicas = replicas(&args.targets(), args.server_name.as_deref()).await;
    let secret = match args.secret_file.as_ref().map(std::fs::read_to_string).transpose() {
        Ok(s) => s.map(|s| s.trim().to_string()),
        Err(e) => {
            eprintln!("mtls-gateway admin: --secret-file: {e}");
            return ExitCode::from(2);
        }
    };
    let mut calls = tokio::task::JoinSet::new();
    for (i, replica) in replicas.iter().cloned().enumerate() {
        let (args, secret) = (CallArgs::from(&args), secret.clone());
        calls.spawn(async move { (i, call(&replica, &args, secret.as_deref()).await) });
    }
    let mut results: Vec<Option<Result<PurgeAnswer, CallError>>> = replicas.iter().map(|_| None).collect();
    while let Some(joined) = calls.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
    }
    report(&replicas, results)
}

/// One JSON line per replica; the exit status says whether every one of them purged.
fn report(replicas: &[Replica], results: Vec<Option<Result<PurgeAnswer, CallError>>>) -> ExitCode {
    let mut failed = 0;
    for (replica, result) in replicas.iter().zip(results) {
        let line = match result.unwrap_or(Err(CallError::Unfinished)) {
            Ok(answer) => serde_json::json!({ "replica": replica.label, "ok": true, "answer": answer }),
            Err(error) => {
                failed += 1;
                serde_json::json!({ "replica": replica.label, "ok": false, "error": error.to_string() })
            }
        };
        println!("{line}");
    }
    if failed > 0 {
        eprintln!("mtls-gateway admin: {failed} of {} replica(s) failed", replicas.len());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// What every call needs, cloned into each replica's task.
#[derive(Clone)]
struct CallArgs {
    request: PurgeRequest,
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

impl From<&PurgeArgs> for CallArgs {
    fn from(a: &PurgeArgs) -> Self {
        CallArgs { request: a.request(), ca: a.ca.clone(), identity: a.cert.clone().zip(a.key.clone()) }
    }
}

/// `POST /purge` on one replica: its answer, or what went wrong.
async fn call(replica: &Replica, args: &CallArgs, secret: Option<&str>) -> Result<PurgeAnswer, CallError> {
    let addr = replica.address.clone()?;
    let mut builder = crate::pki::pinned_client(&args.ca)?
        .resolve(&replica.server_name, addr)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    if let Some((cert, key)) = &args.identity {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|source| CallError::Read { path: p.clone(), source });
        builder = builder.identity(reqwest::Identity::from_pkcs8_pem(&read(cert)?, &read(key)?)?);
    }
    let client = builder.build()?;
    let url = format!("https://{}:{}/purge", replica.server_name, addr.port());
    let mut request = client.post(url).json(&args.request);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.map_err(CallError::Send)?;
    let status = response.status();
    let body = response.text().await?;
    if status.is_success() {
        return serde_json::from_str(&body).map_err(CallError::NotAnAnswer);
    }
    match serde_json::from_str::<AdminError>(&body) {
        Ok(e) => Err(CallError::Refused { status, error: e.error, message: e.message }),
        Err(_) => Err(CallError::Status(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line after `admin`, parsed and checked as the binary does.
    fn args(line: &str) -> Result<PurgeArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Admin {
            #[command(subcommand)]
            command: AdminCommand,
        }
        let words = std::iter::once("admin").chain(line.split(' '));
        let AdminCommand::Purge(a) = <Admin as clap::Parser>::try_parse_from(words)?.command;
        a.check()?;
        Ok(a)
    }

    #[test]
    fn the_command_line_names_one_target_and_one_way_to_authenticate() {
        let a = args("purge --all --ca ca.pem --secret-file s").unwrap();
        assert_eq!(a.targets(), vec![DEFAULT_ADDRESS.to_string()]);
        let a = args("purge --token-id AbCdEfGh --several --replicas a:1,b:2 --ca c --cert x --key y").unwrap();
        assert_eq!(a.targets(), vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(a.request().target(), Ok(crate::token::PurgeTarget::IdPrefix("AbCdEfGh".into())));
        // base64url values may start with `-`: they are values, not options.
        let a = args("purge --token -2bq_x --ca c --secret-file s").unwrap();
        assert_eq!(a.token.as_deref(), Some("-2bq_x"));
        let a = args("purge --token-id -AbCdEfG --ca c --secret-file s").unwrap();
        assert_eq!(a.token_id.as_deref(), Some("-AbCdEfG"));
        let x5t = format!("-{}", "A".repeat(42));
        assert_eq!(args(&format!("purge --thumbprint {x5t} --ca c --secret-file s")).unwrap().thumbprint, Some(x5t));
        for bad in [
            "purge --ca c --secret-file s",
            "purge --all --token t --ca c --secret-file s",
            "purge --all --secret-file s",
            "purge --all --ca c",
            "purge --all --ca c --cert x",
            "purge --all --ca c --cert x --key y --secret-file s",
            "purge --all --end-connections --ca c --secret-file s",
            "purge --all --ca c --secret-file",
            "flush --all",
            "purge --all --replicas , --ca c --secret-file s",
            "purge --token-id short --ca c --secret-file s",
            "purge --token  --ca c --secret-file s",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn every_address_of_a_spec_is_a_replica_of_its_own() {
        let specs = vec!["127.0.0.1:1".to_string(), "127.0.0.1:1".to_string(), "localhost:2".to_string()];
        let r = replicas(&specs, Some("admin.example.com")).await;
        assert_eq!(r[0].address, Ok(([127, 0, 0, 1], 1).into()));
        assert_eq!(r[0].label, "127.0.0.1:1");
        assert_eq!(r.iter().filter(|r| r.label == "127.0.0.1:1").count(), 1, "one call per address");
        assert!(r.iter().all(|r| r.server_name == "admin.example.com"));
        assert!(r.iter().any(|r| r.label == "localhost:2 (127.0.0.1:2)"), "{r:?}");
        let own = replicas(&["localhost:3".to_string()], None).await;
        assert!(own.iter().all(|r| r.server_name == "localhost"), "the name verified is the one resolved");
        let bad = replicas(&["no port".to_string()], None).await;
        assert!(bad.len() == 1 && bad[0].address.is_err(), "{bad:?}");
    }
}
