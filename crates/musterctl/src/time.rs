//! UTC timestamp formatting for output, without a date-time crate.

const MS_PER_DAY: i64 = 86_400_000;

pub use domain::time::{civil_from_days, days_from_civil};

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision: `2026-11-28T06:27:24.123Z`.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let (year, month, day) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    format!(
        "{year:04}-{month:02}-{day:02}T{}Z",
        format_time_of_day_ms(unix_ms)
    )
}

/// Formats the UTC time of day of Unix milliseconds as `HH:MM:SS.mmm`.
pub fn format_time_of_day_ms(unix_ms: i64) -> String {
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let hours = ms_of_day / 3_600_000;
    let minutes = ms_of_day / 60_000 % 60;
    let seconds = ms_of_day / 1_000 % 60;
    let millis = ms_of_day % 1_000;
    format!("{hours:02}:{minutes:02}:{seconds:02}.{millis:03}")
}

/// Formats a duration in milliseconds compactly, largest two units: `850ms`, `45s`, `12m05s`,
/// `1h05m`, `2d03h`. Negative durations print with a leading `-`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", format_duration_ms(ms.saturating_neg()));
    }
    let seconds = ms / 1_000;
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3_600 {
        format!("{minutes}m{:02}s", seconds % 60)
    } else if seconds < 86_400 {
        format!("{}h{minutes:02}m", seconds / 3_600)
    } else {
        format!("{days}d{hours:02}h")
    }
}

/// Parses RFC 3339 (`2026-11-28T06:27:24Z`, `2026-11-28T14:27:24.5+08:00`; a space may stand
/// for the `T`) into Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_ms = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 3_600_000 + minutes.parse::<i64>().ok()? * 60_000)
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    Some(
        days * MS_PER_DAY + hour * 3_600_000 + minute * 60_000 + second * 1_000 + millis
            - offset_ms,
    )
}

/// A `--since` value: RFC 3339, Unix milliseconds, or an age before `now_ms` such as `90s`,
/// `30m`, `2h`, `1d`.
pub fn parse_since_ms(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(unix_ms) = parse_rfc3339_ms(text) {
        return Ok(unix_ms);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?} is too large for Unix milliseconds"));
    }
    let unit_ms = match text.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => MS_PER_DAY,
        _ => 0,
    };
    let amount = text[..text.len().saturating_sub(1)].parse::<i64>().ok();
    match amount {
        Some(amount) if unit_ms > 0 && amount >= 0 => Ok(now_ms - amount.saturating_mul(unit_ms)),
        _ => Err(format!(
            "{text:?} is not a time: use RFC 3339 (2026-11-28T06:00:00Z), Unix milliseconds, or an age such as 30m, 2h, 1d"
        )),
    }
}
