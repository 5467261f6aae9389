//! NATS authorization for voiyd: which identity may publish and subscribe where.
//!
//! Everything here is pure: the permission sets are derived from [`crate::names`] so they
//! follow the public names; the voiyd-servers grant them to connections through the
//! auth callout ([`crate::callout`]). Identities:
//!
//! - the **server** (voiyd-server): unrestricted;
//! - **admins** (voiydctl): the API, the events stream, node logs/exec/stats;
//! - one per **node**: its own subjects, its own work keys, its own inbox;
//! - the shared **join** identity: only `voiyd.api.v1.nodes.join`, only its own inbox.
//!
//! The same sets are printed by `voiyd-server auth print-node-permissions`.

use crate::names;

/// User name of the shared join identity (its password is [`JOIN_PASSWORD`]: the join
/// token in the request is the secret, the identity only limits what a joiner can touch).
pub const JOIN_USER: &str = "voiyd-join";
/// Password of the join identity; public on purpose (see [`JOIN_USER`]).
pub const JOIN_PASSWORD: &str = "voiyd-join";
/// API kind and verb a joining node calls.
pub const JOIN_KIND: &str = "nodes";
/// See [`JOIN_KIND`].
pub const JOIN_VERB: &str = "join";

/// What one identity may do. Anything not allowed is denied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects it may publish to (NATS wildcards allowed).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may reply once to the reply subject of a message it received.
    pub allow_responses: bool,
}

/// Permissions of one node's identity.
///
/// The node publishes and serves only under `voiyd.node.<node>.>`; reads its own work
/// (stream info of the work bucket, consumers and direct gets filtered to
/// `$KV.voiyd_work.<node>.>`, flow control of those consumers); receives replies and
/// deliveries on its own inbox `_INBOX_<node>.>`; and sends stream messages (logs,
/// exec output) to a client's inbox under `_INBOX.>`, which it cannot read.
pub fn node_permissions(node: &str) -> Permissions {
    let mut publish = vec![
        format!("{}.>", names::node::prefix(node)),
        "_INBOX.>".to_string(),
        // The output of its own tasks, into the logs stream.
        names::node_logs(node),
        // Mesh datagrams to other nodes, when the servers relay a pair through NATS.
        names::node::mesh_relay_out(node),
    ];
    // Its own work, its own subnet, the volume purges meant for it.
    publish.extend(own_kv_read(names::BUCKET_WORK, &names::work_filter(node)));
    publish.extend(own_kv_read(
        names::BUCKET_SUBNETS,
        &names::node_subnet_key(node),
    ));
    // Every cluster name, to answer its tasks' DNS queries.
    publish.extend(own_kv_read(names::BUCKET_NAMES, ">"));
    // The mesh: every node's subnet, key and endpoints.
    publish.extend(own_kv_read(names::BUCKET_MESH, ">"));
    // Every set's virtual IP, backends and isolation, to make its forwarding rules.
    publish.extend(own_kv_read(names::BUCKET_SERVICES, ">"));
    // Secrets' keys and revisions (values are encrypted), to update its tasks' files.
    publish.extend(own_kv_read(names::BUCKET_SECRETS, ">"));
    // Agent binaries, to upgrade itself.
    publish.extend(object_store_read(names::OBJECT_STORE_AGENTS));
    let purges = format!("{}.>", names::token(node));
    publish.extend(own_kv_read(names::BUCKET_VOLUME_PURGES, &purges));
    // It removes a purge request once done (a delete marker on its own key).
    publish.push(names::kv_subject(names::BUCKET_VOLUME_PURGES, &purges));
    Permissions {
        publish,
        subscribe: vec![
            format!("{}.>", names::node::prefix(node)),
            format!("{}.>", names::node_inbox_prefix(node)),
        ],
        allow_responses: true,
    }
}

