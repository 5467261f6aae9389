//! Every NATS subject, KV bucket and stream name voiyd uses, built here and only here.
//!
//! These names are a public interface (see `docs/nats-interface.md`): other services and
//! the NATS tooling watch them. They are laid out so that NATS permissions can confine a
//! node to names that carry its own name as a token.
//!
//! Resource names may contain `.`, which is the NATS token separator. Wherever a name
//! becomes one token of a subject or a KV key it goes through [`token`], which replaces
//! `.` by `=2E` (`=` never occurs in a valid name, so the mapping is one-to-one).

/// Prefix of every API subject.
pub const API_PREFIX: &str = "voiyd.api.v1";
/// Name under which servers register the API with the NATS service framework.
pub const API_SERVICE: &str = "voiyd-api";
/// Queue group shared by every voiyd-server for work that exactly one must do.
pub const SERVER_QUEUE: &str = "voiyd-server";

/// Bucket of task specs, keyed by task name.
pub const BUCKET_TASKS: &str = "voiyd_tasks";
/// Bucket of node records, keyed by node name.
pub const BUCKET_NODES: &str = "voiyd_nodes";
/// Bucket of volume specs, keyed by volume name.
pub const BUCKET_VOLUMES: &str = "voiyd_volumes";
/// Bucket of container set specs, keyed by set name.
pub const BUCKET_SETS: &str = "voiyd_sets";
/// Bucket of job and cron job specs, keyed by name.
pub const BUCKET_JOBS: &str = "voiyd_jobs";
/// Bucket of observed status, keyed `<kind>.<name>`, written by servers from node reports.
pub const BUCKET_STATUS: &str = "voiyd_status";
/// Bucket of per-node work, keyed `<node>.<task>`; a node watches `<node>.>`.
pub const BUCKET_WORK: &str = "voiyd_work";
/// TTL bucket of leases: task leases keyed `task.<task>`, node liveness keyed `node.<node>`.
pub const BUCKET_LEASES: &str = "voiyd_leases";

/// Bucket of one-time node join tokens, keyed by the SHA-256 (hex) of the token;
/// only the hash is stored.
pub const BUCKET_JOIN_TOKENS: &str = "voiyd_join_tokens";
/// Bucket of HTTP API bearer tokens (`voiydctl token create --admin`), keyed by the
/// SHA-256 (hex) of the token; only the hash is stored.
pub const BUCKET_API_TOKENS: &str = "voiyd_api_tokens";
/// Bucket of NATS identities (public nkeys) voiyd issued: `node.<node>` and `admin.<name>`.
/// The server owning the embedded NATS rebuilds its authorization from it.
pub const BUCKET_CREDENTIALS: &str = "voiyd_credentials";

/// Bucket of container subnets: `net.<a>-<b>-<c>-<d>-<len>` holds the node a subnet is
/// allocated to (created with CAS: one owner), `node.<node>` the subnet a node reads.
pub const BUCKET_SUBNETS: &str = "voiyd_subnets";
/// Bucket of volume data removals a node must do, keyed `<node>.<volume>` (a node
/// watches `<node>.>` and deletes each key when done).
pub const BUCKET_VOLUME_PURGES: &str = "voiyd_volume_purges";
/// Bucket of cluster names, derived by the servers from tasks and their statuses: key
/// `task.<task>` or `set.<set>` holds a [`NameRecord`](voiyd_messages::v1::NameRecord)
/// with the addresses the name resolves to. Every node reads it to answer DNS.
pub const BUCKET_NAMES: &str = "voiyd_names";

/// Bucket of the node mesh, keyed by node: a [`MeshPeer`](voiyd_messages::v1::MeshPeer)
/// per node that joined it (subnet, WireGuard key, endpoints), derived by the servers
/// from heartbeats. Every node in the mesh reads all of it.
pub const BUCKET_MESH: &str = "voiyd_mesh";

