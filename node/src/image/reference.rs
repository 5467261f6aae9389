//! Image references, normalised the way Docker does (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;

/// The registry Docker Hub references resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host serving Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Why a reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
    tag_defaulted: bool,
}

impl Reference {
    /// Parses `reference` like Docker: a first path component with a `.` or `:`, or `localhost`,
    /// is a registry host; otherwise the registry is Docker Hub (with `library/` for one-component
    /// names). Without tag and digest the tag is `latest`.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(err("it is empty"));
        }
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(|r| err(&r))?;
        }
        // The tag follows the last ':' unless that ':' belongs to a host:port (a '/' follows it).
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| err(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                let host = if first == "index.docker.io" {
                    DOCKER_HUB
                } else {
                    first
                };
                (host.to_string(), rest.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| err(&r))?;
        if registry.is_empty() {
            return Err(err("the registry host is empty"));
        }
        let tag_defaulted = tag.is_none() && digest.is_none();
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
            tag_defaulted,
        })
    }

    /// Registry host as written (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Host to send registry API requests to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, `latest` when neither tag nor digest was given; `None` for digest-only references.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, e.g. `sha256:…`, when given.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// True for references that float: no digest and the tag `latest` (explicit or implied).
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && (self.tag_defaulted || self.tag.as_deref() == Some("latest"))
    }

    /// What to ask the registry's manifest endpoint for: the digest when given, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    /// The fully qualified name used as the containerd image name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_digest(d: &str) -> Result<(), String> {
    let (algo, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("digest '{d}' must look like sha256:<64 hex digits>"))?;
    let ok = match algo {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => false,
    } && hex
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "digest '{d}' must look like sha256:<64 hex digits>"
        ))
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let mut chars = t.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && t.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "tag '{t}' may use letters, digits, '_', '.' and '-' (not first), at most 128 characters"
        ))
    }
}

fn validate_repository(r: &str) -> Result<(), String> {
    let bad = || {
        format!("repository '{r}' must be lowercase letters, digits and separators ('.', '_', '-', '/')")
    };
    if r.is_empty() || r.split('/').any(|c| c.is_empty()) {
        return Err(bad());
    }
    for component in r.split('/') {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !component.starts_with(alnum) || !component.ends_with(alnum) {
            return Err(bad());
        }
        if !component
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn short_names_go_to_docker_hub_library() {
        let r = p("busybox");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert!(r.is_latest());
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn user_repos_on_docker_hub_keep_their_path() {
        let r = p("bitnami/redis:7.2");
        assert_eq!(r.to_string(), "docker.io/bitnami/redis:7.2");
        assert!(!r.is_latest());
        assert_eq!(
            p("index.docker.io/library/alpine:3").registry(),
            "docker.io"
        );
    }

    #[test]
    fn host_with_port_is_a_registry_not_a_tag() {
        let r = p("127.0.0.1:5000/a/b:tag");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("tag"));
        let r = p("127.0.0.1:5000/a/b");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.repository(), "a/b");
    }

    #[test]
    fn localhost_and_dotted_hosts_are_registries() {
        assert_eq!(p("localhost/x").registry(), "localhost");
        assert_eq!(p("localhost/x").repository(), "x");
        assert_eq!(p("ghcr.io/org/app:v1").registry(), "ghcr.io");
        // A one-component name stays on Docker Hub even with dots in it.
        assert_eq!(p("my.app").registry(), "docker.io");
        assert_eq!(p("my.app").repository(), "library/my.app");
    }

    #[test]
    fn digest_only_reference_has_no_tag() {
        let r = p(&format!("x@{D}"));
        assert_eq!(r.repository(), "library/x");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert!(!r.is_latest());
        assert_eq!(r.to_string(), format!("docker.io/library/x@{D}"));
    }

    #[test]
    fn tag_and_digest_together_keep_both_and_pull_by_digest() {
        let r = p(&format!("host:5000/x:tag@{D}"));
        assert_eq!(r.registry(), "host:5000");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        let latest_pinned = p(&format!("x:latest@{D}"));
        assert!(!latest_pinned.is_latest());
    }

    #[test]
    fn explicit_latest_is_latest() {
        assert!(p("x:latest").is_latest());
        assert!(!p("x:1").is_latest());
    }

    #[test]
    fn invalid_references_are_rejected_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "x:",
            "x:-bad",
            "x@sha256:123",
            "x@md5:0123",
            "a//b",
            "host:5000/",
            "x/-y",
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid image reference"), "{e}");
        }
    }
}
