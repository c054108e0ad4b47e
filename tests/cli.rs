//! The command line: the gateway's own help and version, `admin purge`'s generated usage errors,
//! and the serving flags as scripts, units and manifests pass them (`-t -c FILE`, `-c FILE`).

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn gateway(args: &[&str], dir: &Path) -> Output {
    Command::new(common::bin("mtls-gateway")).args(args).current_dir(dir).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A folder laid out like the repository for `conf/local.yaml`: the file and `certs` beside it.
fn local_layout() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("conf")).unwrap();
    std::os::unix::fs::symlink(common::certs(), work.path().join("certs")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/local.yaml");
    std::fs::copy(shipped, work.path().join("conf/local.yaml")).unwrap();
    work
}

#[test]
fn the_help_describes_the_gateway_its_commands_and_the_serving_flags() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = gateway(&["--help"], here);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    for expected in [
        "mutual TLS",
        "admin",
        "health",
        "reload",
        "-c, --conf <FILE>",
        "-t, --test",
        "-d, --daemon",
        "-u, --upgrade",
        "-V, --version",
    ] {
        assert!(help.contains(expected), "{expected:?} missing from:\n{help}");
    }
    assert!(!help.contains("pingora-based service"), "pingora's own option docs:\n{help}");

    let admin = stdout(&gateway(&["admin", "--help"], here));
    assert!(admin.contains("purge"), "{admin}");
    let purge = gateway(&["admin", "purge", "--help"], here);
    assert!(purge.status.success());
    let purge = stdout(&purge);
    for flag in [
        "--token <T>",
        "--token-id <ID>",
        "--several",
        "--thumbprint <X5T>",
        "--end-connections",
        "--all",
        "--address <HOST:PORT>",
        "--replicas <NAME:PORT",
        "--server-name <NAME>",
        "--ca <FILE>",
        "--cert <FILE>",
        "--key <FILE>",
        "--secret-file <FILE>",
    ] {
        assert!(purge.contains(flag), "{flag:?} missing from:\n{purge}");
    }
}

/// The version of `package` in the workspace's `Cargo.lock`.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines().skip_while(|l| l.trim() != name);
    lines.nth(1).and_then(|l| l.strip_prefix("version = ")).unwrap().trim_matches('"').to_string()
}

#[test]
fn the_version_names_the_gateway_pingora_and_openssl() {
    for flag in ["--version", "-V"] {
        let out = gateway(&[flag], Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                format!("mtls-gateway {}", env!("CARGO_PKG_VERSION")),
                format!("pingora {}", locked_version("pingora-core")),
                openssl::version::version().to_string(),
            ],
            "{text}"
        );
    }
}

#[test]
fn a_bad_admin_argument_is_a_usage_error_and_calls_nobody() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let auth = ["--ca", "root.pem", "--secret-file", "secret"];
    for (args, says) in [
        (vec!["purge", "--all", "--bogus"], "unexpected argument '--bogus'"),
        (vec!["purge", "--all", "--token", "t"], "cannot be used with"),
        (vec!["purge"], "required arguments were not provided"),
        (vec!["purge", "--token-id", "short"], "token_id is 8 to 43 base64url characters"),
        (vec!["purge", "--thumbprint", "x"], "43 base64url characters"),
        (vec!["purge", "--all", "--end-connections"], "--thumbprint"),
        (vec!["purge", "--all", "--replicas", ","], "--replicas needs NAME:PORT"),
        (vec!["flush", "--all"], "unrecognized subcommand 'flush'"),
    ] {
        let args: Vec<&str> = std::iter::once("admin").chain(args).chain(auth).collect();
        let out = gateway(&args, here);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:") && err.contains(says), "{args:?}: {err}");
        assert!(err.contains("try '--help'"), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "no replica was called: {}", stdout(&out));
    }
    let no_auth = gateway(&["admin", "purge", "--all", "--ca", "root.pem"], here);
    assert_eq!(no_auth.status.code(), Some(2));
    assert!(stderr(&no_auth).contains("--cert <FILE>|--secret-file <FILE>"), "{}", stderr(&no_auth));
}

/// `-t -c conf/local.yaml` as scripts/run-local.sh and the systemd unit run it, in either order
/// and with the long names; without `-c` nothing starts.
#[test]
fn the_serving_flags_validate_as_before() {
    let work = local_layout();
    for args in
        [["-t", "-c", "conf/local.yaml"], ["-c", "conf/local.yaml", "-t"], ["--test", "--conf", "conf/local.yaml"]]
    {
        let out = gateway(&args, work.path());
        assert!(out.status.success(), "{args:?}: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("conf/local.yaml: configuration OK"), "{args:?}: {}", stdout(&out));
    }
    let missing = gateway(&["-t", "-c", "conf/missing.yaml"], work.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("problem(s) in conf/missing.yaml; not serving"), "{}", stderr(&missing));
    let no_conf = gateway(&["-t"], work.path());
    assert_eq!(no_conf.status.code(), Some(2));
    assert!(stderr(&no_conf).contains("-c FILE is required"), "{}", stderr(&no_conf));
    let mixed = gateway(&["-c", "conf/local.yaml", "health"], work.path());
    assert_eq!(mixed.status.code(), Some(2), "serving flags and a command do not mix");
}
