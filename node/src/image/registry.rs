//! A client for the registry HTTP API v2: manifests, platform resolution and blobs, with
//! anonymous, bearer-token and basic authentication.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::auth::RegistryAuth;
use super::oci::{self, ImageIndex, ImageManifest, Platform};
use super::reference::Reference;
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
    /// Content did not match its digest.
    #[error("{what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// Digest asked for.
        expected: String,
        /// Digest received.
        actual: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
}

/// A manifest or index as fetched: raw bytes (they are what the digest covers).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Media type from the document or the Content-Type header.
    pub media_type: String,
    /// `sha256:` digest of `bytes`.
    pub digest: String,
    /// The raw document.
    pub bytes: Vec<u8>,
}

/// A reference resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index or manifest list the reference pointed at, if it was one.
    pub index: Option<FetchedManifest>,
    /// The platform manifest.
    pub manifest: FetchedManifest,
    /// The parsed platform manifest.
    pub parsed: ImageManifest,
}

impl Resolved {
    /// The document the reference names: the index when there is one, else the manifest.
    pub fn target(&self) -> &FetchedManifest {
        self.index.as_ref().unwrap_or(&self.manifest)
    }
}

/// Registry API v2 client. Cheap to share; caches tokens per repository.
pub struct RegistryClient {
    http: reqwest::Client,
    auth: RegistryAuth,
    insecure: Vec<String>,
    /// `host/repository` → Authorization header value that worked.
    authorizations: Mutex<HashMap<String, HeaderValue>>,
}

enum Challenge {
    Bearer(HashMap<String, String>),
    Basic,
}

impl RegistryClient {
    /// A client using `auth` and plain HTTP for `insecure` hosts (`host[:port]`) and loopback.
    pub fn new(auth: RegistryAuth, insecure: Vec<String>) -> Result<Self, RegistryError> {
        // reqwest panics without a process-wide rustls provider; ring is the one voiyd uses.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("voiyd-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Client(error_chain(&e)))?;
        Ok(Self {
            http,
            auth,
            insecure,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// True when `host` is spoken to over plain HTTP: listed as insecure, or loopback.
    pub fn is_plain_http(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host) || is_loopback_host(host)
    }

    fn base_url(&self, r: &Reference) -> String {
        let host = r.api_host();
        let scheme = if self.is_plain_http(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2/{}", r.repository())
    }

    /// Fetches the manifest or index named `reference` (a tag or digest) of `r`'s repository.
    pub async fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/manifests/{reference}", self.base_url(r));
        let accept = [
            oci::MEDIA_OCI_INDEX,
            oci::MEDIA_OCI_MANIFEST,
            oci::MEDIA_DOCKER_LIST,
            oci::MEDIA_DOCKER_MANIFEST,
        ]
        .join(", ");
        let resp = self.get(r, &url, Some(&accept)).await?;
        let header_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_MANIFEST_BYTES)
        {
            return Err(invalid("manifest", "larger than 4 MiB"));
        }
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(r, &e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(invalid("manifest", "larger than 4 MiB"));
        }
        let digest = oci::sha256_digest(&bytes);
        if reference.contains(':') && reference != digest {
            return Err(RegistryError::DigestMismatch {
                what: "manifest".into(),
                expected: reference.into(),
                actual: digest,
            });
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| invalid("manifest", &e.to_string()))?;
        let media_type = match probe.media_type {
            Some(m) if !m.is_empty() => m,
            // OCI documents may omit mediaType; tell index from manifest by shape.
            _ if oci::is_index(&header_type) || oci::is_manifest(&header_type) => header_type,
            _ if probe.manifests.is_some() => oci::MEDIA_OCI_INDEX.to_string(),
            _ => oci::MEDIA_OCI_MANIFEST.to_string(),
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes: bytes.to_vec(),
        })
    }

    /// Resolves `r` to the manifest for `platform`, following an index if there is one.
    pub async fn resolve(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let top = self.get_manifest(r, r.manifest_reference()).await?;
        if oci::is_index(&top.media_type) {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .map_err(|e| invalid("image index", &e.to_string()))?;
            let chosen = index
                .select(platform)
                .ok_or_else(|| RegistryError::NoPlatform {
                    platform: platform.to_string(),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
                .clone();
            let manifest = self.get_manifest(r, &chosen.digest).await?;
            let parsed = parse_manifest(&manifest)?;
            Ok(Resolved {
                index: Some(top),
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

    /// Starts downloading blob `digest`; read the body with [`Response::chunk`].
    pub async fn get_blob(&self, r: &Reference, digest: &str) -> Result<Response, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base_url(r));
        self.get(r, &url, None).await
    }

    /// Reads a whole (small) blob, checking its digest.
    pub async fn get_blob_bytes(
        &self,
        r: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = self
            .get_blob(r, digest)
            .await?
            .bytes()
            .await
            .map_err(|e| self.connect_error(r, &e))?;
        let actual = oci::sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.into(),
                actual,
            });
        }
        Ok(bytes.to_vec())
    }

    /// GET with authentication: replays once after answering a 401 challenge.
    async fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let key = format!("{}/{}", r.api_host(), r.repository());
        let cached = self.authorizations.lock().unwrap().get(&key).cloned();
        let resp = self.send(r, url, accept, cached.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check_status(resp, r, self).await;
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let header = match challenge {
            Some(Challenge::Bearer(params)) => self.fetch_token(r, &params).await?,
            Some(Challenge::Basic) => match self.basic_header(r) {
                Some(h) => h,
                None => return check_status(resp, r, self).await,
            },
            None => return check_status(resp, r, self).await,
        };
        let resp = self.send(r, url, accept, Some(&header)).await?;
        if resp.status().is_success() {
            self.authorizations.lock().unwrap().insert(key, header);
        }
        check_status(resp, r, self).await
    }

    async fn send(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, RegistryError> {
        let mut req = self.http.get(url);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(h) = authorization {
            req = req.header(AUTHORIZATION, h.clone());
        }
        req.send().await.map_err(|e| self.connect_error(r, &e))
    }

    fn basic_header(&self, r: &Reference) -> Option<HeaderValue> {
        let cred = self
            .auth
            .get(r.registry())
            .or_else(|| self.auth.get(r.api_host()))?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cred.username, cred.password));
        HeaderValue::from_str(&format!("Basic {token}")).ok()
    }

