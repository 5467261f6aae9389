//! A task's isolation settings: host name, read-only root, DNS, sysctls, ulimits,
//! limits apart from requests, and the pids limit.

use super::*;

/// Most DNS servers, search domains or options a task may list (glibc reads 3 servers
/// and 6 search domains; more would be silently ignored).
pub const MAX_DNS_SERVERS: usize = 3;
/// See [`MAX_DNS_SERVERS`].
pub const MAX_DNS_SEARCH: usize = 6;

/// The default pids limit of a container (`pidsLimit: 0`).
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// setrlimit resources a task may set, by their Docker names.
pub const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
];

/// Whether a sysctl belongs to a namespace the container has of its own (Docker's and
/// Kubernetes' rule): `net.*` (not with the host's network), IPC ones and `fs.mqueue.*`.
pub fn namespaced_sysctl(key: &str, host_network: bool) -> Result<(), String> {
    let ipc = matches!(
        key,
        "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
    ) || key.starts_with("fs.mqueue.");
    if ipc {
        return Ok(());
    }
    if key.starts_with("net.") {
        if host_network {
            return Err(format!(
                "{key} would change the node's own network: not with hostNetwork"
            ));
        }
        return Ok(());
    }
    Err(format!(
        "{key} is not namespaced (it would change the whole node): only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* are allowed"
    ))
}

/// What a task's `seccomp` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// voiyd's default profile (Docker's blocks).
    Default,
    /// No filter.
    Unconfined,
    /// A profile of the task's own.
    Profile(oci_spec::runtime::LinuxSeccomp),
}

/// The value of `seccomp` that turns filtering off.
pub const SECCOMP_UNCONFINED: &str = "unconfined";

/// Reads a task's `seccomp` value.
pub fn parse_seccomp(text: &str) -> Result<Seccomp, String> {
    match text.trim() {
        "" | "default" => Ok(Seccomp::Default),
        SECCOMP_UNCONFINED => Ok(Seccomp::Unconfined),
        json => serde_json::from_str::<oci_spec::runtime::LinuxSeccomp>(json)
            .map(Seccomp::Profile)
            .map_err(|e| {
                format!(
                    "not an OCI seccomp profile ({e}): give JSON such as {{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}}, `unconfined`, or nothing for the default"
                )
            }),
    }
}

pub(super) fn check_hardening(errs: &mut Errors, p: &str, c: &TaskConfig) {
    if let Err(e) = parse_seccomp(&c.seccomp) {
        errs.add(format!("{p}seccomp"), e);
    }
    if !c.hostname.is_empty() {
        let ok = c.hostname.len() <= 63
            && c.hostname.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            });
        if !ok {
            errs.add(
                format!("{p}hostname"),
                format!(
                    "{} is not a host name: letters, digits and '-', at most 63 characters",
                    shown(&c.hostname)
                ),
            );
        }
    }
    if let Some(d) = &c.dns {
        if d.servers.len() > MAX_DNS_SERVERS {
            errs.add(format!("{p}dns.servers"), format!("{} servers, more than {MAX_DNS_SERVERS} (the resolver reads only {MAX_DNS_SERVERS})", d.servers.len()));
        }
        for (i, s) in d.servers.iter().enumerate() {
            if s.parse::<IpAddr>().is_err() {
                errs.add(
                    format!("{p}dns.servers[{i}]"),
                    format!("{} is not an IP address", shown(s)),
                );
            }
        }
        if d.search.len() > MAX_DNS_SEARCH {
            errs.add(
                format!("{p}dns.search"),
                format!("{} domains, more than {MAX_DNS_SEARCH}", d.search.len()),
            );
        }
        for (i, s) in d.search.iter().chain(&d.options).enumerate() {
            if s.is_empty()
                || s.len() > 253
                || s.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            {
                let field = if i < d.search.len() {
                    format!("search[{i}]")
                } else {
                    format!("options[{}]", i - d.search.len())
                };
                errs.add(
                    format!("{p}dns.{field}"),
                    format!("{} is empty, too long or has spaces", shown(s)),
                );
            }
        }
    }
    for (key, value) in &c.sysctls {
        let path = format!("{p}sysctls.{key}");
        if let Err(e) = namespaced_sysctl(key, c.host_network) {
            errs.add(path, e);
        } else if value.is_empty() || value.contains(['\n', '\0']) {
            errs.add(path, "the value is empty or has a line break");
        }
    }
    let mut seen = HashSet::new();
    for (i, u) in c.ulimits.iter().enumerate() {
        let path = format!("{p}ulimits[{i}]");
        if !ULIMITS.contains(&u.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!(
                    "{} is not a ulimit: use one of {}",
                    shown(&u.name),
                    ULIMITS.join(", ")
                ),
            );
        } else if !seen.insert(u.name.as_str()) {
            errs.add(format!("{path}.name"), format!("{} is set twice", u.name));
        }
        if u.soft > u.hard {
            errs.add(
                format!("{path}.soft"),
                format!("{} is more than hard ({})", u.soft, u.hard),
            );
        }
    }
    if let Some(l) = &c.limits {
        let requested = c.resources.clone().unwrap_or_default();
        check_limit(
            errs,
            &format!("{p}limits.cpu"),
            &l.cpu,
            &requested.cpu,
            parse_cpu,
        );
        check_limit(
            errs,
            &format!("{p}limits.memory"),
            &l.memory,
            &requested.memory,
            parse_memory,
        );
    }
    if c.pids_limit < -1 {
        errs.add(format!("{p}pidsLimit"), format!("{} is not a limit: give a number of processes, 0 for the default ({DEFAULT_PIDS_LIMIT}) or -1 for none", c.pids_limit));
    }
}

/// A limit must parse, be more than 0, and be at least what is requested.
fn check_limit<E: std::fmt::Display>(
    errs: &mut Errors,
    path: &str,
    limit: &str,
    request: &str,
    parse: impl Fn(&str) -> Result<u64, E>,
) {
    if limit.is_empty() {
        return;
    }
    match parse(limit) {
        Err(e) => errs.add(path, e.to_string()),
        Ok(0) => errs.add(path, "must be more than 0: remove it for no limit"),
        Ok(l) => {
            if let Ok(r) = parse(request) {
                if !request.is_empty() && l < r {
                    errs.add(path, format!("{limit} is less than the request ({request}): a limit is at least the request"));
                }
            }
        }
    }
}
