//! Command-line arguments every command shares: one duration syntax (`--press-every`,
//! `--heartbeat`, `--duration`), and the press queue's bounds.

use std::process::Command;

fn acorn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(args)
        .output()
        .expect("run acorn")
}

#[test]
fn durations_read_the_same_in_every_command_and_zero_only_where_it_means_something() {
    // `--press-every 0` makes no sense: refused before anything runs, saying why.
    let out = acorn(&[
        "device",
        "run",
        "--image",
        "/nonexistent",
        "--press-every",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 1ms"), "{err}");
    // `--heartbeat` reads the same way (0 is no interval: the setting 0 turns it off).
    for (flag, value, says) in [
        ("--heartbeat", "0", "at least 1ms"),
        ("--heartbeat", "2 fortnights", "unknown unit"),
        ("--queue-capacity", "1", "from 2 to 256"),
        ("--queue-capacity", "100000", "from 2 to 256"),
    ] {
        let out = acorn(&["device", "run", "--image", "/nonexistent", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    let out = acorn(&["demo", "--press-every", "0ms"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1ms"));
    // The same unit words everywhere.
    for bad in ["5 parsecs", "1y"] {
        for args in [
            &[
                "device",
                "run",
                "--image",
                "/nonexistent",
                "--press-every",
                bad,
            ][..],
            &["demo", "--duration", bad][..],
        ] {
            let out = acorn(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("unknown unit"),
                "{args:?}"
            );
        }
    }
}

#[test]
fn rotation_options_are_checked_before_anything_runs() {
    // `device rotate` needs the provisioning template.
    let out = acorn(&["device", "rotate", "--image", "/nonexistent"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rotation-template"), "{err}");
    // A template name that could put a wildcard into a topic is refused.
    let out = acorn(&[
        "device",
        "rotate",
        "--image",
        "/nonexistent",
        "--rotation-template",
        "a/#",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1..=36"), "{err}");
    // --rotation-ca without a template is a usage error.
    let out = acorn(&[
        "device",
        "run",
        "--image",
        "/nonexistent",
        "--rotation-ca",
        "ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
