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
pub const MAX_IMAGE_LEN: usize = 512;
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
// Names and labels

/// Checks a resource name: runs of ASCII letters and digits joined by single `.`, `_` or
/// `-`, 1 to `max` characters. The error message says what is wrong and what to write.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("required".to_string());
    }
    if name.len() > max {
        return Err(format!(
            "is {} characters long, more than {max}: use a shorter name",
            name.len()
        ));
    }
    let mut prev_sep = true; // at the start a separator is as bad as after one
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(bad_name(name, max));
        }
    }
    if prev_sep {
        return Err(bad_name(name, max));
    }
    Ok(())
}

fn bad_name(name: &str, max: usize) -> String {
    format!(
        "{} is not a valid name: use letters and digits joined by single '.', '_' or '-' (at most {max} characters), e.g. web-1",
        shown(name)
    )
}

/// Validates a resource name on its own (e.g. the name in a get or delete request).
/// `kind_label` is `task`, `node`, `volume`, `set` or `lease`; node names may be up to 253
/// characters, all others up to 63.
pub fn validate_name(kind_label: &str, name: &str) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    errs.check("meta.name", check_name(name, name_limit(kind_label)));
    errs.finish(kind_label, name)
}

fn name_limit(kind_label: &str) -> usize {
    if kind_label == Kind::Node.singular() {
        MAX_NODE_NAME_LEN
    } else {
        MAX_NAME_LEN
    }
}

/// Whether `s` is `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (any length).
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `s` is a DNS subdomain: lower-case RFC 1123 labels joined by dots, each at most
/// 63 characters, the whole at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_PREFIX_LEN
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63
/// characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (e.g. `app`, `voiyd.io/zone`).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err(format!(
                "{} has an invalid prefix {}: the part before '/' must be a lower-case DNS name such as example.com (at most 253 characters)",
                shown(key),
                shown(p)
            ));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "{} has an empty name: write e.g. app or example.com/app",
            shown(key)
        ));
    }
    if name.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{} has a name of {} characters, more than {MAX_LABEL_LEN}: shorten it",
            shown(key),
            name.len()
        ));
    }
    if !is_label_token(name) {
        return Err(format!(
            "{} is not a valid label key: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional prefix like example.com/",
            shown(key)
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or 1 to 63 characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{} is {} characters long, more than {MAX_LABEL_LEN}: shorten it",
            shown(value),
            value.len()
        ));
    }
    if !is_label_token(value) {
        return Err(format!(
            "{} is not a valid label value: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            shown(value)
        ));
    }
    Ok(())
}

fn check_label_map(errs: &mut Errors, prefix: &str, labels: &BTreeMap<String, String>) {
    if labels.len() > MAX_LABELS {
        errs.add(
            prefix,
            format!(
                "{} entries, more than {MAX_LABELS}: remove some",
                labels.len()
            ),
        );
    }
    for (k, v) in labels {
        let path = key_path(prefix, k);
        errs.check(path.clone(), check_label_key(k));
        errs.check(path, check_label_value(v));
    }
}

/// Validates a set of labels on its own (e.g. labels a node reports); paths read `labels[key]`.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_label_map(&mut errs, "labels", labels);
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            subject: "labels".to_string(),
            errors: errs.0,
        })
    }
}

/// Checks `version` and `meta` (name and labels) of any resource.
fn check_header(errs: &mut Errors, kind: Kind, version: &str, meta: Option<&Meta>) {
    if !version.is_empty() && version != kind.manifest_version() {
        errs.add(
            "version",
            format!(
                "{} does not match this kind: write {} or leave it empty",
                shown(version),
                kind.manifest_version()
            ),
        );
    }
    match meta {
        None => errs.add("meta.name", "required"),
        Some(m) => {
            errs.check(
                "meta.name",
                check_name(&m.name, name_limit(kind.singular())),
            );
            check_label_map(errs, "meta.labels", &m.labels);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Images

fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("required".to_string());
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_IMAGE_LEN}",
            image.len()
        ));
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains {}: an image reference has no spaces or control characters",
            shown(image),
            shown(&c.to_string())
        ));
    }
    image_reference_problem(image).map_err(|why| {
        format!(
            "{} is not an image reference ({why}): write e.g. busybox, registry:5000/team/app:1.0 or app@sha256:<64 hex digits>",
            shown(image)
        )
    })
}

