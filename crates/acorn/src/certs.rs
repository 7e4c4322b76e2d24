//! `acorn certs`: check device certificates before they go on a device.
//!
//! `check` validates a certificate, private key and endpoint with `acorn-certs` and prints each
//! check with pass/fail/warning and a plain explanation. The printing functions
//! ([`print_report`], [`report_json`]) are shared with `show`.
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use acorn_certs::{
    validate_material, CertificateInfo, PrivateKey, Status, ValidationOptions, ValidationReport,
};
use anyhow::Context;

/// Subcommands of `acorn certs`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a device certificate, its private key and the IoT endpoint before use.
    ///
    /// Exit code: 0 valid (warnings allowed), 1 invalid, 2 usage error (e.g. unreadable file).
    Check(CheckArgs),
    /// Validate a certificate set, then store it into an existing or new NVS image.
    Import(crate::provision::ImportArgs),
    /// Show the identity an NVS image holds, checked (never the key itself).
    Show(crate::provision::ShowArgs),
    /// Make new flashable NVS images holding a device identity (one, or a batch from a CSV).
    Provision(crate::provision::ProvisionArgs),
}

/// Arguments of `acorn certs check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Device certificate file (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Private key file (PEM `RSA PRIVATE KEY`, `PRIVATE KEY`, `EC PRIVATE KEY`, or DER).
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,
    /// IoT endpoint host name, e.g. `abc123-ats.iot.eu-west-1.amazonaws.com`.
    #[arg(long, value_name = "HOST")]
    pub endpoint: String,
    /// CA certificate (PEM or DER) that must have issued the device certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any DNS host name as endpoint (a local broker), not only AWS IoT endpoints.
    #[arg(long)]
    pub allow_custom_endpoint: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Check validity at this time (Unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
}

/// Runs a subcommand.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Check(args) => {
            let stdout = io::stdout();
            let code = check(&args, &mut stdout.lock())?;
            Ok(ExitCode::from(code))
        }
        Command::Import(args) => crate::provision::import(&args),
        Command::Show(args) => crate::provision::show(&args),
        Command::Provision(args) => crate::provision::provision(&args),
    }
}

/// Exit code of a valid set.
pub const EXIT_VALID: u8 = 0;
/// Exit code of an invalid set.
pub const EXIT_INVALID: u8 = 1;
/// Exit code of a usage error (unreadable file, bad arguments).
pub const EXIT_USAGE: u8 = 2;

/// `acorn certs check`: writes the report to `out` and returns the exit code.
///
/// Unreadable input files are usage errors: reported on stderr, exit code 2.
pub fn check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let inputs = (|| -> anyhow::Result<_> {
        let cert = read_file(&args.cert, "certificate")?;
        let key = PrivateKey::new(read_file(&args.private_key, "private key")?);
        let ca = args
            .ca
            .as_deref()
            .map(|p| read_file(p, "CA certificate"))
            .transpose()?;
        Ok((cert, key, ca))
    })();
    let (cert, key, ca) = match inputs {
        Ok(inputs) => inputs,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(EXIT_USAGE);
        }
    };
    let now = args.at.unwrap_or_else(unix_now);
    let mut options = ValidationOptions::new(now).allow_custom_endpoint(args.allow_custom_endpoint);
    if let Some(ca) = &ca {
        options = options.with_ca(ca);
    }
    let report = validate_material(&cert, &key, &args.endpoint, &options);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report_json(&report))?;
        writeln!(out)?;
    } else {
        print_report(&report, out)?;
    }
    Ok(if report.is_valid() {
        EXIT_VALID
    } else {
        EXIT_INVALID
    })
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file `{}`", path.display()))
}

/// The current time in Unix seconds (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The report as JSON: `verdict`, `valid`, `fingerprint`, `certificate`, `checks`.
pub fn report_json(report: &ValidationReport) -> serde_json::Value {
    serde_json::json!({
        "verdict": report.verdict(),
        "valid": report.is_valid(),
        "failures": report.failures(),
        "warnings": report.warnings(),
        "fingerprint": report.fingerprint,
        "certificate": report.certificate,
        "checks": report.checks.iter().map(|c| serde_json::json!({
            "check": c.id.name(),
            "status": c.status.name(),
            "problem": c.problem,
            "explanation": c.explanation,
        })).collect::<Vec<_>>(),
    })
}

/// Prints each check (`pass`/`fail`/`warning`/`skipped`, name, explanation), the certificate
/// summary, and the verdict line.
pub fn print_report(report: &ValidationReport, out: &mut dyn Write) -> io::Result<()> {
    for check in &report.checks {
        writeln!(
            out,
            "{:<8} {:<22} {}",
            check.status.name(),
            check.id.name(),
            check.explanation
        )?;
    }
    if let Some(info) = &report.certificate {
        writeln!(out)?;
        print_certificate_info(info, out)?;
    }
    writeln!(out)?;
    let warnings = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warning)
        .count();
    if report.is_valid() {
        writeln!(
            out,
            "verdict: VALID ({warnings} warning{})",
            if warnings == 1 { "" } else { "s" }
        )
    } else {
        let failures: Vec<String> = report.failures().iter().map(|p| format!("{p:?}")).collect();
        writeln!(
            out,
            "verdict: INVALID, {:?} ({})",
            report.verdict(),
            failures.join(", ")
        )
    }
}