/// Bucket of set services, keyed by set: a [`ServiceRecord`](voiyd_messages::v1::ServiceRecord)
/// for each set with a virtual IP, published ports or isolation (backends, members,
/// allowed sources), derived by the servers. Every node reads all of it and makes its
/// forwarding and filtering rules from it.
pub const BUCKET_SERVICES: &str = "voiyd_services";

/// Bucket of secrets, keyed by name: [`SealedSecret`](voiyd_messages::v1::SealedSecret)
/// records whose values the servers encrypted. Nodes may read it (keys and ciphertext
/// only) to notice updates; they get values sealed to their own key on request.
pub const BUCKET_SECRETS: &str = "voiyd_secrets";

/// Object store of node agent binaries (`voiydctl upgrade nodes`), one object per binary,
/// named by [`agent_object`].
pub const OBJECT_STORE_AGENTS: &str = "voiyd_agents";

/// Name of the object holding the agent binary with this SHA-256 (hex).
pub fn agent_object(digest: &str) -> String {
    format!("voiyd-node-{digest}")
}

/// Every KV bucket voiyd creates.
pub const ALL_BUCKETS: &[&str] = &[
    BUCKET_TASKS,
    BUCKET_NODES,
    BUCKET_VOLUMES,
    BUCKET_SETS,
    BUCKET_JOBS,
    BUCKET_STATUS,
    BUCKET_WORK,
    BUCKET_LEASES,
    BUCKET_SUBNETS,
    BUCKET_VOLUME_PURGES,
    BUCKET_NAMES,
    BUCKET_SECRETS,
    BUCKET_MESH,
    BUCKET_SERVICES,
    BUCKET_JOIN_TOKENS,
    BUCKET_API_TOKENS,
    BUCKET_CREDENTIALS,
];

/// The events stream.
pub const STREAM_EVENTS: &str = "VOIYD_EVENTS";
/// Subjects captured by [`STREAM_EVENTS`].
pub const EVENTS_SUBJECTS: &str = "voiyd.events.>";

/// The logs stream: batches of task output ([`LogRecord`](voiyd_messages::v1::LogRecord))
/// that nodes ship as they capture it, so logs outlive tasks and nodes.
pub const STREAM_LOGS: &str = "VOIYD_LOGS";
/// Subjects captured by [`STREAM_LOGS`].
pub const LOGS_SUBJECTS: &str = "voiyd.logs.>";

/// Subject of one task's stored output from one node: `voiyd.logs.<node>.<task>` (node
/// first, so a node's permissions can name its own token).
pub fn logs_subject(node: &str, task: &str) -> String {
    format!("voiyd.logs.{}.{}", token(node), token(task))
}

/// Filter for one task's stored output from every node: `voiyd.logs.*.<task>`.
pub fn logs_filter(task: &str) -> String {
    format!("voiyd.logs.*.{}", token(task))
}

/// Every subject one node may store output on: `voiyd.logs.<node>.*`.
pub fn node_logs(node: &str) -> String {
    format!("voiyd.logs.{}.*", token(node))
}

/// The node a [`logs_subject`] belongs to.
pub fn node_of_logs_subject(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix("voiyd.logs.")?;
    let (node, task) = rest.split_once('.')?;
    (!node.is_empty() && !task.is_empty() && !task.contains('.')).then(|| untoken(node))
}

/// Encodes a resource name as one subject token or key token.
pub fn token(name: &str) -> String {
    name.replace('.', "=2E")
}

/// Inverse of [`token`].
pub fn untoken(token: &str) -> String {
    token.replace("=2E", ".")
}

/// API subject for a kind and verb, e.g. `voiyd.api.v1.tasks.create`.
pub fn api_subject(kind: &str, verb: &str) -> String {
    format!("{API_PREFIX}.{kind}.{verb}")
}

