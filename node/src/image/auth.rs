//! Registry credentials in Docker's `config.json` format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// Why a credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read registry credentials {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("registry credentials {path} are not a Docker config.json ({{\"auths\": {{\"host\": {{\"username\", \"password\"}}}}}}): {reason}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Credentials per registry host (`host[:port]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    entries: BTreeMap<String, Credential>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

impl RegistryAuth {
    /// No credentials: anonymous access everywhere.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Loads a Docker `config.json`-style file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|reason| AuthError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the JSON text of a Docker `config.json`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: ConfigJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = BTreeMap::new();
        for (host, entry) in cfg.auths {
            let cred = match (entry.username, entry.password, entry.auth) {
                (Some(username), Some(password), _) => Credential { username, password },
                (_, _, Some(auth)) => decode_auth(&auth)
                    .ok_or_else(|| format!("\"auth\" of {host} is not base64 of user:password"))?,
                _ => {
                    return Err(format!(
                        "{host} needs \"username\" and \"password\" or \"auth\""
                    ))
                }
            };
            entries.insert(normalize_host(&host), cred);
        }
        Ok(Self { entries })
    }

    /// Adds or replaces the credential of `host`.
    pub fn insert(&mut self, host: &str, username: &str, password: &str) {
        self.entries.insert(
            normalize_host(host),
            Credential {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
    }

    /// The credential for `host`, if any.
    pub fn get(&self, host: &str) -> Option<&Credential> {
        let host = normalize_host(host);
        self.entries.get(&host).or_else(|| {
            // Docker Hub appears under several spellings.
            if host == "docker.io" || host == "registry-1.docker.io" {
                ["docker.io", "index.docker.io", "registry-1.docker.io"]
                    .iter()
                    .find_map(|h| self.entries.get(*h))
            } else {
                None
            }
        })
    }
}

fn decode_auth(auth: &str) -> Option<Credential> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credential {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// `https://index.docker.io/v1/` → `index.docker.io`: keys may be URLs in Docker's file.
fn normalize_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    if k == "index.docker.io" {
        "docker.io".to_string()
    } else {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_username_password_and_auth_forms() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3:cret");
        let text = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"username":"alice","password":"pw"}},
               "https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#
        );
        let a = RegistryAuth::from_json(&text).unwrap();
        let c = a.get("127.0.0.1:5000").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "pw"));
        let c = a.get("registry-1.docker.io").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("bob", "s3:cret")
        );
        assert!(a.get("other:1").is_none());
    }

    #[test]
    fn rejects_entries_without_credentials() {
        let e = RegistryAuth::from_json(r#"{"auths":{"h":{}}}"#).unwrap_err();
        assert!(e.contains("needs"), "{e}");
        let e = RegistryAuth::from_json(r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap_err();
        assert!(e.contains("base64"), "{e}");
    }

    #[test]
    fn debug_hides_password() {
        let mut a = RegistryAuth::anonymous();
        a.insert("h", "u", "topsecret");
        assert!(!format!("{a:?}").contains("topsecret"));
    }
}