    /// Gets a bearer token from the challenge's realm, with basic credentials when configured.
    async fn fetch_token(
        &self,
        r: &Reference,
        params: &HashMap<String, String>,
    ) -> Result<HeaderValue, RegistryError> {
        let auth_err = |reason: String| RegistryError::Auth {
            host: r.registry().to_string(),
            reason,
        };
        let realm = params
            .get("realm")
            .ok_or_else(|| auth_err("the Bearer challenge has no realm".into()))?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", r.repository()));
        let mut query = vec![("scope", scope)];
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        let url = reqwest::Url::parse_with_params(realm, &query)
            .map_err(|e| auth_err(format!("invalid realm '{realm}': {e}")))?;
        let mut req = self.http.get(url);
        if let Some(basic) = self.basic_header(r) {
            req = req.header(AUTHORIZATION, basic);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| auth_err(format!("token request to {realm}: {}", error_chain(&e))))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| auth_err(error_chain(&e)))?;
        if !status.is_success() {
            let (message, _) = registry_message(status, &body);
            return Err(auth_err(format!(
                "token service answered {}: {message}; check the credentials for {}",
                status.as_u16(),
                r.registry()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("token response is not JSON: {e}")))?;
        let token = t
            .token
            .filter(|s| !s.is_empty())
            .or(t.access_token)
            .ok_or_else(|| auth_err("token response has neither token nor access_token".into()))?;
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| auth_err("token contains invalid characters".into()))
    }

    fn connect_error(&self, r: &Reference, e: &reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            host: r.api_host().to_string(),
            reason: error_chain(e),
        }
    }
}

async fn check_status(
    resp: Response,
    r: &Reference,
    client: &RegistryClient,
) -> Result<Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    let (message, _code) = registry_message(status, &body);
    let hint = if status == StatusCode::UNAUTHORIZED {
        if client.basic_header(r).is_some() {
            format!("; check the credentials for {}", r.registry())
        } else {
            format!(
                "; add credentials for {} to the registry auth file",
                r.registry()
            )
        }
    } else {
        String::new()
    };
    Err(RegistryError::Status {
        status: status.as_u16(),
        message,
        hint,
    })
}

/// The registry's own reason for an error: `errors[0].message` (and code) of its JSON body.
fn registry_message(status: StatusCode, body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        if let Some(first) = b.errors.into_iter().next() {
            let msg = if first.message.is_empty() {
                first.code.to_lowercase().replace('_', " ")
            } else {
                first.message
            };
            return (msg, first.code);
        }
    }
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    (reason, String::new())
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer(parse_params(rest))),
        _ => None,
    }
}

/// `k="v",k2=v2` with quoted values that may contain commas.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
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
    fn bearer_challenge_params_are_parsed() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#;
        let Some(Challenge::Bearer(p)) = parse_challenge(h) else {
            panic!("not bearer")
        };
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull,push");
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        ));
        assert!(parse_challenge("Negotiate x").is_none());
    }

    #[test]
    fn registry_error_message_comes_from_json_body() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(StatusCode::NOT_FOUND, body).0,
            "manifest unknown"
        );
        assert_eq!(
            registry_message(StatusCode::BAD_GATEWAY, b"<html>").0,
            "bad gateway"
        );
        let e = RegistryError::Status {
            status: 404,
            message: "manifest unknown".into(),
            hint: String::new(),
        };
        assert_eq!(e.to_string(), "manifest unknown (404 from registry)");
    }

    #[test]
    fn insecure_list_and_loopback_use_plain_http() {
        let c =
            RegistryClient::new(RegistryAuth::anonymous(), vec!["reg.lan:5000".into()]).unwrap();
        assert!(c.is_plain_http("reg.lan:5000"));
        assert!(c.is_plain_http("127.0.0.1:5000"));
        assert!(!c.is_plain_http("reg.lan"));
        assert!(!c.is_plain_http("ghcr.io"));
    }
}
