//! Probes, as Kubernetes defines them: what each probe checks and how often, and how a
//! run's results become its [`Health`]. Pure: the agent's probe runner executes the
//! checks and feeds [`Probes::record`]; the worker reads the health.
//!
//! # Rules
//!
//! | probe | before it passed | `failureThreshold` failures in a row | `successThreshold` successes in a row |
//! |---|---|---|---|
//! | startup | liveness and readiness wait | the run failed: restart (`StartupProbeFailed`) | startup done, never probed again |
//! | liveness | — | the run failed: restart (`LivenessProbeFailed`) | — |
//! | readiness | not ready | not ready (`Unhealthy`, with the output) | ready |
//!
//! A run with a readiness probe starts not ready; without one, its readiness is not the
//! probes' to say (`Health::ready` is `None`). Once a run failed, no probe counts any more:
//! the next run starts from fresh counters.

use std::time::Duration;

use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{Probe, TaskConfig};

/// Default `periodSeconds`.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// Default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Longest probe output kept for a message.
pub const MAX_OUTPUT: usize = 1024;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`.
    Startup,
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
}

impl ProbeKind {
    /// The three, in the order they gate each other.
    pub const ALL: [ProbeKind; 3] = [
        ProbeKind::Startup,
        ProbeKind::Liveness,
        ProbeKind::Readiness,
    ];

    /// The manifest's word, for messages.
    pub fn word(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }

    fn index(self) -> usize {
        match self {
            ProbeKind::Startup => 0,
            ProbeKind::Liveness => 1,
            ProbeKind::Readiness => 2,
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Run a command in the container; exit code 0 passes.
    Exec(Vec<String>),
    /// GET `path` from `host` (the task's address when `None`) on `port`; 200-399 passes.
    Http {
        /// Address to connect to, when not the task's own.
        host: Option<std::net::IpAddr>,
        /// TCP port.
        port: u16,
        /// Request path (`/` when unset).
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// Open a TCP connection; connecting passes.
    Tcp {
        /// Address to connect to, when not the task's own.
        host: Option<std::net::IpAddr>,
        /// TCP port.
        port: u16,
    },
}

/// One probe, defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What it checks.
    pub check: Check,
    /// Wait after the run starts before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// How long one check may take before it counts as failed.
    pub timeout: Duration,
    /// Failures in a row that decide the probe failed.
    pub failure_threshold: u32,
    /// Successes in a row that decide the probe passed.
    pub success_threshold: u32,
}

impl ProbeSpec {
    /// The probe a manifest describes, defaults filled in; `None` without a check (the
    /// server refuses such a probe, so only a foreign writer makes one).
    pub fn of(p: &Probe) -> Option<ProbeSpec> {
        let host = |h: &str| h.parse().ok();
        let port = |p: u32| u16::try_from(p).ok().filter(|p| *p > 0);
        let check = if let Some(e) = &p.exec {
            if e.command.is_empty() {
                return None;
            }
            Check::Exec(e.command.clone())
        } else if let Some(h) = &p.http_get {
            Check::Http {
                host: host(&h.host),
                port: port(h.port)?,
                path: if h.path.is_empty() {
                    "/".into()
                } else {
                    h.path.clone()
                },
                headers: h
                    .http_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(t) = &p.tcp_socket {
            Check::Tcp {
                host: host(&t.host),
                port: port(t.port)?,
            }
        } else {
            return None;
        };
        let secs = |s: u32, default: Duration| {
            if s == 0 {
                default
            } else {
                Duration::from_secs(u64::from(s))
            }
        };
        Some(ProbeSpec {
            check,
            initial_delay: Duration::from_secs(u64::from(p.initial_delay_seconds)),
            period: secs(p.period_seconds, DEFAULT_PERIOD),
            timeout: secs(p.timeout_seconds, DEFAULT_TIMEOUT),
            failure_threshold: match p.failure_threshold {
                0 => DEFAULT_FAILURE_THRESHOLD,
                n => n,
            },
            success_threshold: p.success_threshold.max(1),
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed, with the output or error that says why.
    Fail(String),
}

/// What a run's probes found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Whether the run is ready; `None` without a readiness probe.
    pub ready: Option<bool>,
    /// Why it is not ready: the last failed check's output.
    pub unready_message: String,
    /// The run failed its liveness or startup probe and must be restarted: the reason
    /// and a message with the probe's last output.
    pub failed: Option<(Reason, String)>,
}

#[derive(Debug, Clone, Default)]
struct Counter {
    successes: u32,
    failures: u32,
}

/// A run's probes and their counters.
#[derive(Debug, Clone)]
pub struct Probes {
    specs: [Option<ProbeSpec>; 3],
    counters: [Counter; 3],
    health: Health,
}

impl Probes {
    /// The probes of a task configuration; `None` when it has none.
    pub fn of(config: &TaskConfig) -> Option<Probes> {
        let specs = [
            config.startup_probe.as_ref().and_then(ProbeSpec::of),
            config.liveness_probe.as_ref().and_then(ProbeSpec::of),
            config.readiness_probe.as_ref().and_then(ProbeSpec::of),
        ];
        if specs.iter().all(Option::is_none) {
            return None;
        }
        let health = Health {
            started: specs[0].is_none(),
            ready: specs[2].as_ref().map(|_| false),
            unready_message: if specs[2].is_some() {
                "the readiness probe has not passed yet".into()
            } else {
                String::new()
            },
            failed: None,
        };
        Some(Probes {
            specs,
            counters: Default::default(),
            health,
        })
    }

    /// The probe of one kind, if the task has it.
    pub fn spec(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        self.specs[kind.index()].as_ref()
    }

    /// The health so far.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether a probe of this kind should run now: it exists, the run has not failed,
    /// and (but for the startup probe) startup is done; a passed startup probe is done.
    pub fn should_run(&self, kind: ProbeKind) -> bool {
        if self.spec(kind).is_none() || self.health.failed.is_some() {
            return false;
        }
        match kind {
            ProbeKind::Startup => !self.health.started,
            _ => self.health.started,
        }
    }

    /// Counts one check's outcome; returns whether the health changed.
    pub fn record(&mut self, kind: ProbeKind, outcome: Outcome) -> bool {
        if !self.should_run(kind) {
            return false;
        }
        let Some(spec) = self.specs[kind.index()].clone() else {
            return false;
        };
        let c = &mut self.counters[kind.index()];
        let before = self.health.clone();
        match outcome {
            Outcome::Pass => {
                c.failures = 0;
                c.successes = c.successes.saturating_add(1);
                if c.successes >= spec.success_threshold {
                    match kind {
                        ProbeKind::Startup => self.health.started = true,
                        ProbeKind::Liveness => {}
                        ProbeKind::Readiness => {
                            self.health.ready = Some(true);
                            self.health.unready_message.clear();
                        }
                    }
                }
            }
            Outcome::Fail(output) => {
                c.successes = 0;
                c.failures = c.failures.saturating_add(1);
                let output = clip(&output);
                match kind {
                    ProbeKind::Readiness => {
                        // Not ready yet stays not ready with the newest output; a ready
                        // run turns unready only at the threshold.
                        if self.health.ready != Some(true) || c.failures >= spec.failure_threshold {
                            self.health.ready = Some(false);
                            self.health.unready_message =
                                format!("readiness probe failed: {output}");
                        }
                    }
                    ProbeKind::Liveness | ProbeKind::Startup => {
                        if c.failures >= spec.failure_threshold {
                            let reason = if kind == ProbeKind::Liveness {
                                Reason::LivenessProbeFailed
                            } else {
                                Reason::StartupProbeFailed
                            };
                            self.health.failed = Some((
                                reason,
                                format!(
                                    "{} probe failed {} times in a row: {output}",
                                    kind.word(),
                                    c.failures
                                ),
                            ));
                        }
                    }
                }
            }
        }
        self.health != before
    }
}

/// The probes a task runs when they are not its own: with no probe of its own, its
/// image's Docker HEALTHCHECK becomes its readiness probe (`None`: the task's own config
/// says it all). Not a liveness probe: Docker itself never restarts an unhealthy
/// container, and an image cannot know how patient its users want restarts to be.
pub fn effective(config: &TaskConfig, image_probe: Option<&Probe>) -> Option<TaskConfig> {
    let own = config.liveness_probe.is_some()
        || config.readiness_probe.is_some()
        || config.startup_probe.is_some();
    match image_probe {
        Some(p) if !own => Some(TaskConfig {
            readiness_probe: Some(p.clone()),
            ..config.clone()
        }),
        _ => None,
    }
}

/// Whether a task is ready, as its node reports it in the `Ready` condition: for a spec
/// with a readiness or startup probe, `(ready, reason, message)`; `None` for a spec
/// with neither, whose readiness is its phase's (running is ready).
pub fn readiness(
    config: &TaskConfig,
    running: bool,
    health: Option<&Health>,
) -> Option<(bool, Reason, String)> {
    if config.readiness_probe.is_none() && config.startup_probe.is_none() {
        return None;
    }
    Some(match health {
        _ if !running => (false, Reason::Unhealthy, "not running".into()),
        None => (
            false,
            Reason::Unhealthy,
            "the probes have not run yet".into(),
        ),
        Some(h) if !h.started => (
            false,
            Reason::Unhealthy,
            "the startup probe has not passed yet".into(),
        ),
        Some(h) if h.ready == Some(false) => (false, Reason::Unhealthy, h.unready_message.clone()),
        Some(_) => (true, Reason::Started, String::new()),
    })
}

/// One line of at most [`MAX_OUTPUT`] bytes (cut at a character boundary).
fn clip(output: &str) -> String {
    let one = output.trim().replace(['\r', '\n'], " ");
    if one.len() <= MAX_OUTPUT {
        return if one.is_empty() {
            "(no output)".into()
        } else {
            one
        };
    }
    let mut end = MAX_OUTPUT;
    while !one.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &one[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use voiyd_messages::v1::{ExecAction, HttpGetAction, TcpSocketAction};

    fn exec(failure_threshold: u32, success_threshold: u32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            failure_threshold,
            success_threshold,
            ..Default::default()
        }
    }

    fn fail() -> Outcome {
        Outcome::Fail("nope".into())
    }

    #[test]
    fn defaults_are_kubernetes_ones() {
        let s = ProbeSpec::of(&Probe {
            http_get: Some(HttpGetAction {
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("spec");
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.failure_threshold, s.success_threshold), (3, 1));
        assert!(matches!(s.check, Check::Http { ref path, port: 8080, .. } if path == "/"));
        assert!(ProbeSpec::of(&Probe::default()).is_none());
        assert!(ProbeSpec::of(&Probe {
            tcp_socket: Some(TcpSocketAction {
                port: 70000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .is_none());
        assert!(Probes::of(&TaskConfig::default()).is_none());
    }

    #[test]
    fn readiness_starts_false_and_follows_thresholds() {
        let cfg = TaskConfig {
            readiness_probe: Some(exec(2, 2)),
            ..Default::default()
        };
        let mut p = Probes::of(&cfg).expect("probes");
        assert_eq!(p.health().ready, Some(false));
        assert!(p.health().started);
        assert!(!p.record(ProbeKind::Readiness, Outcome::Pass), "one of two");
        assert!(p.record(ProbeKind::Readiness, Outcome::Pass));
        assert_eq!(p.health().ready, Some(true));
        assert!(
            !p.record(ProbeKind::Readiness, fail()),
            "one failure of two"
        );
        assert!(p.record(ProbeKind::Readiness, fail()));
        assert_eq!(p.health().ready, Some(false));
        assert!(p.health().unready_message.contains("nope"));
        assert!(p.health().failed.is_none(), "readiness never restarts");
    }

    #[test]
    fn liveness_fails_at_its_threshold_and_startup_gates_it() {
        let cfg = TaskConfig {
            liveness_probe: Some(exec(3, 0)),
            startup_probe: Some(exec(2, 0)),
            ..Default::default()
        };
        let mut p = Probes::of(&cfg).expect("probes");
        assert!(!p.should_run(ProbeKind::Liveness), "waits for startup");
        assert!(p.should_run(ProbeKind::Startup));
        assert!(!p.record(ProbeKind::Liveness, fail()), "not counted yet");
        assert!(p.record(ProbeKind::Startup, Outcome::Pass));
        assert!(!p.should_run(ProbeKind::Startup), "startup is done");
        p.record(ProbeKind::Liveness, fail());
        p.record(ProbeKind::Liveness, Outcome::Pass);
        p.record(ProbeKind::Liveness, fail());
        p.record(ProbeKind::Liveness, fail());
        assert!(p.health().failed.is_none(), "successes reset the count");
        assert!(p.record(ProbeKind::Liveness, fail()));
        let (reason, msg) = p.health().failed.clone().expect("failed");
        assert_eq!(reason, Reason::LivenessProbeFailed);
        assert!(msg.contains("3 times") && msg.contains("nope"), "{msg}");
        assert!(
            !p.should_run(ProbeKind::Liveness),
            "a failed run is not probed"
        );
    }

    #[test]
    fn startup_failure_fails_the_run() {
        let cfg = TaskConfig {
            startup_probe: Some(exec(1, 0)),
            ..Default::default()
        };
        let mut p = Probes::of(&cfg).expect("probes");
        assert!(p.record(ProbeKind::Startup, fail()));
        assert_eq!(
            p.health().failed.as_ref().map(|f| f.0),
            Some(Reason::StartupProbeFailed)
        );
    }

    #[test]
    fn readiness_is_reported_only_for_specs_with_a_say() {
        assert_eq!(readiness(&TaskConfig::default(), true, None), None);
        let cfg = TaskConfig {
            readiness_probe: Some(exec(1, 1)),
            ..Default::default()
        };
        let mut p = Probes::of(&cfg).expect("probes");
        assert_eq!(
            readiness(&cfg, true, Some(p.health())).map(|r| r.0),
            Some(false)
        );
        p.record(ProbeKind::Readiness, Outcome::Pass);
        assert_eq!(
            readiness(&cfg, true, Some(p.health())).map(|r| r.0),
            Some(true)
        );
        assert_eq!(
            readiness(&cfg, false, Some(p.health())).map(|r| r.0),
            Some(false),
            "a task that does not run is not ready"
        );
    }

    #[test]
    fn an_image_healthcheck_is_readiness_only_without_probes_of_its_own() {
        let hc = exec(1, 1);
        let plain = TaskConfig::default();
        let e = effective(&plain, Some(&hc)).expect("used");
        assert_eq!(e.readiness_probe, Some(hc.clone()));
        assert!(e.liveness_probe.is_none());
        let own = TaskConfig {
            liveness_probe: Some(exec(3, 1)),
            ..Default::default()
        };
        assert!(effective(&own, Some(&hc)).is_none());
        assert!(effective(&plain, None).is_none());
    }

    #[test]
    fn output_is_one_clipped_line() {
        assert_eq!(clip("a\nb\n"), "a b");
        assert_eq!(clip("  "), "(no output)");
        let long = "é".repeat(2000);
        let c = clip(&long);
        assert!(c.len() <= MAX_OUTPUT + 3 && c.ends_with("..."));
    }

    proptest! {
        /// Readiness is true exactly when the last `success_threshold` outcomes passed
        /// or it was true and fewer than `failure_threshold` failures followed.
        #[test]
        fn readiness_matches_a_direct_count(ft in 1u32..5, st in 1u32..5, outcomes in proptest::collection::vec(any::<bool>(), 0..40)) {
            let cfg = TaskConfig { readiness_probe: Some(exec(ft, st)), ..Default::default() };
            let mut p = Probes::of(&cfg).expect("probes");
            let mut ready = false;
            let (mut s, mut f) = (0u32, 0u32);
            for ok in outcomes {
                p.record(ProbeKind::Readiness, if ok { Outcome::Pass } else { fail() });
                if ok { s += 1; f = 0; if s >= st { ready = true; } } else { f += 1; s = 0; if f >= ft { ready = false; } }
                prop_assert_eq!(p.health().ready, Some(ready));
            }
            prop_assert!(p.health().failed.is_none());
        }
    }
}
