//! The console of `acorn device run`: the command lines it reads on stdin and the answers it
//! prints (JSON lines on stdout, refusals on stderr). Both transports (the default one and
//! `--transport embedded`) parse and answer through here, so they cannot drift apart.

use std::fmt::Display;

use acorn_device::{PressId, PressOutcome, Snapshot};
use serde_json::{json, Value};

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `press <buttonRfId> [battery]`: a button press, with the button's battery level
    /// (0..=100 percent) when given.
    Press {
        /// The button's RF id.
        button: String,
        /// Its battery level, percent.
        battery: Option<u8>,
    },
    /// `status`: print the status object.
    Status,
    /// `rotate`: start a certificate rotation.
    Rotate,
    /// `quit` or `exit`: shut down cleanly.
    Quit,
}

/// Parses one stdin line: `Ok(None)` for a blank one; `Err` holds what to print on stderr
/// (a battery level out of range, an unknown command with the ones there are).
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let command = match words.as_slice() {
        [] => return Ok(None),
        ["quit"] | ["exit"] => Command::Quit,
        ["status"] => Command::Status,
        ["rotate"] => Command::Rotate,
        ["press", button] => Command::Press {
            button: (*button).to_owned(),
            battery: None,
        },
        ["press", button, battery] => match battery.parse::<u8>() {
            Ok(level) if level <= 100 => Command::Press {
                button: (*button).to_owned(),
                battery: Some(level),
            },
            _ => {
                return Err(format!(
                    "press: battery level must be 0..=100, got '{battery}'"
                ))
            }
        },
        _ => {
            return Err(format!(
                "unknown command '{}': use `press <buttonRfId> [battery]`, `status`, `rotate` or `quit`",
                line.trim()
            ))
        }
    };
    Ok(Some(command))
}

/// The answer to a press the device took: queued with its `pressId`, or cooled down.
pub fn press_json(button: &str, outcome: PressOutcome) -> Value {
    match outcome {
        PressOutcome::Queued(id) => {
            json!({"press": button, "queued": true, "pressId": id.to_string()})
        }
        PressOutcome::CooledDown => {
            json!({"press": button, "queued": false, "reason": "cooldown"})
        }
    }
}

/// The stderr line for a press the device refused (a bad button id, a device shutting down).
pub fn press_error(button: &str, error: &dyn Display) -> String {
    format!("press {button}: {error}")
}

/// The answer to `status`: the core's snapshot and its press queue (`queued_presses` waiting
/// for their PUBACK, the oldest of them, presses dropped from a full queue).
pub fn status_json(
    snapshot: &Snapshot,
    queued_presses: usize,
    oldest_queued_press: Option<PressId>,
    dropped_presses: u32,
) -> Value {
    json!({
        "deviceId": snapshot.device_id,
        "status": snapshot.status.to_string(),
        "connectedForMs": snapshot.connected_for_ms,
        "settings": snapshot.settings,
        "connects": snapshot.stats.connects,
        "connectAttempts": snapshot.stats.connect_attempts,
        "failures": snapshot.stats.failures,
        "queued": snapshot.stats.queued,
        "inFlight": snapshot.stats.in_flight,
        "delivered": snapshot.stats.delivered,
        "dropped": snapshot.stats.dropped_full,
        "expired": snapshot.stats.expired,
        "lastError": snapshot.stats.last_error,
        "queuedPresses": queued_presses,
        "oldestQueuedPress": oldest_queued_press.map(|id| id.to_string()),
        "droppedPresses": dropped_presses,
    })
}

/// The answer to `rotate` when a rotation started.
pub fn rotate_started_json() -> Value {
    json!({"rotate": "started"})
}

/// The stderr line for a `rotate` that started nothing (none configured, one under way, ...).
pub fn rotate_error(error: &dyn Display) -> String {
    format!("rotate: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(button: &str, battery: Option<u8>) -> Option<Command> {
        Some(Command::Press {
            button: button.to_owned(),
            battery,
        })
    }

    #[test]
    fn every_command_is_parsed_and_blank_lines_are_none() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t"), Ok(None));
        assert_eq!(parse("quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse(" exit "), Ok(Some(Command::Quit)));
        assert_eq!(parse("status"), Ok(Some(Command::Status)));
        assert_eq!(parse("rotate"), Ok(Some(Command::Rotate)));
        assert_eq!(parse("press rf-9"), Ok(press("rf-9", None)));
        assert_eq!(parse("press  rf-9  0"), Ok(press("rf-9", Some(0))));
        assert_eq!(parse("press rf-9 100"), Ok(press("rf-9", Some(100))));
    }

    #[test]
    fn a_bad_battery_level_and_an_unknown_command_are_named() {
        for battery in ["101", "255", "256", "-1", "full"] {
            assert_eq!(
                parse(&format!("press rf-9 {battery}")),
                Err(format!(
                    "press: battery level must be 0..=100, got '{battery}'"
                ))
            );
        }
        for line in [
            "bogus command",
            "press",
            "press a b c",
            "status now",
            " rotate 1 ",
        ] {
            assert_eq!(
                parse(line),
                Err(format!(
                    "unknown command '{}': use `press <buttonRfId> [battery]`, `status`, `rotate` or `quit`",
                    line.trim()
                ))
            );
        }
    }

    #[test]
    fn answers_are_the_console_s_json() {
        let id = PressId::new(1, 2);
        assert_eq!(
            press_json("rf-9", PressOutcome::Queued(id)),
            json!({"press": "rf-9", "queued": true, "pressId": "000000100000002"})
        );
        assert_eq!(
            press_json("rf-9", PressOutcome::CooledDown),
            json!({"press": "rf-9", "queued": false, "reason": "cooldown"})
        );
        assert_eq!(rotate_started_json(), json!({"rotate": "started"}));
        assert_eq!(press_error("rf-9", &"no"), "press rf-9: no");
        assert_eq!(rotate_error(&"no"), "rotate: no");
    }

    #[test]
    fn the_status_object_holds_the_snapshot_and_the_press_queue() {
        let snapshot = Snapshot {
            device_id: "dev-1".into(),
            status: acorn_mqtt::ConnectionStatus::Connected,
            stats: acorn_mqtt::Stats {
                connects: 2,
                delivered: 5,
                ..Default::default()
            },
            settings: acorn_mqtt::DeviceSettings::default(),
            connected_for_ms: Some(1500),
            uptime_ms: 9000,
        };
        let status = status_json(&snapshot, 3, Some(PressId::new(1, 7)), 4);
        assert_eq!(status["deviceId"], "dev-1");
        assert_eq!(status["status"], "connected");
        assert_eq!(status["connectedForMs"], 1500);
        assert_eq!(status["settings"]["cooldownMs"], 1000);
        assert_eq!(status["connects"], 2);
        assert_eq!(status["delivered"], 5);
        assert_eq!(status["lastError"], Value::Null);
        assert_eq!(status["queuedPresses"], 3);
        assert_eq!(status["oldestQueuedPress"], PressId::new(1, 7).to_string());
        assert_eq!(status["droppedPresses"], 4);
        let empty = status_json(&snapshot, 0, None, 0);
        assert_eq!(empty["oldestQueuedPress"], Value::Null);
    }
}