/// Checks the grammar of a distribution reference: `[host[:port]/]path[:tag][@digest]`.
fn image_reference_problem(image: &str) -> Result<(), &'static str> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':').ok_or("a digest is algorithm:hex")?;
        let want = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err("the digest algorithm must be sha256, sha384 or sha512"),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("the digest must have the right number of lower-case hex digits");
        }
    }
    // A tag is a ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let b = t.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err("a tag is up to 128 letters, digits, '_', '.' or '-'");
        }
    }
    if name.is_empty() {
        return Err("the repository name is missing");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry host when it looks like one (as Docker decides).
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        check_registry_host(parts[0])?;
        parts.remove(0);
    }
    for p in parts {
        if !is_path_component(p) {
            return Err("repository path parts are lower-case letters and digits joined by '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

fn check_registry_host(host: &str) -> Result<(), &'static str> {
    const BAD: &str = "the registry must be host[:port]";
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or(BAD)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| BAD)?;
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(h) = h {
        let ok = !h.is_empty()
            && h.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            });
        if !ok {
            return Err(BAD);
        }
    }
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535)
        {
            return Err("the registry port must be a number 1-65535");
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Task configuration

/// The canonical form of a capability name (`CAP_NET_ADMIN`, or `ALL`), if it is one.
pub fn canonical_capability(name: &str) -> Option<String> {
    crate::capabilities::canonical(name)
}

/// Mount options a mount may carry (tmpfs also takes `size=`, `mode=`, `uid=`, `gid=`,
/// `nr_inodes=`, `nr_blocks=`).
const MOUNT_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "bind",
    "rbind",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "noatime",
    "atime",
    "nodiratime",
    "diratime",
    "sync",
    "async",
    "dirsync",
];
const TMPFS_KEYS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"];

/// The mount type a mount has or implies: its `type` lower-cased, else `volume` when
/// `volume` is set, `bind` when `source` is set, `None` when nothing says.
pub fn mount_type(m: &Mount) -> Option<String> {
    if !m.r#type.is_empty() {
        Some(m.r#type.to_ascii_lowercase())
    } else if !m.volume.is_empty() {
        Some("volume".into())
    } else if !m.source.is_empty() {
        Some("bind".into())
    } else {
        None
    }
}

/// Checks an absolute path: starts with `/`, no NUL and no `..` component.
fn check_abs_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{} is not an absolute path: start it with /",
            shown(p)
        ));
    }
    if p.contains('\0') {
        return Err(format!("{} contains a NUL byte", shown(p)));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!(
            "{} contains `..`: write the path without it",
            shown(p)
        ));
    }
    Ok(())
}

fn check_one_of(value: &str, allowed: &[&str], what: &str) -> Result<(), String> {
    if value.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a {what}: use one of {} or leave it empty",
            shown(value),
            allowed.join(", ")
        ))
    }
}

