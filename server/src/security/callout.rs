//! The auth callout service: every voiyd-server answers nats-server's authorization
//! requests (queue group [`voiyd_nats::callout::QUEUE`]), so a client can connect
//! through any nats-server while any one voiyd-server is up.
//!
//! [`claim`] (pure) reads who a connection says it is; [`permissions`] (pure) says what
//! that identity may do; [`answer`] checks the claim against the credentials bucket.

use crate::security::identities::{AuthManager, Holder};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use voiyd_nats::auth::{self as nauth, Permissions};
use voiyd_nats::callout::{self, AuthRequest};

/// A granted identity lasts this long (plus up to [`JITTER`]); nats-server then closes
/// the connection, which authorizes again at once. It bounds how long a revoked client
/// whose disconnect failed (its nats-server was unreachable) can stay.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(3600);
/// Spread of grant expiries, so that clients that connected together do not all
/// reconnect together.
pub const JITTER: Duration = Duration::from_secs(600);

/// Who a connection says it is, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The shared join identity.
    Join,
    /// A proven nkey; `node` is the node the connection name says it is (a hint).
    Key {
        /// The public key.
        nkey: String,
        /// From a connection name `voiyd-node NAME ...`.
        node: Option<String>,
    },
    /// Nothing voiyd issues.
    Unknown(&'static str),
}

/// Reads the claim of a request.
pub fn claim(req: &AuthRequest) -> Claim {
    let o = &req.connect_opts;
    if !o.nkey.is_empty() {
        return match req.proven_nkey() {
            Some(k) => Claim::Key {
                nkey: k.to_string(),
                node: o
                    .name
                    .strip_prefix("voiyd-node ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string),
            },
            None => Claim::Unknown("the nkey signature does not verify"),
        };
    }
    if o.user == nauth::JOIN_USER && o.pass == nauth::JOIN_PASSWORD {
        return Claim::Join;
    }
    if !o.user.is_empty() {
        return Claim::Unknown("unknown user or password");
    }
    Claim::Unknown("no credentials: connect with an nkey voiyd issued (or the join identity)")
}

/// What an identity may do.
pub fn permissions(who: &Granted) -> Permissions {
    match who {
        Granted::Join => nauth::join_permissions(),
        Granted::Holder(Holder::Admin(_)) => nauth::admin_permissions(),
        Granted::Holder(Holder::Node(n)) => nauth::node_permissions(n),
    }
}

/// An identity the callout grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// A joining node.
    Join,
    /// A registered key.
    Holder(Holder),
}

impl Granted {
    fn user_name(&self) -> String {
        match self {
            Granted::Join => nauth::JOIN_USER.to_string(),
            Granted::Holder(h) => h.user_name(),
        }
    }
}

/// Serves authorization requests until the connection closes.
pub async fn serve(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    auth: Arc<AuthManager>,
) {
    let mut sub = match client
        .queue_subscribe(callout::SUBJECT, callout::QUEUE.to_string())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve NATS authorization requests");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let (client, js, auth) = (client.clone(), js.clone(), auth.clone());
        tokio::spawn(async move {
            match answer(&js, &auth, &msg.payload).await {
                Some(jwt) => {
                    if let Err(e) = client.publish(reply, jwt.into()).await {
                        tracing::warn!(error = %e, "cannot answer an authorization request");
                    }
                }
                None => tracing::warn!("ignoring an unreadable authorization request"),
            }
        });
    }
}

/// The signed answer to one request; `None` when the request cannot be read (there is
/// nobody to address an answer to).
async fn answer(
    js: &async_nats::jetstream::Context,
    auth: &AuthManager,
    payload: &[u8],
) -> Option<String> {
    let req = match AuthRequest::decode(payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable authorization request");
            return None;
        }
    };
    let now = voiyd_messages::time::now().seconds;
    let granted = match claim(&req) {
        Claim::Join => Ok(Granted::Join),
        Claim::Key { nkey, node } => {
            let hint = node.map(Holder::Node);
            match auth.holder(js, &nkey, hint).await {
                Ok(Some(h)) => Ok(Granted::Holder(h)),
                Ok(None) => {
                    Err("this nkey is not registered (revoked, or never joined)".to_string())
                }
                Err(f) => Err(format!("credentials unavailable: {}", f.message())),
            }
        }
        Claim::Unknown(why) => Err(why.to_string()),
    };
    let signed = match granted {
        Ok(who) => {
            let jitter = (req.client_info.id % JITTER.as_secs().max(1)) as i64;
            let expires = now + GRANT_LIFETIME.as_secs() as i64 + jitter;
            tracing::debug!(user = %who.user_name(), server = %req.server_id.name, "connection authorized");
            callout::grant(
                auth.keys(),
                &req,
                &who.user_name(),
                &permissions(&who),
                now,
                expires,
            )
        }
        Err(why) => {
            tracing::info!(reason = %why, host = %req.client_info.host, "connection refused");
            callout::refuse(auth.keys(), &req, &why, now)
        }
    };
    signed
        .map_err(|e| tracing::warn!(error = %e, "cannot sign an authorization answer"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_nats::callout::{ClientInfo, ConnectOpts};

    fn req(opts: ConnectOpts, nonce: &str) -> AuthRequest {
        AuthRequest {
            connect_opts: opts,
            client_info: ClientInfo {
                nonce: nonce.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn claims_are_read_from_connect_options() {
        let join = ConnectOpts {
            user: nauth::JOIN_USER.into(),
            pass: nauth::JOIN_PASSWORD.into(),
            ..Default::default()
        };
        assert_eq!(claim(&req(join.clone(), "")), Claim::Join);
        let wrong = ConnectOpts {
            pass: "guess".into(),
            ..join
        };
        assert!(matches!(claim(&req(wrong, "")), Claim::Unknown(_)));
        assert!(matches!(
            claim(&req(ConnectOpts::default(), "")),
            Claim::Unknown(_)
        ));

        let kp = nkeys::KeyPair::new_user();
        let sig = |n: &[u8]| {
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                kp.sign(n).unwrap(),
            )
        };
        let node = ConnectOpts {
            nkey: kp.public_key(),
            sig: sig(b"n1"),
            name: "voiyd-node web-1 streams".into(),
            ..Default::default()
        };
        assert_eq!(
            claim(&req(node.clone(), "n1")),
            Claim::Key {
                nkey: kp.public_key(),
                node: Some("web-1".into())
            }
        );
        // Signed another nonce (a replayed CONNECT): refused before any lookup.
        assert!(matches!(claim(&req(node.clone(), "n2")), Claim::Unknown(_)));
        let admin = ConnectOpts {
            name: "voiydctl".into(),
            ..node
        };
        assert_eq!(
            claim(&req(admin, "n1")),
            Claim::Key {
                nkey: kp.public_key(),
                node: None
            }
        );
    }

    #[test]
    fn permissions_follow_the_identity() {
        assert_eq!(permissions(&Granted::Join), nauth::join_permissions());
        assert_eq!(
            permissions(&Granted::Holder(Holder::Node("a".into()))),
            nauth::node_permissions("a")
        );
        assert_eq!(
            permissions(&Granted::Holder(Holder::Admin("x".into()))),
            nauth::admin_permissions()
        );
        assert_eq!(
            Granted::Holder(Holder::Node("a".into())).user_name(),
            "node:a"
        );
    }
}
