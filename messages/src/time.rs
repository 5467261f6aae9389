//! Time, said once for every crate: the current time as a protobuf timestamp,
//! timestamp arithmetic, and RFC 3339 (UTC) formatting and parsing without a date
//! crate. Durations (`1m30s`, `1.5s`) are in [`crate::quantity::parse_duration`] and
//! [`crate::quantity::format_duration`], re-exported here.

use crate::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::quantity::{format_duration, parse_duration};

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    from_system(SystemTime::now())
}

/// A system time as a protobuf timestamp (times before 1970 are 1970).
pub fn from_system(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `t` plus `d` (whole seconds).
pub fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp {
        seconds: t.seconds + d.as_secs() as i64,
        nanos: t.nanos,
    }
}

/// Milliseconds since 1970 of a timestamp.
pub fn millis(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// The timestamp `ms` milliseconds after 1970 (the inverse of [`millis`]).
pub fn from_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Formats a time as `2026-11-25T15:20:37Z` (whole seconds; what containerd's
/// `gc.expire` label expects).
pub fn rfc3339(t: SystemTime) -> String {
    format!("{}Z", date_time(t).0)
}

/// Formats a time as `2026-11-25T15:20:37.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let (text, nanos) = date_time(t);
    format!("{text}.{nanos:09}Z")
}

/// `2026-11-25T15:20:37` (UTC) and the nanoseconds past that second.
fn date_time(t: SystemTime) -> (String, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let text = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (text, d.subsec_nanos())
}

/// Parses what [`rfc3339_nanos`] writes (and `Z` times without fraction).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut dp = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (dp.next()??, dp.next()??, dp.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut tp = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (tp.next()??, tp.next()??, tp.next()??);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    let days = days_from_civil(y, m, d);
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

// Howard Hinnant's days <-> civil date algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip() {
        for ms in [0, 1, 999, 1000, 1_795_000_000_123, -1, -1001] {
            assert_eq!(millis(&from_millis(ms)), ms, "{ms}");
        }
        assert_eq!(from_millis(-1).nanos, 999_000_000);
    }

    #[test]
    fn formats_and_parses_back() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let s = rfc3339_nanos(t);
        assert_eq!(s, "2026-11-18T11:06:40.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(
            parse_rfc3339("2000-02-29T12:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_825_600))
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 leap day
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn timestamp_arithmetic() {
        let t = Timestamp {
            seconds: 100,
            nanos: 5,
        };
        assert_eq!(plus(t, Duration::from_secs(10)).seconds, 110);
        assert_eq!(
            millis(&Timestamp {
                seconds: 2,
                nanos: 500_000_000
            }),
            2500
        );
        let s = from_system(UNIX_EPOCH + Duration::new(7, 9));
        assert_eq!((s.seconds, s.nanos), (7, 9));
    }
}