fn check_strings(errs: &mut Errors, path: &str, items: &[String], max: usize) {
    if items.len() > max {
        errs.add(path, format!("{} items, more than {max}", items.len()));
    }
    for (i, s) in items.iter().enumerate() {
        if s.contains('\0') {
            errs.add(
                format!("{path}[{i}]"),
                "contains a NUL byte, which a process argument cannot hold",
            );
        }
    }
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Validates a task configuration; `p` is the path prefix (`config.` or `template.`).
fn check_config(errs: &mut Errors, p: &str, c: &TaskConfig) {
    errs.check(format!("{p}image"), check_image(&c.image));
    check_strings(errs, &format!("{p}args"), &c.args, MAX_ARGS);
    check_strings(errs, &format!("{p}command"), &c.command, MAX_ARGS);

    if c.envvars.len() > MAX_ENV {
        errs.add(
            format!("{p}envvars"),
            format!("{} variables, more than {MAX_ENV}", c.envvars.len()),
        );
    }
    let mut seen = HashSet::new();
    for (i, e) in c.envvars.iter().enumerate() {
        let path = format!("{p}envvars[{i}]");
        if e.name.is_empty() {
            errs.add(format!("{path}.name"), "required");
        } else if !is_env_name(&e.name) {
            errs.add(
                format!("{path}.name"),
                format!("{} is not a variable name: use letters, digits and '_', not starting with a digit", shown(&e.name)),
            );
        } else if !seen.insert(e.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!("{} is set twice: keep one", shown(&e.name)),
            );
        }
        if e.value.contains('\0') {
            errs.add(
                format!("{path}.value"),
                "contains a NUL byte, which an environment variable cannot hold",
            );
        }
    }

    check_ports(errs, p, &c.port_mappings);
    check_mounts(errs, p, &c.mounts);
    check_node_placement(errs, p, c);

    if let Some(caps) = &c.capabilities {
        check_capabilities(errs, p, caps);
    }
    if let Some(r) = &c.resources {
        if !r.cpu.is_empty() {
            match parse_cpu(&r.cpu) {
                Ok(0) => errs.add(
                    format!("{p}resources.cpu"),
                    "must be more than 0: remove it for no limit",
                ),
                Ok(_) => {}
                Err(e) => errs.add(format!("{p}resources.cpu"), e.to_string()),
            }
        }
        if !r.memory.is_empty() {
            match parse_memory(&r.memory) {
                Ok(0) => errs.add(
                    format!("{p}resources.memory"),
                    "must be more than 0: remove it for no limit",
                ),
                Ok(_) => {}
                Err(e) => errs.add(format!("{p}resources.memory"), e.to_string()),
            }
        }
    }
    errs.check(
        format!("{p}restartPolicy"),
        check_one_of(
            &c.restart_policy,
            &["always", "on-failure", "never"],
            "restart policy",
        ),
    );
    errs.check(
        format!("{p}pullPolicy"),
        check_one_of(
            &c.pull_policy,
            &["Always", "IfNotPresent", "Never"],
            "pull policy",
        ),
    );
    errs.check(
        format!("{p}onDisconnect"),
        check_one_of(&c.on_disconnect, &["stop", "keep"], "disconnect policy"),
    );
    if !c.stop_grace_period.is_empty() {
        if let Err(e) = parse_duration(&c.stop_grace_period) {
            errs.add(format!("{p}stopGracePeriod"), e.to_string());
        }
    }
    if !c.working_dir.is_empty() {
        errs.check(format!("{p}workingDir"), check_abs_path(&c.working_dir));
    }
    if c.user
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        errs.add(
            format!("{p}user"),
            format!(
                "{} contains spaces or control characters: write a user name or uid[:gid]",
                shown(&c.user)
            ),
        );
    }
}

fn check_ports(errs: &mut Errors, p: &str, ports: &[PortMapping]) {
    if ports.len() > MAX_PORTS {
        errs.add(
            format!("{p}portMappings"),
            format!("{} ports, more than {MAX_PORTS}", ports.len()),
        );
    }
    // Host bindings so far: (ip or None for all addresses, port, protocol, index).
    let mut bound: Vec<(Option<IpAddr>, u32, String, usize)> = Vec::new();
    for (i, m) in ports.iter().enumerate() {
        let path = format!("{p}portMappings[{i}]");
        if !m.name.is_empty() {
            errs.check(format!("{path}.name"), check_name(&m.name, MAX_NAME_LEN));
        }
        if m.target_port == 0 {
            errs.add(
                format!("{path}.targetPort"),
                "required: the container port, 1-65535",
            );
        } else if m.target_port > 65535 {
            errs.add(
                format!("{path}.targetPort"),
                format!("{} is out of range 1-65535", m.target_port),
            );
        }
        if m.host_port > 65535 {
            errs.add(
                format!("{path}.hostPort"),
                format!(
                    "{} is out of range 1-65535 (or 0 for no host port)",
                    m.host_port
                ),
            );
        }
        let proto_ok = check_one_of(&m.protocol, &["tcp", "udp"], "protocol");
        let proto = if m.protocol.is_empty() {
            "tcp".to_string()
        } else {
            m.protocol.to_ascii_lowercase()
        };
        errs.check(format!("{path}.protocol"), proto_ok.clone());
        let ip = if m.host_ip.is_empty() {
            Ok(None)
        } else {
            m.host_ip.parse::<IpAddr>().map(Some).map_err(|_| {
                format!("{} is not an IPv4 or IPv6 address: write e.g. 127.0.0.1 or leave it empty for all addresses", shown(&m.host_ip))
            })
        };
        let ip = match ip {
            Ok(ip) => ip.filter(|a| !a.is_unspecified()),
            Err(msg) => {
                errs.add(format!("{path}.hostIp"), msg);
                continue;
            }
        };
        if m.host_port == 0 || m.host_port > 65535 || proto_ok.is_err() {
            continue;
        }
        // Binding to all addresses clashes with any address on the same port.
        if let Some((_, _, _, j)) = bound.iter().find(|(bip, bport, bproto, _)| {
            *bport == m.host_port
                && *bproto == proto
                && (bip.is_none() || ip.is_none() || *bip == ip)
        }) {
            errs.add(
                format!("{path}.hostPort"),
                format!(
                    "{}/{proto} is already published by {p}portMappings[{j}]: use another host port or address",
                    m.host_port
                ),
            );
        } else {
            bound.push((ip, m.host_port, proto, i));
        }
    }
}