/// What reading the keys `filter` of one bucket takes: stream info, consumers created
/// with that filter (nats-server >= 2.10 checks that the filter in the body matches the
/// one in the subject), pulling from and deleting them (consumer names are random and
/// cannot be listed, so another identity's consumers are out of reach), direct gets of
/// those keys and flow control.
fn own_kv_read(bucket: &str, filter: &str) -> Vec<String> {
    let stream = names::kv_stream(bucket);
    let keys = names::kv_subject(bucket, filter);
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.*.{keys}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.API.DIRECT.GET.{stream}.{keys}"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// What reading objects of one object store takes: stream info, the object's metadata
/// (direct or stream gets) and an ordered consumer of its chunks, with flow control.
fn object_store_read(store: &str) -> Vec<String> {
    let stream = format!("OBJ_{store}");
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// What putting objects into one object store takes: reading it, its chunk and
/// metadata subjects, and purging the chunks of an object put again.
fn object_store_write(store: &str) -> Vec<String> {
    let mut v = object_store_read(store);
    v.push(format!("$O.{store}.>"));
    v.push(format!("$JS.API.STREAM.PURGE.OBJ_{store}"));
    v
}

/// Permissions of an administrator (voiydctl): the API, the events stream and the
/// interactive node subjects; never the buckets directly. The one store it writes is
/// the agent binaries' (`voiydctl upgrade nodes`), which no decision reads.
pub fn admin_permissions() -> Permissions {
    Permissions {
        publish: vec![
            format!("{}.>", names::API_PREFIX),
            "voiyd.node.*.logs.>".to_string(),
            "voiyd.node.*.exec.>".to_string(),
            "voiyd.node.*.stats".to_string(),
            "voiyd.node.*.upgrade".to_string(),
            "$SRV.>".to_string(),
            "$JS.API.INFO".to_string(),
        ]
        .into_iter()
        .chain(stream_read(names::STREAM_EVENTS))
        .chain(stream_read(names::STREAM_LOGS))
        .chain(object_store_write(names::OBJECT_STORE_AGENTS))
        .collect(),
        subscribe: vec!["_INBOX.>".to_string()],
        allow_responses: true,
    }
}

/// What reading a whole stream takes: its info, message gets, consumers (with any
/// filter), pulling, acknowledging and flow control.
fn stream_read(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.FC.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
    ]
}

/// Permissions of the shared join identity: one request subject, one inbox.
pub fn join_permissions() -> Permissions {
    Permissions {
        publish: vec![names::api_subject(JOIN_KIND, JOIN_VERB)],
        subscribe: vec![format!("{}.>", names::JOIN_INBOX_PREFIX)],
        allow_responses: false,
    }
}

/// Whether `key` is a public user nkey (`U…`, valid checksum).
pub fn is_user_public_key(key: &str) -> bool {
    key.starts_with('U') && nkeys::KeyPair::from_public_key(key).is_ok()
}

/// A fresh user nkey: (seed, public key).
pub fn new_user_key() -> (String, String) {
    let kp = nkeys::KeyPair::new_user();
    // A freshly generated pair always has a seed.
    let seed = kp.seed().unwrap_or_default();
    (seed, kp.public_key())
}

/// The public key of a user seed, or `None` when the seed is not valid.
pub fn public_key_of_seed(seed: &str) -> Option<String> {
    nkeys::KeyPair::from_seed(seed.trim())
        .ok()
        .map(|kp| kp.public_key())
        .filter(|k| k.starts_with('U'))
}

fn quote(s: &str) -> String {
    // JSON string quoting is valid NATS config quoting.
    serde_json::to_string(s).unwrap_or_default()
}

fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `permissions {…}` block of one identity in NATS config syntax (for an external
/// NATS that does not use the callout).
pub fn render_permissions(p: &Permissions) -> String {
    let mut out = format!(
        "{{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }}",
        quote_list(&p.publish),
        quote_list(&p.subscribe)
    );
    if p.allow_responses {
        out.push_str(", allow_responses: true");
    }
    out.push_str(" }");
    out
}

/// Whether `subject` matches the NATS pattern `pattern` (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Permissions {
    /// Whether publishing to `subject` is allowed (ignoring `allow_responses`).
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subject_matches(p, subject))
    }
    /// Whether subscribing to `subject` is allowed. A wildcard subscription is allowed
    /// only when an allowed pattern covers all of it, as NATS decides.
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe.iter().any(|p| pattern_covers(p, subject))
    }
}

