//! Join tokens and node credentials, as operations: `tokens.create`, `nodes.join`
//! and the revocation that is part of `nodes.delete`. The identities themselves are
//! kept by [`crate::security::identities`].

use crate::context::Ctx;
use crate::error::ServerError;
use crate::security::identities::{creds_kv, tokens_kv, AuthManager, Holder};
use std::time::Duration;
use voiyd_messages::v1::{
    ApiToken, Credential, DeleteRequest, JoinReply, JoinRequest, JoinToken, TokenCreateReply,
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
/// Prefix of every HTTP API token.
const API_TOKEN_PREFIX: &str = "voiyd-api-";
/// Longest lifetime of an HTTP API token.
pub const MAX_API_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

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

/// A fresh random token (160 bits) after `prefix`.
fn new_token(prefix: &str) -> Result<String, ServerError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServerError::internal("no randomness available for a token"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}{hex}"))
}

/// The lifetime a request asks for, bounded by the kind of token's longest.
pub fn token_ttl(req: &TokenCreateRequest) -> Result<Duration, ServerError> {
    let (max, what) = if req.admin {
        (MAX_API_TOKEN_TTL, "an API token")
    } else {
        (MAX_TOKEN_TTL, "a join token")
    };
    let ttl = match req.ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        s => Duration::from_secs(s),
    };
    if ttl > max {
        return Err(ServerError::invalid(format!(
            "{what} may live at most {} days: pass a shorter --ttl",
            max.as_secs() / 86400
        )));
    }
    Ok(ttl)
}

/// `tokens.create`: a one-time join token, or (`admin`) an HTTP API token; only
/// its hash is stored.
pub async fn create_token(
    ctx: &Ctx,
    req: &TokenCreateRequest,
) -> Result<TokenCreateReply, ServerError> {
    if req.admin {
        return create_api_token(ctx, req).await;
    }
    manager(ctx)?;
    let kv = tokens_kv(&ctx.cluster.js).await?;
    issue(&kv, TOKEN_PREFIX, req, |created_at, expires_at| JoinToken {
        created_at: Some(created_at),
        expires_at: Some(expires_at),
    })
    .await
}

/// Makes a token after `prefix` that lives as long as `req` asks, stores its hash in
/// `kv` (with `record` of its times) and answers it: shown once, never stored.
async fn issue<M: prost::Message + Default + Send + Sync + 'static>(
    kv: &voiyd_nats::TypedKv<M>,
    prefix: &str,
    req: &TokenCreateRequest,
    record: impl FnOnce(voiyd_messages::Timestamp, voiyd_messages::Timestamp) -> M,
) -> Result<TokenCreateReply, ServerError> {
    let ttl = token_ttl(req)?;
    let token = new_token(prefix)?;
    let now = voiyd_messages::time::now();
    let expires_at = voiyd_messages::Timestamp {
        seconds: now.seconds + ttl.as_secs() as i64,
        nanos: 0,
    };
    kv.create(&token_hash(&token), &record(now, expires_at))
        .await?;
    Ok(TokenCreateReply {
        token,
        expires_at: Some(expires_at),
    })
}

async fn create_api_token(
    ctx: &Ctx,
    req: &TokenCreateRequest,
) -> Result<TokenCreateReply, ServerError> {
    if ctx.auth.is_none() {
        return Err(ServerError::invalid(
            "this cluster runs without --auth, so its HTTP API needs no token: call it without one, or start voiyd-server with --auth",
        ));
    }
    let kv = api_tokens_kv(&ctx.cluster.js).await?;
    issue(&kv, API_TOKEN_PREFIX, req, |created_at, expires_at| {
        ApiToken {
            created_at: Some(created_at),
            expires_at: Some(expires_at),
        }
    })
    .await
}

/// Whether `token` is an HTTP API token that exists and has not expired. Refusals
/// say nothing about which of the three failed.
pub async fn check_api_token(ctx: &Ctx, token: &str) -> Result<bool, ServerError> {
    if !token.starts_with(API_TOKEN_PREFIX) || token.len() > MAX_TOKEN_LEN {
        return Ok(false);
    }
    let Some((record, _)) = api_tokens_kv(&ctx.cluster.js)
        .await?
        .get(&token_hash(token))
        .await?
    else {
        return Ok(false);
    };
    let expires = record.expires_at.map(|t| t.seconds).unwrap_or(0);
    Ok(expires > voiyd_messages::time::now().seconds)
}

async fn api_tokens_kv(
    js: &async_nats::jetstream::Context,
) -> Result<voiyd_nats::TypedKv<ApiToken>, ServerError> {
    crate::security::identities::typed_kv(js, names::BUCKET_API_TOKENS, "API token").await
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
        let t = new_token(TOKEN_PREFIX).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() <= MAX_TOKEN_LEN);
        assert_ne!(t, new_token(TOKEN_PREFIX).unwrap());
        assert!(new_token(API_TOKEN_PREFIX).unwrap().len() <= MAX_TOKEN_LEN);
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let ttl = |ttl_seconds, admin| token_ttl(&TokenCreateRequest { ttl_seconds, admin });
        assert_eq!(ttl(0, false).unwrap(), DEFAULT_TOKEN_TTL);
        assert!(ttl(MAX_TOKEN_TTL.as_secs() + 1, false).is_err());
        // API tokens may live longer than join tokens, but not forever.
        assert!(ttl(MAX_TOKEN_TTL.as_secs() + 1, true).is_ok());
        assert!(ttl(MAX_API_TOKEN_TTL.as_secs() + 1, true).is_err());
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
