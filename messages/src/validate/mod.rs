//! Validation of user-written resources before the server stores them.
//!
//! Each `validate_*` function collects every problem it finds (not only the first) as
//! [`FieldError`]s whose paths use the JSON field names of the manifest
//! (`config.portMappings[0].hostPort`), and returns them as one [`ValidationError`].

use crate::manifest::AnyResource;
use crate::quantity::{parse_cpu, parse_duration, parse_memory, shown};
use crate::resource::{Kind, Resource};
use crate::selector::Requirement;
use crate::v1::{
    Capabilities, ContainerSet, Lease, Meta, Mount, Node, PortMapping, Task, TaskConfig, Volume,
};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

mod config;
mod hardening;
mod image;
mod job;
mod names;
mod normalize;
mod probe;
mod secret;

pub use config::*;
pub use hardening::{
    namespaced_sysctl, parse_seccomp, Seccomp, DEFAULT_PIDS_LIMIT, SECCOMP_UNCONFINED, ULIMITS,
};
use image::*;
pub use job::*;
pub use names::*;
pub use normalize::*;
pub use probe::{MAX_PROBE_SECONDS, MAX_PROBE_THRESHOLD};
pub use secret::*;

/// Longest resource name (tasks, volumes, sets).
pub const MAX_NAME_LEN: usize = 63;
/// Longest node name (a DNS name).
pub const MAX_NODE_NAME_LEN: usize = 253;
/// Most labels on one resource (also the most node-selector entries).
pub const MAX_LABELS: usize = 64;
/// Longest label name (the part after an optional prefix) and label value.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest label key prefix (a DNS subdomain).
pub const MAX_LABEL_PREFIX_LEN: usize = 253;
/// Longest image reference.
pub const MAX_IMAGE_LEN: usize = crate::image::MAX_LEN;
/// Most items in `args` and in `command`.
pub const MAX_ARGS: usize = 1024;
/// Most environment variables.
pub const MAX_ENV: usize = 1024;
/// Most port mappings.
pub const MAX_PORTS: usize = 1024;
/// Most mounts.
pub const MAX_MOUNTS: usize = 256;
/// Most node-affinity entries.
pub const MAX_AFFINITY: usize = 64;
/// Most capabilities in `add` and in `drop`.
pub const MAX_CAPABILITIES: usize = 64;
/// Most replicas of a container set.
pub const MAX_REPLICAS: u32 = 10_000;
/// Largest template volume content, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Where, in manifest JSON names: `config.portMappings[0].hostPort`, `meta.labels[app]`.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Everything wrong with one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {}", join(.errors))]
pub struct ValidationError {
    /// The resource: `task web` (an invalid name is quoted).
    pub subject: String,
    /// The problems, at least one.
    pub errors: Vec<FieldError>,
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors under a path prefix.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.add(path, m);
        }
    }

    fn finish(self, kind_label: &str, name: &str) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                subject: subject(kind_label, name),
                errors: self.0,
            })
        }
    }
}

/// `task web`, or `task "we b"` when the name is not a plain name, or `task (no name)`.
fn subject(kind_label: &str, name: &str) -> String {
    if name.is_empty() {
        format!("{kind_label} (no name)")
    } else if check_name(name, MAX_NODE_NAME_LEN).is_ok() {
        format!("{kind_label} {name}")
    } else {
        format!("{kind_label} {}", shown(name))
    }
}

/// The path of a map entry: `meta.labels[app]`, quoting keys that would break the line.
fn key_path(prefix: &str, key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '[' && c != ']')
    {
        format!("{prefix}[{key}]")
    } else {
        format!("{prefix}[{}]", shown(key))
    }
}

// ---------------------------------------------------------------------------------------
// Resources

/// Validates a task: header, and `config` (required) with every rule of a task configuration.
pub fn validate_task(task: &Task) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(&mut errs, Kind::Task, &task.version, task.meta.as_ref());
    match &task.config {
        None => errs.add("config.image", "required"),
        Some(c) => check_config(&mut errs, "config.", c),
    }
    errs.finish(Kind::Task.singular(), task.name())
}

/// Validates a task configuration on its own, with paths under `prefix` (e.g. `template.`).
pub fn validate_task_config(
    kind_label: &str,
    name: &str,
    prefix: &str,
    config: &TaskConfig,
) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_config(&mut errs, prefix, config);
    errs.finish(kind_label, name)
}

/// Validates a node: header (names up to 253 characters) and its volume driver directories.
pub fn validate_node(node: &Node) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(&mut errs, Kind::Node, &node.version, node.meta.as_ref());
    if let Some(d) = node.config.as_ref().and_then(|c| c.volume_drivers.as_ref()) {
        if let Some(h) = d.host_local.as_ref().filter(|h| !h.root_dir.is_empty()) {
            errs.check(
                "config.volumeDrivers.hostLocal.rootDir",
                check_abs_path(&h.root_dir),
            );
        }
        if let Some(t) = d.template.as_ref().filter(|t| !t.root_dir.is_empty()) {
            errs.check(
                "config.volumeDrivers.template.rootDir",
                check_abs_path(&t.root_dir),
            );
        }
    }
    errs.finish(Kind::Node.singular(), node.name())
}

