//! Schedules of cron jobs (`Job.schedule`): five-field cron (`*/5 * * * *`), the
//! nicknames `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and
//! `@hourly`, and `@every DURATION` (whole seconds, slots aligned to the Unix epoch, so
//! every server computes the same ones). Times are whole Unix seconds, UTC. Parsing and
//! matching of cron fields are the `croner` crate's.

use crate::quantity::parse_duration;
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron pattern.
    Cron(Box<croner::Cron>),
    /// Every this many seconds.
    Every(i64),
}

/// Where [`Schedule::parse`] checks that a schedule ever fires.
const PROBE_FROM: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

impl Schedule {
    /// Parses a schedule; the error says what is wrong and what to write.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("@every") {
            let d = parse_duration(rest.trim())
                .map_err(|e| format!("`{s}`: {e}: write @every and a duration, e.g. @every 30s"))?;
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                return Err(format!(
                    "`{s}`: @every takes whole seconds, at least 1s (e.g. @every 30s)"
                ));
            }
            let secs = i64::try_from(d.as_secs()).map_err(|_| format!("`{s}` is too long"))?;
            return Ok(Schedule::Every(secs));
        }
        if s.split_whitespace().count() != 5 && !s.starts_with('@') {
            return Err(format!(
                "`{s}` is not a five-field cron schedule: write minute hour day-of-month month day-of-week (e.g. */5 * * * *), a nickname such as @hourly, or @every 30s"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(s).map_err(|e| {
            format!(
                "`{s}` is not a valid cron schedule ({e}): e.g. */5 * * * *, @hourly or @every 30s"
            )
        })?;
        let schedule = Schedule::Cron(Box::new(cron));
        if schedule.next_after(PROBE_FROM).is_none() {
            return Err(format!(
                "`{s}` never fires (no such date): check the day of month against the month"
            ));
        }
        Ok(schedule)
    }

    /// The latest slot at or before `now` that is later than `after`, if any.
    pub fn last_slot(&self, after: i64, now: i64) -> Option<i64> {
        let slot = match self {
            Schedule::Every(p) => now - now.rem_euclid(*p),
            Schedule::Cron(c) => c
                .find_previous_occurrence(&at(now)?, true)
                .ok()?
                .timestamp(),
        };
        (slot > after && slot <= now).then_some(slot)
    }

    /// The first slot later than `after`, if the schedule ever fires again.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Schedule::Every(p) => Some(after - after.rem_euclid(*p) + p),
            Schedule::Cron(c) => Some(c.find_next_occurrence(&at(after)?, false).ok()?.timestamp()),
        }
    }
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(secs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_765_000_000; // 2025-12-06T05:46:40Z

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s = Schedule::parse("@every 5s").unwrap();
        assert_eq!(s.last_slot(0, T + 3), Some(T));
        assert_eq!(s.last_slot(T, T + 3), None, "that slot ran already");
        assert_eq!(s.last_slot(T, T + 5), Some(T + 5));
        assert_eq!(s.next_after(T), Some(T + 5));
        assert_eq!(s.next_after(T + 1), Some(T + 5));
        assert!(Schedule::parse("@every 1.5s").is_err());
        assert!(Schedule::parse("@every 0s").is_err());
        assert!(Schedule::parse("@every soon").is_err());
    }

    #[test]
    fn cron_and_nicknames() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        // T is :46:40: the last five-minute slot is :45:00.
        assert_eq!(s.last_slot(0, T), Some(T - 100));
        assert_eq!(s.next_after(T), Some(T + 200));
        let h = Schedule::parse("@hourly").unwrap();
        assert_eq!(h.last_slot(0, T), Some(T - 46 * 60 - 40));
        assert!(Schedule::parse("@daily").is_ok());
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in ["* * * *", "* * * * * *", "61 * * * *", "tomorrow", ""] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains("cron"), "{bad}: {e}");
        }
        let e = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
    }
}
