//! Durations as people type them (`90s`, `2m`, `1h30m`, `500ms`) and ages as tables
//! show them (`5s`, `3m`, `2h`, `4d`).

use pbjson_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a duration as manifests write them (`30s`, `2m`, `1h30m`, `500ms`, `1.5s`, `7d`:
/// [`voiyd_messages::time::parse_duration`], the one grammar); on the command line a bare
/// number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let parsed = if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        voiyd_messages::time::parse_duration(&format!("{t}s"))
    } else {
        voiyd_messages::time::parse_duration(t)
    };
    parsed.map_err(|e| e.to_string())
}

pub use voiyd_messages::time::format_duration;

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
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["", "m", "2x", "-1s", "1m-", "s5", "."] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let err = parse_duration("2x").unwrap_err();
        assert!(err.contains("\"2x\"") && err.contains("e.g. 10s"), "{err}");
        // What is stored reads back the same: `--stop-grace 1.5s` stays 1.5 s.
        for d in ["1.5s", "90s", "300ms", "1h30m"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(
                parse_duration(&format_duration(parsed)).unwrap(),
                parsed,
                "{d}"
            );
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
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
