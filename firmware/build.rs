//! Links esp-hal's linker scripts (`linkall.x` must come last) and, for a `dev-ca` build,
//! copies the development CA named by `ACORN_DEV_CA` into the build (see src/trust.rs).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-link-arg=-Tlinkall.x");
    if std::env::var_os("CARGO_FEATURE_DEV_CA").is_some() {
        dev_ca();
    }
}

/// Checks `ACORN_DEV_CA` and copies it to `$OUT_DIR/dev-ca.pem`; stops the build with a
/// message that says how to fix it otherwise.
fn dev_ca() {
    println!("cargo:rerun-if-env-changed=ACORN_DEV_CA");
    let Some(path) = std::env::var_os("ACORN_DEV_CA").map(PathBuf::from) else {
        fail("the `dev-ca` feature needs ACORN_DEV_CA=<PEM file of the CA the broker's certificate chains to>, e.g. ACORN_DEV_CA=acorn-dev/backend/ca.pem (printed by `acorn dev up`)");
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) => fail(&format!(
            "ACORN_DEV_CA={}: cannot read it ({e})",
            path.display()
        )),
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        fail(&format!(
            "ACORN_DEV_CA={}: no PEM certificate in it (a `-----BEGIN CERTIFICATE-----` block); name the CA's certificate, not its key",
            path.display()
        ));
    }
    if pem.contains("PRIVATE KEY-----") {
        fail(&format!(
            "ACORN_DEV_CA={}: it holds a private key; name a file with the CA's certificate only",
            path.display()
        ));
    }
    let out =
        Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("dev-ca.pem");
    if let Err(e) = std::fs::write(&out, pem) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
