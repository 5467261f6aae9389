//! What voiyd reads from image documents (oci-spec's types): media types, the platform this node
//! runs, the runtime defaults of an image config, and the chain IDs that name snapshots.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (schema 2).
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Every manifest type a pull accepts, for the registry's Accept header.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
];

/// True for an index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// True for a single-platform manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// The media type of a manifest document: its `mediaType`, else (OCI documents may omit it) what
/// its shape says.
pub fn media_type_of(document: &[u8]) -> Result<String, serde_json::Error> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(document)?;
    Ok(match probe.media_type {
        Some(m) if !m.is_empty() => m,
        _ if probe.manifests.is_some() => MEDIA_OCI_INDEX.to_string(),
        _ => MEDIA_OCI_MANIFEST.to_string(),
    })
}

/// A platform in Go's naming, as indexes list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v8`), optional.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this node: linux and the Go name of the build's architecture.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform an index entry names, if it names one.
    pub fn of(d: &Descriptor) -> Option<Self> {
        d.platform().as_ref().map(|p| Self {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        })
    }

    /// True when an image built for `candidate` runs here. A missing variant matches any.
    pub fn accepts(&self, candidate: &Platform) -> bool {
        if candidate.os != self.os || candidate.architecture != self.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    }

    /// Picks the manifest for this platform: an exact variant match first, then any acceptable one.
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        let candidates = || {
            index
                .manifests()
                .iter()
                .filter_map(|d| Platform::of(d).filter(|p| self.accepts(p)).map(|p| (d, p)))
        };
        candidates()
            .find(|(_, p)| p.variant == self.variant)
            .or_else(|| candidates().next())
            .map(|(d, _)| d)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Runtime defaults of an image: what a container runs when the task does not override it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV as `NAME=value`.
    pub env: Vec<String>,
    /// WORKDIR, empty when unset.
    pub working_dir: String,
    /// USER (name or uid[:gid]), empty when unset.
    pub user: String,
    /// EXPOSE, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
    /// STOPSIGNAL, empty when unset.
    pub stop_signal: String,
    /// Docker's HEALTHCHECK (an extension the OCI image spec does not define).
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

/// An image's Docker HEALTHCHECK, as the image config's `config.Healthcheck` holds it
/// (durations in nanoseconds; zero means Docker's default).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", arg...]`, `["CMD-SHELL", "command"]` or `["NONE"]`.
    #[serde(rename = "Test", default)]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(rename = "Interval", default)]
    pub interval: u64,
    /// Time one check may take.
    #[serde(rename = "Timeout", default)]
    pub timeout: u64,
    /// Time after start during which failures do not count.
    #[serde(rename = "StartPeriod", default)]
    pub start_period: u64,
    /// Failures in a row that make the container unhealthy.
    #[serde(rename = "Retries", default)]
    pub retries: u32,
}

impl Healthcheck {
    /// The HEALTHCHECK of a raw image config, if it declares one that runs something.
    pub fn of_config(raw: &[u8]) -> Option<Healthcheck> {
        #[derive(Deserialize)]
        struct File {
            config: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(rename = "Healthcheck")]
            healthcheck: Option<Healthcheck>,
        }
        let hc = serde_json::from_slice::<File>(raw)
            .ok()?
            .config?
            .healthcheck?;
        match hc.test.first().map(String::as_str) {
            Some("CMD") if hc.test.len() > 1 => Some(hc),
            Some("CMD-SHELL") if hc.test.len() == 2 => Some(hc),
            _ => None,
        }
    }

    /// The probe it means, with Docker's defaults (interval and timeout 30 s, 3 retries).
    pub fn probe(&self) -> voiyd_messages::v1::Probe {
        let command = if self.test[0] == "CMD-SHELL" {
            vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                self.test[1].clone(),
            ]
        } else {
            self.test[1..].to_vec()
        };
        // Whole seconds, rounded up; 0 keeps the default.
        let secs = |ns: u64, default: u32| match ns {
            0 => default,
            ns => u32::try_from(ns.div_ceil(1_000_000_000)).unwrap_or(u32::MAX),
        };
        voiyd_messages::v1::Probe {
            exec: Some(voiyd_messages::v1::ExecAction { command }),
            period_seconds: secs(self.interval, 30),
            timeout_seconds: secs(self.timeout, 30),
            initial_delay_seconds: secs(self.start_period, 0),
            failure_threshold: if self.retries == 0 { 3 } else { self.retries },
            ..Default::default()
        }
    }
}

