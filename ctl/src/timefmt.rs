//! Durations as people type them (`90s`, `2m`, `1h30m`, `500ms`) and ages as tables
//! show them (`5s`, `3m`, `2h`, `4d`).

use pbjson_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a duration such as `30s`, `2m`, `1h30m`, `500ms` or `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration `{text}`: use a number with a unit, e.g. 500ms, 30s, 2m, 1h30m")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    secs_to_duration(total).ok_or_else(bad)
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Renders a duration compactly for messages: `2m`, `1m30s`, `45s`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Renders an age in seconds in the largest whole unit: `5s`, `3m`, `2h`, `4d`.
/// Negative ages (clock skew) show as `0s`.
pub fn format_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The age of a timestamp relative to `now` (Unix seconds), or `-` when it is unset.
pub fn age_of(ts: Option<&Timestamp>, now: i64) -> String {
    match ts {
        Some(t) if t.seconds > 0 => format_age(now - t.seconds),
        _ => "-".to_string(),
    }
}

/// How far in the future a timestamp is (`in 5s`), or how long ago it passed (`3s ago`).
pub fn relative(ts: Option<&Timestamp>, now: i64) -> String {
    match ts {
        Some(t) if t.seconds > 0 => {
            let d = t.seconds - now;
            if d >= 0 {
                format!("in {}", format_age(d))
            } else {
                format!("{} ago", format_age(-d))
            }
        }
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        for bad in ["", "m", "2x", "-1s", "1m-", "s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("2x").unwrap_err(),
            "invalid duration `2x`: use a number with a unit, e.g. 500ms, 30s, 2m, 1h30m"
        );
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(5), "5s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(60), "1m");
        assert_eq!(format_age(3 * 60 + 59), "3m");
        assert_eq!(format_age(2 * 3600 + 1), "2h");
        assert_eq!(format_age(4 * 86_400 + 7), "4d");
        assert_eq!(format_age(-3), "0s");
        let ts = Timestamp {
            seconds: 1000,
            nanos: 0,
        };
        assert_eq!(age_of(Some(&ts), 1125), "2m");
        assert_eq!(age_of(None, 1125), "-");
        assert_eq!(relative(Some(&ts), 995), "in 5s");
        assert_eq!(relative(Some(&ts), 1003), "3s ago");
    }
}
