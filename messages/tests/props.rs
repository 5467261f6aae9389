//! Property tests: names, selectors, quantities, message round trips, and validation that
//! never panics.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use voiyd_messages::manifest::{self, AnyResource};
use voiyd_messages::quantity::{
    format_cpu, format_duration, format_memory, parse_cpu, parse_duration, parse_memory,
};
use voiyd_messages::selector::{Operator, Requirement, Selector};
use voiyd_messages::v1::{
    Capabilities, EnvVar, Meta, Mount, PortMapping, Resources, Task, TaskConfig, TaskStatus,
};
use voiyd_messages::validate::{
    check_label_key, check_label_value, normalize_task, validate_name, validate_task,
};

// ---------------------------------------------------------------------------------------
// Generators

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,8}([._-][A-Za-z0-9]{1,8}){0,5}"
}

fn label_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?"
}

fn label_key() -> impl Strategy<Value = String> {
    (
        option::of("[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,2}"),
        label_token(),
    )
        .prop_map(|(p, n)| match p {
            Some(p) => format!("{p}/{n}"),
            None => n,
        })
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), label_token()]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(label_key(), label_value(), 0..6)
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let set = || proptest::collection::btree_set(label_token(), 1..4);
    let op = prop_oneof![
        label_value().prop_map(Operator::Equals),
        label_value().prop_map(Operator::NotEquals),
        set().prop_map(Operator::In),
        set().prop_map(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
    ];
    (label_key(), op).prop_map(|(key, op)| Requirement { key, op })
}

/// Strings that stress text encodings: arbitrary text and YAML look-alikes.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        prop::sample::select(vec![
            "", " ", "yes", "no", "null", "~", "true", "1.0", "0x1F", "-", "- a", "a: b", "#x",
            "'", "\"", "\n", "a\nb", " lead", "trail ", "*ref", "&anchor", "!tag", "%", "@", "`",
            "{}", "[]", "1e3", ".inf", "0o17", "+1",
        ])
        .prop_map(String::from),
    ]
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,10}",
        "[a-z0-9]{1,10}:[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}",
        "127\\.0\\.0\\.1:[1-9][0-9]{0,3}/[a-z]{1,5}/[a-z0-9]{1,5}(:[a-z0-9]{1,5})?",
        "[a-z]{1,5}\\.example\\.com/[a-z]{1,5}@sha256:[0-9a-f]{64}",
    ]
}

fn env_vars() -> impl Strategy<Value = Vec<EnvVar>> {
    btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", tricky_string(), 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| EnvVar {
                name,
                value: value.replace('\0', ""),
                value_from: None,
            })
            .collect()
    })
}

fn ports() -> impl Strategy<Value = Vec<PortMapping>> {
    // Distinct host ports (or 0) keep the mappings free of clashes.
    vec(
        (
            option::of(name()),
            1u32..=65535,
            prop::sample::select(vec!["", "tcp", "udp", "UDP"]),
            prop::sample::select(vec!["", "127.0.0.1", "::1"]),
        ),
        0..4,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (name, target, proto, ip))| PortMapping {
                name: name.unwrap_or_default(),
                host_port: if i % 2 == 0 { 0 } else { 10_000 + i as u32 },
                target_port: target,
                protocol: proto.to_string(),
                host_ip: ip.to_string(),
            })
            .collect()
    })
}

fn mounts() -> impl Strategy<Value = Vec<Mount>> {
    let one = prop_oneof![
        name().prop_map(|v| ("volume", v, String::new(), vec!["ro".to_string()])),
        "/[a-z]{1,8}(/[a-z]{1,8}){0,2}".prop_map(|s| (
            "bind",
            String::new(),
            s,
            vec!["rbind".to_string(), "rprivate".to_string()]
        )),
        Just((
            "tmpfs",
            String::new(),
            String::new(),
            vec!["size=64m".to_string()]
        )),
    ];
    vec(one, 0..4).prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (ty, volume, source, options))| Mount {
                name: String::new(),
                destination: format!("/mnt/m{i}"),
                r#type: ty.to_string(),
                volume,
                source,
                options,
                secret: String::new(),
            })
            .collect()
    })
}

