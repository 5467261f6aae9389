//! The OCI runtime spec of a task's container: a pure function of the task, the image config
//! and what the node prepared (rootfs, network namespace, mounts). Docker's defaults and
//! Kubernetes' command/args rules apply, so images behave as they do elsewhere.

mod mounts;
pub mod seccomp;
mod user;

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Spec, User,
};
use voiyd_messages::capabilities;
use voiyd_messages::quantity::{parse_cpu, parse_memory};
use voiyd_messages::v1::TaskConfig;

use crate::image::ImageConfig;
use mounts::mounts;
use user::resolve_user;

/// PATH for containers whose image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// CFS period used for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Open-file limit of container processes (containerd's default; higher values fail where the
/// node's own hard limit is lower).
pub const NOFILE_LIMIT: u64 = 1024;

/// Paths Docker hides from unprivileged containers.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths Docker makes read-only for unprivileged containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Why a spec could not be built. Each message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Neither task nor image say what to run.
    #[error("nothing to run: the image has no ENTRYPOINT or CMD; set command or args in the task")]
    NoCommand,
    /// A user name is not in the image.
    #[error(
        "user '{0}' not found in the image's /etc/passwd; use a uid or a user the image defines"
    )]
    UserNotFound(String),
    /// A group name is not in the image.
    #[error(
        "group '{0}' not found in the image's /etc/group; use a gid or a group the image defines"
    )]
    GroupNotFound(String),
    /// A path that must be absolute is not.
    #[error("{what} '{path}' must be an absolute path")]
    RelativePath {
        /// Which setting.
        what: &'static str,
        /// The value.
        path: String,
    },
    /// The task's seccomp setting cannot be used.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// Unknown capability name.
    #[error("unknown capability '{0}'; use names like NET_ADMIN or CAP_NET_ADMIN, or ALL")]
    UnknownCapability(String),
    /// A resource quantity does not parse.
    #[error("resources.{field}: {reason}")]
    Quantity {
        /// cpu or memory.
        field: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// An environment variable without a name.
    #[error("environment variable with an empty name (value '{0}')")]
    EmptyEnvName(String),
    /// oci-spec refused to assemble a part of the spec (a bug: every field is set).
    #[error("cannot assemble the runtime spec: {0}")]
    Build(String),
}

/// What kind of filesystem a task mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path (volumes resolve to their host directory).
    Bind,
    /// A fresh tmpfs.
    Tmpfs,
}

/// A task mount the node resolved to a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    /// Host path (ignored for tmpfs).
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Bind or tmpfs.
    pub kind: MountKind,
    /// Extra mount options, e.g. `ro`, `size=64m`.
    pub options: Vec<String>,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    /// Task name: becomes the hostname.
    pub task_name: &'a str,
    /// The task's desired configuration.
    pub config: &'a TaskConfig,
    /// The image's runtime defaults.
    pub image: &'a ImageConfig,
    /// Root filesystem path (relative to the bundle, usually `rootfs`).
    pub rootfs_path: String,
    /// Contents of the image's `/etc/passwd`, if it has one.
    pub passwd: Option<String>,
    /// Contents of the image's `/etc/group`, if it has one.
    pub group: Option<String>,
    /// Network namespace to join; `None` with host networking or to let runc create one.
    pub netns_path: Option<String>,
    /// Task mounts, resolved to host paths.
    pub mounts: Vec<ResolvedMount>,
    /// Host file bind-mounted as `/etc/hosts`.
    pub hosts_path: Option<String>,
    /// Host file bind-mounted as `/etc/resolv.conf`.
    pub resolv_path: Option<String>,
    /// cgroup path, e.g. `/voiyd/<node>/<task>` or `system.slice:voiyd:<task>`.
    pub cgroups_path: String,
}

/// The container's host name: the task's `hostname`, else the task's name.
pub fn hostname<'a>(task: &'a str, cfg: &'a TaskConfig) -> &'a str {
    non_empty(&cfg.hostname).unwrap_or(task)
}

