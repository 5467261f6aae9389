//! Join tokens and node credentials, as operations: `tokens.create`, `nodes.join`
//! and the revocation that is part of `nodes.delete`. The identities themselves are
//! kept by [`crate::security::identities`].

use crate::context::Ctx;
use crate::error::ServerError;
use crate::security::identities::{creds_kv, tokens_kv, AuthManager, Holder};
use std::time::Duration;
use voiyd_messages::v1::{
    Credential, DeleteRequest, JoinReply, JoinRequest, JoinToken, TokenCreateReply,
    TokenCreateRequest,
};
use voiyd_nats::auth as nauth;
use voiyd_nats::names;

/// Default lifetime of a join token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of a join token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest join token accepted (ours are 52 characters).
const MAX_TOKEN_LEN: usize = 128;
/// Prefix of every join token, so that one pasted in the wrong place is recognisable.
const TOKEN_PREFIX: &str = "voiyd-join-";

fn manager(ctx: &Ctx) -> Result<&AuthManager, ServerError> {
    ctx.auth.as_deref().ok_or_else(|| {
        ServerError::invalid(
            "this cluster does not issue node credentials: start voiyd-server with --auth (embedded NATS), or configure the node's NATS credentials yourself (docs/security.md)",
        )
    })
}

/// SHA-256 of a token, hex: the key under which it is stored.
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random token.
fn new_token() -> Result<String, ServerError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServerError::internal("no randomness available for a join token"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// The lifetime a request asks for, bounded.
pub fn token_ttl(ttl_seconds: u64) -> Result<Duration, ServerError> {
    let ttl = match ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        s => Duration::from_secs(s),
    };
    if ttl > MAX_TOKEN_TTL {
        return Err(ServerError::invalid(format!(
            "a join token may live at most {} days: pass a shorter --ttl",
            MAX_TOKEN_TTL.as_secs() / 86400
        )));
    }
    Ok(ttl)
}

/// `tokens.create`: a one-time join token; only its hash is stored.
pub async fn create_token(
    ctx: &Ctx,
    req: &TokenCreateRequest,
) -> Result<TokenCreateReply, ServerError> {
    manager(ctx)?;
    let ttl = token_ttl(req.ttl_seconds)?;
    let token = new_token()?;
    let now = voiyd_messages::time::now();
    let expires_at = voiyd_messages::Timestamp {
        seconds: now.seconds + ttl.as_secs() as i64,
        nanos: 0,
    };
    let record = JoinToken {
        created_at: Some(now),
        expires_at: Some(expires_at),
    };
    tokens_kv(&ctx.cluster.js)
        .await?
        .create(&token_hash(&token), &record)
        .await?;
    Ok(TokenCreateReply {
        token,
        expires_at: Some(expires_at),
    })
}

/// Checks a join request's fields before any lookup.
pub fn check_join_request(req: &JoinRequest) -> Result<(), ServerError> {
    if req.token.is_empty() || req.token.len() > MAX_TOKEN_LEN {
        return Err(ServerError::invalid(
            "the join token is missing or malformed: create one with `voiydctl token create`",
        ));
    }
    voiyd_messages::validate::validate_name("node", &req.node)
        .map_err(|e| ServerError::invalid(e.to_string()))?;
    if !nauth::is_user_public_key(&req.public_key) {
        return Err(ServerError::invalid(
            "public_key is not a user nkey: the node generates it (voiyd-node --join-token)",
        ));
    }
    Ok(())
}

/// `nodes.join`: spends a join token (once, by CAS) and records the node's public key.
pub async fn join(ctx: &Ctx, req: &JoinRequest) -> Result<JoinReply, ServerError> {
    check_join_request(req)?;
    let auth = manager(ctx)?;
    let refused = || {
        ServerError::invalid(
            "join token is unknown, already used or expired: create a new one with `voiydctl token create`",
        )
    };
    let tokens = tokens_kv(&ctx.cluster.js).await?;
    let key = token_hash(&req.token);
    let Some((record, revision)) = tokens.get(&key).await? else {
        return Err(refused());
    };
    let creds = auth.creds(&ctx.cluster.js).await?;
    let cred_key = names::node_credential_key(&req.node);
    if creds.get(&cred_key).await.ok().flatten().is_some() {
        return Err(ServerError::conflict(format!(
            "node {} already has credentials: pick another --name, or `voiydctl delete node {}` first",
            req.node, req.node
        )));
    }
    // One use: the delete succeeds for exactly one request at this revision.
    tokens
        .delete(&key, Some(revision))
        .await
        .map_err(|_| refused())?;
    let expires = record.expires_at.map(|t| t.seconds).unwrap_or(0);
    if expires <= voiyd_messages::time::now().seconds {
        return Err(refused());
    }
    creds
        .create(
            &cred_key,
            &Credential {
                public_key: req.public_key.clone(),
                created_at: Some(voiyd_messages::time::now()),
            },
        )
        .await
        .map_err(|e| match e {
            voiyd_nats::StoreError::AlreadyExists { .. } => ServerError::conflict(format!(
                "node {} already has credentials: pick another --name",
                req.node
            )),
            e => e.into(),
        })?;
    tracing::info!(node = %req.node, "node joined with its own NATS identity");
    Ok(JoinReply {
        node: req.node.clone(),
    })
}

/// Revokes a node's credentials (part of `nodes.delete`): returns whether it had any.
/// NATS closes the node's connection when it reloads the authorization.
pub async fn revoke(ctx: &Ctx, req: &DeleteRequest) -> Result<bool, ServerError> {
    let creds = creds_kv(&ctx.cluster.js).await?;
    let key = names::node_credential_key(&req.name);
    let had = creds.get(&key).await.ok().flatten().is_some();
    if had {
        creds.delete(&key, None).await?;
        tracing::info!(node = %req.name, "node credentials revoked");
    }
    if let Some(auth) = ctx.auth.as_deref() {
        let holder = Holder::Node(req.name.clone());
        let closed = auth.disconnect(&holder).await?;
        tracing::info!(node = %req.name, connections = closed, "revoked node disconnected");
    }
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_and_bounded() {
        let t = new_token().unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() <= MAX_TOKEN_LEN);
        assert_ne!(t, new_token().unwrap());
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(token_ttl(0).unwrap(), DEFAULT_TOKEN_TTL);
        assert!(token_ttl(MAX_TOKEN_TTL.as_secs() + 1).is_err());
    }

    #[test]
    fn join_requests_are_checked_first() {
        let (_, key) = nauth::new_user_key();
        let ok = JoinRequest {
            token: "voiyd-join-abc".into(),
            node: "n1".into(),
            public_key: key.clone(),
        };
        assert!(check_join_request(&ok).is_ok());
        for bad in [
            JoinRequest {
                token: String::new(),
                ..ok.clone()
            },
            JoinRequest {
                token: "x".repeat(MAX_TOKEN_LEN + 1),
                ..ok.clone()
            },
            JoinRequest {
                node: "Bad Name!".into(),
                ..ok.clone()
            },
            JoinRequest {
                public_key: "SUABC".into(),
                ..ok.clone()
            },
        ] {
            assert!(check_join_request(&bad).is_err(), "{bad:?}");
        }
    }
}