fn probe() -> impl Strategy<Value = Option<voiyd_messages::v1::Probe>> {
    use voiyd_messages::v1::{ExecAction, HttpGetAction, Probe, TcpSocketAction};
    option::of(
        (
            0u8..3,
            vec("[a-z/]{1,8}", 1..3),
            1u32..65_536,
            prop::sample::select(vec!["", "/", "/healthz"]),
            (0u32..4, 0u32..4, 0u32..4, 0u32..2),
        )
            .prop_map(
                |(which, command, port, path, (delay, period, fail, succeed))| Probe {
                    exec: (which == 0).then(|| ExecAction {
                        command: command.clone(),
                    }),
                    http_get: (which == 1).then(|| HttpGetAction {
                        path: path.to_string(),
                        port,
                        ..Default::default()
                    }),
                    tcp_socket: (which == 2).then(|| TcpSocketAction {
                        port,
                        ..Default::default()
                    }),
                    initial_delay_seconds: delay,
                    period_seconds: period,
                    failure_threshold: fail,
                    success_threshold: succeed,
                    ..Default::default()
                },
            ),
    )
}

prop_compose! {
    fn config()(
        image in image(),
        args in vec(tricky_string().prop_map(|s| s.replace('\0', "")), 0..4),
        command in vec("[a-z/]{1,10}", 0..3),
        envvars in env_vars(),
        mounts in mounts(),
        port_mappings in ports(),
        node_selector in labels(),
        user in prop::sample::select(vec!["", "root", "1000", "1000:1000"]),
        privileged in any::<bool>(),
        caps in option::of(vec(prop::sample::select(vec!["NET_ADMIN", "cap_sys_time", "ALL", "CAP_CHOWN"]), 0..3)),
        cpu in prop::sample::select(vec!["", "500m", "1", "0.25"]),
        memory in prop::sample::select(vec!["", "256Mi", "1g", "512M"]),
        restart in prop::sample::select(vec!["", "always", "on-failure", "never"]),
        grace in prop::sample::select(vec!["", "10s", "1m30s", "500ms"]),
        working_dir in prop::sample::select(vec!["", "/", "/app"]),
        pull in prop::sample::select(vec!["", "Always", "IfNotPresent", "never"]),
        host_network in any::<bool>(),
        on_disconnect in prop::sample::select(vec!["", "stop", "keep"]),
        node_affinity in vec(requirement().prop_map(|r| r.to_string()), 0..3),
        stopped in any::<bool>(),
        (liveness_probe, readiness_probe, startup_probe) in (probe(), probe(), probe()),
        (hostname, read_only_root_filesystem, pids_limit, allow_privilege_escalation) in (
            prop::sample::select(vec!["", "db", "db-1.local"]),
            any::<bool>(),
            prop::sample::select(vec![0i64, -1, 50]),
            any::<bool>(),
        ),
        sysctls in prop::sample::select(vec![vec![], vec![("kernel.shmmax", "68719476736")]]),
        seccomp in prop::sample::select(vec!["", "unconfined", r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#]),
    ) -> TaskConfig {
        TaskConfig {
            image,
            args,
            envvars,
            mounts,
            port_mappings,
            node_selector,
            user: user.to_string(),
            privileged,
            capabilities: caps.map(|add| Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: vec![],
            }),
            command,
            resources: (!cpu.is_empty() || !memory.is_empty()).then(|| Resources {
                cpu: cpu.to_string(),
                memory: memory.to_string(),
            }),
            restart_policy: restart.to_string(),
            stop_grace_period: grace.to_string(),
            working_dir: working_dir.to_string(),
            pull_policy: pull.to_string(),
            host_network,
            on_disconnect: on_disconnect.to_string(),
            node_affinity,
            stopped,
            liveness_probe,
            readiness_probe,
            startup_probe,
            hostname: hostname.to_string(),
            read_only_root_filesystem,
            dns: None,
            sysctls: sysctls
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ulimits: vec![],
            limits: None,
            pids_limit,
            seccomp: seccomp.to_string(),
            allow_privilege_escalation,
            image_pull_secret: String::new(),
        }
    }
}

prop_compose! {
    fn task()(
        name in name(),
        labels in labels(),
        generation in any::<u64>(),
        resource_version in any::<u64>(),
        uid in "[0-9a-f-]{0,36}",
        config in config(),
        status in option::of((tricky_string(), any::<u32>(), any::<i32>(), any::<u64>())),
    ) -> Task {
        Task {
            version: "task/v1".to_string(),
            meta: Some(Meta {
                name,
                labels,
                created: None,
                updated: None,
                generation,
                resource_version,
                uid,
            }),
            config: Some(config),
            status: status.map(|(message, pid, exit_code, pull)| TaskStatus {
                phase: "Running".into(),
                message,
                pid,
                exit_code,
                pull_bytes_done: pull,
                ..Default::default()
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_names_pass(n in name()) {
        prop_assert!(validate_name("task", &n).is_ok(), "{n}");
        prop_assert!(validate_name("node", &n).is_ok(), "{n}");
    }

    #[test]
    fn names_with_an_invalid_character_fail(
        n in name(),
        pos in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![' ', '/', '@', ':', '!', 'é', '\n', '*', '\0', '+', ',', '(', '~']),
    ) {
        let chars: Vec<char> = n.chars().collect();
        let at = pos.index(chars.len() + 1);
        let mutated: String = chars[..at].iter().chain([bad].iter()).chain(chars[at..].iter()).collect();
        let e = validate_name("task", &mutated);
        prop_assert!(e.is_err(), "{mutated:?} passed");
        prop_assert!(!e.unwrap_err().to_string().contains('\n'));
    }

    #[test]
    fn names_with_separator_at_an_edge_or_doubled_fail(
        n in name(),
        sep in prop::sample::select(vec!['.', '_', '-']),
        where_ in 0..3u8,
    ) {
        let mutated = match where_ {
            0 => format!("{sep}{n}"),
            1 => format!("{n}{sep}"),
            _ => format!("{n}{sep}{sep}{n}"),
        };
        prop_assert!(validate_name("task", &mutated).is_err(), "{mutated:?} passed");
    }

    #[test]
    fn generated_labels_are_valid(k in label_key(), v in label_value()) {
        prop_assert!(check_label_key(&k).is_ok(), "{k}");
        prop_assert!(check_label_value(&v).is_ok(), "{v}");
    }

    #[test]
    fn selector_display_parse_round_trips(reqs in vec(requirement(), 0..6)) {
        let s = Selector::from_requirements(reqs);
        let text = s.to_string();
        let back = Selector::parse(&text);
        prop_assert_eq!(back.as_ref(), Ok(&s), "{}", text);
        prop_assert_eq!(back.unwrap().to_string(), text);
    }

    #[test]
    fn selector_from_map_matches_its_map(l in labels(), extra in labels()) {
        let s = Selector::from_map(&l);
        prop_assert!(s.matches(&l));
        let mut more = extra;
        more.extend(l.clone());
        prop_assert!(s.matches(&more));
        prop_assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn selector_negations_are_complements(r in requirement(), l in labels()) {
        let flipped = Requirement {
            key: r.key.clone(),
            op: match &r.op {
                Operator::Equals(v) => Operator::NotEquals(v.clone()),
                Operator::NotEquals(v) => Operator::Equals(v.clone()),
                Operator::In(s) => Operator::NotIn(s.clone()),
                Operator::NotIn(s) => Operator::In(s.clone()),
                Operator::Exists => Operator::DoesNotExist,
                Operator::DoesNotExist => Operator::Exists,
            },
        };
        prop_assert_ne!(r.matches(&l), flipped.matches(&l));
    }

    #[test]
    fn memory_format_parse_round_trips(n in any::<u64>(), shift in 0u32..64) {
        prop_assert_eq!(parse_memory(&format_memory(n)), Ok(n));
        let m = n >> shift;
        prop_assert_eq!(parse_memory(&format_memory(m)), Ok(m));
        prop_assert_eq!(parse_memory(&m.to_string()), Ok(m));
    }

    #[test]
    fn memory_units_scale(n in 0u64..(1 << 33)) {
        prop_assert_eq!(parse_memory(&format!("{n}Mi")), Ok(n << 20));
        prop_assert_eq!(parse_memory(&format!("{n}m")), Ok(n << 20));
        prop_assert_eq!(parse_memory(&format!("{n}M")), Ok(n * 1_000_000));
        prop_assert_eq!(parse_memory(&format!("{n}GB")), Ok(n << 30));
    }

    #[test]
    fn cpu_format_parse_round_trips(n in any::<u64>(), small in 0u64..100_000) {
        prop_assert_eq!(parse_cpu(&format_cpu(n)), Ok(n));
        prop_assert_eq!(parse_cpu(&format_cpu(small)), Ok(small));
        prop_assert_eq!(parse_cpu(&format!("{small}m")), Ok(small));
        prop_assert_eq!(
            parse_cpu(&format!("{}.{:03}", small / 1000, small % 1000)),
            Ok(small)
        );
    }

    #[test]
    fn duration_format_parse_round_trips(n in any::<u64>(), ms in 0u64..10_000_000) {
        let d = Duration::from_nanos(n);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn quantity_parsers_never_panic(s in any::<String>(), t in "[0-9.a-zA-Z µ+-]{0,14}") {
        for x in [&s, &t] {
            let _ = parse_memory(x);
            let _ = parse_cpu(x);
            let _ = parse_duration(x);
            if let Ok(sel) = Selector::parse(x) {
                // Whatever parses must print back to something that parses the same.
                prop_assert_eq!(Selector::parse(&sel.to_string()), Ok(sel));
            }
            let _ = Requirement::parse(x);
        }
    }

    #[test]
    fn generated_tasks_are_valid_and_stay_valid_normalized(t in task()) {
        if let Err(e) = validate_task(&t) {
            return Err(TestCaseError::fail(format!("{e}")));
        }
        let mut n = t.clone();
        normalize_task(&mut n);
        prop_assert!(validate_task(&n).is_ok());
        let again = n.clone();
        normalize_task(&mut n);
        prop_assert_eq!(n, again);
    }

    #[test]
    fn tasks_round_trip_through_protobuf(t in task()) {
        let bytes = t.encode_to_vec();
        prop_assert_eq!(Task::decode(bytes.as_slice()).unwrap(), t);
    }

    #[test]
    fn tasks_round_trip_through_json(t in task()) {
        let json = serde_json::to_string(&t).unwrap();
        let back: Task = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn tasks_round_trip_through_yaml_manifests(t in task()) {
        let yaml = manifest::to_yaml(&t);
        let parsed = manifest::parse(&yaml);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed, yaml);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0], &AnyResource::Task(t), "{}", yaml);
    }

    #[test]
    fn validation_never_panics(
        strings in vec(any::<String>(), 24),
        numbers in vec(any::<u32>(), 4),
        replicas in any::<Option<u32>>(),
    ) {
        let s = |i: usize| strings[i].clone();
        let mut t = Task {
            version: s(0),
            meta: Some(Meta {
                name: s(1),
                labels: [(s(2), s(3))].into(),
                ..Default::default()
            }),
            config: Some(TaskConfig {
                image: s(4),
                args: vec![s(5)],
                envvars: vec![EnvVar { name: s(6), value: s(7), value_from: None }, EnvVar { name: s(6), value: s(7), value_from: None }],
                mounts: vec![Mount {
                    name: s(8),
                    destination: s(9),
                    r#type: s(10),
                    volume: s(11),
                    source: s(12),
                    options: vec![s(13)],
                    secret: String::new(),
                }],
                port_mappings: vec![
                    PortMapping { name: s(14), host_port: numbers[0], target_port: numbers[1], protocol: s(15), host_ip: s(16) },
                    PortMapping { name: s(14), host_port: numbers[0], target_port: numbers[2], protocol: s(15), host_ip: s(16) },
                ],
                node_selector: [(s(17), s(18))].into(),
                user: s(19),
                capabilities: Some(Capabilities { add: vec![s(20)], drop: vec![s(21)] }),
                resources: Some(Resources { cpu: s(22), memory: s(23) }),
                restart_policy: s(0),
                stop_grace_period: s(1),
                working_dir: s(2),
                pull_policy: s(3),
                on_disconnect: s(4),
                node_affinity: vec![s(5), s(6)],
                ..Default::default()
            }),
            status: None,
        };
        if let Err(e) = validate_task(&t) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
        normalize_task(&mut t);
        let _ = validate_task(&t);
        let set = voiyd_messages::v1::ContainerSet {
            version: s(7),
            meta: t.meta.clone(),
            template: t.config.clone(),
            replicas,
            strategy: None,
            placement: s(8),
            mode: s(10),
            vip: replicas.is_some_and(|r| r % 2 == 0),
            network: s(11),
            allow_from: t.meta.as_ref().map(|m| m.labels.clone()).unwrap_or_default(),
            status: None,
        };
        if let Err(e) = voiyd_messages::validate::validate_container_set(&set) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
        let vol = voiyd_messages::v1::Volume {
            version: s(9),
            meta: t.meta.clone(),
            config: Some(voiyd_messages::v1::VolumeConfig {
                host_local: None,
                template: Some(voiyd_messages::v1::Template { name: s(10), data: s(11) }),
                node_selector: [(s(12), s(13))].into(),
            }),
            status: None,
        };
        if let Err(e) = voiyd_messages::validate::validate_volume(&vol) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
        let _ = validate_name(&s(14), &s(15));
    }
}
