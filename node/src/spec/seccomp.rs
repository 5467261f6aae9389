//! The container's seccomp filter. voiyd's default blocks the system calls Docker's
//! default profile blocks, as a table of rules: each names a group of calls and the
//! capability that lifts the block (as Docker lifts, say, `mount` for `CAP_SYS_ADMIN`).
//! Everything else is allowed; blocked calls fail with EPERM. See docs/security.md for
//! why a block list rather than Docker's allow list.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use std::collections::HashSet;
use voiyd_messages::validate::Seccomp;

/// One rule of the default profile.
struct Rule {
    /// The calls.
    calls: &'static [&'static str],
    /// The capability that allows them; `None`: blocked whatever the capabilities.
    unless: Option<Capability>,
}

/// The default profile's blocks, with why.
const RULES: &[Rule] = &[
    // Kernel keyrings are not namespaced.
    Rule {
        calls: &["add_key", "keyctl", "request_key"],
        unless: None,
    },
    // Mounts, namespaces, swap, quotas, handles: the host's, or an escape route.
    Rule {
        calls: &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "name_to_handle_at",
            "lookup_dcookie",
            "fanotify_init",
            "bpf",
            "perf_event_open",
        ],
        unless: Some(Capability::SysAdmin),
    },
    // Kernel modules.
    Rule {
        calls: &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "get_kernel_syms",
            "query_module",
        ],
        unless: Some(Capability::SysModule),
    },
    // Rebooting or replacing the kernel.
    Rule {
        calls: &["reboot", "kexec_load", "kexec_file_load"],
        unless: Some(Capability::SysBoot),
    },
    // The clock is the host's.
    Rule {
        calls: &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
        unless: Some(Capability::SysTime),
    },
    Rule {
        calls: &["acct"],
        unless: Some(Capability::SysPacct),
    },
    // Reading other processes' memory, comparing their kernel objects.
    Rule {
        calls: &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "userfaultfd",
        ],
        unless: Some(Capability::SysPtrace),
    },
    Rule {
        calls: &["iopl", "ioperm"],
        unless: Some(Capability::SysRawio),
    },
    // NUMA placement of memory is the host's.
    Rule {
        calls: &["mbind", "set_mempolicy", "get_mempolicy", "move_pages"],
        unless: Some(Capability::SysNice),
    },
    Rule {
        calls: &["open_by_handle_at"],
        unless: Some(Capability::DacReadSearch),
    },
    Rule {
        calls: &["syslog"],
        unless: Some(Capability::Syslog),
    },
    // io_uring bypasses the filter for the calls it makes on a process's behalf.
    Rule {
        calls: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        unless: None,
    },
    // Obsolete calls no program needs.
    Rule {
        calls: &[
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
        ],
        unless: None,
    },
];

/// EPERM, what a blocked call returns.
const EPERM: u32 = 1;

/// The filter for a task: none when privileged or unconfined, the task's own profile,
/// or the default with the blocks its capabilities lift removed.
pub fn filter(
    privileged: bool,
    seccomp: &Seccomp,
    caps: &HashSet<Capability>,
) -> Result<Option<LinuxSeccomp>, String> {
    if privileged {
        return Ok(None);
    }
    match seccomp {
        Seccomp::Unconfined => Ok(None),
        Seccomp::Profile(p) => Ok(Some(p.clone())),
        Seccomp::Default => default_profile(caps).map(Some),
    }
}

/// The calls the default profile blocks for a container with `caps`, sorted.
pub fn blocked(caps: &HashSet<Capability>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = RULES
        .iter()
        .filter(|r| r.unless.is_none_or(|c| !caps.contains(&c)))
        .flat_map(|r| r.calls.iter().copied())
        .collect();
    out.sort_unstable();
    out
}

fn default_profile(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, String> {
    let deny: LinuxSyscall = LinuxSyscallBuilder::default()
        .names(
            blocked(caps)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()
        .map_err(|e| e.to_string())?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(vec![deny])
        .build()
        .map_err(|e| e.to_string())
}

/// The native architecture and the 32-bit ones its kernel also runs, so that a 32-bit
/// call cannot go round the filter.
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => vec![Arch::ScmpArchNative],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn caps(names: &[&str]) -> HashSet<Capability> {
        names
            .iter()
            .map(|n| Capability::from_str(n.trim_start_matches("CAP_")).unwrap())
            .collect()
    }

    #[test]
    fn capabilities_lift_their_blocks() {
        let plain = blocked(&caps(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]));
        for call in [
            "unshare",
            "mount",
            "keyctl",
            "reboot",
            "bpf",
            "io_uring_setup",
        ] {
            assert!(plain.contains(&call), "{call} not blocked");
        }
        assert!(
            !plain.contains(&"ptrace"),
            "ptrace is allowed, as Docker does on >= 4.8"
        );
        let admin = blocked(&caps(&["CAP_SYS_ADMIN"]));
        assert!(!admin.contains(&"unshare") && !admin.contains(&"mount"));
        // Some blocks no capability lifts.
        assert!(admin.contains(&"keyctl") && admin.contains(&"reboot"));
    }

    #[test]
    fn privileged_and_unconfined_have_no_filter_and_a_profile_is_kept() {
        let none = HashSet::new();
        assert_eq!(filter(true, &Seccomp::Default, &none).unwrap(), None);
        assert_eq!(filter(false, &Seccomp::Unconfined, &none).unwrap(), None);
        let own = voiyd_messages::validate::parse_seccomp(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let f = filter(false, &own, &none).unwrap().unwrap();
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        let d = filter(false, &Seccomp::Default, &none).unwrap().unwrap();
        assert_eq!(d.default_action(), LinuxSeccompAction::ScmpActAllow);
        let calls = d.syscalls().as_ref().unwrap();
        assert_eq!(calls[0].errno_ret(), Some(EPERM));
    }
}