/// Validates a volume: header, exactly one of `hostLocal` and `template`, the template's file
/// name and size, and the node selector.
pub fn validate_volume(volume: &Volume) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(
        &mut errs,
        Kind::Volume,
        &volume.version,
        volume.meta.as_ref(),
    );
    let none = "set exactly one of hostLocal: {} or template: {name, data}";
    match &volume.config {
        None => errs.add("config", format!("required: {none}")),
        Some(c) => {
            match (&c.host_local, &c.template) {
                (None, None) => errs.add("config", format!("no volume source: {none}")),
                (Some(_), Some(_)) => errs.add(
                    "config",
                    format!("both hostLocal and template are set: {none}"),
                ),
                (Some(_), None) => {}
                (None, Some(t)) => {
                    let name_problem = if t.name.is_empty() {
                        Some("required: the file name the data is written to".to_string())
                    } else if t.name == "."
                        || t.name == ".."
                        || t.name.contains(['/', '\0'])
                        || t.name.len() > 255
                    {
                        Some(format!(
                            "{} is not a file name: no '/', not . or .., at most 255 bytes",
                            shown(&t.name)
                        ))
                    } else {
                        None
                    };
                    if let Some(m) = name_problem {
                        errs.add("config.template.name", m);
                    }
                    if t.data.len() > MAX_TEMPLATE_BYTES {
                        errs.add(
                            "config.template.data",
                            format!("is {} bytes, more than {MAX_TEMPLATE_BYTES} (1 MiB): use a hostLocal volume for larger content", t.data.len()),
                        );
                    }
                }
            }
            check_label_map(&mut errs, "config.nodeSelector", &c.node_selector);
        }
    }
    errs.finish(Kind::Volume.singular(), volume.name())
}

/// Validates a container set: header, `template` as a task configuration (paths
/// `template.`), replicas at most 10000, placement spread|binpack and mode
/// replicated|global (global: no replicas, no surge).
pub fn validate_container_set(set: &ContainerSet) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(
        &mut errs,
        Kind::ContainerSet,
        &set.version,
        set.meta.as_ref(),
    );
    match &set.template {
        None => errs.add("template.image", "required"),
        Some(t) => check_config(&mut errs, "template.", t),
    }
    if let Some(r) = set.replicas.filter(|r| *r > MAX_REPLICAS) {
        errs.add("replicas", format!("{r} is more than {MAX_REPLICAS}"));
    }
    errs.check(
        "mode",
        check_one_of(&set.mode, &["replicated", "global"], "mode"),
    );
    if set.mode.eq_ignore_ascii_case("global") {
        if set.replicas.is_some() {
            errs.add(
                "replicas",
                "not allowed with mode global, which runs one task on every matching node: remove replicas",
            );
        }
        if set.strategy.is_some_and(|s| s.max_surge > 0) {
            errs.add(
                "strategy.maxSurge",
                "not allowed with mode global (one task per node): use maxUnavailable",
            );
        }
        if set.name().len() > MAX_NAME_LEN - 10 {
            errs.add(
                "meta.name",
                format!(
                    "longer than {} characters: a global set's tasks are named <set>-<node>",
                    MAX_NAME_LEN - 10
                ),
            );
        }
    }
    errs.check(
        "placement",
        check_one_of(&set.placement, &["spread", "binpack"], "placement"),
    );
    check_set_network(&mut errs, set);
    errs.finish(Kind::ContainerSet.singular(), set.name())
}

/// A set's `vip`, `network` (open|isolated) and `allowFrom` (labels, only with isolated;
/// neither a virtual IP nor isolation with host networking, whose tasks have no address of
/// their own).
fn check_set_network(errs: &mut Errors, set: &ContainerSet) {
    errs.check(
        "network",
        check_one_of(&set.network, &["open", "isolated"], "network"),
    );
    let isolated = set.network.eq_ignore_ascii_case("isolated");
    if !set.allow_from.is_empty() && !isolated {
        errs.add(
            "allowFrom",
            "only with network: isolated (an open set admits every task already)",
        );
    }
    check_label_map(errs, "allowFrom", &set.allow_from);
    if set.template.as_ref().is_some_and(|t| t.host_network) {
        if set.vip {
            errs.add("vip", "not with template.hostNetwork: host-network tasks have no address of their own to balance across");
        }
        if isolated {
            errs.add("network", "isolated is not possible with template.hostNetwork: the tasks share the node's network");
        }
    }
}

/// Validates a lease: header, the task name and the holder (a node name) when set.
pub fn validate_lease(lease: &Lease) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(&mut errs, Kind::Lease, &lease.version, lease.meta.as_ref());
    if !lease.task.is_empty() {
        errs.check("task", check_name(&lease.task, MAX_NAME_LEN));
    }
    if !lease.holder.is_empty() {
        errs.check("holder", check_name(&lease.holder, MAX_NODE_NAME_LEN));
    }
    errs.finish(Kind::Lease.singular(), lease.name())
}

