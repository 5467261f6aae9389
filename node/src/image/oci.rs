//! OCI / Docker image formats: descriptors, manifests, indexes, configs, platforms and chain IDs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// True for media types that list per-platform manifests.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// True for media types of single-platform manifests.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Digest, e.g. `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Target platform (indexes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform as in an image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture in Go naming (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU variant (`v8`), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// An image index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    #[serde(default)]
    pub schema_version: u32,
    /// Media type, when the document states it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Per-platform manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    /// Picks the manifest for `platform`: an exact variant match first, then any acceptable one.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        let candidates = || {
            self.manifests
                .iter()
                .filter(|d| d.platform.as_ref().is_some_and(|p| platform.accepts(p)))
        };
        candidates()
            .find(|d| {
                d.platform.as_ref().and_then(|p| p.variant.as_ref()) == platform.variant.as_ref()
            })
            .or_else(|| candidates().next())
    }
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    #[serde(default)]
    pub schema_version: u32,
    /// Media type, when the document states it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The image config blob (the parts voiyd uses).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConfigFile {
    /// Architecture the image was built for.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Runtime defaults.
    #[serde(default)]
    pub config: Option<RawContainerConfig>,
    /// Layer diff IDs.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Digests of the uncompressed layers, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The `config` object of an image config, as the registry stores it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RawContainerConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
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
}

impl ConfigFile {
    /// The runtime defaults of this image.
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .map(|m| m.into_keys().collect())
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.unwrap_or_default(),
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    fn desc(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: Default::default(),
        }
    }

    #[test]
    fn index_selects_matching_platform_preferring_exact_variant() {
        let idx = ImageIndex {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                desc("amd64", None, "a"),
                desc("arm64", None, "b"),
                desc("arm64", Some("v8"), "c"),
                desc("arm", Some("v7"), "d"),
            ],
        };
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(idx.select(&amd).unwrap().digest, "a");
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(idx.select(&arm64).unwrap().digest, "c");
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(idx.select(&s390).is_none());
    }

    #[test]
    fn host_platform_is_linux() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.is_empty());
        assert_ne!(p.architecture, "x86_64");
    }

    #[test]
    fn config_file_parses_docker_fields() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000",
            "Env":["A=1"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/work",
            "ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let c: ConfigFile = serde_json::from_str(raw).unwrap();
        let ic = c.image_config();
        assert_eq!(ic.user, "1000:1000");
        assert_eq!(ic.entrypoint, vec!["/bin/sh", "-c"]);
        assert_eq!(ic.cmd, vec!["echo hi"]);
        assert_eq!(ic.working_dir, "/work");
        assert_eq!(ic.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.rootfs.diff_ids, vec!["sha256:aa"]);
        // Docker writes null for unset lists.
        let raw =
            r#"{"config":{"Cmd":null,"Entrypoint":null},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ConfigFile = serde_json::from_str(raw).unwrap();
        assert!(c.image_config().cmd.is_empty());
    }
}