fn check_mounts(errs: &mut Errors, p: &str, mounts: &[Mount]) {
    if mounts.len() > MAX_MOUNTS {
        errs.add(
            format!("{p}mounts"),
            format!("{} mounts, more than {MAX_MOUNTS}", mounts.len()),
        );
    }
    let mut dests: Vec<(String, usize)> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let path = format!("{p}mounts[{i}]");
        if !m.name.is_empty() {
            errs.check(format!("{path}.name"), check_name(&m.name, MAX_NAME_LEN));
        }
        if m.destination.is_empty() {
            errs.add(
                format!("{path}.destination"),
                "required: the absolute path inside the container",
            );
        } else if let Err(e) = check_abs_path(&m.destination) {
            errs.add(format!("{path}.destination"), e);
        } else {
            let norm = normalize_path(&m.destination);
            if let Some((_, j)) = dests.iter().find(|(d, _)| *d == norm) {
                errs.add(
                    format!("{path}.destination"),
                    format!(
                        "{} is already mounted by {p}mounts[{j}]: mount each path once",
                        shown(&m.destination)
                    ),
                );
            } else {
                dests.push((norm, i));
            }
        }
        let ty = mount_type(m);
        match ty.as_deref() {
            None => errs.add(
                format!("{path}.type"),
                "cannot tell the mount type: set `volume` (a voiyd volume), `source` (a host path to bind) or type: tmpfs",
            ),
            Some("volume") => {
                if m.volume.is_empty() {
                    errs.add(format!("{path}.volume"), "required for a volume mount: the name of a voiyd volume");
                } else {
                    errs.check(format!("{path}.volume"), check_name(&m.volume, MAX_NAME_LEN));
                }
                if !m.source.is_empty() {
                    errs.add(format!("{path}.source"), "only bind mounts take a source: remove it or use type: bind");
                }
            }
            Some("bind") => {
                if m.source.is_empty() {
                    errs.add(format!("{path}.source"), "required for a bind mount: the absolute host path");
                } else {
                    errs.check(format!("{path}.source"), check_abs_path(&m.source));
                }
                if !m.volume.is_empty() {
                    errs.add(format!("{path}.volume"), "only volume mounts name a volume: remove it or use type: volume");
                }
            }
            Some("tmpfs") => {
                if !m.source.is_empty() || !m.volume.is_empty() {
                    errs.add(format!("{path}.type"), "a tmpfs mount takes neither source nor volume: remove them");
                }
            }
            Some(_) => errs.add(
                format!("{path}.type"),
                format!("{} is not a mount type: use volume, bind or tmpfs", shown(&m.r#type)),
            ),
        }
        let is_tmpfs = ty.as_deref() == Some("tmpfs");
        let (mut ro, mut rw) = (false, false);
        for (k, o) in m.options.iter().enumerate() {
            let opath = format!("{path}.options[{k}]");
            if let Some((key, value)) = o.split_once('=') {
                if !is_tmpfs || !TMPFS_KEYS.contains(&key) || value.is_empty() {
                    errs.add(
                        opath,
                        format!(
                            "{} is not a known option: key=value options are {} and only for tmpfs",
                            shown(o),
                            TMPFS_KEYS.join(", ")
                        ),
                    );
                }
            } else if !MOUNT_OPTIONS.contains(&o.as_str()) {
                errs.add(
                    opath,
                    format!("{} is not a known mount option: use e.g. ro, rw, nosuid, nodev, noexec, rbind, rprivate", shown(o)),
                );
            }
            ro |= o == "ro";
            rw |= o == "rw";
        }
        if ro && rw {
            errs.add(
                format!("{path}.options"),
                "ro and rw contradict each other: keep one",
            );
        }
    }
}

/// `/a//b/` → `/a/b`, so that duplicate destinations are found however they are written.
fn normalize_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn check_capabilities(errs: &mut Errors, p: &str, caps: &Capabilities) {
    for (field, list) in [("add", &caps.add), ("drop", &caps.drop)] {
        let path = format!("{p}capabilities.{field}");
        if list.len() > MAX_CAPABILITIES {
            errs.add(
                path.clone(),
                format!("{} items, more than {MAX_CAPABILITIES}", list.len()),
            );
        }
        for (i, c) in list.iter().enumerate() {
            if canonical_capability(c).is_none() {
                errs.add(
                    format!("{path}[{i}]"),
                    format!(
                        "{} is not a Linux capability: write e.g. NET_ADMIN, CAP_SYS_TIME or ALL",
                        shown(c)
                    ),
                );
            }
        }
    }
}

fn check_node_placement(errs: &mut Errors, p: &str, c: &TaskConfig) {
    check_label_map(errs, &format!("{p}nodeSelector"), &c.node_selector);
    if c.node_affinity.len() > MAX_AFFINITY {
        errs.add(
            format!("{p}nodeAffinity"),
            format!(
                "{} entries, more than {MAX_AFFINITY}",
                c.node_affinity.len()
            ),
        );
    }
    for (i, a) in c.node_affinity.iter().enumerate() {
        if let Err(e) = Requirement::parse(a) {
            errs.add(format!("{p}nodeAffinity[{i}]"), e.to_string());
        }
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
/// `template.`), replicas at most 10000 and placement spread|binpack.
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
        "placement",
        check_one_of(&set.placement, &["spread", "binpack"], "placement"),
    );
    errs.finish(Kind::ContainerSet.singular(), set.name())
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
    }
}

