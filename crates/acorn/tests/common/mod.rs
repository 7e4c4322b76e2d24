//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `acorn` binary under test.
pub fn acorn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
}

/// Runs `acorn` with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    acorn()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run acorn")
}

/// The Python that has ESP-IDF's `esp-idf-nvs-partition-gen` (`.venv` at the repository root,
/// as `.ci/run` makes it, or `$ACORN_PYTHON`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ACORN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "ESP-IDF's NVS generator is needed: run `python3 -m venv .venv && .venv/bin/pip install esp-idf-nvs-partition-gen==0.3.0` at the repository root (or `bash .ci/run`)"
    );
    venv
}

/// Runs ESP-IDF's generator (`python -m esp_idf_nvs_partition_gen ARGS`) in `dir`.
pub fn esp_gen(dir: &Path, args: &[&str]) {
    let out = Command::new(python())
        .current_dir(dir)
        .args(["-m", "esp_idf_nvs_partition_gen"])
        .args(args)
        .output()
        .expect("run the ESP-IDF generator");
    assert!(
        out.status.success(),
        "generator failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that a command failed cleanly: non-zero, not a panic, with a one-line message.
pub fn assert_clean_failure(out: &Output, what: &str) {
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(0),
        "{what}: expected failure, got {code:?}"
    );
    assert_ne!(
        code,
        Some(101),
        "{what}: panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error"),
        "{what}: no error message: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}
