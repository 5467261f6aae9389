//! The container's mounts: Docker's defaults, then `/etc/hosts` and `/etc/resolv.conf`, then
//! the task's own (parents before children). A task mount replaces a default at the same
//! destination.

use oci_spec::runtime::Mount;

use super::{MountKind, SpecError, SpecInput};

fn mount(destination: &str, kind: &str, source: &str, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some(kind.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(options));
    m
}

fn strings(options: &[&str]) -> Vec<String> {
    options.iter().map(|s| s.to_string()).collect()
}

fn default_mounts(privileged: bool) -> Vec<Mount> {
    let ro_unless_privileged = |mut opts: Vec<&'static str>| -> Vec<&'static str> {
        opts.push(if privileged { "rw" } else { "ro" });
        opts
    };
    [
        ("/proc", "proc", "proc", vec!["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "shm",
            "tmpfs",
            vec!["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            vec!["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            ro_unless_privileged(vec!["nosuid", "noexec", "nodev"]),
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            ro_unless_privileged(vec!["nosuid", "noexec", "nodev", "relatime"]),
        ),
    ]
    .into_iter()
    .map(|(dest, source, kind, opts)| mount(dest, kind, source, strings(&opts)))
    .collect()
}

/// Every mount of the container, in the order runc must make them.
pub(super) fn mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>, SpecError> {
    let mut user: Vec<(String, Mount)> = Vec::new();
    for m in &input.mounts {
        if !m.destination.starts_with('/') {
            return Err(SpecError::RelativePath {
                what: "mount destination",
                path: m.destination.clone(),
            });
        }
        let dest = m.destination.trim_end_matches('/');
        let dest = if dest.is_empty() { "/" } else { dest };
        let value = match m.kind {
            MountKind::Bind => {
                if !m.source.starts_with('/') {
                    return Err(SpecError::RelativePath {
                        what: "bind mount source",
                        path: m.source.clone(),
                    });
                }
                let mut opts = strings(&["rbind", "rprivate"]);
                opts.extend(m.options.iter().cloned());
                mount(dest, "bind", &m.source, opts)
            }
            MountKind::Tmpfs => {
                let mut opts = strings(&["nosuid", "nodev"]);
                opts.extend(m.options.iter().cloned());
                mount(dest, "tmpfs", "tmpfs", opts)
            }
        };
        user.push((dest.to_string(), value));
    }
    // Stable sort by depth: a mount at /a must precede one at /a/b or it would hide it.
    user.sort_by_key(|(dest, _)| dest.matches('/').count());
    let taken = |dest: &str| user.iter().any(|(d, _)| d == dest);

    let mut out: Vec<Mount> = default_mounts(input.config.privileged)
        .into_iter()
        .filter(|m| !taken(&m.destination().to_string_lossy()))
        .collect();
    for (dest, file) in [
        ("/etc/hosts", &input.hosts_path),
        ("/etc/resolv.conf", &input.resolv_path),
    ] {
        if let Some(src) = file {
            if !taken(dest) {
                out.push(mount(dest, "bind", src, strings(&["rbind", "rprivate"])));
            }
        }
    }
    out.extend(user.into_iter().map(|(_, m)| m));
    Ok(out)
}