// ---------------------------------------------------------------------------------------
// Normalization

/// Brings a task to its canonical form without changing its meaning: fills `version`, and
/// normalizes its configuration (see [`normalize_task_config`]). Idempotent; a valid task
/// stays valid.
pub fn normalize_task(task: &mut Task) {
    if task.version.is_empty() {
        task.version = Kind::Task.manifest_version().to_string();
    }
    if let Some(c) = task.config.as_mut() {
        normalize_task_config(c);
    }
}

/// Canonical spellings in a task configuration: protocols lower-case (empty = `tcp`), mount
/// types lower-case and filled in when implied, restart policy and disconnect policy
/// lower-case, pull policy as `Always`/`IfNotPresent`/`Never`, capabilities as `CAP_X` or
/// `ALL`. Unknown values are left alone for validation to report.
pub fn normalize_task_config(c: &mut TaskConfig) {
    for p in &mut c.port_mappings {
        p.protocol = if p.protocol.is_empty() {
            "tcp".into()
        } else {
            p.protocol.to_ascii_lowercase()
        };
    }
    for m in &mut c.mounts {
        if let Some(t) = mount_type(m) {
            m.r#type = t;
        }
    }
    c.restart_policy = c.restart_policy.to_ascii_lowercase();
    c.on_disconnect = c.on_disconnect.to_ascii_lowercase();
    if let Some(canon) = ["Always", "IfNotPresent", "Never"]
        .into_iter()
        .find(|v| v.eq_ignore_ascii_case(&c.pull_policy))
    {
        c.pull_policy = canon.to_string();
    }
    if let Some(caps) = c.capabilities.as_mut() {
        for name in caps.add.iter_mut().chain(caps.drop.iter_mut()) {
            if let Some(canon) = canonical_capability(name) {
                *name = canon;
            }
        }
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
            host_local: Some(HostLocal {}),
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
        both.host_local = Some(HostLocal {});
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
    fn container_sets() {
        let set = |t: Option<TaskConfig>, replicas: Option<u32>, placement: &str| ContainerSet {
            version: "containerset/v1".into(),
            meta: meta("s"),
            template: t,
            replicas,
            strategy: None,
            placement: placement.into(),
            status: None,
        };
        assert!(validate_container_set(&set(Some(image("x")), Some(10_000), "binpack")).is_ok());
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