/// Validates any resource a manifest may hold.
pub fn validate_any(resource: &AnyResource) -> Result<(), ValidationError> {
    match resource {
        AnyResource::Task(t) => validate_task(t),
        AnyResource::Node(n) => validate_node(n),
        AnyResource::Volume(v) => validate_volume(v),
        AnyResource::ContainerSet(s) => validate_container_set(s),
        AnyResource::Lease(l) => validate_lease(l),
        AnyResource::Job(j) => validate_job(j),
        AnyResource::Secret(s) => validate_secret(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        EnvVar, HostLocal, NodeConfig, Resources, Template, VolumeConfig, VolumeDriverHostLocal,
        VolumeDrivers,
    };

    fn meta(name: &str) -> Option<Meta> {
        Some(Meta {
            name: name.into(),
            ..Default::default()
        })
    }

    fn task(config: TaskConfig) -> Task {
        Task {
            version: "task/v1".into(),
            meta: meta("web"),
            config: Some(config),
            status: None,
        }
    }

    fn image(i: &str) -> TaskConfig {
        TaskConfig {
            image: i.into(),
            ..Default::default()
        }
    }

    /// The messages of validating `c`, as `path: message` strings.
    fn problems(c: TaskConfig) -> Vec<String> {
        match validate_task(&task(c)) {
            Ok(()) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn isolation_settings_are_checked() {
        use crate::v1::{Dns, Ulimit};
        let base = || image("nginx");
        assert!(problems(TaskConfig {
            hostname: "db-1.local".into(),
            read_only_root_filesystem: true,
            dns: Some(Dns {
                servers: vec!["10.0.0.2".into()],
                search: vec!["svc.local".into()],
                options: vec!["ndots:2".into()],
            }),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string()
            )]
            .into(),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }],
            resources: Some(Resources {
                cpu: "100m".into(),
                memory: "64Mi".into()
            }),
            limits: Some(Resources {
                cpu: "1".into(),
                memory: "128Mi".into()
            }),
            pids_limit: -1,
            ..base()
        })
        .is_empty());
        assert_problem(
            TaskConfig {
                hostname: "-bad".into(),
                ..base()
            },
            "config.hostname",
            "not a host name",
        );
        assert_problem(
            TaskConfig {
                dns: Some(Dns {
                    servers: vec!["dns.google".into()],
                    ..Default::default()
                }),
                ..base()
            },
            "config.dns.servers[0]",
            "not an IP address",
        );
        assert_problem(
            TaskConfig {
                sysctls: [("kernel.panic".to_string(), "1".to_string())].into(),
                ..base()
            },
            "config.sysctls.kernel.panic",
            "not namespaced",
        );
        assert_problem(
            TaskConfig {
                host_network: true,
                sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
                ..base()
            },
            "config.sysctls.net.core.somaxconn",
            "not with hostNetwork",
        );
        assert_problem(
            TaskConfig {
                ulimits: vec![Ulimit {
                    name: "files".into(),
                    soft: 1,
                    hard: 1,
                }],
                ..base()
            },
            "config.ulimits[0].name",
            "not a ulimit",
        );
        assert_problem(
            TaskConfig {
                ulimits: vec![Ulimit {
                    name: "nofile".into(),
                    soft: 9,
                    hard: 1,
                }],
                ..base()
            },
            "config.ulimits[0].soft",
            "more than hard",
        );
        assert_problem(
            TaskConfig {
                resources: Some(Resources {
                    cpu: "2".into(),
                    memory: String::new(),
                }),
                limits: Some(Resources {
                    cpu: "1".into(),
                    memory: String::new(),
                }),
                ..base()
            },
            "config.limits.cpu",
            "less than the request",
        );
        assert_problem(
            TaskConfig {
                pids_limit: -2,
                ..base()
            },
            "config.pidsLimit",
            "not a limit",
        );
    }

    fn assert_problem(c: TaskConfig, path: &str, contains: &str) {
        let p = problems(c);
        assert!(
            p.iter()
                .any(|m| m.starts_with(&format!("{path}: ")) && m.contains(contains)),
            "expected {path}: ...{contains}... in {p:?}"
        );
    }

    fn ok(c: TaskConfig) {
        assert_eq!(problems(c), Vec::<String>::new());
    }

    #[test]
    fn display_is_one_line_joined() {
        let mut c = image("");
        c.port_mappings.push(PortMapping {
            host_port: 70000,
            target_port: 80,
            ..Default::default()
        });
        let e = validate_task(&task(c)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task web: config.image: required; config.portMappings[0].hostPort: 70000 is out of range 1-65535 (or 0 for no host port)"
        );
        let unnamed = Task::default();
        assert_eq!(
            validate_task(&unnamed).unwrap_err().to_string(),
            "task (no name): meta.name: required; config.image: required"
        );
        let mut weird = task(image("x"));
        weird.meta = meta("a b\nc");
        let msg = validate_task(&weird).unwrap_err().to_string();
        assert!(msg.starts_with("task \"a b\\nc\": meta.name: "), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn names() {
        for good in ["a", "web", "web-1", "a.b_c-d", "A1", "0", &"x".repeat(63)] {
            assert!(check_name(good, MAX_NAME_LEN).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a._b",
            "a b",
            "a/b",
            "é",
            ".",
            "a..b",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad, MAX_NAME_LEN).is_err(), "{bad}");
        }
        assert!(validate_name("node", &"n".repeat(253)).is_ok());
        assert!(validate_name("node", &"n".repeat(254)).is_err());
        assert!(validate_name("task", &"n".repeat(64)).is_err());
        assert_eq!(
            validate_name("task", "a_").unwrap_err().to_string(),
            "task \"a_\": meta.name: \"a_\" is not a valid name: use letters and digits joined by single '.', '_' or '-' (at most 63 characters), e.g. web-1"
        );
        assert!(validate_name("task", &"n".repeat(64))
            .unwrap_err()
            .to_string()
            .contains("is 64 characters long, more than 63"));
    }

    #[test]
    fn version_must_match_kind() {
        let mut t = task(image("x"));
        t.version = String::new();
        assert!(validate_task(&t).is_ok());
        t.version = "node/v1".into();
        let e = validate_task(&t).unwrap_err().to_string();
        assert!(
            e.contains("version: \"node/v1\" does not match this kind: write task/v1"),
            "{e}"
        );
    }

    #[test]
    fn labels() {
        for k in [
            "app",
            "a.b-c_d",
            "example.com/app",
            "a.b.c/X",
            &"k".repeat(63),
        ] {
            assert!(check_label_key(k).is_ok(), "{k}");
        }
        for k in [
            "",
            "/a",
            "a/",
            "Example.com/a",
            "-a",
            "a-",
            "a b",
            "a/b/c",
            "ex_ample.com/a",
            &"k".repeat(64),
            &format!("{}/a", "p".repeat(254)),
        ] {
            assert!(check_label_key(k).is_err(), "{k}");
        }
        for v in ["", "a", "1.2.3", "a-b_c.d", &"v".repeat(63)] {
            assert!(check_label_value(v).is_ok(), "{v}");
        }
        for v in ["-a", "a.", "a b", "a/b", &"v".repeat(64)] {
            assert!(check_label_value(v).is_err(), "{v}");
        }
        let mut m: BTreeMap<String, String> = (0..64)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(validate_labels(&m).is_ok());
        m.insert("k64".into(), "v".into());
        assert!(validate_labels(&m)
            .unwrap_err()
            .to_string()
            .contains("labels: 65 entries, more than 64"));
        let bad: BTreeMap<String, String> = [("ok".to_string(), "bad value".to_string())].into();
        let e = validate_labels(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("labels: labels[ok]: \"bad value\" is not a valid label value"),
            "{e}"
        );
        let mut t = task(image("x"));
        t.meta
            .as_mut()
            .unwrap()
            .labels
            .insert("a b".into(), "v".into());
        let e = validate_task(&t).unwrap_err().to_string();
        assert!(e.contains("meta.labels[\"a b\"]: "), "{e}");
    }

    #[test]
    fn images() {
        for good in [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/library/nginx:latest",
            "127.0.0.1:5000/a/b:tag",
            "localhost/a",
            "localhost:5000/a",
            "[::1]:5000/a:1",
            "registry.example.com/team/app_x__y--z.w:v1.0-rc_1",
            &format!("x@sha256:{}", "a".repeat(64)),
            &format!("reg:5000/x:1@sha256:{}", "0123456789abcdef".repeat(4)),
        ] {
            ok(image(good));
        }
        for bad in [
            "busy box",
            "Busybox",
            "a:",
            ":tag",
            "a:-x",
            "a//b",
            "/a",
            "a/",
            "a@sha256:abc",
            &format!("x@md5:{}", "a".repeat(32)),
            &format!("x@sha256:{}", "A".repeat(64)),
            "reg:99999/a",
            "reg:/a",
            "a_/b",
            "a\tb",
            &"a".repeat(513),
        ] {
            let p = problems(image(bad));
            assert!(
                p.iter().any(|m| m.starts_with("config.image: ")),
                "{bad}: {p:?}"
            );
        }
        assert_problem(image(""), "config.image", "required");
        assert_problem(image("a b"), "config.image", "no spaces");
        assert_problem(image("UP"), "config.image", "e.g. busybox");
    }

    #[test]
    fn args_command_env() {
        let mut c = image("x");
        c.args = vec!["a".into(); MAX_ARGS];
        c.command = vec!["b".into(); MAX_ARGS];
        ok(c.clone());
        c.args.push("one more".into());
        assert_problem(c.clone(), "config.args", "1025 items, more than 1024");
        c.args.clear();
        c.command.push("x".into());
        assert_problem(c, "config.command", "more than 1024");
        let mut c = image("x");
        c.args = vec!["nul\0".into()];
        assert_problem(c, "config.args[0]", "NUL");

        let env = |n: &str| EnvVar {
            name: n.into(),
            value: "v".into(),
            ..Default::default()
        };
        let mut c = image("x");
        c.envvars = vec![env("A"), env("_b1"), env("PATH")];
        ok(c.clone());
        c.envvars.push(env("A"));
        assert_problem(c.clone(), "config.envvars[3].name", "\"A\" is set twice");
        c.envvars = vec![env("1A"), env("A-B"), env(""), env("A B")];
        let p = problems(c);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("is not a variable name"));
        assert_eq!(p[2], "config.envvars[2].name: required");
        let mut c = image("x");
        c.envvars = (0..=MAX_ENV).map(|i| env(&format!("V{i}"))).collect();
        assert_problem(c, "config.envvars", "more than 1024");
    }

    fn port(host: u32, target: u32, proto: &str, ip: &str) -> PortMapping {
        PortMapping {
            name: String::new(),
            host_port: host,
            target_port: target,
            protocol: proto.into(),
            host_ip: ip.into(),
        }
    }

    #[test]
    fn ports() {
        let mut c = image("x");
        c.port_mappings = vec![
            port(8080, 80, "", ""),
            port(8080, 80, "udp", ""),
            port(0, 80, "TCP", ""),
            port(0, 80, "tcp", ""),
            port(9000, 1, "tcp", "127.0.0.1"),
            port(9000, 2, "tcp", "127.0.0.2"),
            port(9000, 3, "tcp", "::1"),
            port(65535, 65535, "Udp", ""),
        ];
        ok(c);
        let with = |p: PortMapping| {
            let mut c = image("x");
            c.port_mappings = vec![p];
            c
        };
        assert_problem(
            with(port(0, 0, "", "")),
            "config.portMappings[0].targetPort",
            "required",
        );
        assert_problem(
            with(port(0, 70000, "", "")),
            "config.portMappings[0].targetPort",
            "70000 is out of range 1-65535",
        );
        assert_problem(
            with(port(65536, 80, "", "")),
            "config.portMappings[0].hostPort",
            "out of range",
        );
        assert_problem(
            with(port(1, 80, "sctp", "")),
            "config.portMappings[0].protocol",
            "use one of tcp, udp",
        );
        assert_problem(
            with(port(1, 80, "", "localhost")),
            "config.portMappings[0].hostIp",
            "not an IPv4 or IPv6 address",
        );
        assert_problem(
            with(port(1, 80, "", "1.2.3.4.5")),
            "config.portMappings[0].hostIp",
            "not an IPv4",
        );
        let mut named = port(1, 80, "", "");
        named.name = "bad name".into();
        assert_problem(
            with(named),
            "config.portMappings[0].name",
            "not a valid name",
        );

        let dup = |a: PortMapping, b: PortMapping| {
            let mut c = image("x");
            c.port_mappings = vec![a, b];
            c
        };
        assert_problem(
            dup(port(8080, 80, "", ""), port(8080, 81, "TCP", "")),
            "config.portMappings[1].hostPort",
            "8080/tcp is already published by config.portMappings[0]",
        );
        assert_problem(
            dup(
                port(53, 53, "udp", "10.0.0.1"),
                port(53, 53, "UDP", "10.0.0.1"),
            ),
            "config.portMappings[1].hostPort",
            "53/udp",
        );
        // All addresses clash with a specific one.
        assert_problem(
            dup(port(80, 80, "", "127.0.0.1"), port(80, 80, "", "0.0.0.0")),
            "config.portMappings[1].hostPort",
            "already published",
        );
        assert_problem(
            dup(port(80, 80, "", ""), port(80, 80, "", "::1")),
            "config.portMappings[1].hostPort",
            "already published",
        );
    }

    fn mount(dest: &str, ty: &str, volume: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            name: String::new(),
            destination: dest.into(),
            r#type: ty.into(),
            volume: volume.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            secret: String::new(),
        }
    }

    #[test]
    fn mounts() {
        let mut c = image("x");
        c.mounts = vec![
            mount("/data", "", "vol1", "", &["rw"]),
            mount(
                "/etc/x",
                "bind",
                "",
                "/srv/x",
                &["ro", "rbind", "rprivate", "nosuid", "nodev", "noexec"],
            ),
            mount("/src", "", "", "/home/src", &[]),
            mount(
                "/tmp",
                "tmpfs",
                "",
                "",
                &["size=64m", "mode=1777", "noexec"],
            ),
            mount("/v2", "Volume", "v2", "", &[]),
        ];
        ok(c);
        let with = |m: Mount| {
            let mut c = image("x");
            c.mounts = vec![m];
            c
        };
        let p = "config.mounts[0]";
        assert_problem(
            with(mount("", "", "v", "", &[])),
            &format!("{p}.destination"),
            "required",
        );
        assert_problem(
            with(mount("data", "", "v", "", &[])),
            &format!("{p}.destination"),
            "not an absolute path",
        );
        assert_problem(
            with(mount("/a/../b", "", "v", "", &[])),
            &format!("{p}.destination"),
            "`..`",
        );
        assert_problem(
            with(mount("/a", "", "", "", &[])),
            &format!("{p}.type"),
            "cannot tell the mount type",
        );
        assert_problem(
            with(mount("/a", "nfs", "v", "", &[])),
            &format!("{p}.type"),
            "\"nfs\" is not a mount type",
        );
        assert_problem(
            with(mount("/a", "volume", "", "", &[])),
            &format!("{p}.volume"),
            "required for a volume mount",
        );
        assert_problem(
            with(mount("/a", "volume", "bad/name", "", &[])),
            &format!("{p}.volume"),
            "not a valid name",
        );
        assert_problem(
            with(mount("/a", "volume", "v", "/x", &[])),
            &format!("{p}.source"),
            "only bind mounts",
        );
        assert_problem(
            with(mount("/a", "bind", "", "", &[])),
            &format!("{p}.source"),
            "required for a bind mount",
        );
        assert_problem(
            with(mount("/a", "bind", "", "rel", &[])),
            &format!("{p}.source"),
            "absolute",
        );
        assert_problem(
            with(mount("/a", "bind", "v", "/x", &[])),
            &format!("{p}.volume"),
            "only volume mounts",
        );
        assert_problem(
            with(mount("/a", "tmpfs", "v", "", &[])),
            &format!("{p}.type"),
            "neither source nor volume",
        );
        assert_problem(
            with(mount("/a", "", "v", "", &["rx"])),
            &format!("{p}.options[0]"),
            "\"rx\" is not a known mount option",
        );
        assert_problem(
            with(mount("/a", "", "v", "", &["size=1g"])),
            &format!("{p}.options[0]"),
            "only for tmpfs",
        );
        assert_problem(
            with(mount("/a", "tmpfs", "", "", &["colour=red"])),
            &format!("{p}.options[0]"),
            "not a known option",
        );
        assert_problem(
            with(mount("/a", "", "v", "", &["ro", "rw"])),
            &format!("{p}.options"),
            "contradict",
        );

        let mut c = image("x");
        c.mounts = vec![
            mount("/data/", "", "a", "", &[]),
            mount("//data", "", "b", "", &[]),
        ];
        assert_problem(
            c,
            "config.mounts[1].destination",
            "already mounted by config.mounts[0]",
        );
    }

    #[test]
    fn capabilities() {
        let mut c = image("x");
        c.capabilities = Some(Capabilities {
            add: vec!["NET_ADMIN".into(), "cap_sys_time".into(), "CAP_BPF".into()],
            drop: vec!["all".into()],
        });
        ok(c.clone());
        c.capabilities.as_mut().unwrap().add.push("CAP_FLY".into());
        c.capabilities.as_mut().unwrap().drop.push("".into());
        let p = problems(c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("config.capabilities.add[3]: \"CAP_FLY\" is not a Linux capability")
        );
        assert!(p[1].starts_with("config.capabilities.drop[1]: "));
        assert_eq!(
            canonical_capability("net_raw").as_deref(),
            Some("CAP_NET_RAW")
        );
        assert_eq!(canonical_capability("CAP_ALL"), None);
    }

    #[test]
    fn probes() {
        use crate::v1::{ExecAction, HttpGetAction, Probe, TcpSocketAction};
        let with = |f: &dyn Fn(&mut TaskConfig)| {
            let mut c = image("x");
            f(&mut c);
            c
        };
        let exec = |cmd: &[&str]| Probe {
            exec: Some(ExecAction {
                command: cmd.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        let http = |port: u32, path: &str| Probe {
            http_get: Some(HttpGetAction {
                port,
                path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ok(with(&|c| {
            c.readiness_probe = Some(exec(&["cat", "/tmp/ready"]));
            c.liveness_probe = Some(http(8080, "/healthz"));
            c.startup_probe = Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: 5432,
                    ..Default::default()
                }),
                failure_threshold: 30,
                period_seconds: 1,
                ..Default::default()
            });
        }));
        assert_problem(
            with(&|c| c.readiness_probe = Some(http(70000, "/"))),
            "config.readinessProbe.httpGet.port",
            "out of range",
        );
        assert_problem(
            with(&|c| c.liveness_probe = Some(http(0, "/"))),
            "config.livenessProbe.httpGet.port",
            "1-65535",
        );
        assert_problem(
            with(&|c| c.readiness_probe = Some(exec(&[]))),
            "config.readinessProbe.exec.command",
            "empty",
        );
        assert_problem(
            with(&|c| c.readiness_probe = Some(Probe::default())),
            "config.readinessProbe",
            "give one of exec",
        );
        assert_problem(
            with(&|c| {
                let mut p = exec(&["true"]);
                p.tcp_socket = Some(TcpSocketAction {
                    port: 1,
                    ..Default::default()
                });
                c.readiness_probe = Some(p)
            }),
            "config.readinessProbe",
            "exactly one",
        );
        assert_problem(
            with(&|c| {
                let mut p = exec(&["true"]);
                p.success_threshold = 2;
                c.liveness_probe = Some(p)
            }),
            "config.livenessProbe.successThreshold",
            "one success",
        );
        assert_problem(
            with(&|c| c.readiness_probe = Some(http(80, "healthz"))),
            "config.readinessProbe.httpGet.path",
            "start with '/'",
        );
    }

    #[test]
    fn resources_and_policies() {
        let res = |cpu: &str, mem: &str| {
            let mut c = image("x");
            c.resources = Some(Resources {
                cpu: cpu.into(),
                memory: mem.into(),
            });
            c
        };
        ok(res("500m", "256Mi"));
        ok(res("", ""));
        ok(res("2", "1g"));
        assert_problem(res("0", ""), "config.resources.cpu", "more than 0");
        assert_problem(res("", "0Mi"), "config.resources.memory", "more than 0");
        assert_problem(res("-1", ""), "config.resources.cpu", "negative");
        assert_problem(res("", "lots"), "config.resources.memory", "not valid");

        let mut c = image("x");
        c.restart_policy = "On-Failure".into();
        c.pull_policy = "ifnotpresent".into();
        c.on_disconnect = "KEEP".into();
        c.stop_grace_period = "1m30s".into();
        c.working_dir = "/app".into();
        c.user = "1000:1000".into();
        ok(c);
        let mut c = image("x");
        c.restart_policy = "sometimes".into();
        c.pull_policy = "Maybe".into();
        c.on_disconnect = "panic".into();
        c.stop_grace_period = "10".into();
        c.working_dir = "app".into();
        c.user = "a b".into();
        let p = problems(c);
        let paths: Vec<&str> = p.iter().map(|m| m.split(": ").next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "config.restartPolicy",
                "config.pullPolicy",
                "config.onDisconnect",
                "config.stopGracePeriod",
                "config.workingDir",
                "config.user"
            ]
        );
        assert!(
            p[0].contains("use one of always, on-failure, never"),
            "{}",
            p[0]
        );
        assert!(p[1].contains("use one of Always, IfNotPresent, Never"));
    }

    #[test]
    fn node_selector_and_affinity() {
        let mut c = image("x");
        c.node_selector = [("zone".to_string(), "a".to_string())].into();
        c.node_affinity = vec![
            "gpu in (a100,h100)".into(),
            "!tainted".into(),
            "arch".into(),
        ];
        ok(c.clone());
        c.node_selector.insert("bad key".into(), "v".into());
        c.node_affinity.push("x in y".into());
        c.node_affinity.push("a=b,c=d".into());
        let p = problems(c);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("config.nodeSelector[\"bad key\"]: "));
        assert!(
            p[1].starts_with("config.nodeAffinity[3]: bad label selector part \"x in y\""),
            "{}",
            p[1]
        );
        assert!(p[2].starts_with("config.nodeAffinity[4]: "));
    }

    #[test]
    fn volumes() {
        let vol = |cfg: Option<VolumeConfig>| Volume {
            version: String::new(),
            meta: meta("data"),
            config: cfg,
            status: None,
        };
        let local = VolumeConfig {
            host_local: Some(HostLocal::default()),
            ..Default::default()
        };
        assert!(validate_volume(&vol(Some(local.clone()))).is_ok());
        let tmpl = |name: &str, data: String| VolumeConfig {
            template: Some(Template {
                name: name.into(),
                data,
            }),
            ..Default::default()
        };
        assert!(validate_volume(&vol(Some(tmpl("index.html", "hi".into())))).is_ok());
        assert!(validate_volume(&vol(Some(tmpl("f", "x".repeat(MAX_TEMPLATE_BYTES))))).is_ok());
        let msg = |v: Volume| validate_volume(&v).unwrap_err().to_string();
        assert!(msg(vol(None)).contains("volume data: config: required"));
        assert!(msg(vol(Some(VolumeConfig::default()))).contains("no volume source"));
        let mut both = tmpl("f", String::new());
        both.host_local = Some(HostLocal::default());
        assert!(msg(vol(Some(both))).contains("both hostLocal and template are set"));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(
                msg(vol(Some(tmpl(bad, String::new())))).contains("config.template.name: "),
                "{bad:?}"
            );
        }
        assert!(
            msg(vol(Some(tmpl("f", "x".repeat(MAX_TEMPLATE_BYTES + 1)))))
                .contains("config.template.data: is 1048577 bytes")
        );
        let mut sel = local;
        sel.node_selector.insert("k".into(), "-v".into());
        assert!(msg(vol(Some(sel))).contains("config.nodeSelector[k]: "));
    }

    #[test]
    fn jobs() {
        use crate::v1::Job;
        let job = |f: &dyn Fn(&mut Job)| {
            let mut j = Job {
                version: "job/v1".into(),
                meta: meta("j"),
                template: Some(image("x")),
                ..Default::default()
            };
            f(&mut j);
            validate_job(&j).map_err(|e| e.to_string())
        };
        assert!(job(&|_| {}).is_ok());
        assert!(job(&|j| {
            j.completions = Some(5);
            j.parallelism = Some(2);
            j.schedule = "@every 30s".into();
            j.concurrency_policy = "Forbid".into();
        })
        .is_ok());
        let e = job(&|j| {
            j.completions = Some(2);
            j.parallelism = Some(3);
        })
        .unwrap_err();
        assert!(
            e.contains("parallelism: 3 is more than completions (2)"),
            "{e}"
        );
        let e = job(&|j| j.schedule = "0 0 30 2 *".into()).unwrap_err();
        assert!(e.contains("schedule: ") && e.contains("never fires"), "{e}");
        let e = job(&|j| j.schedule = "every minute".into()).unwrap_err();
        assert!(e.contains("schedule: ") && e.contains("five-field"), "{e}");
        let e = job(&|j| j.concurrency_policy = "Forbid".into()).unwrap_err();
        assert!(e.contains("concurrencyPolicy: only for cron jobs"), "{e}");
        let e =
            job(&|j| j.template.as_mut().unwrap().restart_policy = "always".into()).unwrap_err();
        assert!(e.contains("template.restartPolicy: "), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn container_sets() {
        let set = |t: Option<TaskConfig>, replicas: Option<u32>, placement: &str| ContainerSet {
            version: "containerset/v1".into(),
            meta: meta("s"),
            template: t,
            replicas,
            strategy: None,
            placement: placement.into(),
            mode: String::new(),
            ..Default::default()
        };
        assert!(validate_container_set(&set(Some(image("x")), Some(10_000), "binpack")).is_ok());
        let mut net = set(Some(image("x")), None, "");
        net.vip = true;
        net.network = "isolated".into();
        net.allow_from = [("role".to_string(), "client".to_string())].into();
        assert!(validate_container_set(&net).is_ok());
        net.network = "open".into();
        let e = validate_container_set(&net).unwrap_err().to_string();
        assert!(e.contains("allowFrom: only with network: isolated"), "{e}");
        net.network = "private".into();
        net.allow_from.clear();
        let e = validate_container_set(&net).unwrap_err().to_string();
        assert!(e.contains("network: "), "{e}");
        net.network = String::new();
        net.template.as_mut().unwrap().host_network = true;
        let e = validate_container_set(&net).unwrap_err().to_string();
        assert!(e.contains("vip: not with template.hostNetwork"), "{e}");
        let mut global = set(Some(image("x")), Some(3), "");
        global.mode = "global".into();
        let e = validate_container_set(&global).unwrap_err().to_string();
        assert!(e.contains("replicas: not allowed with mode global"), "{e}");
        global.replicas = None;
        assert!(validate_container_set(&global).is_ok());
        global.mode = "everywhere".into();
        let e = validate_container_set(&global).unwrap_err().to_string();
        assert!(e.contains("mode: \"everywhere\" is not a mode"), "{e}");
        assert!(validate_container_set(&set(Some(image("x")), None, "")).is_ok());
        let e = validate_container_set(&set(Some(image("")), Some(10_001), "random"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "set s: template.image: required; replicas: 10001 is more than 10000; placement: \"random\" is not a placement: use one of spread, binpack or leave it empty"
        );
        let mut t = image("x");
        t.port_mappings.push(port(1, 0, "", ""));
        let e = validate_container_set(&set(Some(t), None, ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("template.portMappings[0].targetPort: required"),
            "{e}"
        );
        assert!(validate_container_set(&set(None, None, ""))
            .unwrap_err()
            .to_string()
            .contains("template.image: required"));
    }

    #[test]
    fn nodes_leases_and_any() {
        let mut n = Node {
            version: "node/v1".into(),
            meta: meta(&format!("{}.example.com", "n".repeat(200))),
            config: Some(NodeConfig {
                volume_drivers: Some(VolumeDrivers {
                    host_local: Some(VolumeDriverHostLocal {
                        root_dir: "/var/lib/voiyd/volumes".into(),
                    }),
                    template: None,
                }),
                unschedulable: false,
            }),
            status: None,
        };
        assert!(validate_node(&n).is_ok());
        assert!(validate_any(&AnyResource::Node(n.clone())).is_ok());
        n.config
            .as_mut()
            .unwrap()
            .volume_drivers
            .as_mut()
            .unwrap()
            .host_local
            .as_mut()
            .unwrap()
            .root_dir = "rel".into();
        n.meta
            .as_mut()
            .unwrap()
            .labels
            .insert("zone".into(), "a b".into());
        let e = validate_any(&AnyResource::Node(n)).unwrap_err().to_string();
        assert!(e.contains("meta.labels[zone]: "), "{e}");
        assert!(
            e.contains("config.volumeDrivers.hostLocal.rootDir: \"rel\" is not an absolute path"),
            "{e}"
        );

        let mut l = Lease {
            version: "lease/v1".into(),
            meta: meta("web"),
            task: "web".into(),
            holder: "node-1".into(),
            ..Default::default()
        };
        assert!(validate_any(&AnyResource::Lease(l.clone())).is_ok());
        l.holder = "bad holder".into();
        assert!(validate_lease(&l)
            .unwrap_err()
            .to_string()
            .contains("holder: "));
        assert!(validate_any(&AnyResource::Task(Task::default())).is_err());
        assert!(validate_any(&AnyResource::Volume(Volume::default())).is_err());
        assert!(validate_any(&AnyResource::ContainerSet(ContainerSet::default())).is_err());
    }

    #[test]
    fn normalize() {
        let mut c = image("x");
        c.port_mappings = vec![port(1, 1, "", ""), port(2, 2, "UDP", "")];
        c.mounts = vec![
            mount("/a", "", "v", "", &[]),
            mount("/b", "", "", "/s", &[]),
            mount("/c", "TMPFS", "", "", &[]),
        ];
        c.restart_policy = "On-Failure".into();
        c.on_disconnect = "Keep".into();
        c.pull_policy = "never".into();
        c.capabilities = Some(Capabilities {
            add: vec!["net_admin".into()],
            drop: vec!["all".into(), "bogus".into()],
        });
        let mut t = task(c);
        t.version.clear();
        normalize_task(&mut t);
        let once = t.clone();
        normalize_task(&mut t);
        assert_eq!(t, once);
        assert_eq!(t.version, "task/v1");
        let c = t.config.as_ref().unwrap();
        assert_eq!(c.port_mappings[0].protocol, "tcp");
        assert_eq!(c.port_mappings[1].protocol, "udp");
        let types: Vec<&str> = c.mounts.iter().map(|m| m.r#type.as_str()).collect();
        assert_eq!(types, ["volume", "bind", "tmpfs"]);
        assert_eq!(c.restart_policy, "on-failure");
        assert_eq!(c.on_disconnect, "keep");
        assert_eq!(c.pull_policy, "Never");
        let caps = c.capabilities.as_ref().unwrap();
        assert_eq!(caps.add, ["CAP_NET_ADMIN"]);
        assert_eq!(caps.drop, ["ALL", "bogus"]);
    }
}
