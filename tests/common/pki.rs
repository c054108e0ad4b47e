//! A PKI of its own for one test, made with the openssl CLI: a root, an issuing CA under it, a
//! delegated OCSP responder (OCSP-signing purpose), a signer of the same CA WITHOUT that purpose,
//! and partner certificates whose Authority Information Access and CRL distribution point name
//! loopback ports of the test. The CA database (`index.txt`) is the one `openssl ocsp` answers
//! from and `openssl ca -gencrl` makes CRLs from. EC keys: fast.
#![allow(dead_code)]

use crate::common::Proc;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

pub struct Pki {
    pub dir: PathBuf,
    next_serial: std::cell::Cell<u32>,
}

/// Where a partner certificate says its status is published.
#[derive(Clone, Default)]
pub struct Publish {
    /// `authorityInfoAccess = OCSP;URI:...`
    pub ocsp: Option<String>,
    /// `crlDistributionPoints = URI:...`
    pub crl: Option<String>,
    /// Left out of `index.txt`: the responder answers `unknown`.
    pub unknown: bool,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// OpenSSL's CA database time, `YYMMDDHHMMSSZ`.
fn db_time(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':', 'T'], "");
    full[2..].to_string()
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki { dir: dir.to_path_buf(), next_serial: std::cell::Cell::new(0x1000) };
        pki.key("root");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "root.key",
                "-sha256",
                "-days",
                "30",
                "-subj",
                "/CN=Revocation Test Root",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "root.pem",
            ],
        );
        pki.issue(
            "issuing",
            "/CN=Revocation Test Issuing CA",
            "root",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        pki.issue(
            "responder",
            "/CN=Revocation Test OCSP Responder",
            "issuing",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
        );
        // A certificate of the same CA that may not sign OCSP answers.
        pki.issue(
            "rogue",
            "/CN=Revocation Test Not A Responder",
            "issuing",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("index.txt.attr"), "unique_subject = no\n").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        let cnf = format!(
            "[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n",
            dir.display()
        );
        std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
        let bundle =
            [std::fs::read(dir.join("issuing.pem")).unwrap(), std::fs::read(dir.join("root.pem")).unwrap()].concat();
        std::fs::write(dir.join("client-ca.pem"), bundle).unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn key(&self, name: &str) {
        openssl(
            &self.dir,
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &format!("{name}.key")],
        );
    }

    fn serial(&self) -> u32 {
        let s = self.next_serial.get();
        self.next_serial.set(s + 1);
        s
    }

    /// `name.pem` and `name.key`, issued by `ca` with the extensions `ext`; returns the serial.
    fn issue(&self, name: &str, subject: &str, ca: &str, ext: &str) -> u32 {
        self.key(name);
        let serial = self.serial();
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &["req", "-new", "-key", &format!("{name}.key"), "-subj", subject, "-out", &format!("{name}.csr")],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &serial.to_string(),
                "-days",
                "10",
                "-sha256",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        serial
    }

    /// A partner certificate `CN=demo-partner` (the tutorial client's subject) issued by the
    /// issuing CA, as `name.p12` (password Password1); returns the p12's path.
    pub fn partner(&self, name: &str, publish: &Publish) -> String {
        let mut ext =
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n".to_string();
        if let Some(url) = &publish.ocsp {
            ext.push_str(&format!("authorityInfoAccess=OCSP;URI:{url}\n"));
        }
        if let Some(url) = &publish.crl {
            ext.push_str(&format!("crlDistributionPoints=URI:{url}\n"));
        }
        let serial = self.issue(name, "/CN=demo-partner", "issuing", &ext);
        if !publish.unknown {
            let expiry = db_time(SystemTime::now() + Duration::from_secs(10 * 86_400));
            let line = format!("V\t{expiry}\t\t{serial:X}\tunknown\t/CN=demo-partner\n");
            let mut index = std::fs::read_to_string(self.dir.join("index.txt")).unwrap();
            index.push_str(&line);
            std::fs::write(self.dir.join("index.txt"), index).unwrap();
        }
        std::fs::write(self.dir.join(format!("{name}.serial")), format!("{serial:X}")).unwrap();
        openssl(
            &self.dir,
            &[
                "pkcs12",
                "-export",
                "-inkey",
                &format!("{name}.key"),
                "-in",
                &format!("{name}.pem"),
                "-name",
                name,
                "-passout",
                "pass:Password1",
                "-out",
                &format!("{name}.p12"),
            ],
        );
        self.path(&format!("{name}.p12"))
    }

    /// Marks `name` revoked in the CA database (the responder reads it again; the next CRL lists it).
    pub fn revoke(&self, name: &str) {
        // `openssl ocsp` notices a changed index by its modification time, in whole seconds: a
        // change within the second of the last one would go unseen.
        let index = self.dir.join("index.txt");
        let written = std::fs::metadata(&index).and_then(|m| m.modified()).unwrap();
        if let Some(wait) = Duration::from_millis(1100).checked_sub(written.elapsed().unwrap_or_default()) {
            std::thread::sleep(wait);
        }
        let serial = std::fs::read_to_string(self.dir.join(format!("{name}.serial"))).unwrap();
        let index = std::fs::read_to_string(self.dir.join("index.txt")).unwrap();
        let now = db_time(SystemTime::now() - Duration::from_secs(60));
        let index: String = index
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                match f[3] == serial {
                    true => format!("R\t{}\t{now}\t{}\t{}\t{}\n", f[1], f[3], f[4], f[5]),
                    false => format!("{l}\n"),
                }
            })
            .collect();
        std::fs::write(self.dir.join("index.txt"), index).unwrap();
    }

    /// A CRL of the issuing CA listing what `index.txt` revokes, as DER in `out` (atomically).
    pub fn crl(&self, out: &Path) {
        openssl(
            &self.dir,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-keyfile",
                "issuing.key",
                "-cert",
                "issuing.pem",
                "-gencrl",
                "-out",
                "issuing.crl.pem",
            ],
        );
        let tmp = out.with_extension("tmp");
        openssl(&self.dir, &["crl", "-in", "issuing.crl.pem", "-outform", "DER", "-out", &tmp.display().to_string()]);
        std::fs::rename(tmp, out).unwrap();
    }

    /// A CRL that names the issuing CA as its issuer and lists `name`, but is signed by another key
    /// (an impostor CA of the same name), as DER in `out`.
    pub fn forged_crl(&self, name: &str, out: &Path) {
        let forged = self.dir.join("forged");
        std::fs::create_dir_all(&forged).unwrap();
        openssl(
            &forged,
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "impostor.key"],
        );
        openssl(
            &forged,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "impostor.key",
                "-subj",
                "/CN=Revocation Test Issuing CA",
                "-days",
                "5",
                "-out",
                "impostor.pem",
            ],
        );
        let serial = std::fs::read_to_string(self.dir.join(format!("{name}.serial"))).unwrap();
        let (expiry, now) = (db_time(SystemTime::now() + Duration::from_secs(86_400)), db_time(SystemTime::now()));
        std::fs::write(forged.join("index.txt"), format!("R\t{expiry}\t{now}\t{serial}\tunknown\t/CN=demo-partner\n"))
            .unwrap();
        std::fs::write(forged.join("crlnumber"), "9000\n").unwrap();
        let cnf = format!(
            "[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n",
            forged.display()
        );
        std::fs::write(forged.join("ca.cnf"), cnf).unwrap();
        openssl(
            &forged,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-keyfile",
                "impostor.key",
                "-cert",
                "impostor.pem",
                "-gencrl",
                "-out",
                "crl.pem",
            ],
        );
        let tmp = out.with_extension("tmp");
        openssl(&forged, &["crl", "-in", "crl.pem", "-outform", "DER", "-out", &tmp.display().to_string()]);
        std::fs::rename(tmp, out).unwrap();
    }

    /// `openssl ocsp` answering from `index.txt` on `port`, signed by `signer` (`responder` or
    /// `rogue`); its output (one `OCSP Request Data` per request) goes to `ocsp-PORT.log`.
    pub fn responder(&self, port: u16, signer: &str) -> Proc {
        let log = std::fs::File::create(self.dir.join(format!("ocsp-{port}.log"))).unwrap();
        let child = Command::new("openssl")
            .args(["ocsp", "-index", "index.txt", "-port", &port.to_string(), "-rsigner", &format!("{signer}.pem")])
            .args(["-rkey", &format!("{signer}.key"), "-CA", "issuing.pem", "-nmin", "5", "-ignore_err", "-text"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("openssl ocsp");
        // Not probed by connecting: `openssl ocsp` hangs on a connection closed without a request.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let log = self.dir.join(format!("ocsp-{port}.log"));
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("waiting for OCSP client connections") {
            assert!(std::time::Instant::now() < deadline, "openssl ocsp does not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proc { child, name: "openssl-ocsp" }
    }
}

/// A plain HTTP server of the files in `dir` on `port` (python3's), its log in `dir/http-PORT.log`.
pub fn http_server(dir: &Path, port: u16) -> Proc {
    let log = std::fs::File::create(dir.join(format!("http-{port}.log"))).unwrap();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("python3");
    let mut proc = Proc { child, name: "http-server" };
    crate::common::wait_port(port, dir, &mut proc);
    proc
}
