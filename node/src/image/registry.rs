//! Registry access through oci-client: resolving a reference to this node's platform and
//! fetching blobs, with anonymous, basic and bearer-token authentication.
//!
//! oci-client speaks the protocol; this module chooses the scheme per registry (plain HTTP for
//! loopback and hosts listed as insecure), resolves indexes with the node's own platform rule,
//! keeps the documents' raw bytes (their digests are what containerd stores), and turns
//! oci-client's errors into messages that say what the registry answered and what to do.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use voiyd_messages::image::Reference;

use super::auth::RegistryAuth;
use super::oci::{self, Platform};
use crate::containerd::client::error_chain;

/// Largest manifest or index accepted, so a broken registry cannot exhaust memory.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("cannot reach registry {host}: {reason}")]
    Connect {
        /// Registry host.
        host: String,
        /// Transport error text.
        reason: String,
    },
    /// The registry answered with an error status.
    #[error("{message} ({status} from registry){hint}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The registry's reason (`errors[0].message`) or the HTTP reason phrase.
        message: String,
        /// Extra advice, starting with "; " when present.
        hint: String,
    },
    /// Getting a bearer token failed.
    #[error("authentication with registry {host} failed: {reason}")]
    Auth {
        /// Registry host.
        host: String,
        /// Why.
        reason: String,
    },
    /// A document from the registry could not be understood.
    #[error("invalid {what} from registry: {reason}")]
    Invalid {
        /// What was being parsed.
        what: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The index lists no image for this node's platform.
    #[error("the image has no variant for {platform} (it has: {available})")]
    NoPlatform {
        /// The node's platform.
        platform: String,
        /// Platforms the index lists.
        available: String,
    },
}

/// A manifest or index as fetched: raw bytes (they are what the digest covers).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Media type from the document (or its shape).
    pub media_type: String,
    /// `sha256:` digest of `bytes`, checked by oci-client.
    pub digest: String,
    /// The raw document.
    pub bytes: Vec<u8>,
}

/// A reference resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index or manifest list the reference pointed at, if it was one.
    pub index: Option<(FetchedManifest, ImageIndex)>,
    /// The platform manifest.
    pub manifest: FetchedManifest,
    /// The parsed platform manifest.
    pub parsed: ImageManifest,
}

impl Resolved {
    /// The document the reference names: the index when there is one, else the manifest.
    pub fn target(&self) -> &FetchedManifest {
        self.index.as_ref().map_or(&self.manifest, |(f, _)| f)
    }
}

/// A client for one registry (the scheme and credentials are per registry).
pub struct RegistryClient {
    client: oci_client::Client,
    auth: OciAuth,
    registry: String,
}

impl RegistryClient {
    /// A client for `r`'s registry with the credentials `auth` holds for it, over plain HTTP
    /// when the registry is loopback or listed in `insecure` (`host[:port]`).
    pub fn new(
        r: &Reference,
        auth: &RegistryAuth,
        insecure: &[String],
    ) -> Result<Self, RegistryError> {
        // reqwest panics without a process-wide rustls provider; ring is the one voiyd uses.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let registry = r.registry().to_string();
        let config = ClientConfig {
            protocol: if is_plain_http(insecure, &registry) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // voiyd picks the platform itself (variants, and the raw index is kept).
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("voiyd-node/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| RegistryError::Invalid {
            what: "HTTP client setup".into(),
            reason: e.to_string(),
        })?;
        let auth = auth
            .get(&registry)
            .or_else(|| auth.get(r.resolve_registry()))
            .map_or(OciAuth::Anonymous, |c| {
                OciAuth::Basic(c.username.clone(), c.password.clone())
            });
        Ok(Self {
            client,
            auth,
            registry,
        })
    }

