//! UTC timestamp formatting for output, without a date-time crate.

const MS_PER_DAY: i64 = 86_400_000;

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// This is Howard Hinnant's `civil_from_days`: shifting the epoch to 0000-03-01 puts the leap
/// day at the end of the year, so every month length except February's follows a fixed pattern.
pub fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

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
