//! NATS JWTs: the `ed25519-nkey` profile nats-server signs and verifies.
//!
//! A token is `base64url(header).base64url(claims).base64url(signature)` (no padding),
//! signed by the nkey named in the claims' `iss`. Only what the auth callout needs is
//! here (encode with a key pair, decode and verify against `iss`); docs/security.md says
//! why this is not a crate.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{Map, Value};

/// The header of every token voiyd signs.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Why a token could not be read or made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// The header names another algorithm.
    #[error("JWT algorithm {0:?} is not ed25519-nkey")]
    Algorithm(String),
    /// `iss` is not a public nkey, or the signature does not verify against it.
    #[error("JWT signature does not verify against its issuer")]
    Signature,
    /// The key pair cannot sign (a public key only).
    #[error("cannot sign the JWT: {0}")]
    Sign(String),
}

/// Signs `claims` (a JSON object) as `key`: sets `iss`, `iat` and `jti`.
pub fn encode(
    mut claims: Map<String, Value>,
    key: &nkeys::KeyPair,
    now: i64,
) -> Result<String, JwtError> {
    claims.insert("iss".into(), Value::String(key.public_key()));
    claims.insert("iat".into(), Value::from(now));
    // jti: a hash of the claims, as the NATS tools make it (unique per content).
    claims.insert("jti".into(), Value::String(String::new()));
    let body = serde_json::to_vec(&Value::Object(claims.clone()))
        .map_err(|e| JwtError::Malformed(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA512_256, &body);
    let jti = data_encoding::BASE32_NOPAD.encode(digest.as_ref());
    claims.insert("jti".into(), Value::String(jti));
    let body = serde_json::to_vec(&Value::Object(claims))
        .map_err(|e| JwtError::Malformed(e.to_string()))?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(body)
    );
    let sig = key
        .sign(input.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Reads a token and verifies its signature against its own `iss`; returns the claims.
/// Who the issuer must be is the caller's check.
pub fn decode(token: &str) -> Result<Map<String, Value>, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three parts".into()));
    };
    let b64 = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| JwtError::Malformed(e.to_string()))
    };
    let header: Value =
        serde_json::from_slice(&b64(h)?).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ed25519-nkey" && alg != "ed25519" {
        return Err(JwtError::Algorithm(alg.to_string()));
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(c)?).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let issuer = nkeys::KeyPair::from_public_key(iss).map_err(|_| JwtError::Signature)?;
    let sig = b64(s)?;
    issuer
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    Ok(claims)
}

/// Whether `sig` (base64url, or standard base64 as some clients send) is `key`'s
/// signature of `nonce`: how a client proves it holds the seed of its nkey.
pub fn verify_nonce(key: &str, nonce: &str, sig: &str) -> bool {
    let Ok(kp) = nkeys::KeyPair::from_public_key(key) else {
        return false;
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(sig.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(sig));
    match bytes {
        Ok(b) => kp.verify(nonce.as_bytes(), &b).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = nkeys::KeyPair::new_account();
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from("UABC"));
        let token = encode(claims, &key, 1_700_000_000).unwrap();
        let back = decode(&token).unwrap();
        assert_eq!(back["iss"], Value::from(key.public_key()));
        assert_eq!(back["sub"], Value::from("UABC"));
        assert_eq!(back["jti"].as_str().unwrap().len(), 52);
        // Any change to the claims breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","sub":"UEVIL"}"#);
        assert!(decode(&parts.join(".")).is_err());
        let other = nkeys::KeyPair::new_account();
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&serde_json::json!({"iss": key.public_key(), "sub": "U"}))
                    .unwrap()
            ),
            URL_SAFE_NO_PAD.encode(other.sign(b"x").unwrap())
        );
        assert_eq!(decode(&forged), Err(JwtError::Signature));
        assert!(decode("a.b").is_err());
    }

    #[test]
    fn nonce_signatures() {
        let user = nkeys::KeyPair::new_user();
        let sig = URL_SAFE_NO_PAD.encode(user.sign(b"nonce-1").unwrap());
        assert!(verify_nonce(&user.public_key(), "nonce-1", &sig));
        assert!(!verify_nonce(&user.public_key(), "nonce-2", &sig));
        let std_sig = STANDARD.encode(user.sign(b"n").unwrap());
        assert!(verify_nonce(&user.public_key(), "n", &std_sig));
        let other = nkeys::KeyPair::new_user();
        assert!(!verify_nonce(&other.public_key(), "nonce-1", &sig));
        assert!(!verify_nonce("garbage", "nonce-1", &sig));
    }
}