impl ImageConfig {
    /// The runtime defaults an image configuration declares.
    pub fn of(config: &ImageConfiguration) -> Self {
        let Some(c) = config.config() else {
            return Self::default();
        };
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut exposed_ports = list(c.exposed_ports());
        exposed_ports.sort();
        Self {
            entrypoint: list(c.entrypoint()),
            cmd: list(c.cmd()),
            env: list(c.env()),
            working_dir: text(c.working_dir()),
            user: text(c.user()),
            exposed_ports,
            labels: c
                .labels()
                .clone()
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            stop_signal: text(c.stop_signal()),
            healthcheck: None,
        }
    }

    /// [`ImageConfig::of`], with the Docker extensions read from the raw config.
    pub fn of_raw(config: &ImageConfiguration, raw: &[u8]) -> Self {
        Self {
            healthcheck: Healthcheck::of_config(raw),
            ..Self::of(config)
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Chain IDs of a layer stack: chainID(0) = diffID(0), chainID(n) = sha256(chainID(n-1) + " " + diffID(n)).
/// They name the committed snapshots, so equal layer stacks share snapshots across images.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn sha256_of_empty_is_the_well_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn entry(arch: &str, variant: Option<&str>, hex: char) -> serde_json::Value {
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": MEDIA_DOCKER_MANIFEST,
            "digest": format!("sha256:{}", hex.to_string().repeat(64)),
            "size": 1,
            "platform": platform,
        })
    }

    #[test]
    fn index_selects_matching_platform_preferring_exact_variant() {
        // A Docker manifest list, as Docker Hub serves them.
        let idx: ImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_DOCKER_LIST,
            "manifests": [
                entry("amd64", None, 'a'),
                entry("arm64", None, 'b'),
                entry("arm64", Some("v8"), 'c'),
                entry("arm", Some("v7"), 'd'),
            ],
        }))
        .unwrap();
        let platform = |arch: &str, variant: Option<&str>| Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        };
        let picked = |p: Platform| {
            p.select(&idx)
                .map(|d| d.digest().to_string()[7..8].to_string())
        };
        assert_eq!(picked(platform("amd64", None)).as_deref(), Some("a"));
        assert_eq!(picked(platform("arm64", Some("v8"))).as_deref(), Some("c"));
        assert_eq!(picked(platform("s390x", None)), None);
    }

    #[test]
    fn host_platform_is_linux() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.is_empty());
        assert_ne!(p.architecture, "x86_64");
    }

    #[test]
    fn healthchecks_become_exec_probes() {
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD-SHELL","wget -q -O- localhost:8080"],"Interval":5000000000,"Timeout":1500000000,"Retries":2}}}"#;
        let hc = Healthcheck::of_config(raw).expect("healthcheck");
        let p = hc.probe();
        assert_eq!(
            p.exec.unwrap().command,
            ["/bin/sh", "-c", "wget -q -O- localhost:8080"]
        );
        assert_eq!(
            (p.period_seconds, p.timeout_seconds, p.failure_threshold),
            (5, 2, 2)
        );
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD","true"]}}}"#;
        let p = Healthcheck::of_config(raw).unwrap().probe();
        assert_eq!(p.exec.unwrap().command, ["true"]);
        assert_eq!(
            (p.period_seconds, p.timeout_seconds, p.failure_threshold),
            (30, 30, 3)
        );
        for none in [
            &br#"{"config":{"Healthcheck":{"Test":["NONE"]}}}"#[..],
            br#"{"config":{}}"#,
            br#"{"config":{"Healthcheck":{"Test":["CMD"]}}}"#,
            b"not json",
        ] {
            assert!(Healthcheck::of_config(none).is_none());
        }
    }

    #[test]
    fn config_reads_docker_fields() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000",
            "Env":["A=1"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/work",
            "ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT","Labels":{"a":"b"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let c: ImageConfiguration = serde_json::from_str(raw).unwrap();
        let ic = ImageConfig::of(&c);
        assert_eq!(ic.user, "1000:1000");
        assert_eq!(ic.entrypoint, vec!["/bin/sh", "-c"]);
        assert_eq!(ic.cmd, vec!["echo hi"]);
        assert_eq!(ic.working_dir, "/work");
        assert_eq!(ic.exposed_ports, vec!["80/tcp"]);
        assert_eq!(ic.stop_signal, "SIGQUIT");
        assert_eq!(ic.labels["a"], "b");
        assert_eq!(c.rootfs().diff_ids(), &vec!["sha256:aa".to_string()]);
        // Docker writes null for unset lists.
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":null,"Entrypoint":null},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ImageConfiguration = serde_json::from_str(raw).unwrap();
        assert!(ImageConfig::of(&c).cmd.is_empty());
    }
}