/// The subject one server answers once its whole API is subscribed:
/// `voiyd.api.v1.server.ready.<server id>` (ids have dots escaped by [`token`]). Readiness
/// checks (and tests) ask it instead of reading logs; a reply from another server on the
/// same NATS cannot be taken for this one's.
pub fn api_ready_subject(server_id: &str) -> String {
    format!("{API_PREFIX}.server.ready.{}", token(server_id))
}

/// Event subject: `voiyd.events.<kind>.<name>.<type>`.
pub fn event_subject(kind: &str, name: &str, event_type: &str) -> String {
    format!("voiyd.events.{kind}.{}.{event_type}", token(name))
}

/// Filter for events of one kind (and optionally one name).
pub fn event_filter(kind: Option<&str>, name: Option<&str>) -> String {
    match (kind, name) {
        (None, None) => EVENTS_SUBJECTS.to_string(),
        (Some(k), None) => format!("voiyd.events.{k}.>"),
        (None, Some(n)) => format!("voiyd.events.*.{}.*", token(n)),
        (Some(k), Some(n)) => format!("voiyd.events.{k}.{}.*", token(n)),
    }
}

/// Key of a resource in its spec bucket.
pub fn spec_key(name: &str) -> String {
    token(name)
}

/// Key of a resource's status in [`BUCKET_STATUS`]: `<kind>.<name>`.
pub fn status_key(kind: &str, name: &str) -> String {
    format!("{kind}.{}", token(name))
}

/// Key of one task's assignment in [`BUCKET_WORK`]: `<node>.<task>`.
pub fn work_key(node: &str, task: &str) -> String {
    format!("{}.{}", token(node), token(task))
}

/// Watch filter for one node's work: `<node>.>`.
pub fn work_filter(node: &str) -> String {
    format!("{}.>", token(node))
}

/// Splits a [`BUCKET_WORK`] key back into (node, task).
pub fn parse_work_key(key: &str) -> Option<(String, String)> {
    let (n, t) = key.split_once('.')?;
    if n.is_empty() || t.is_empty() || t.contains('.') {
        return None;
    }
    Some((untoken(n), untoken(t)))
}

/// Lease key of a task in [`BUCKET_LEASES`].
pub fn task_lease_key(task: &str) -> String {
    format!("task.{}", token(task))
}

/// Key of a subnet's owner in [`BUCKET_SUBNETS`], e.g. `net.10-69-3-0-24` for `10.69.3.0/24`.
pub fn subnet_claim_key(cidr: &str) -> String {
    format!("net.{}", cidr.replace(['.', '/'], "-"))
}

/// Key of a volume purge in [`BUCKET_VOLUME_PURGES`]: `<node>.<volume>` (watch with
/// [`work_filter`]; split with [`parse_work_key`]).
pub fn purge_key(node: &str, volume: &str) -> String {
    format!("{}.{}", token(node), token(volume))
}

/// Key of the subnet allocated to a node in [`BUCKET_SUBNETS`]: `node.<node>`.
pub fn node_subnet_key(node: &str) -> String {
    format!("node.{}", token(node))
}

/// Key of a cluster name in [`BUCKET_NAMES`]: `task.<name>` or `set.<name>`.
pub fn name_key(kind: NameKind, name: &str) -> String {
    format!("{}.{}", kind.as_str(), token(name))
}

/// The kind and name a [`BUCKET_NAMES`] key stands for.
pub fn parse_name_key(key: &str) -> Option<(NameKind, String)> {
    let (kind, name) = key.split_once('.')?;
    let kind = match kind {
        "task" => NameKind::Task,
        "set" => NameKind::Set,
        _ => return None,
    };
    Some((kind, untoken(name)))
}

/// What a cluster name belongs to. A set's name wins over a task of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameKind {
    /// A container set: the addresses of its ready replicas.
    Set,
    /// One task: its address.
    Task,
}

impl NameKind {
    /// The key prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Set => "set",
            NameKind::Task => "task",
        }
    }
}

