//! `token create`: a one-time join token for a new node (`voiyd-node --join-token`),
//! or an HTTP API token (`--admin`).

use crate::cli::TokenCommand;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use voiyd_messages::v1::{TokenCreateReply, TokenCreateRequest};

/// Runs a `token` subcommand.
pub async fn run(globals: &Globals, cmd: &TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { ttl, admin } => {
            let ttl = match ttl {
                Some(t) => crate::timefmt::parse_duration(t)
                    .map_err(|e| CtlError::Usage(format!("--ttl: {e}")))?,
                None => std::time::Duration::ZERO,
            };
            let session = connection::session(globals).await?;
            let reply: TokenCreateReply = session
                .api
                .call(
                    "tokens",
                    "create",
                    &TokenCreateRequest {
                        ttl_seconds: ttl.as_secs(),
                        admin: *admin,
                    },
                )
                .await?;
            // The token alone on stdout (scripts capture it); when it expires on stderr.
            println!("{}", reply.token);
            if let Some(t) = reply.expires_at {
                let left = (t.seconds - crate::timefmt::now_secs()).max(0) as u64;
                let left = crate::timefmt::format_duration(std::time::Duration::from_secs(left));
                if *admin {
                    eprintln!("HTTP API token, valid for {left}: Authorization: Bearer TOKEN");
                } else {
                    eprintln!(
                        "one-time join token, valid for {left}: voiyd-node --join-token TOKEN"
                    );
                }
            }
            Ok(())
        }
    }
}