/// The process's rlimits: the open-file default, then the task's `ulimits` (by name;
/// validation admits only names of [`voiyd_messages::validate::ULIMITS`]).
fn rlimits(cfg: &TaskConfig) -> Result<Vec<PosixRlimit>, SpecError> {
    let build = |typ: PosixRlimitType, soft: u64, hard: u64| {
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|e| SpecError::Build(e.to_string()))
    };
    let mut out = vec![build(
        PosixRlimitType::RlimitNofile,
        NOFILE_LIMIT,
        NOFILE_LIMIT,
    )?];
    for u in &cfg.ulimits {
        // oci-spec names them RLIMIT_NOFILE and so on.
        let typ = PosixRlimitType::from_str(&format!("RLIMIT_{}", u.name.to_ascii_uppercase()))
            .map_err(|_| SpecError::Build(format!("unknown ulimit {}", u.name)))?;
        out.retain(|r| r.typ() != typ);
        out.push(build(typ, u.soft, u.hard)?);
    }
    Ok(out)
}

/// Builds the OCI runtime spec (config.json) for a task's container.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let cfg = input.config;
    let privileged = cfg.privileged;
    let args = process_args(cfg, input.image)?;
    let cwd = working_dir(cfg, input.image)?;
    let who = resolve_user(
        non_empty(&cfg.user).unwrap_or(&input.image.user),
        input.passwd.as_deref(),
        input.group.as_deref(),
    )?;
    let host = hostname(input.task_name, cfg);
    let env = environment(cfg, input.image, host, &who.home)?;
    let caps = capabilities(cfg)?;
    let mounts = mounts(input)?;
    let wanted =
        voiyd_messages::validate::parse_seccomp(&cfg.seccomp).map_err(SpecError::Seccomp)?;
    let filter = seccomp::filter(privileged, &wanted, &caps).map_err(SpecError::Seccomp)?;

    let namespace = |typ: LinuxNamespaceType, path: Option<&String>| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ).set_path(path.map(Into::into));
        ns
    };
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None),
        namespace(LinuxNamespaceType::Ipc, None),
        namespace(LinuxNamespaceType::Uts, None),
        namespace(LinuxNamespaceType::Mount, None),
    ];
    if !cfg.host_network {
        namespaces.push(namespace(
            LinuxNamespaceType::Network,
            input.netns_path.as_ref(),
        ));
    }
    let paths = |p: &[&str]| (!privileged).then(|| p.iter().map(|s| s.to_string()).collect());
    let mut linux = LinuxBuilder::default()
        .cgroups_path(input.cgroups_path.clone())
        .namespaces(namespaces)
        .resources(resources(cfg)?)
        .build()
        .map_err(|e| SpecError::Build(e.to_string()))?;
    linux
        .set_masked_paths(paths(MASKED_PATHS))
        .set_readonly_paths(paths(READONLY_PATHS))
        .set_seccomp(filter)
        .set_sysctl((!cfg.sysctls.is_empty()).then(|| {
            cfg.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }));

    let mut user = User::default();
    user.set_uid(who.uid).set_gid(who.gid).set_additional_gids(
        (!who.additional_gids.is_empty()).then(|| who.additional_gids.clone()),
    );
    let mut all_caps = LinuxCapabilities::default();
    all_caps
        .set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    let mut process = Process::default();
    process
        .set_terminal(Some(false))
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(cwd.into())
        .set_capabilities(Some(all_caps))
        .set_rlimits(Some(rlimits(cfg)?))
        // Docker's `no-new-privileges`: setuid binaries cannot raise a process's rights.
        .set_no_new_privileges(Some(!(privileged || cfg.allow_privilege_escalation)));

    let mut root = Root::default();
    root.set_path(input.rootfs_path.clone().into())
        .set_readonly(Some(cfg.read_only_root_filesystem));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".into())
        .set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(Some(host.to_string()))
        .set_mounts(Some(mounts))
        .set_annotations(None)
        .set_linux(Some(linux));
    Ok(spec)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Kubernetes rules: `command` replaces ENTRYPOINT and then CMD is dropped too; `args` replaces CMD.