    /// Resolves `r` to the manifest for `platform`, following an index if there is one.
    pub async fn resolve(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        // Authenticate first and on its own, so a refused token says so (oci-client would
        // otherwise fall back to anonymous requests and report only the 401 that follows).
        self.client
            .auth(r, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(e))?;
        let top = self.manifest(r).await?;
        if oci::is_index(&top.media_type) {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .map_err(|e| invalid("image index", &e.to_string()))?;
            let chosen = platform
                .select(&index)
                .ok_or_else(|| RegistryError::NoPlatform {
                    platform: platform.to_string(),
                    available: index
                        .manifests()
                        .iter()
                        .filter_map(|d| Platform::of(d).map(|p| p.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let manifest = self
                .manifest(&r.clone_with_digest(chosen.digest().to_string()))
                .await?;
            let parsed = parse_manifest(&manifest)?;
            Ok(Resolved {
                index: Some((top, index)),
                manifest,
                parsed,
            })
        } else if oci::is_manifest(&top.media_type) {
            let parsed = parse_manifest(&top)?;
            Ok(Resolved {
                index: None,
                manifest: top,
                parsed,
            })
        } else {
            Err(invalid(
                "manifest",
                &format!("unsupported media type '{}'", top.media_type),
            ))
        }
    }

    /// Reads a whole (small) blob; oci-client checks its digest.
    pub async fn blob_bytes(
        &self,
        r: &Reference,
        d: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::with_capacity(d.size().min(MAX_MANIFEST_BYTES as u64) as usize);
        self.client
            .pull_blob(r, d.digest().as_ref(), &mut out)
            .await
            .map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// Starts downloading a blob; the stream fails at its end if the digest does not match.
    pub async fn blob_stream(
        &self,
        r: &Reference,
        d: &Descriptor,
    ) -> Result<SizedStream, RegistryError> {
        self.client
            .pull_blob_stream(r, d.digest().as_ref())
            .await
            .map_err(|e| self.error(e))
    }

    /// The error for a download that broke off after it started.
    pub fn broken_download(&self, d: &Descriptor, e: &std::io::Error) -> RegistryError {
        RegistryError::Connect {
            host: self.registry.clone(),
            reason: format!("download of {} broke off: {}", d.digest(), error_chain(e)),
        }
    }

    async fn manifest(&self, r: &Reference) -> Result<FetchedManifest, RegistryError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(r, &self.auth, &oci::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error(e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(invalid("manifest", "larger than 4 MiB"));
        }
        let media_type =
            oci::media_type_of(&bytes).map_err(|e| invalid("manifest", &e.to_string()))?;
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes: bytes.to_vec(),
        })
    }

    fn error(&self, e: OciDistributionError) -> RegistryError {
        let credentials_hint = || match self.auth {
            OciAuth::Anonymous => format!(
                "; add credentials for {} to the registry auth file",
                self.registry
            ),
            _ => format!("; check the credentials for {}", self.registry),
        };
        let status = |status: u16, message: String| RegistryError::Status {
            status,
            hint: if status == 401 {
                credentials_hint()
            } else {
                String::new()
            },
            message,
        };
        match e {
            OciDistributionError::RequestError(e) => RegistryError::Connect {
                host: self.registry.clone(),
                reason: error_chain(&e),
            },
            OciDistributionError::UnauthorizedError { .. } => {
                status(401, "authentication required".into())
            }
            OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first() {
                Some(first) => {
                    let message = if first.message.is_empty() {
                        format!("{:?}", first.code).to_lowercase()
                    } else {
                        first.message.clone()
                    };
                    status(status_of(&first.code), message)
                }
                None => status(400, "bad request".into()),
            },
            OciDistributionError::ServerError { code, .. } => {
                let reason = reqwest::StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error")
                    .to_lowercase();
                status(code, reason)
            }
            OciDistributionError::AuthenticationFailure(reason) => RegistryError::Auth {
                host: self.registry.clone(),
                reason: format!(
                    "the token service refused: {}{}",
                    reason.trim(),
                    credentials_hint()
                ),
            },
            OciDistributionError::RegistryTokenDecodeError(reason) => RegistryError::Auth {
                host: self.registry.clone(),
                reason: format!("the token response is not understood: {reason}"),
            },
            OciDistributionError::DigestError(e) => invalid("content", &e.to_string()),
            other => invalid("response", &other.to_string()),
        }
    }
}

/// The HTTP status the distribution spec gives each error code (oci-client keeps the code only).
fn status_of(code: &OciErrorCode) -> u16 {
    use OciErrorCode as C;
    match code {
        C::BlobUnknown
        | C::BlobUploadUnknown
        | C::ManifestBlobUnknown
        | C::ManifestUnknown
        | C::NameUnknown
        | C::NotFound => 404,
        C::Unauthorized => 401,
        C::Denied => 403,
        C::Unsupported => 405,
        C::Toomanyrequests => 429,
        _ => 400,
    }
}

fn parse_manifest(m: &FetchedManifest) -> Result<ImageManifest, RegistryError> {
    serde_json::from_slice(&m.bytes).map_err(|e| invalid("image manifest", &e.to_string()))
}

fn invalid(what: &str, reason: &str) -> RegistryError {
    RegistryError::Invalid {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// True when `host` is spoken to over plain HTTP: listed as insecure, or loopback.
pub fn is_plain_http(insecure: &[String], host: &str) -> bool {
    insecure.iter().any(|h| h == host) || is_loopback_host(host)
}

/// `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    if name == "localhost" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "docker.io",
            "registry-1.docker.io",
            "[fe80::1]:5",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn insecure_list_and_loopback_use_plain_http() {
        let insecure = ["reg.lan:5000".to_string()];
        assert!(is_plain_http(&insecure, "reg.lan:5000"));
        assert!(is_plain_http(&insecure, "127.0.0.1:5000"));
        assert!(!is_plain_http(&insecure, "reg.lan"));
        assert!(!is_plain_http(&insecure, "ghcr.io"));
    }

    #[test]
    fn registry_errors_keep_the_registry_reason_and_the_spec_status() {
        let r = voiyd_messages::image::parse("127.0.0.1:5000/a:1").unwrap();
        let c = RegistryClient::new(&r, &RegistryAuth::anonymous(), &[]).unwrap();
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        )
        .unwrap();
        let e = c.error(OciDistributionError::RegistryError {
            envelope,
            url: "u".into(),
        });
        assert_eq!(e.to_string(), "manifest unknown (404 from registry)");
        let e = c.error(OciDistributionError::ServerError {
            code: 502,
            url: "u".into(),
            message: "<html>".into(),
        });
        assert_eq!(e.to_string(), "bad gateway (502 from registry)");
        let e = c.error(OciDistributionError::UnauthorizedError { url: "u".into() });
        assert!(e
            .to_string()
            .ends_with("add credentials for 127.0.0.1:5000 to the registry auth file"));
    }
}
