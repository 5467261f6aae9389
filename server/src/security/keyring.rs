//! The servers' secret keys: AES-256-GCM keys that encrypt secrets at rest.
//!
//! A key file holds one base64 key per line (blank lines and `#` comments ignored); the
//! first encrypts, all decrypt, so a key is rotated by putting a new one first
//! (`voiyd-server secrets new-key`) and restarting the servers, which then re-encrypt
//! every secret under it. Every server of a cluster needs the same file. A key's id is
//! the start of its SHA-256, so records name their key without revealing it.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::{Path, PathBuf};

/// Why the key file or a record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The key file could not be read or written.
    #[error("secrets key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not a base64 32-byte key.
    #[error("secrets key file {path}, line {line}: not a base64 key of 32 bytes (make one with `voiyd-server secrets new-key --file {path}`)", path = .path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The file holds no key.
    #[error("secrets key file {} holds no key: add one with `voiyd-server secrets new-key --file {}`", .0.display(), .0.display())]
    Empty(PathBuf),
    /// A record names a key this server does not have.
    #[error("secret {name} was encrypted with key {key_id}, which is not in this server's secrets key file: give every server the same --secrets-key-file")]
    UnknownKey {
        /// The secret.
        name: String,
        /// The key it names.
        key_id: String,
    },
    /// Decryption failed: wrong key or a damaged record.
    #[error("secret {0} cannot be decrypted: the record is damaged or was written with another key of the same id")]
    Damaged(String),
}

/// One key.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys of this server, the first one encrypting.
pub struct Keyring {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

/// A new key as a key file line.
pub fn new_key_line() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Puts a new key first in `path` (creating it, mode 0600): it encrypts from the next
/// server start on; the old keys stay to read what they encrypted.
pub fn add_key(path: &Path) -> Result<(), KeyringError> {
    let io = |source| KeyringError::Io {
        path: path.to_path_buf(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let text = format!("{}\n{old}", new_key_line());
    let tmp = path.with_extension("new");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

impl Keyring {
    /// Reads `path`, creating it with one new key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Keyring, KeyringError> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| KeyringError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            add_key(path)?;
            tracing::info!(path = %path.display(), "made a secrets key: every server of this cluster needs this file (--secrets-key-file)");
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Keyring::parse(&text, path)
    }

    /// Parses key file text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Keyring, KeyringError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || KeyringError::BadKey {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| bad())?;
            if bytes.len() != 32 {
                return Err(bad());
            }
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            let id: String = digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad())?);
            keys.push(Key { id, key });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty(path.to_path_buf()));
        }
        Ok(Keyring {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The id of the key that encrypts.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Encrypts `plain` for the secret `name` (bound to it: a record copied to another
    /// name does not decrypt): (key id, nonce, ciphertext).
    pub fn encrypt(&self, name: &str, plain: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut buf = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seals any message of a secret's size");
        (key.id.clone(), nonce.to_vec(), buf)
    }

    /// Decrypts what [`Keyring::encrypt`] made for `name`.
    pub fn decrypt(
        &self,
        name: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, KeyringError> {
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| KeyringError::UnknownKey {
                    name: name.to_string(),
                    key_id: key_id.to_string(),
                })?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyringError::Damaged(name.to_string()))?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| KeyringError::Damaged(name.to_string()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_with_the_first_key_and_decrypts_with_any() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let old = Keyring::load_or_create(&path).unwrap();
        let (old_id, nonce, sealed) = old.encrypt("db", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        add_key(&path).unwrap();
        let new = Keyring::load_or_create(&path).unwrap();
        assert_ne!(new.active_id(), old_id);
        assert_eq!(
            new.decrypt("db", &old_id, &nonce, &sealed).unwrap(),
            b"hunter2"
        );
        // Bound to the name; a damaged record fails; an unknown key is named.
        assert!(matches!(
            new.decrypt("other", &old_id, &nonce, &sealed),
            Err(KeyringError::Damaged(_))
        ));
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(new.decrypt("db", &old_id, &nonce, &bad).is_err());
        let e = new.decrypt("db", "abc", &nonce, &sealed).unwrap_err();
        assert!(e.to_string().contains("same --secrets-key-file"), "{e}");
        assert!(matches!(
            Keyring::parse("# nothing\n", &path),
            Err(KeyringError::Empty(_))
        ));
        assert!(matches!(
            Keyring::parse("bm90IGEga2V5\n", &path),
            Err(KeyringError::BadKey { line: 1, .. })
        ));
    }
}
