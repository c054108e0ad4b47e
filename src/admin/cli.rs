//! `mtls-gateway admin purge …`: calls the admin listener of one gateway (`--address`) or of every
//! replica (`--replicas NAME:PORT`, each name resolved to all its addresses, as a headless service
//! gives them), and reports each replica on a JSON line. The exit status is 0 only when every
//! replica purged: a replica that was not reached may still serve the token.

use super::protocol::{AdminError, PurgeAnswer, PurgeRequest};
use crate::pki::error_chain;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: mtls-gateway admin purge (--token T | --token-id ID [--several] | --thumbprint X5T \
[--end-connections] | --all) [--address HOST:PORT | --replicas NAME:PORT[,NAME:PORT...]] [--server-name NAME] \
--ca FILE (--cert FILE --key FILE | --secret-file FILE)";

/// The default admin address, the one the shipped configuration comments suggest.
const DEFAULT_ADDRESS: &str = "127.0.0.1:9443";

/// One call's settings, from the command line.
#[derive(Debug, Default)]
struct Args {
    request: PurgeRequest,
    /// `HOST:PORT` specs; with `replicas`, each resolved to every address it has.
    targets: Vec<String>,
    replicas: bool,
    server_name: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    secret_file: Option<PathBuf>,
}

/// Runs the command; `args` follow `admin`.
pub fn command(args: &[String]) -> ExitCode {
    let parsed = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mtls-gateway admin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime {
        Ok(rt) => rt.block_on(run(parsed)),
        Err(e) => {
            eprintln!("mtls-gateway admin: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("purge") {
        return Err("the only action is purge".into());
    }
    let mut a = Args::default();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--token" => a.request.token = Some(value()?),
            "--token-id" => a.request.token_id = Some(value()?),
            "--thumbprint" => a.request.thumbprint = Some(value()?),
            "--all" => a.request.all = true,
            "--end-connections" => a.request.end_connections = true,
            "--several" => a.request.several = true,
            "--address" => a.targets.push(value()?),
            "--replicas" => {
                a.replicas = true;
                a.targets.extend(value()?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
            }
            "--server-name" => a.server_name = Some(value()?),
            "--ca" => a.ca = Some(value()?.into()),
            "--cert" => a.cert = Some(value()?.into()),
            "--key" => a.key = Some(value()?.into()),
            "--secret-file" => a.secret_file = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    check(&mut a)?;
    Ok(a)
}

/// The combinations that make sense; the target itself is checked by the same code the listener runs.
fn check(a: &mut Args) -> Result<(), String> {
    a.request.target()?;
    if a.replicas && a.targets.is_empty() {
        return Err("--replicas needs NAME:PORT".into());
    }
    if a.targets.is_empty() {
        a.targets.push(DEFAULT_ADDRESS.into());
    }
    if a.ca.is_none() {
        return Err("--ca FILE is needed to verify the admin listener's certificate".into());
    }
    match (&a.cert, &a.key, &a.secret_file) {
        (Some(_), Some(_), None) | (None, None, Some(_)) => Ok(()),
        _ => Err("authenticate with --cert and --key, or with --secret-file".into()),
    }
}

/// One replica to call: how it is named in the report, its address, and the TLS name to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replica {
    label: String,
    address: Result<SocketAddr, String>,
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
                        address: Err("resolves to nothing".into()),
                        server_name: name.clone(),
                    });
                }
                for addr in addrs.into_iter().filter(|a| seen.insert(*a)) {
                    let label = if addr.to_string() == *spec { spec.clone() } else { format!("{spec} ({addr})") };
                    out.push(Replica { label, address: Ok(addr), server_name: name.clone() });
                }
            }
            Err(e) => out.push(Replica { label: spec.clone(), address: Err(e.to_string()), server_name: name }),
        }
    }
    out
}

async fn run(args: Args) -> ExitCode {
    let replicas = replicas(&args.targets, args.server_name.as_deref()).await;
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
    let mut results: Vec<Option<Result<PurgeAnswer, String>>> = vec![None; replicas.len()];
    while let Some(joined) = calls.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
    }
    report(&replicas, results)
}

/// One JSON line per replica; the exit status says whether every one of them purged.
fn report(replicas: &[Replica], results: Vec<Option<Result<PurgeAnswer, String>>>) -> ExitCode {
    let mut failed = 0;
    for (replica, result) in replicas.iter().zip(results) {
        let line = match result.unwrap_or_else(|| Err("the call did not finish".into())) {
            Ok(answer) => serde_json::json!({ "replica": replica.label, "ok": true, "answer": answer }),
            Err(error) => {
                failed += 1;
                serde_json::json!({ "replica": replica.label, "ok": false, "error": error })
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

impl From<&Args> for CallArgs {
    fn from(a: &Args) -> Self {
        CallArgs {
            request: a.request.clone(),
            ca: a.ca.clone().unwrap_or_default(),
            identity: a.cert.clone().zip(a.key.clone()),
        }
    }
}

/// `POST /purge` on one replica: its answer, or what went wrong.
async fn call(replica: &Replica, args: &CallArgs, secret: Option<&str>) -> Result<PurgeAnswer, String> {
    let addr = replica.address.clone()?;
    let mut builder = crate::pki::pinned_client(&args.ca).map_err(|e| e.to_string())?
        .resolve(&replica.server_name, addr)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    if let Some((cert, key)) = &args.identity {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let identity = reqwest::Identity::from_pkcs8_pem(&read(cert)?, &read(key)?).map_err(|e| e.to_string())?;
        builder = builder.identity(identity);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let url = format!("https://{}:{}/purge", replica.server_name, addr.port());
    let mut request = client.post(url).json(&args.request);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        return serde_json::from_str(&body).map_err(|e| format!("not a purge answer: {e}"));
    }
    match serde_json::from_str::<AdminError>(&body) {
        Ok(e) => Err(format!("{status}: {}: {}", e.error, e.message)),
        Err(_) => Err(format!("{status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse(&line.split(' ').map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn the_command_line_names_one_target_and_one_way_to_authenticate() {
        let a = args("purge --all --ca ca.pem --secret-file s").unwrap();
        assert_eq!(a.targets, vec![DEFAULT_ADDRESS.to_string()]);
        let a = args("purge --token-id AbCdEfGh --several --replicas a:1,b:2 --ca c --cert x --key y").unwrap();
        assert_eq!(a.targets, vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(a.replicas);
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
