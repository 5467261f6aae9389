//! Task configuration: command, env, ports, mounts, capabilities, resources, placement.

use super::*;

/// The canonical form of a capability name (`CAP_NET_ADMIN`, or `ALL`), if it is one.
pub fn canonical_capability(name: &str) -> Option<String> {
    crate::capabilities::canonical(name)
}

/// Mount options a mount may carry (tmpfs also takes `size=`, `mode=`, `uid=`, `gid=`,
/// `nr_inodes=`, `nr_blocks=`).
pub(super) const MOUNT_OPTIONS: &[&str] = &[
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
pub(super) const TMPFS_KEYS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"];

/// The mount type a mount has or implies: its `type` lower-cased, else `volume` when
/// `volume` is set, `bind` when `source` is set, `None` when nothing says.
pub fn mount_type(m: &Mount) -> Option<String> {
    if !m.r#type.is_empty() {
        Some(m.r#type.to_ascii_lowercase())
    } else if !m.volume.is_empty() {
        Some("volume".into())
    } else if !m.secret.is_empty() {
        Some("secret".into())
    } else if !m.source.is_empty() {
        Some("bind".into())
    } else {
        None
    }
}

/// Checks an absolute path: starts with `/`, no NUL and no `..` component.
pub(super) fn check_abs_path(p: &str) -> Result<(), String> {
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

pub(super) fn check_one_of(value: &str, allowed: &[&str], what: &str) -> Result<(), String> {
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

pub(super) fn check_strings(errs: &mut Errors, path: &str, items: &[String], max: usize) {
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

pub(super) fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Validates a task configuration; `p` is the path prefix (`config.` or `template.`).
pub(super) fn check_config(errs: &mut Errors, p: &str, c: &TaskConfig) {
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
        if let Some(from) = &e.value_from {
            if !e.value.is_empty() {
                errs.add(format!("{path}.value"), "give value or valueFrom, not both");
            }
            if from.secret.is_empty() {
                errs.add(
                    format!("{path}.valueFrom.secret"),
                    "required: the name of a secret",
                );
            } else {
                errs.check(
                    format!("{path}.valueFrom.secret"),
                    check_name(&from.secret, MAX_NAME_LEN),
                );
            }
            errs.check(
                format!("{path}.valueFrom.key"),
                super::secret::check_key(&from.key),
            );
        }
    }
    if !c.image_pull_secret.is_empty() {
        errs.check(
            format!("{p}imagePullSecret"),
            check_name(&c.image_pull_secret, MAX_NAME_LEN),
        );
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
    super::probe::check_probes(errs, p, c);
    super::hardening::check_hardening(errs, p, c);
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

pub(super) fn check_ports(errs: &mut Errors, p: &str, ports: &[PortMapping]) {
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

pub(super) fn check_mounts(errs: &mut Errors, p: &str, mounts: &[Mount]) {
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
                "cannot tell the mount type: set `volume` (a voiyd volume), `secret` (a voiyd secret), `source` (a host path to bind) or type: tmpfs",
            ),
            Some("secret") => {
                if m.secret.is_empty() {
                    errs.add(format!("{path}.secret"), "required for a secret mount: the name of a voiyd secret");
                } else {
                    errs.check(format!("{path}.secret"), check_name(&m.secret, MAX_NAME_LEN));
                }
                if !m.source.is_empty() || !m.volume.is_empty() {
                    errs.add(format!("{path}.type"), "a secret mount takes neither source nor volume: remove them");
                }
            }
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
                if !m.source.is_empty() || !m.volume.is_empty() || !m.secret.is_empty() {
                    errs.add(format!("{path}.type"), "a tmpfs mount takes neither source nor volume: remove them");
                }
            }
            Some(_) => errs.add(
                format!("{path}.type"),
                format!("{} is not a mount type: use volume, secret, bind or tmpfs", shown(&m.r#type)),
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
pub(super) fn normalize_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

pub(super) fn check_capabilities(errs: &mut Errors, p: &str, caps: &Capabilities) {
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

pub(super) fn check_node_placement(errs: &mut Errors, p: &str, c: &TaskConfig) {
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
