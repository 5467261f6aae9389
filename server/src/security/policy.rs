//! Cluster-wide admission policy: what tasks may ask of a host.
//!
//! Set by voiyd-server flags (`--allow-privileged=false`, `--allow-host-paths=false`,
//! `--allow-cap-add=false`); checked on create, update and patch of tasks and container
//! sets, after validation and before anything is written. Pure.

use std::any::Any;
use voiyd_messages::v1::{ContainerSet, Task, TaskConfig};

/// What the cluster allows. Everything is allowed by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Privileged containers.
    pub allow_privileged: bool,
    /// Bind mounts of host paths.
    pub allow_host_paths: bool,
    /// Added Linux capabilities.
    pub allow_cap_add: bool,
    /// Tasks without a seccomp filter (`seccomp: unconfined`).
    pub allow_unconfined_seccomp: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_privileged: true,
            allow_host_paths: true,
            allow_cap_add: true,
            allow_unconfined_seccomp: true,
        }
    }
}

impl Policy {
    /// Checks one task config; the message names the field and the flag.
    pub fn check_config(&self, what: &str, cfg: &TaskConfig) -> Result<(), String> {
        let mut refused = Vec::new();
        if !self.allow_privileged && cfg.privileged {
            refused.push(
                "privileged: true (the server runs with --allow-privileged=false)".to_string(),
            );
        }
        if !self.allow_cap_add {
            if let Some(caps) = cfg.capabilities.as_ref().filter(|c| !c.add.is_empty()) {
                refused.push(format!(
                    "capabilities.add {:?} (the server runs with --allow-cap-add=false)",
                    caps.add
                ));
            }
        }
        let unconfined = voiyd_messages::validate::parse_seccomp(&cfg.seccomp)
            .is_ok_and(|s| s == voiyd_messages::validate::Seccomp::Unconfined);
        if !self.allow_unconfined_seccomp && unconfined {
            refused.push(
                "seccomp: unconfined (the server runs with --allow-unconfined-seccomp=false)"
                    .to_string(),
            );
        }
        if !self.allow_host_paths {
            for m in &cfg.mounts {
                if voiyd_messages::validate::mount_type(m).as_deref() == Some("bind") {
                    refused.push(format!(
                        "bind mount of host path {:?} (the server runs with --allow-host-paths=false; use a volume)",
                        m.source
                    ));
                }
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what} is refused by cluster policy: {}",
                refused.join("; ")
            ))
        }
    }

    /// Checks any resource: tasks and container set templates; other kinds pass.
    pub fn admit(&self, resource: &dyn Any) -> Result<(), String> {
        if let Some(t) = resource.downcast_ref::<Task>() {
            let name = t.meta.as_ref().map(|m| m.name.as_str()).unwrap_or("");
            if let Some(cfg) = &t.config {
                return self.check_config(&format!("task {name}"), cfg);
            }
        }
        if let Some(s) = resource.downcast_ref::<ContainerSet>() {
            let name = s.meta.as_ref().map(|m| m.name.as_str()).unwrap_or("");
            if let Some(cfg) = &s.template {
                return self.check_config(&format!("container set {name}"), cfg);
            }
        }
        if let Some(j) = resource.downcast_ref::<voiyd_messages::v1::Job>() {
            let name = j.meta.as_ref().map(|m| m.name.as_str()).unwrap_or("");
            if let Some(cfg) = &j.template {
                return self.check_config(&format!("job {name}"), cfg);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use voiyd_messages::v1::{Capabilities, Mount};

    fn task(cfg: TaskConfig) -> Task {
        Task::new("web", cfg)
    }

    #[test]
    fn strict_policy_refuses_each_escape() {
        let strict = Policy {
            allow_privileged: false,
            allow_host_paths: false,
            allow_cap_add: false,
            allow_unconfined_seccomp: false,
        };
        let privileged = task(TaskConfig {
            privileged: true,
            ..Default::default()
        });
        let err = strict.admit(&privileged).unwrap_err();
        assert!(
            err.contains("task web") && err.contains("--allow-privileged=false"),
            "{err}"
        );
        let caps = task(TaskConfig {
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec![],
            }),
            ..Default::default()
        });
        assert!(strict
            .admit(&caps)
            .unwrap_err()
            .contains("--allow-cap-add=false"));
        let bind = task(TaskConfig {
            mounts: vec![Mount {
                source: "/etc".into(),
                destination: "/host-etc".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(strict.admit(&bind).unwrap_err().contains("/etc"));
        let unconfined = task(TaskConfig {
            seccomp: "unconfined".into(),
            ..Default::default()
        });
        assert!(strict
            .admit(&unconfined)
            .unwrap_err()
            .contains("--allow-unconfined-seccomp=false"));
        // Dropping capabilities, volumes and tmpfs are fine.
        let fine = task(TaskConfig {
            capabilities: Some(Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            mounts: vec![Mount {
                r#type: "tmpfs".into(),
                destination: "/tmp".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(strict.admit(&fine), Ok(()));
        let set = ContainerSet {
            template: Some(TaskConfig {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(strict.admit(&set).is_err());
        assert_eq!(Policy::default().admit(&privileged), Ok(()));
    }

    proptest! {
        /// The default policy admits everything; a strict one refuses exactly the
        /// configs that ask for one of the three.
        #[test]
        fn refuses_exactly_the_escapes(privileged: bool, cap: bool, bind: bool) {
            let cfg = TaskConfig {
                privileged,
                capabilities: Some(Capabilities {
                    add: if cap { vec!["SYS_ADMIN".into()] } else { vec![] },
                    drop: vec![],
                }),
                mounts: if bind {
                    vec![Mount { r#type: "bind".into(), source: "/".into(), destination: "/h".into(), ..Default::default() }]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            prop_assert!(Policy::default().check_config("t", &cfg).is_ok());
            let strict = Policy { allow_privileged: false, allow_host_paths: false, allow_cap_add: false, allow_unconfined_seccomp: true };
            prop_assert_eq!(strict.check_config("t", &cfg).is_err(), privileged || cap || bind);
        }
    }
}
