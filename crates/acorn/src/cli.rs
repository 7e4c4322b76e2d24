//! What every command shares: one duration syntax and one way to set up logs.

use std::time::Duration;

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds (`1.5`, `0`),
/// up to a year. The one parser of every `--…` duration flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    if !(secs.is_finite() && (0.0..=86_400.0 * 365.0).contains(&secs)) {
        return Err(format!("`{text}` is out of range (0 .. 1 year)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse_duration`] for a flag where zero makes no sense (an interval between presses).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(1) {
        return Err(format!("`{text}` must be at least 1ms"));
    }
    Ok(duration)
}

/// Logs to stderr at `RUST_LOG` or `default_filter`; text with colour only on a terminal
/// (never with `NO_COLOR`), or one JSON object per line.
pub fn init_logs(default_filter: &str, json: bool) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second initialisation (not possible in this process) would be harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0ms").is_err());
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        for bad in ["5 parsecs", "", "-1s", "2y", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