/// Liveness lease key of a node in [`BUCKET_LEASES`].
pub fn node_lease_key(node: &str) -> String {
    format!("node.{}", token(node))
}

/// Key of a node's identity in [`BUCKET_CREDENTIALS`].
pub fn node_credential_key(node: &str) -> String {
    format!("node.{}", token(node))
}

/// Key of an administrator's identity in [`BUCKET_CREDENTIALS`].
pub fn admin_credential_key(name: &str) -> String {
    format!("admin.{}", token(name))
}

/// Inbox prefix of a node's connection (`_INBOX_<node>`): replies and consumer
/// deliveries for the node arrive under it, so NATS permissions can keep every other
/// identity from reading them (and the node from reading anybody else's).
pub fn node_inbox_prefix(node: &str) -> String {
    format!("_INBOX_{}", token(node))
}

/// Inbox prefix of the shared join identity.
pub const JOIN_INBOX_PREFIX: &str = "_INBOX_voiyd_join";

/// The KV subject of a bucket key (`$KV.<bucket>.<key>`), as used by NATS permissions.
pub fn kv_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The stream behind a KV bucket (`KV_<bucket>`).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Subjects a node publishes on and serves. All start with `voiyd.node.<node>.`.
pub mod node {
    use super::token;

    /// Prefix of everything belonging to one node.
    pub fn prefix(node: &str) -> String {
        format!("voiyd.node.{}", token(node))
    }
    /// Task status reports from a node.
    pub fn status(node: &str) -> String {
        format!("{}.status", prefix(node))
    }
    /// Work updates for a node (`WorkUpdate`, servers → node).
    pub fn work(node: &str) -> String {
        format!("{}.work", prefix(node))
    }
    /// Heartbeats (and registration) from a node.
    pub fn heartbeat(node: &str) -> String {
        format!("{}.heartbeat", prefix(node))
    }
    /// Log requests a node serves for one task.
    pub fn logs(node: &str, task: &str) -> String {
        format!("{}.logs.{}", prefix(node), token(task))
    }
    /// Exec requests a node serves for one task.
    pub fn exec(node: &str, task: &str) -> String {
        format!("{}.exec.{}", prefix(node), token(task))
    }
    /// Every log subject of one node (the node serves this): `voiyd.node.<node>.logs.*`.
    pub fn all_logs(node: &str) -> String {
        format!("{}.logs.*", prefix(node))
    }
    /// Every exec subject of one node (the node serves this): `voiyd.node.<node>.exec.*`.
    pub fn all_exec(node: &str) -> String {
        format!("{}.exec.*", prefix(node))
    }
    /// Input of one exec session: `voiyd.node.<node>.exec.<task>.<session>`.
    pub fn exec_input(node: &str, task: &str, session: &str) -> String {
        format!("{}.{}", exec(node, task), token(session))
    }
    /// Upgrade requests a node answers (`voiydctl upgrade nodes`).
    pub fn upgrade(node: &str) -> String {
        format!("{}.upgrade", prefix(node))
    }
    /// Secret requests from a node (`SecretRequest`, node → servers).
    pub fn secrets(node: &str) -> String {
        format!("{}.secrets", prefix(node))
    }
    /// Usage requests a node answers (`voiydctl top`).
    pub fn stats(node: &str) -> String {
        format!("{}.stats", prefix(node))
    }
    /// Runtime events a node reports (exits, OOM kills, pull failures).
    pub fn events(node: &str) -> String {
        format!("{}.events", prefix(node))
    }
    /// Mesh datagrams relayed through NATS from node `from` to node `to`:
    /// `voiyd.node.<to>.mesh.<from>` (only `from` may publish on it).
    pub fn mesh_relay(to: &str, from: &str) -> String {
        format!("{}.mesh.{}", prefix(to), token(from))
    }
    /// Header of a relayed mesh datagram: the UDP port of the sender's relay socket, to
    /// which the receiver also sends its datagrams directly, to see whether the direct
    /// path works again.
    pub const MESH_PORT_HEADER: &str = "Voiyd-Mesh-Port";
    /// Every relayed mesh datagram for one node (the node subscribes).
    pub fn mesh_relay_in(node: &str) -> String {
        format!("{}.mesh.*", prefix(node))
    }
    /// Every subject one node may relay mesh datagrams on: `voiyd.node.*.mesh.<node>`.
    pub fn mesh_relay_out(node: &str) -> String {
        format!("voiyd.node.*.mesh.{}", token(node))
    }
    /// The sending node of a [`mesh_relay`] subject.
    pub fn mesh_relay_sender(subject: &str) -> Option<String> {
        let mut parts = subject.split('.');
        let (_, _, _, kind, from) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        (kind == "mesh" && !from.is_empty() && parts.next().is_none()).then(|| super::untoken(from))
    }
    /// Extracts the task name from a `voiyd.node.<node>.<logs|exec>.<task>` subject.
    pub fn task_of(subject: &str) -> Option<String> {
        let tok = subject.split('.').nth(4)?;
        (!tok.is_empty()).then(|| super::untoken(tok))
    }
    /// Wildcard servers subscribe to for all nodes' runtime events.
    pub const ALL_EVENTS: &str = "voiyd.node.*.events";
    /// Wildcard servers subscribe to for all nodes' status reports.
    pub const ALL_STATUS: &str = "voiyd.node.*.status";
    /// Wildcard servers subscribe to for all nodes' secret requests.
    pub const ALL_SECRETS: &str = "voiyd.node.*.secrets";
    /// Wildcard servers subscribe to for all nodes' heartbeats.
    pub const ALL_HEARTBEATS: &str = "voiyd.node.*.heartbeat";
    /// Extracts the node name from a `voiyd.node.<node>.…` subject.
    pub fn node_of(subject: &str) -> Option<String> {
        let rest = subject.strip_prefix("voiyd.node.")?;
        let tok = rest.split('.').next()?;
        (!tok.is_empty()).then(|| super::untoken(tok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_stay_one_token() {
        assert_eq!(work_key("n.1", "web.a"), "n=2E1.web=2Ea");
        assert_eq!(
            parse_work_key(&work_key("n.1", "web.a")),
            Some(("n.1".into(), "web.a".into()))
        );
        // Node "a" must not see node "a.b"'s work through its filter.
        let filter = work_filter("a");
        assert!(!work_key("a.b", "x").starts_with(filter.trim_end_matches('>')));
    }

    #[test]
    fn node_subjects_carry_node_token() {
        assert_eq!(node::status("n1"), "voiyd.node.n1.status");
        assert_eq!(node::work("n.1"), "voiyd.node.n=2E1.work");
        assert_eq!(
            node::node_of("voiyd.node.x=2Ey.heartbeat").as_deref(),
            Some("x.y")
        );
        assert_eq!(
            node::task_of(&node::logs("n.1", "web.a")).as_deref(),
            Some("web.a")
        );
        assert_eq!(node::exec_input("n1", "t", "s1"), "voiyd.node.n1.exec.t.s1");
        assert_eq!(node::mesh_relay("a", "b.c"), "voiyd.node.a.mesh.b=2Ec");
        assert_eq!(
            node::mesh_relay_sender(&node::mesh_relay("a", "b.c")).as_deref(),
            Some("b.c")
        );
        assert_eq!(node::mesh_relay_sender("voiyd.node.a.logs.b"), None);
        assert_eq!(logs_subject("n.1", "web.a"), "voiyd.logs.n=2E1.web=2Ea");
        assert_eq!(
            node_of_logs_subject(&logs_subject("n.1", "web.a")).as_deref(),
            Some("n.1")
        );
        assert_eq!(
            event_subject("task", "a.b", "created"),
            "voiyd.events.task.a=2Eb.created"
        );
    }
}
