//! The interactive stream protocol between a client and a node (logs, exec).
//!
//! A client subscribes to a fresh inbox, then sends its request (naming the inbox) to
//! the node's subject with a normal NATS request: the node's immediate `StreamStart`
//! reply tells it that the stream is open, and no reply (NoResponders) that the node is
//! not connected, so a client never hangs on a node that is gone. The node then sends
//! each message of the stream to the inbox as a request, and the client acknowledges
//! each with an empty reply. One message in flight per stream gives back-pressure per
//! client, and a missing acknowledgement tells the node that the client has gone.

use async_nats::{Client, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::{LogRequest, StreamStart};

/// How long a node waits for a client to acknowledge one message.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a node sends an empty message on an idle stream, to notice a client that
/// went away without a word.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// Why a stream could not be opened or broke, for a client.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Nobody serves the node's subject.
    #[error("node {node} is not connected (it is down or cut off from NATS); try again when `voiydctl get nodes` shows it Ready")]
    NodeGone {
        /// The node.
        node: String,
    },
    /// The node did not answer in time.
    #[error(
        "node {node} did not answer within {timeout:?}: it may be overloaded or cut off from NATS"
    )]
    Timeout {
        /// The node.
        node: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The node refused the request.
    #[error("{message}")]
    Refused {
        /// 404, 409, 400, 500, 503 as in [`StreamStart::code`].
        code: u32,
        /// Its message.
        message: String,
    },
    /// The stream stopped without its last message.
    #[error("lost the stream from node {node}: {reason}")]
    Lost {
        /// The node.
        node: String,
        /// What happened.
        reason: String,
    },
    /// NATS failed.
    #[error("NATS failed: {0}")]
    Nats(String),
}

/// The client end of an open stream.
pub struct ClientStream {
    node: String,
    inbox: Subscriber,
    client: Client,
    idle: Duration,
}

impl ClientStream {
    /// Opens a stream: `build` receives the inbox and returns the encoded request.
    pub async fn open(
        client: &Client,
        node: &str,
        subject: String,
        timeout: Duration,
        build: impl FnOnce(String) -> Vec<u8>,
    ) -> Result<(ClientStream, StreamStart), StreamError> {
        let inbox_subject = client.new_inbox();
        let inbox = client
            .subscribe(inbox_subject.clone())
            .await
            .map_err(|e| StreamError::Nats(e.to_string()))?;
        let body = build(inbox_subject);
        let reply = tokio::time::timeout(timeout, client.request(subject, body.into()))
            .await
            .map_err(|_| StreamError::Timeout {
                node: node.to_string(),
                timeout,
            })?
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => StreamError::NodeGone {
                    node: node.to_string(),
                },
                RequestErrorKind::TimedOut => StreamError::Timeout {
                    node: node.to_string(),
                    timeout,
                },
                _ => StreamError::Nats(e.to_string()),
            })?;
        let start = StreamStart::decode(reply.payload).map_err(|e| StreamError::Lost {
            node: node.to_string(),
            reason: format!("undecodable answer: {e}"),
        })?;
        if !start.error.is_empty() {
            return Err(StreamError::Refused {
                code: start.code,
                message: start.error,
            });
        }
        Ok((
            ClientStream {
                node: node.to_string(),
                inbox,
                client: client.clone(),
                // The node sends something at least every KEEPALIVE; three missed mean it is gone.
                idle: KEEPALIVE * 3,
            },
            start,
        ))
    }

    /// The next message of the stream, acknowledged; `None` never happens before the
    /// stream's own last message (an ended subscription is [`StreamError::Lost`]).
    pub async fn next<M: Message + Default>(&mut self) -> Result<M, StreamError> {
        let msg = match tokio::time::timeout(self.idle, self.inbox.next()).await {
            Err(_) => {
                return Err(StreamError::Lost {
                    node: self.node.clone(),
                    reason: format!("nothing received for {:?}", self.idle),
                })
            }
            Ok(None) => {
                return Err(StreamError::Lost {
                    node: self.node.clone(),
                    reason: "the subscription ended".into(),
                })
            }
            Ok(Some(m)) => m,
        };
        if let Some(reply) = msg.reply.clone() {
            // The acknowledgement; if it is lost the node gives up on this client.
            let _ = self.client.publish(reply, Bytes::new()).await;
        }
        M::decode(msg.payload).map_err(|e| StreamError::Lost {
            node: self.node.clone(),
            reason: format!("undecodable message: {e}"),
        })
    }

    /// Opens task `task`'s log stream on `node` (`req.deliver_to` is filled in):
    /// voiydctl's `logs` and the HTTP API's both read through it.
    pub async fn open_logs(
        client: &Client,
        node: &str,
        task: &str,
        req: &LogRequest,
        timeout: Duration,
    ) -> Result<ClientStream, StreamError> {
        let subject = crate::names::node::logs(node, task);
        let (stream, _) = ClientStream::open(client, node, subject, timeout, |inbox| {
            LogRequest {
                deliver_to: inbox,
                ..req.clone()
            }
            .encode_to_vec()
        })
        .await?;
        Ok(stream)
    }

    /// The NATS client, e.g. to send input.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Why a node stopped sending to a client.
#[derive(Debug, thiserror::Error)]
#[error("client went away: {0}")]
pub struct ClientGone(pub String);

/// Node side: sends one message of a stream and waits for its acknowledgement.
pub async fn send_acked<M: Message>(
    client: &Client,
    deliver_to: &str,
    msg: &M,
) -> Result<(), ClientGone> {
    let fut = client.request(deliver_to.to_string(), msg.encode_to_vec().into());
    match tokio::time::timeout(ACK_TIMEOUT, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ClientGone(e.to_string())),
        Err(_) => Err(ClientGone(format!("no acknowledgement in {ACK_TIMEOUT:?}"))),
    }
}

/// Node side: the immediate answer to a stream request.
pub async fn answer(client: &Client, reply: Option<&async_nats::Subject>, start: StreamStart) {
    if let Some(r) = reply {
        if let Err(e) = client
            .publish(r.clone(), start.encode_to_vec().into())
            .await
        {
            tracing::debug!(error = %e, "cannot answer a stream request");
        }
    }
}

/// Serves stream requests arriving on `requests`, each in a task of its own, at most
/// `max` at once: a request beyond that is refused at once (503, `busy`) rather than
/// left waiting. Returns when the subscription ends.
pub async fn serve_limited<F, Fut>(
    client: &Client,
    mut requests: Subscriber,
    max: usize,
    busy: &str,
    handle: F,
) where
    F: Fn(async_nats::Message) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    while let Some(msg) = requests.next().await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            answer(client, msg.reply.as_ref(), refuse(503, busy)).await;
            continue;
        };
        let work = handle(msg);
        tokio::spawn(async move {
            work.await;
            drop(permit);
        });
    }
}

/// A refusal with a code and a message.
pub fn refuse(code: u32, message: impl Into<String>) -> StreamStart {
    StreamStart {
        error: message.into(),
        code,
        session: String::new(),
    }
}
