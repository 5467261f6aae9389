//! Connection to containerd: typed gRPC clients, namespace/lease metadata and leases.
//!
//! containerd scopes every object by the `containerd-namespace` gRPC header and protects
//! in-flight objects from garbage collection by the `containerd-lease` header; this module
//! attaches both so callers never build metadata by hand.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use containerd_client::tonic::{self, transport::Channel, Code, Request, Status};

/// gRPC metadata key selecting the containerd namespace of a request.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC metadata key attaching a request to a containerd lease.
pub const LEASE_HEADER: &str = "containerd-lease";
/// Lease label holding the expiry time (RFC 3339) after which containerd's GC drops the lease.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// Errors talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be dialled.
    #[error("cannot connect to containerd at {socket}: {reason}; start containerd or pass --containerd-socket")]
    Connect {
        /// Socket path that was dialled.
        socket: PathBuf,
        /// Why the connection failed.
        reason: String,
    },
    /// A containerd API call failed.
    #[error("containerd {op} failed: {}", status_text(.status))]
    Rpc {
        /// What was being done, e.g. "create lease".
        op: String,
        /// The gRPC status returned by containerd.
        status: Status,
    },
}

impl ContainerdError {
    /// Wraps a gRPC status with the operation that produced it.
    pub fn rpc(op: impl Into<String>, status: Status) -> Self {
        Self::Rpc {
            op: op.into(),
            status,
        }
    }

    /// The gRPC code of a failed call (`Unavailable` for connection errors).
    pub fn code(&self) -> Code {
        match self {
            Self::Connect { .. } => Code::Unavailable,
            Self::Rpc { status, .. } => status.code(),
        }
    }

    /// True when containerd answered NotFound.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }

    /// True when containerd answered AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Code::AlreadyExists
    }
}

fn status_text(status: &Status) -> String {
    let code = format!("{:?}", status.code());
    if status.message().is_empty() {
        code
    } else {
        format!("{}: {}", code, status.message())
    }
}

/// Formats an error with its whole source chain on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A connection to one containerd, scoped to one namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

impl Containerd {
    /// Dials the containerd socket at `socket` and scopes requests to `namespace`.
    pub async fn connect(
        socket: impl AsRef<Path>,
        namespace: impl Into<String>,
    ) -> Result<Self, ContainerdError> {
        let socket = socket.as_ref().to_path_buf();
        let connect_err = |reason: String| ContainerdError::Connect {
            socket: socket.clone(),
            reason,
        };
        // tonic reports a missing socket as a bare "transport error"; check first for a clear message.
        if let Err(e) = std::fs::metadata(&socket) {
            return Err(connect_err(e.to_string()));
        }
        let channel = containerd_client::connect(&socket)
            .await
            .map_err(|e| connect_err(error_chain(&e)))?;
        Ok(Self {
            channel,
            namespace: namespace.into(),
            socket,
        })
    }

    /// The same connection scoped to another namespace.
    pub fn with_namespace(&self, namespace: impl Into<String>) -> Self {
        Self {
            channel: self.channel.clone(),
            namespace: namespace.into(),
            socket: self.socket.clone(),
        }
    }

    /// The containerd namespace of this connection.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket path this connection dialled.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The underlying gRPC channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps `message` in a request carrying the namespace header.
    pub fn request<T>(&self, message: T) -> Request<T> {
        self.request_with_lease(message, None)
    }

    /// Wraps `message` in a request carrying the namespace header and, when given, a lease.
    pub fn request_with_lease<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(message);
        insert_metadata(&mut req, NAMESPACE_HEADER, &self.namespace);
        if let Some(lease) = lease {
            insert_metadata(&mut req, LEASE_HEADER, lease);
        }
        req
    }

    /// Content store client.
    pub fn content(&self) -> ContentClient<Channel> {
        // Layers can exceed tonic's 4 MiB default only in responses of Read; keep reads chunked.
        ContentClient::new(self.channel()).max_decoding_message_size(64 << 20)
    }
    /// Image store client.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel())
    }
    /// Snapshot service client.
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel())
    }
    /// Diff (layer apply) service client.
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel())
    }
    /// Container metadata client.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel())
    }
    /// Task (running process) client.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel())
    }
    /// Lease client.
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel())
    }
    /// Events client.
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel())
    }
    /// Namespaces client.
    pub fn namespaces(&self) -> NamespacesClient<Channel> {
        NamespacesClient::new(self.channel())
    }

    /// containerd's version string, e.g. "1.6.20".
    pub async fn version(&self) -> Result<String, ContainerdError> {
        let resp = VersionClient::new(self.channel())
            .version(Request::new(()))
            .await
            .map_err(|s| self.map_status("version", s))?;
        Ok(resp.into_inner().version)
    }

    /// Creates a lease that expires after `expiry` even if it is never deleted.
    pub async fn create_lease(&self, expiry: Duration) -> Result<Lease, ContainerdError> {
        use containerd_client::services::v1::CreateRequest;
        let id = format!("voiyd-{}", random_suffix());
        let mut labels = std::collections::HashMap::new();
        labels.insert(
            EXPIRE_LABEL.to_string(),
            voiyd_messages::time::rfc3339(SystemTime::now() + expiry),
        );
        self.leases()
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| self.map_status("create lease", s))?;
        Ok(Lease {
            id,
            cd: self.clone(),
            released: false,
        })
    }

    /// Deletes a lease; the objects it protected become collectable unless referenced elsewhere.
    pub async fn delete_lease(&self, id: &str) -> Result<(), ContainerdError> {
        use containerd_client::services::v1::DeleteRequest;
        match self
            .leases()
            .delete(self.request(DeleteRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.map_status("delete lease", s)),
        }
    }

    /// Turns a gRPC status into an error, recognising a dead socket.
    pub fn map_status(&self, op: &str, status: Status) -> ContainerdError {
        if status.code() == Code::Unavailable
            && std::fs::metadata(&self.socket).is_err()
            && status.message().contains("transport")
        {
            return ContainerdError::Connect {
                socket: self.socket.clone(),
                reason: status.message().to_string(),
            };
        }
        ContainerdError::rpc(op, status)
    }
}

fn insert_metadata<T>(req: &mut Request<T>, key: &'static str, value: &str) {
    // Namespaces and lease ids are ASCII by construction; an invalid value is skipped so the
    // call fails on containerd's side with its own message instead of panicking here.
    if let Ok(v) = value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>() {
        req.metadata_mut().insert(key, v);
    }
}

/// A containerd lease. Release it with [`Lease::release`]; dropping it deletes it in the
/// background (best effort), and its expiry removes it if the process dies.
#[derive(Debug)]
pub struct Lease {
    id: String,
    cd: Containerd,
    released: bool,
}

impl Lease {
    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps `message` in a request carrying the namespace and this lease.
    pub fn request<T>(&self, message: T) -> Request<T> {
        self.cd.request_with_lease(message, Some(&self.id))
    }

    /// Deletes the lease now.
    pub async fn release(mut self) -> Result<(), ContainerdError> {
        self.released = true;
        self.cd.delete_lease(&self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let cd = self.cd.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let _ = cd.delete_lease(&id).await;
            });
        }
    }
}

/// A short random hex string for unique ids (no extra crate: the std hasher is randomly seeded).
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_to_missing_socket_says_what_to_do() {
        let err = Containerd::connect("/nonexistent/containerd.sock", "t")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to containerd at /nonexistent/containerd.sock: "),
            "{text}"
        );
        assert!(text.contains("No such file"), "{text}");
        assert!(text.ends_with("start containerd or pass --containerd-socket"));
    }
}
