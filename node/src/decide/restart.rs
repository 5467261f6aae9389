//! Restart policy and crash backoff: when an exited container runs again, and how long it
//! waits first.
//!
//! Pure functions: the reconciler ([`crate::decide::reconcile`]) and the phase report
//! ([`crate::decide::phase`]) both ask these, so what a node does and what it reports cannot drift.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// Wait before the first restart; each further restart doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest wait between restarts, however often the container crashed.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// A container that has run this long without exiting has its restart count reset, so an
/// old crash loop does not slow down the restart after an unrelated later crash.
pub const RESET_AFTER: Duration = Duration::from_secs(10 * 60);

/// What happens when a task's container exits on its own (`TaskConfig.restart_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Restart after every exit, successful or not (the default).
    #[default]
    Always,
    /// Restart only after a non-zero exit code.
    OnFailure,
    /// Never restart: the task ends as Succeeded or Failed.
    Never,
}

/// A restart policy string that is none of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart policy {0:?} is not known: use always, on-failure or never")]
pub struct RestartPolicyError(pub String);

impl RestartPolicy {
    /// Parses the configured policy. Empty means [`RestartPolicy::Always`]. Case and the
    /// separator of `on-failure` (`-`, `_` or none) are not significant, so `OnFailure`
    /// and `on_failure` from hand-written JSON are accepted too.
    pub fn parse(s: &str) -> Result<Self, RestartPolicyError> {
        let normalized: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match normalized.as_str() {
            "" | "always" => Ok(Self::Always),
            "onfailure" => Ok(Self::OnFailure),
            "never" => Ok(Self::Never),
            _ => Err(RestartPolicyError(s.to_string())),
        }
    }

    /// The policy of a config string, falling back to the default for a value the server
    /// should have rejected: a task is meant to run, so an unreadable policy must not be
    /// the reason it stays down.
    pub fn from_config(s: &str) -> Self {
        Self::parse(s).unwrap_or_default()
    }

    /// The canonical spelling, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = RestartPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a container that exited with `exit_code` is started again under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// How long to wait after an exit before restart number `restart_count + 1`:
/// [`BACKOFF_BASE`] * 2^`restart_count`, capped at [`BACKOFF_MAX`]. Defined (and
/// non-decreasing) for every `u32`.
pub fn backoff(restart_count: u32) -> Duration {
    // 2^9 s already exceeds the 300 s cap, so larger exponents need not be computed (and
    // would overflow the shift).
    if restart_count >= 9 {
        return BACKOFF_MAX;
    }
    let secs = BACKOFF_BASE.as_secs() << restart_count;
    Duration::from_secs(secs).min(BACKOFF_MAX)
}

/// Whether and when an exited container runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartWait {
    /// The policy does not restart after this exit.
    Never,
    /// The backoff has passed: restart now.
    Now,
    /// Restart once this much more time has passed.
    After(Duration),
}

/// Applies `policy` and the backoff to a container that exited with `exit_code` at
/// `exited_at` after `restart_count` restarts. A clock that went backwards (exit "in the
/// future") counts as no time elapsed, so the full backoff is waited.
pub fn restart_wait(
    policy: RestartPolicy,
    exit_code: i32,
    restart_count: u32,
    exited_at: SystemTime,
    now: SystemTime,
) -> RestartWait {
    if !should_restart(policy, exit_code) {
        return RestartWait::Never;
    }
    let elapsed = now.duration_since(exited_at).unwrap_or(Duration::ZERO);
    match backoff(restart_count).checked_sub(elapsed) {
        Some(left) if !left.is_zero() => RestartWait::After(left),
        _ => RestartWait::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_wait_applies_policy_and_backoff() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let cases = [
            (RestartPolicy::Never, 1, 0, t0 + s(100), RestartWait::Never),
            (
                RestartPolicy::OnFailure,
                0,
                0,
                t0 + s(100),
                RestartWait::Never,
            ),
            (RestartPolicy::Always, 0, 0, t0, RestartWait::After(s(1))),
            (RestartPolicy::Always, 0, 0, t0 + s(1), RestartWait::Now),
            (
                RestartPolicy::OnFailure,
                2,
                3,
                t0 + s(5),
                RestartWait::After(s(3)),
            ),
            (RestartPolicy::OnFailure, 2, 3, t0 + s(9), RestartWait::Now),
            // The clock went backwards: wait the whole backoff.
            (
                RestartPolicy::Always,
                1,
                2,
                t0 - s(50),
                RestartWait::After(s(4)),
            ),
        ];
        for (policy, code, count, now, want) in cases {
            assert_eq!(
                restart_wait(policy, code, count, t0, now),
                want,
                "{policy} exit {code} after {count} restarts at {now:?}"
            );
        }
    }

    #[test]
    fn parses_policies() {
        let cases: &[(&str, Option<RestartPolicy>)] = &[
            ("", Some(RestartPolicy::Always)),
            ("  ", Some(RestartPolicy::Always)),
            ("always", Some(RestartPolicy::Always)),
            ("Always", Some(RestartPolicy::Always)),
            ("on-failure", Some(RestartPolicy::OnFailure)),
            ("OnFailure", Some(RestartPolicy::OnFailure)),
            ("on_failure", Some(RestartPolicy::OnFailure)),
            ("never", Some(RestartPolicy::Never)),
            ("NEVER", Some(RestartPolicy::Never)),
            ("sometimes", None),
            ("on-fail", None),
            ("unless-stopped", None),
        ];
        for (input, want) in cases {
            assert_eq!(RestartPolicy::parse(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn unknown_policy_falls_back_to_always_and_says_what_to_write() {
        assert_eq!(RestartPolicy::from_config("bogus"), RestartPolicy::Always);
        let err = RestartPolicy::parse("bogus").unwrap_err().to_string();
        assert!(err.contains("bogus") && err.contains("on-failure"), "{err}");
    }

    #[test]
    fn canonical_spelling_round_trips() {
        for p in [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ] {
            assert_eq!(p.to_string().parse::<RestartPolicy>(), Ok(p));
        }
    }

    #[test]
    fn restart_decisions() {
        let cases = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::Always, -1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 1, true),
            (RestartPolicy::OnFailure, 137, true),
            (RestartPolicy::OnFailure, -1, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, code, want) in cases {
            assert_eq!(should_restart(policy, code), want, "{policy} exit {code}");
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let cases = [
            (0, 1),
            (1, 2),
            (2, 4),
            (3, 8),
            (4, 16),
            (5, 32),
            (6, 64),
            (7, 128),
            (8, 256),
            (9, 300),
            (10, 300),
            (63, 300),
            (64, 300),
            (u32::MAX, 300),
        ];
        for (n, secs) in cases {
            assert_eq!(backoff(n), Duration::from_secs(secs), "restart count {n}");
        }
    }
}
