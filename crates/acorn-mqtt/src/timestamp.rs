//! ISO 8601 UTC timestamps with milliseconds (`2026-11-28T16:42:07.123Z`), no_std.
//!
//! The device has no time zone database and needs none: it keeps Unix milliseconds (from SNTP)
//! and formats them with the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).

use alloc::format;
use alloc::string::{String, ToString};

use crate::Error;

const MS_PER_DAY: u64 = 86_400_000;
/// Unix milliseconds of 9999-12-31T23:59:59.999Z, the last instant with a 4-digit year.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.sssZ`.
///
/// Values after [`MAX_TIMESTAMP_MS`] are clamped to it, so the output is always 24 bytes of
/// valid ISO 8601.
pub fn format_timestamp(unix_ms: u64) -> String {
    let unix_ms = unix_ms.min(MAX_TIMESTAMP_MS);
    let days = unix_ms / MS_PER_DAY;
    let ms_of_day = unix_ms % MS_PER_DAY;
    let (y, m, d) = civil_from_days(days as i64);
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

/// Parses `YYYY-MM-DDTHH:MM:SS.sssZ` (or without the `.sss`) back to Unix milliseconds.
///
/// Only UTC (`Z`) is accepted, years 1970..=9999, and real calendar dates.
pub fn parse_timestamp(text: &str) -> Result<u64, Error> {
    let bad = || Error::Timestamp {
        value: text.chars().take(40).collect::<String>().to_string(),
    };
    let b = text.as_bytes();
    let (ms, z_at) = match b.len() {
        24 if b[19] == b'.' => (digits(&b[20..23]).ok_or_else(bad)?, 23),
        20 => (0, 19),
        _ => return Err(bad()),
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    if b[z_at] != b'Z' {
        return Err(bad());
    }
    let y = digits(&b[0..4]).ok_or_else(bad)?;
    let m = digits(&b[5..7]).ok_or_else(bad)?;
    let d = digits(&b[8..10]).ok_or_else(bad)?;
    let h = digits(&b[11..13]).ok_or_else(bad)?;
    let min = digits(&b[14..16]).ok_or_else(bad)?;
    let s = digits(&b[17..19]).ok_or_else(bad)?;
    if y < 1970 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    if h > 23 || min > 59 || s > 59 {
        return Err(bad());
    }
    let days = days_from_civil(y as i64, m as u32, d as u32);
    let days = u64::try_from(days).map_err(|_| bad())?;
    Ok(days * MS_PER_DAY + h * 3_600_000 + min * 60_000 + s * 1000 + ms)
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