/// Prints a certificate summary (never any key material).
pub fn print_certificate_info(info: &CertificateInfo, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "subject      {}", info.subject)?;
    writeln!(out, "issuer       {}", info.issuer)?;
    writeln!(out, "serial       {}", info.serial)?;
    let left = match info.days_left {
        Some(days) if days < 0 => format!(" (expired {} days ago)", -days),
        Some(days) => format!(" ({days} days left)"),
        None => String::from(" (clock not synced: days left unknown)"),
    };
    writeln!(
        out,
        "validity     {} to {}{left}",
        info.not_before_text, info.not_after_text
    )?;
    if let Some(key) = info.public_key {
        writeln!(out, "public key   {key}")?;
    }
    writeln!(
        out,
        "fingerprint  {} (SHA-256, AWS IoT certificate id)",
        info.fingerprint
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use acorn_backend::{KeyType, LocalCa};
    use secrecy::ExposeSecret as _;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// A local CA issues two RSA-2048 devices (PKCS#1 keys, as AWS) and one P-256 device.
    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::create(&dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.certificate_pem()).unwrap();
        for (name, key_type) in [
            ("a", KeyType::Rsa2048),
            ("b", KeyType::Rsa2048),
            ("e", KeyType::P256),
        ] {
            let issued = ca
                .issue_with_new_key(&format!("dev-{name}"), key_type)
                .unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.pem")),
                &issued.certificate.pem,
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.key")),
                issued.private_key_pem.expose_secret(),
            )
            .unwrap();
        }
        Files { dir }
    }

    fn args(f: &Files, cert: &str, key: &str, endpoint: &str) -> CheckArgs {
        CheckArgs {
            cert: f.path(cert),
            private_key: f.path(key),
            endpoint: endpoint.to_string(),
            ca: None,
            allow_custom_endpoint: false,
            json: false,
            at: None,
        }
    }

    const AWS: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";

    fn run_check(args: &CheckArgs) -> (u8, String) {
        let mut out = Vec::new();
        let code = check(args, &mut out).unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn check_exit_codes_and_output() {
        let f = files();
        let key_text = std::fs::read_to_string(f.path("a.key")).unwrap();
        assert!(key_text.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

        // Valid, with the chain checked against the CA.
        let mut ok = args(&f, "a.pem", "a.key", AWS);
        ok.ca = Some(f.path("ca.pem"));
        let (code, out) = run_check(&ok);
        assert_eq!(code, EXIT_VALID, "{out}");
        assert!(out.contains("pass     key_match"), "{out}");
        assert!(out.contains("pass     chain"), "{out}");
        assert!(out.contains("verdict: VALID"), "{out}");
        assert!(out.contains("fingerprint  "), "{out}");
        let secret_line = key_text.lines().nth(3).unwrap();
        assert!(!out.contains(secret_line));

        // The other device's key: invalid, with the reason.
        let (code, out) = run_check(&args(&f, "a.pem", "b.key", AWS));
        assert_eq!(code, EXIT_INVALID, "{out}");
        assert!(out.contains("fail     key_match"), "{out}");
        assert!(out.contains("does not belong"), "{out}");

        // A local broker host name: invalid unless custom endpoints are allowed.
        let (code, _) = run_check(&args(&f, "e.pem", "e.key", "localhost"));
        assert_eq!(code, EXIT_INVALID);
        let mut custom = args(&f, "e.pem", "e.key", "localhost");
        custom.allow_custom_endpoint = true;
        assert_eq!(run_check(&custom).0, EXIT_VALID);

        // Checked as of 2100: expired.
        let mut late = args(&f, "a.pem", "a.key", AWS);
        late.at = Some(4_102_444_800);
        let (code, out) = run_check(&late);
        assert_eq!(code, EXIT_INVALID);
        assert!(out.contains("fail     validity"), "{out}");
        assert!(out.contains("Expired"), "{out}");

        // Unreadable files are usage errors.
        assert_eq!(
            run_check(&args(&f, "missing.pem", "a.key", AWS)).0,
            EXIT_USAGE
        );
        assert_eq!(
            run_check(&args(&f, "a.pem", "missing.key", AWS)).0,
            EXIT_USAGE
        );
        let mut bad_ca = args(&f, "a.pem", "a.key", AWS);
        bad_ca.ca = Some(f.path("missing-ca.pem"));
        assert_eq!(run_check(&bad_ca).0, EXIT_USAGE);
    }

    #[test]
    fn check_json_lists_every_check() {
        let f = files();
        let mut a = args(&f, "a.pem", "b.key", AWS);
        a.json = true;
        let (code, out) = run_check(&a);
        assert_eq!(code, EXIT_INVALID);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["verdict"], "InvalidContent");
        assert_eq!(json["failures"], serde_json::json!(["key_mismatch"]));
        let checks = json["checks"].as_array().unwrap();
        let names: Vec<&str> = checks
            .iter()
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        for name in [
            "size",
            "certificate_encoding",
            "key_match",
            "endpoint",
            "validity",
            "chain",
        ] {
            assert!(names.contains(&name), "{names:?}");
        }
        let key_match = checks.iter().find(|c| c["check"] == "key_match").unwrap();
        assert_eq!(key_match["status"], "fail");
        assert_eq!(key_match["problem"], "key_mismatch");
        assert_eq!(json["certificate"]["public_key"]["type"], "rsa");
        assert_eq!(json["fingerprint"].as_str().unwrap().len(), 64);
    }
}