fn process_args(cfg: &TaskConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match (cfg.command.is_empty(), cfg.args.is_empty()) {
        (true, true) => (&image.entrypoint, &image.cmd),
        (true, false) => (&image.entrypoint, &cfg.args),
        (false, true) => (&cfg.command, &Vec::new()),
        (false, false) => (&cfg.command, &cfg.args),
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

fn working_dir(cfg: &TaskConfig, image: &ImageConfig) -> Result<String, SpecError> {
    let cwd = non_empty(&cfg.working_dir)
        .or_else(|| non_empty(&image.working_dir))
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativePath {
            what: "working directory",
            path: cwd.to_string(),
        });
    }
    Ok(cwd.to_string())
}

/// Image env overridden by the task's, in image order with new names appended; PATH, HOSTNAME
/// and HOME are added when neither sets them (as Docker does).
fn environment(
    cfg: &TaskConfig,
    image: &ImageConfig,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    for kv in &image.env {
        let (n, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if !n.is_empty() {
            set(n, v);
        }
    }
    for e in &cfg.envvars {
        if e.name.is_empty() {
            return Err(SpecError::EmptyEnvName(e.value.clone()));
        }
        set(&e.name, &e.value);
    }
    let (path_name, path_value) = DEFAULT_PATH.split_once('=').unwrap_or_default();
    for (name, value) in [
        (path_name, path_value),
        ("HOSTNAME", hostname),
        ("HOME", home),
    ] {
        if !env.iter().any(|(n, _)| n == name) {
            env.push((name.to_string(), value.to_string()));
        }
    }
    Ok(env.into_iter().map(|(n, v)| format!("{n}={v}")).collect())
}

/// `net_admin` / `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `all` → `ALL`.
fn normalize_cap(name: &str) -> Result<String, SpecError> {
    capabilities::canonical(name.trim())
        .ok_or_else(|| SpecError::UnknownCapability(name.to_string()))
}

/// Docker's rules: privileged gets all; `add: [ALL]` gives all but the dropped ones;
/// `drop: [ALL]` gives only the added ones; otherwise default minus drops plus adds.
fn capabilities(cfg: &TaskConfig) -> Result<HashSet<Capability>, SpecError> {
    if cfg.privileged {
        return typed(capabilities::ALL.iter().map(|s| s.to_string()));
    }
    let (add, drop) = match &cfg.capabilities {
        Some(c) => (
            c.add
                .iter()
                .map(|s| normalize_cap(s))
                .collect::<Result<Vec<_>, _>>()?,
            c.drop
                .iter()
                .map(|s| normalize_cap(s))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let all = "ALL".to_string();
    let caps: BTreeSet<String> = if add.contains(&all) {
        capabilities::ALL
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    } else if drop.contains(&all) {
        add.into_iter().collect()
    } else {
        capabilities::DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .chain(add)
            .collect()
    };
    typed(caps)
}

/// `CAP_NET_ADMIN` → [`Capability::NetAdmin`] (oci-spec spells its names without `CAP_`).
fn typed(names: impl IntoIterator<Item = String>) -> Result<HashSet<Capability>, SpecError> {
    names
        .into_iter()
        .map(|n| {
            Capability::from_str(n.trim_start_matches("CAP_"))
                .map_err(|_| SpecError::UnknownCapability(n.clone()))
        })
        .collect()
}

fn resources(cfg: &TaskConfig) -> Result<LinuxResources, SpecError> {
    // Unprivileged: deny every device except runc's defaults (null, zero, tty, …), which runc adds.
    let mut devices = LinuxDeviceCgroup::default();
    devices
        .set_allow(cfg.privileged)
        .set_access(Some("rwm".into()));
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![devices]));
    let pids = match cfg.pids_limit {
        0 => Some(voiyd_messages::validate::DEFAULT_PIDS_LIMIT),
        n if n < 0 => None,
        n => Some(n),
    };
    if let Some(limit) = pids {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        res.set_pids(Some(p));
    }
    // The kernel enforces `limits`; `resources` is what placement reserved and sets the
    // CPU weight. Without limits, the requests are the limits.
    let (req, lim) = (
        cfg.resources.clone().unwrap_or_default(),
        cfg.limits.clone().unwrap_or_default(),
    );
    let cpu_of = |q: &str| {
        parse_cpu(q).map_err(|e| SpecError::Quantity {
            field: "cpu",
            reason: e.to_string(),
        })
    };
    if let Some(mem) = non_empty(&lim.memory).or(non_empty(&req.memory)) {
        let limit = parse_memory(mem).map_err(|e| SpecError::Quantity {
            field: "memory",
            reason: e.to_string(),
        })?;
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(i64::try_from(limit).unwrap_or(i64::MAX)));
        res.set_memory(Some(memory));
    }
    // CPU is compressible: the request sets the weight only, and a quota comes from an
    // explicit limit (as in Kubernetes, and Nomad without cpu_hard_limit). A quota made
    // from the request throttled every burst, container start included: runc's init runs
    // in the task's cgroup, and at 100m it waited out most of a 100 ms period.
    let limit = non_empty(&lim.cpu).map(cpu_of).transpose()?;
    let weight = match non_empty(&req.cpu) {
        Some(r) => Some(cpu_of(r)?),
        None => limit,
    };
    if weight.is_some() || limit.is_some() {
        let mut c = LinuxCpu::default();
        if let Some(w) = weight {
            // Kubernetes' conversion: shares = millicores * 1024 / 1000 (at least 2).
            c.set_shares(Some((w.saturating_mul(1024) / 1000).max(2)));
        }
        if let Some(millis) = limit {
            c.set_quota(Some(
                i64::try_from(millis.saturating_mul(CPU_PERIOD_US / 1000)).unwrap_or(i64::MAX),
            ))
            .set_period(Some(CPU_PERIOD_US));
        }
        res.set_cpu(Some(c));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use voiyd_messages::v1::{Capabilities, EnvVar, Resources};

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        app:x:1000:1000:app:/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nvideo:x:44:app\nnogroup:x:65534:\n";

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "A=image".into(),
                "B=image".into(),
            ],
            working_dir: "/srv".into(),
            user: String::new(),
            ..Default::default()
        }
    }

    fn value(s: Spec) -> Value {
        serde_json::to_value(s).expect("a spec serializes")
    }

    fn spec_with(cfg: &TaskConfig, img: &ImageConfig) -> Result<Value, SpecError> {
        build_spec(&SpecInput {
            netns_path: Some("/var/run/netns/web-1".into()),
            ..input(cfg, img)
        })
        .map(value)
    }

    fn spec(cfg: &TaskConfig) -> Value {
        spec_with(cfg, &image()).unwrap()
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    fn env_of(s: &Value) -> Vec<String> {
        strs(&s["process"]["env"])
    }

    #[test]
    fn args_default_to_entrypoint_then_cmd() {
        let s = spec(&TaskConfig::default());
        assert_eq!(
            strs(&s["process"]["args"]),
            ["/entry", "serve", "--port=80"]
        );
    }

    #[test]
    fn task_args_replace_cmd_and_keep_entrypoint() {
        let cfg = TaskConfig {
            args: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(strs(&spec(&cfg)["process"]["args"]), ["/entry", "x"]);
    }

    #[test]
    fn task_command_replaces_entrypoint_and_drops_cmd() {
        let cfg = TaskConfig {
            command: vec!["/bin/sh".into(), "-c".into()],
            ..Default::default()
        };
        assert_eq!(strs(&spec(&cfg)["process"]["args"]), ["/bin/sh", "-c"]);
        let cfg = TaskConfig {
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            ..Default::default()
        };
        assert_eq!(
            strs(&spec(&cfg)["process"]["args"]),
            ["/bin/sh", "-c", "echo hi"]
        );
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let img = ImageConfig::default();
        let e = spec_with(&TaskConfig::default(), &img).unwrap_err();
        assert_eq!(e, SpecError::NoCommand);
        // args alone are enough when the image has no entrypoint.
        let cfg = TaskConfig {
            args: vec!["/bin/true".into()],
            ..Default::default()
        };
        let s = spec_with(&cfg, &img).unwrap();
        assert_eq!(strs(&s["process"]["args"]), ["/bin/true"]);
    }

    #[test]
    fn env_is_image_env_overridden_by_task_env() {
        let cfg = TaskConfig {
            envvars: vec![
                EnvVar {
                    name: "B".into(),
                    value: "task".into(),
                    ..Default::default()
                },
                EnvVar {
                    name: "C".into(),
                    value: "new=with=equals".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let env = env_of(&spec(&cfg));
        assert_eq!(
            env,
            [
                "PATH=/opt/bin:/bin",
                "A=image",
                "B=task",
                "C=new=with=equals",
                "HOSTNAME=web-1",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn default_path_when_image_sets_none() {
        let img = ImageConfig {
            cmd: vec!["x".into()],
            ..Default::default()
        };
        let env = env_of(&spec_with(&TaskConfig::default(), &img).unwrap());
        assert!(env.contains(&DEFAULT_PATH.to_string()), "{env:?}");
        // A task-provided PATH wins over the default.
        let cfg = TaskConfig {
            envvars: vec![EnvVar {
                name: "PATH".into(),
                value: "/x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let env = env_of(&spec_with(&cfg, &img).unwrap());
        assert!(env.contains(&"PATH=/x".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    }

    #[test]
    fn empty_env_name_is_rejected() {
        let cfg = TaskConfig {
            envvars: vec![EnvVar {
                name: "".into(),
                value: "v".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            spec_with(&cfg, &image()),
            Err(SpecError::EmptyEnvName(_))
        ));
    }

    #[test]
    fn cwd_prefers_task_then_image_then_root() {
        assert_eq!(spec(&TaskConfig::default())["process"]["cwd"], "/srv");
        let cfg = TaskConfig {
            working_dir: "/data".into(),
            ..Default::default()
        };
        assert_eq!(spec(&cfg)["process"]["cwd"], "/data");
        let img = ImageConfig {
            cmd: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(
            spec_with(&TaskConfig::default(), &img).unwrap()["process"]["cwd"],
            "/"
        );
        let cfg = TaskConfig {
            working_dir: "data".into(),
            ..Default::default()
        };
        assert!(matches!(
            spec_with(&cfg, &image()),
            Err(SpecError::RelativePath { .. })
        ));
    }

    fn user_of(user: &str) -> Result<Value, SpecError> {
        let cfg = TaskConfig {
            user: user.into(),
            ..Default::default()
        };
        spec_with(&cfg, &image()).map(|s| s["process"]["user"].clone())
    }

    #[test]
    fn default_user_is_root() {
        assert_eq!(user_of("").unwrap(), json!({"uid": 0, "gid": 0}));
    }

    #[test]
    fn user_name_resolves_uid_gid_and_supplementary_groups() {
        assert_eq!(
            user_of("app").unwrap(),
            json!({"uid": 1000, "gid": 1000, "additionalGids": [44, 50]})
        );
        let cfg = TaskConfig {
            user: "app".into(),
            ..Default::default()
        };
        assert!(env_of(&spec(&cfg)).contains(&"HOME=/home/app".to_string()));
    }

    #[test]
    fn numeric_user_and_group_pass_through() {
        assert_eq!(user_of("4242:77").unwrap(), json!({"uid": 4242, "gid": 77}));
        // A uid without gid: its passwd entry's gid, or 0 when it has none.
        assert_eq!(user_of("4242").unwrap(), json!({"uid": 4242, "gid": 0}));
        assert_eq!(
            user_of("65534").unwrap(),
            json!({"uid": 65534, "gid": 65534})
        );
    }

    #[test]
    fn group_names_resolve_via_etc_group() {
        assert_eq!(
            user_of("app:staff").unwrap(),
            json!({"uid": 1000, "gid": 50, "additionalGids": [44]})
        );
        assert_eq!(user_of("1000:app").unwrap()["gid"], 1000);
    }

    #[test]
    fn image_user_applies_unless_task_overrides() {
        let img = ImageConfig {
            user: "1000:1000".into(),
            ..image()
        };
        let s = spec_with(&TaskConfig::default(), &img).unwrap();
        assert_eq!(s["process"]["user"]["uid"], 1000);
        let cfg = TaskConfig {
            user: "0".into(),
            ..Default::default()
        };
        assert_eq!(spec_with(&cfg, &img).unwrap()["process"]["user"]["uid"], 0);
    }

    #[test]
    fn unknown_user_or_group_is_an_error() {
        assert_eq!(
            user_of("x").unwrap_err().to_string(),
            "user 'x' not found in the image's /etc/passwd; use a uid or a user the image defines"
        );
        assert_eq!(
            user_of("app:nope").unwrap_err(),
            SpecError::GroupNotFound("nope".into())
        );
        // Without an /etc/passwd only numeric users work.
        let cfg = TaskConfig {
            user: "app".into(),
            ..Default::default()
        };
        let img = image();
        let e = build_spec(&SpecInput {
            passwd: None,
            group: None,
            ..input(&cfg, &img)
        })
        .unwrap_err();
        assert_eq!(e, SpecError::UserNotFound("app".into()));
    }

    fn input<'a>(cfg: &'a TaskConfig, img: &'a ImageConfig) -> SpecInput<'a> {
        SpecInput {
            task_name: "web-1",
            config: cfg,
            image: img,
            rootfs_path: "rootfs".into(),
            passwd: Some(PASSWD.into()),
            group: Some(GROUP.into()),
            netns_path: None,
            mounts: vec![],
            hosts_path: None,
            resolv_path: None,
            cgroups_path: "/voiyd/web-1".into(),
        }
    }

    #[test]
    fn isolation_settings_reach_the_spec() {
        use voiyd_messages::v1::Ulimit;
        // Defaults: no new privileges, a pids limit, the open-file limit.
        let s = spec(&TaskConfig::default());
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 4096);
        assert_eq!(
            s["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        let s = spec(&TaskConfig {
            hostname: "db".into(),
            read_only_root_filesystem: true,
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            ulimits: vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 512,
                    hard: 512,
                },
                Ulimit {
                    name: "nproc".into(),
                    soft: 64,
                    hard: 128,
                },
            ],
            pids_limit: -1,
            allow_privilege_escalation: true,
            resources: Some(Resources {
                cpu: "250m".into(),
                memory: "64Mi".into(),
            }),
            limits: Some(Resources {
                cpu: "1".into(),
                memory: "128Mi".into(),
            }),
            ..Default::default()
        });
        assert_eq!(s["hostname"], "db");
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["sysctl"], json!({"net.core.somaxconn": "1024"}));
        assert_eq!(
            s["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512},
                {"type": "RLIMIT_NPROC", "hard": 128, "soft": 64}
            ])
        );
        assert!(s["linux"]["resources"].get("pids").is_none());
        assert_eq!(s["process"]["noNewPrivileges"], false);
        // Limits bound the cgroup; the request sets the CPU weight.
        let r = &s["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 128 * 1024 * 1024);
        assert_eq!(r["cpu"]["quota"], 100_000);
        assert_eq!(r["cpu"]["shares"], 256);
        assert!(s["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("HOSTNAME=db")));
        // Privileged implies escalation.
        let s = spec(&TaskConfig {
            privileged: true,
            ..Default::default()
        });
        assert_eq!(s["process"]["noNewPrivileges"], false);
    }

    #[test]
    fn hostname_root_and_cgroups_path() {
        let s = spec(&TaskConfig::default());
        assert_eq!(s["hostname"], "web-1");
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(s["linux"]["cgroupsPath"], "/voiyd/web-1");
        assert_eq!(s["ociVersion"], "1.0.2");
    }

    /// The bounding set, sorted (oci-spec keeps capabilities in a set).
    fn caps(cfg: &TaskConfig) -> Vec<String> {
        let s = spec(cfg);
        let sorted = |v: &Value| {
            let mut c = strs(v);
            c.sort();
            c
        };
        let b = sorted(&s["process"]["capabilities"]["bounding"]);
        assert_eq!(b, sorted(&s["process"]["capabilities"]["effective"]));
        assert_eq!(b, sorted(&s["process"]["capabilities"]["permitted"]));
        b
    }

    fn with_caps(add: &[&str], drop: &[&str]) -> TaskConfig {
        TaskConfig {
            capabilities: Some(Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: drop.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn default_capabilities_are_dockers() {
        let c = caps(&TaskConfig::default());
        let mut want: Vec<String> = capabilities::DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(c, want);
        assert!(!c.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn cap_add_and_drop_accept_names_with_or_without_prefix() {
        let c = caps(&with_caps(
            &["NET_ADMIN", "cap_sys_time"],
            &["CAP_CHOWN", "kill"],
        ));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(c.contains(&"CAP_SYS_TIME".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert!(c.contains(&"CAP_SETUID".to_string()));
    }

    #[test]
    fn drop_all_keeps_only_added() {
        assert_eq!(
            caps(&with_caps(&["NET_BIND_SERVICE"], &["ALL"])),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert!(caps(&with_caps(&[], &["all"])).is_empty());
    }

    #[test]
    fn add_all_gives_everything_but_drops() {
        let c = caps(&with_caps(&["ALL"], &["SYS_ADMIN"]));
        assert_eq!(c.len(), capabilities::ALL.len() - 1);
        assert!(!c.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn unknown_capability_is_an_error() {
        let e = spec_with(&with_caps(&["FLY"], &[]), &image()).unwrap_err();
        assert_eq!(e, SpecError::UnknownCapability("FLY".into()));
    }

    #[test]
    fn privileged_gets_all_caps_no_masks_and_all_devices() {
        let cfg = TaskConfig {
            privileged: true,
            capabilities: Some(Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            ..Default::default()
        };
        let s = spec(&cfg);
        assert_eq!(
            strs(&s["process"]["capabilities"]["bounding"]).len(),
            capabilities::ALL.len()
        );
        assert!(s["linux"].get("maskedPaths").is_none());
        assert!(s["linux"].get("readonlyPaths").is_none());
        assert!(s["linux"].get("seccomp").is_none());
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        let sys = mount_at(&s, "/sys").unwrap();
        assert!(strs(&sys["options"]).contains(&"rw".to_string()));
    }

    #[test]
    fn unprivileged_has_docker_masked_and_readonly_paths_and_denies_devices() {
        let s = spec(&TaskConfig::default());
        assert_eq!(strs(&s["linux"]["maskedPaths"]), MASKED_PATHS);
        assert!(strs(&s["linux"]["maskedPaths"]).contains(&"/proc/kcore".to_string()));
        assert_eq!(strs(&s["linux"]["readonlyPaths"]), READONLY_PATHS);
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
    }

    fn mount_at(s: &Value, dest: &str) -> Option<Value> {
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .cloned()
    }

    #[test]
    fn default_mounts_are_present_with_sys_and_cgroup_read_only() {
        let s = spec(&TaskConfig::default());
        let dests: Vec<String> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert!(strs(&mount_at(&s, "/sys").unwrap()["options"]).contains(&"ro".to_string()));
        let cg = mount_at(&s, "/sys/fs/cgroup").unwrap();
        assert_eq!(cg["type"], "cgroup");
        assert!(strs(&cg["options"]).contains(&"ro".to_string()));
        assert_eq!(mount_at(&s, "/proc").unwrap()["type"], "proc");
    }

    #[test]
    fn task_mounts_hosts_and_resolv_are_added_parents_first() {
        let cfg = TaskConfig::default();
        let img = image();
        let s = build_spec(&SpecInput {
            mounts: vec![
                ResolvedMount {
                    source: "/var/lib/voiyd/volumes/v/sub".into(),
                    destination: "/data/sub".into(),
                    kind: MountKind::Bind,
                    options: vec!["ro".into()],
                },
                ResolvedMount {
                    source: "/var/lib/voiyd/volumes/v".into(),
                    destination: "/data/".into(),
                    kind: MountKind::Bind,
                    options: vec![],
                },
                ResolvedMount {
                    source: String::new(),
                    destination: "/dev/shm".into(),
                    kind: MountKind::Tmpfs,
                    options: vec!["size=1g".into()],
                },
            ],
            hosts_path: Some("/run/voiyd/web-1/hosts".into()),
            resolv_path: Some("/run/voiyd/web-1/resolv.conf".into()),
            ..input(&cfg, &img)
        })
        .map(value)
        .unwrap();
        let mounts = s["mounts"].as_array().unwrap();
        let pos = |d: &str| mounts.iter().position(|m| m["destination"] == d).unwrap();
        assert!(pos("/data") < pos("/data/sub"));
        let data = &mounts[pos("/data")];
        assert_eq!(data["type"], "bind");
        assert_eq!(data["source"], "/var/lib/voiyd/volumes/v");
        assert_eq!(
            strs(&mounts[pos("/data/sub")]["options"]),
            ["rbind", "rprivate", "ro"]
        );
        // The task's /dev/shm replaces the default one.
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m["destination"] == "/dev/shm")
                .count(),
            1
        );
        assert_eq!(
            strs(&mounts[pos("/dev/shm")]["options"]),
            ["nosuid", "nodev", "size=1g"]
        );
        assert_eq!(
            mounts[pos("/etc/hosts")]["source"],
            "/run/voiyd/web-1/hosts"
        );
        assert_eq!(mounts[pos("/etc/resolv.conf")]["type"], "bind");
    }

    #[test]
    fn relative_mount_paths_are_rejected() {
        let cfg = TaskConfig::default();
        let img = image();
        let e = build_spec(&SpecInput {
            mounts: vec![ResolvedMount {
                source: "/x".into(),
                destination: "data".into(),
                kind: MountKind::Bind,
                options: vec![],
            }],
            ..input(&cfg, &img)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "mount destination 'data' must be an absolute path"
        );
    }

    fn ns_types(s: &Value) -> Vec<Value> {
        s["linux"]["namespaces"].as_array().unwrap().clone()
    }

    #[test]
    fn namespaces_join_given_netns() {
        let s = spec(&TaskConfig::default());
        let ns = ns_types(&s);
        for t in ["pid", "ipc", "uts", "mount"] {
            assert!(ns.contains(&json!({"type": t})), "{t}");
        }
        assert!(ns.contains(&json!({"type": "network", "path": "/var/run/netns/web-1"})));
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let cfg = TaskConfig {
            host_network: true,
            ..Default::default()
        };
        let ns = ns_types(&spec(&cfg));
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert_eq!(ns.len(), 4);
    }

    #[test]
    fn no_netns_path_creates_a_fresh_network_namespace() {
        let cfg = TaskConfig::default();
        let img = image();
        let s = value(build_spec(&input(&cfg, &img)).unwrap());
        assert!(ns_types(&s).contains(&json!({"type": "network"})));
    }

    #[test]
    fn resources_convert_memory_and_cpu() {
        let cfg = TaskConfig {
            resources: Some(Resources {
                cpu: "500m".into(),
                memory: "256Mi".into(),
            }),
            ..Default::default()
        };
        let r = &spec(&cfg)["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 268_435_456u64);
        // A request weighs; it does not cap.
        assert_eq!(r["cpu"]["shares"], 512);
        assert!(r["cpu"].get("quota").is_none(), "{r}");
        let cfg = TaskConfig {
            limits: Some(Resources {
                cpu: "1.5".into(),
                memory: String::new(),
            }),
            ..Default::default()
        };
        let r = &spec(&cfg)["linux"]["resources"];
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["cpu"]["shares"], 1536);
        assert!(r.get("memory").is_none());
        assert!(spec(&TaskConfig::default())["linux"]["resources"]
            .get("cpu")
            .is_none());
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let cfg = TaskConfig {
            resources: Some(Resources {
                cpu: String::new(),
                memory: "lots".into(),
            }),
            ..Default::default()
        };
        let e = spec_with(&cfg, &image()).unwrap_err();
        assert!(e.to_string().starts_with("resources.memory: "), "{e}");
    }
}
