//! Linux capabilities, listed once: every one (what `ALL` means), Docker's default set
//! for unprivileged containers, and the canonical spelling of a name.

/// Docker's default capability set for unprivileged containers.
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Every Linux capability up to 5.9 (what runc 1.1 knows): what `ALL` means.
pub const ALL: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
];

/// The canonical form of a capability name (`net_admin`, `CAP_NET_ADMIN` →
/// `CAP_NET_ADMIN`; `all` → `ALL`), if it is one.
pub fn canonical(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL.contains(&full.as_str()).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical_and_defaults_are_known() {
        assert_eq!(canonical("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(canonical("CAP_BPF").as_deref(), Some("CAP_BPF"));
        assert_eq!(canonical("all").as_deref(), Some("ALL"));
        assert_eq!(canonical("CAP_ALL"), None);
        assert_eq!(canonical("FLY"), None);
        assert!(DOCKER_DEFAULT.iter().all(|c| ALL.contains(c)));
    }
}