/// Whether every subject matched by `inner` is matched by `outer`.
fn pattern_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_reaches_only_its_own_names() {
        let a = node_permissions("a");
        assert!(a.may_publish(&names::node::status("a")));
        assert!(a.may_publish(&names::node::heartbeat("a")));
        assert!(!a.may_publish(&names::node::status("b")));
        assert!(!a.may_publish(&names::node::heartbeat("b")));
        // A node named "a.b" is a different token: "a" cannot speak for it.
        assert!(!a.may_publish(&names::node::status("a.b")));
        // Own work through a filtered consumer or a direct get; nobody else's.
        let own = "$JS.API.CONSUMER.CREATE.KV_voiyd_work.c1.$KV.voiyd_work.a.>";
        assert!(a.may_publish(own));
        assert!(!a.may_publish("$JS.API.CONSUMER.CREATE.KV_voiyd_work.c1.$KV.voiyd_work.b.>"));
        assert!(!a.may_publish("$JS.API.CONSUMER.CREATE.KV_voiyd_work.c1.$KV.voiyd_work.>"));
        assert!(!a.may_publish("$JS.API.CONSUMER.CREATE.KV_voiyd_work.c1"));
        assert!(!a.may_publish("$JS.API.CONSUMER.CREATE.KV_voiyd_work"));
        assert!(a.may_publish("$JS.API.DIRECT.GET.KV_voiyd_work.$KV.voiyd_work.a.web"));
        assert!(!a.may_publish("$JS.API.DIRECT.GET.KV_voiyd_work.$KV.voiyd_work.b.web"));
        assert!(!a.may_publish("$JS.API.STREAM.MSG.GET.KV_voiyd_work"));
        // No desired state, no API, no raw KV writes.
        assert!(!a.may_publish("$KV.voiyd_tasks.web"));
        assert!(!a.may_publish("$KV.voiyd_work.a.web"));
        assert!(!a.may_publish(&names::api_subject("tasks", "create")));
        assert!(!a.may_publish("$JS.API.STREAM.INFO.KV_voiyd_tasks"));
        assert!(!a.may_publish(&names::event_subject("task", "web", "created")));
        // Subscriptions: own subjects and own inbox only.
        assert!(a.may_subscribe("_INBOX_a.x"));
        assert!(a.may_subscribe("voiyd.node.a.logs.*"));
        // Its own work updates, nobody else's.
        assert!(a.may_subscribe(&names::node::work("a")));
        assert!(!a.may_subscribe(&names::node::work("b")));
        assert!(!a.may_subscribe("_INBOX.>"));
        assert!(!a.may_subscribe("_INBOX_b.x"));
        assert!(!a.may_subscribe("voiyd.node.*.status"));
        assert!(!a.may_subscribe("voiyd.node.>"));
        assert!(!a.may_subscribe("$KV.voiyd_work.b.>"));
        assert!(!a.may_subscribe(">"));
        // Mesh datagrams: to any node as itself, never as another.
        assert!(a.may_publish(&names::node::mesh_relay("b", "a")));
        assert!(!a.may_publish(&names::node::mesh_relay("c", "b")));
        assert!(a.may_subscribe(&names::node::mesh_relay_in("a")));
        assert!(!a.may_subscribe(&names::node::mesh_relay_in("b")));
    }

    #[test]
    fn join_identity_can_only_join() {
        let j = join_permissions();
        assert!(j.may_publish("voiyd.api.v1.nodes.join"));
        assert!(!j.may_publish("voiyd.api.v1.nodes.create"));
        assert!(!j.may_publish("voiyd.api.v1.tokens.create"));
        assert!(j.may_subscribe("_INBOX_voiyd_join.abc"));
        assert!(!j.may_subscribe("_INBOX.abc"));
    }

    #[test]
    fn admin_cannot_touch_buckets() {
        let a = admin_permissions();
        assert!(a.may_publish("voiyd.api.v1.tasks.create"));
        assert!(a.may_publish("$JS.API.CONSUMER.CREATE.VOIYD_EVENTS.x.voiyd.events.>"));
        assert!(!a.may_publish("$KV.voiyd_tasks.web"));
        assert!(!a.may_publish("$JS.API.STREAM.INFO.KV_voiyd_work"));
        assert!(!a.may_publish("voiyd.node.n1.status"));
        // Only servers tell nodes what to run.
        assert!(!a.may_publish(&names::node::work("n1")));
    }

    #[test]
    fn matching_follows_nats_rules() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!pattern_covers("a.*", "a.>"));
        assert!(pattern_covers("a.>", "a.*.c"));
    }

    #[test]
    fn keys_are_checked() {
        // A seed is not a public key.
        let (seed, public) = new_user_key();
        assert!(!is_user_public_key(&seed));
        assert!(is_user_public_key(&public));
        assert_eq!(public_key_of_seed(&seed), Some(public));
        assert_eq!(public_key_of_seed("SUgarbage"), None);
    }
}
