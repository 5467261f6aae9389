//! Which secrets a task uses, said once for the servers (checks, delivery) and the
//! nodes (fetching).

use crate::v1::TaskConfig;
use std::collections::BTreeMap;

/// Keys an image pull secret must hold.
pub const PULL_SECRET_KEYS: [&str; 2] = ["password", "username"];
/// Optional key of an image pull secret: the registry host it is for.
pub const PULL_SECRET_REGISTRY: &str = "registry";

/// The secrets a task config uses, each with the keys it needs: env `valueFrom` (that
/// key), secret mounts (every key: none listed) and the image pull secret (`username`,
/// `password`). Keys sorted, without duplicates.
pub fn used_by(config: &TaskConfig) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &config.envvars {
        if let Some(from) = &e.value_from {
            out.entry(from.secret.clone())
                .or_default()
                .push(from.key.clone());
        }
    }
    for m in &config.mounts {
        if crate::validate::mount_type(m).as_deref() == Some("secret") {
            out.entry(m.secret.clone()).or_default();
        }
    }
    if !config.image_pull_secret.is_empty() {
        out.entry(config.image_pull_secret.clone())
            .or_default()
            .extend(PULL_SECRET_KEYS.map(String::from));
    }
    for keys in out.values_mut() {
        keys.sort();
        keys.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{EnvVar, EnvVarSource, Mount};

    #[test]
    fn env_mounts_and_pull_secrets_are_collected() {
        let c = TaskConfig {
            envvars: vec![
                EnvVar {
                    name: "A".into(),
                    value_from: Some(EnvVarSource {
                        secret: "db".into(),
                        key: "password".into(),
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "B".into(),
                    value: "plain".into(),
                    ..Default::default()
                },
            ],
            mounts: vec![Mount {
                destination: "/s".into(),
                secret: "tls".into(),
                ..Default::default()
            }],
            image_pull_secret: "db".into(),
            ..Default::default()
        };
        let used = used_by(&c);
        assert_eq!(used["db"], ["password", "username"]);
        assert!(used["tls"].is_empty());
        assert_eq!(used.len(), 2);
    }
}
