//! voiyd-fuzz: bounded-time mutational fuzzing on stable Rust (cargo-fuzz needs nightly).
//!
//! Every target is something the server or a node decodes from NATS (or voiydctl from a
//! file): protobuf requests, reports, work assignments, stream requests, manifests, merge
//! patches, selectors and quantities, each followed by the validation and the pure logic
//! that runs on it. Inputs start from valid seeds and are mutated (bit flips, byte
//! edits, inserted varints, splices, truncation); inputs that still decode join the
//! corpus, a cheap stand-in for coverage feedback. A panic is a crash: the input is
//! saved and the run fails.
//!
//! Usage: `voiyd-fuzz SECONDS [--seed N] [--crashes DIR]`.

use prost::Message;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use voiyd_messages::v1::*;

/// A small fast PRNG (xorshift64*): reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, b'.', b'*', b'>', b'"', b'{', b'\n', b':',
];

/// One mutation of `input`, sometimes splicing in part of `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                out.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let chunk = out[a..b].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(64)).min(other.len());
                let at = rng.below(len + 1);
                out.splice(at..at, other[a..b].iter().copied());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            7 => {
                // A huge varint: lengths and counts that overflow or lie.
                let at = rng.below(len + 1);
                out.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            8 if len > 1 => out.truncate(rng.below(len)),
            _ => {}
        }
    }
    out
}

/// A fuzz target: a name, valid seeds, and what runs on one input (returns whether
/// the input got past decoding, to grow the corpus).
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: fn(&[u8]) -> bool,
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn sample_task() -> Task {
    Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: "web".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        config: Some(TaskConfig {
            image: "127.0.0.1:5000/voiyd/busybox:test".into(),
            args: vec!["httpd".into(), "-f".into()],
            envvars: vec![EnvVar {
                name: "MODE".into(),
                value: "demo".into(),
                ..Default::default()
            }],
            mounts: vec![
                Mount {
                    name: "data".into(),
                    destination: "/data".into(),
                    volume: "data".into(),
                    ..Default::default()
                },
                Mount {
                    destination: "/host".into(),
                    source: "/srv".into(),
                    options: vec!["ro".into()],
                    ..Default::default()
                },
            ],
            port_mappings: vec![PortMapping {
                name: "http".into(),
                host_port: 8080,
                target_port: 8080,
                ..Default::default()
            }],
            node_selector: [("zone".to_string(), "a".to_string())].into(),
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec!["ALL".into()],
            }),
            resources: Some(Resources {
                cpu: "500m".into(),
                memory: "64Mi".into(),
            }),
            restart_policy: "on-failure".into(),
            stop_grace_period: "10s".into(),
            node_affinity: vec!["zone in (a,b)".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn targets() -> Vec<Target> {
    let task = sample_task();
    let task_bytes = task.encode_to_vec();
    let manifest_yaml = voiyd_messages::manifest::to_yaml(&task).into_bytes();
    let manifest_json = voiyd_messages::manifest::to_json(&task).into_bytes();
    let node = Node {
        version: "node/v1".into(),
        meta: Some(Meta {
            name: "n1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (_, key) = voiyd_nats::auth::new_user_key();
    vec![
        Target {
            name: "manifest",
            seeds: vec![
                manifest_yaml.clone(),
                manifest_json,
                b"version: task/v1\nmeta: {name: a}\nconfig: {image: busybox}\n---\nversion: volume/v1\nmeta: {name: v}\n".to_vec(),
            ],
            run: |d| match voiyd_messages::manifest::parse(&text(d)) {
                Ok(all) => {
                    for r in &all {
                        let _ = voiyd_messages::validate::validate_any(r);
                        let _ = r.name();
                    }
                    true
                }
                Err(_) => false,
            },
        },
        Target {
            name: "task",
            seeds: vec![task_bytes.clone()],
            run: |d| match Task::decode(d) {
                Ok(t) => {
                    let _ = voiyd_messages::validate::validate_task(&t);
                    let strict = voiyd_server::security::policy::Policy {
                        allow_privileged: false,
                        allow_host_paths: false,
                        allow_cap_add: false,
                        allow_unconfined_seccomp: false,
                    };
                    let _ = strict.admit(&t);
                    if let Some(cfg) = &t.config {
                        let _ = voiyd_messages::requests::Requests::of(cfg);
                    }
                    let _ = serde_json::to_string(&t);
                    true
                }
                Err(_) => false,
            },
        },
        Target {
            name: "node",
            seeds: vec![node.encode_to_vec()],
            run: |d| match Node::decode(d) {
                Ok(n) => {
                    let _ = voiyd_messages::validate::validate_node(&n);
                    true
                }
                Err(_) => false,
            },
        },
        Target {
            name: "volume+set",
            seeds: vec![
                Volume {
                    meta: Some(Meta {
                        name: "v".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
                ContainerSet {
                    meta: Some(Meta {
                        name: "s".into(),
                        ..Default::default()
                    }),
                    template: task.config.clone(),
                    replicas: Some(3),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
            run: |d| {
                let v = Volume::decode(d).map(|v| {
                    let _ = voiyd_messages::validate::validate_volume(&v);
                });
                let s = ContainerSet::decode(d).map(|s| {
                    let _ = voiyd_messages::validate::validate_container_set(&s);
                });
                v.is_ok() || s.is_ok()
            },
        },
        Target {
            name: "job",
            seeds: vec![
                Job {
                    meta: Some(Meta {
                        name: "j".into(),
                        ..Default::default()
                    }),
                    template: task.config.clone(),
                    completions: Some(5),
                    parallelism: Some(2),
                    schedule: "*/5 * * * *".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                Job {
                    meta: Some(Meta {
                        name: "k".into(),
                        ..Default::default()
                    }),
                    template: task.config.clone(),
                    schedule: "@every 30s".into(),
                    concurrency_policy: "Forbid".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
            run: |d| match Job::decode(d) {
                Ok(j) => {
                    // Validation parses the schedule: no pattern may panic or hang it.
                    let _ = voiyd_messages::validate::validate_job(&j);
                    true
                }
                Err(_) => false,
            },
        },
        Target {
            name: "patch",
            seeds: vec![PatchRequest {
                name: "web".into(),
                merge_patch: r#"{"config":{"args":["a"],"resources":{"cpu":"1"}},"meta":{"labels":{"x":null}}}"#.into(),
                resource_version: 3,
            }
            .encode_to_vec()],
            run: |d| {
                let Ok(req) = PatchRequest::decode(d) else {
                    return false;
                };
                let Ok(patch) = serde_json::from_str::<serde_json::Value>(&req.merge_patch) else {
                    return true;
                };
                let mut doc = serde_json::to_value(sample_task()).unwrap_or_default();
                voiyd_server::service::merge_patch::apply(&mut doc, &patch);
                if let Ok(t) = serde_json::from_value::<Task>(doc) {
                    let _ = voiyd_messages::validate::validate_task(&t);
                }
                true
            },
        },
        Target {
            name: "requests",
            seeds: vec![
                ListRequest {
                    selector: "app=web,tier!=db,zone in (a,b),!gpu".into(),
                    field_selector: "node=n1,phase!=Running".into(),
                }
                .encode_to_vec(),
                DeleteRequest {
                    name: "web".into(),
                    resource_version: 4,
                    purge: true,
                    force: false,
                }
                .encode_to_vec(),
                TaskActionRequest {
                    name: "web".into(),
                    force: true,
                }
                .encode_to_vec(),
                GetRequest { name: "a.b".into() }.encode_to_vec(),
                EventsRequest::default().encode_to_vec(),
            ],
            run: |d| {
                let l = ListRequest::decode(d).map(|l| {
                    let _ = voiyd_messages::selector::Selector::parse(&l.selector);
                    let _ = voiyd_messages::fields::FieldSelector::parse(
                        &l.field_selector,
                        <Task as voiyd_messages::fields::Fields>::FIELDS,
                    );
                });
                let _ = DeleteRequest::decode(d);
                let _ = TaskActionRequest::decode(d);
                let _ = GetRequest::decode(d);
                let _ = EventsRequest::decode(d);
                l.is_ok()
            },
        },
        Target {
            name: "join+token",
            seeds: vec![
                JoinRequest {
                    token: "voiyd-join-0123456789abcdef".into(),
                    node: "n1".into(),
                    public_key: key,
                }
                .encode_to_vec(),
                TokenCreateRequest {
                    ttl_seconds: 3600,
                    admin: false,
                }
                .encode_to_vec(),
            ],
            run: |d| {
                let j = JoinRequest::decode(d).map(|j| {
                    let _ = voiyd_server::service::tokens::check_join_request(&j);
                    let _ = voiyd_server::service::tokens::token_hash(&j.token);
                });
                if let Ok(t) = TokenCreateRequest::decode(d) {
                    let _ = voiyd_server::service::tokens::token_ttl(&t);
                }
                j.is_ok()
            },
        },
        Target {
            name: "reports",
            seeds: vec![
                NodeStatusReport::default().encode_to_vec(),
                TaskStatusReport {
                    task: "web".into(),
                    node: "n1".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ],
            run: |d| {
                let a = NodeStatusReport::decode(d);
                let b = TaskStatusReport::decode(d);
                let subject = text(d);
                let _ = voiyd_nats::names::node::node_of(&subject);
                let _ = voiyd_nats::names::parse_work_key(&subject);
                a.is_ok() || b.is_ok()
            },
        },
        Target {
            name: "assignment",
            seeds: vec![Assignment {
                task: Some(task.clone()),
                ..Default::default()
            }
            .encode_to_vec()],
            run: |d| match Assignment::decode(d) {
                Ok(a) => {
                    if let Some(desired) = voiyd_node::decide::reconcile::Desired::from_assignment(&a) {
                        let _ = desired.stop_grace();
                        let _ = desired.restart_policy();
                        let _ = desired.stopped();
                    }
                    true
                }
                Err(_) => false,
            },
        },
        Target {
            name: "stream",
            seeds: vec![
                LogRequest::default().encode_to_vec(),
                ExecRequest::default().encode_to_vec(),
                ExecInput::default().encode_to_vec(),
            ],
            run: |d| {
                let a = LogRequest::decode(d).is_ok();
                let b = ExecRequest::decode(d).is_ok();
                let c = ExecInput::decode(d).is_ok();
                let _ = StatsRequest::decode(d);
                a || b || c
            },
        },
        Target {
            name: "quantities",
            seeds: vec![b"500m".to_vec(), b"1.5Gi".to_vec(), b"1h30m".to_vec(), b"1e3".to_vec()],
            run: |d| {
                let s = text(d);
                let _ = voiyd_messages::quantity::parse_cpu(&s);
                let _ = voiyd_messages::quantity::parse_memory(&s);
                let _ = voiyd_messages::quantity::parse_duration(&s);
                let _ = voiyd_messages::selector::Selector::parse(&s);
                true
            },
        },
    ]
}

/// What one target did.
#[derive(Default)]
struct Stats {
    execs: u64,
    crashes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 10u64;
    let mut seed = 0x5eed_0ff0_2222_u64;
    let mut crash_dir = PathBuf::from("fuzz/crashes");
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--seed" => {
                i += 1;
                seed = args.get(i).and_then(|s| s.parse().ok()).unwrap_or(seed);
            }
            "--crashes" => {
                i += 1;
                crash_dir = args.get(i).map(PathBuf::from).unwrap_or(crash_dir);
            }
            s => match s.parse() {
                Ok(n) => seconds = n,
                Err(_) => {
                    eprintln!("usage: voiyd-fuzz SECONDS [--seed N] [--crashes DIR]");
                    std::process::exit(2);
                }
            },
        }
        i += 1;
    }
    // Panics are expected findings: keep their message short and collect them.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {info}");
    }));
    let mut rng = Rng(seed | 1);
    let targets = targets();
    let mut corpora: Vec<Vec<Vec<u8>>> = targets.iter().map(|t| t.seeds.clone()).collect();
    let mut stats: Vec<Stats> = targets.iter().map(|_| Stats::default()).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // Seeds must pass cleanly: they are the valid inputs everything starts from.
    for (t, target) in targets.iter().enumerate() {
        for s in &target.seeds {
            if catch_unwind(AssertUnwindSafe(|| (target.run)(s))).is_err() {
                stats[t].crashes += 1;
            }
        }
    }
    while Instant::now() < deadline {
        // Rounds of 200 executions per target between clock reads.
        for (t, target) in targets.iter().enumerate() {
            for _ in 0..200 {
                let corpus = &corpora[t];
                let base = &corpus[rng.below(corpus.len())];
                let other = &corpus[rng.below(corpus.len())];
                let input = mutate(&mut rng, base, other);
                stats[t].execs += 1;
                match catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
                    Ok(true) if corpora[t].len() < 256 && rng.below(16) == 0 => {
                        corpora[t].push(input)
                    }
                    Ok(_) => {}
                    Err(_) => {
                        stats[t].crashes += 1;
                        let _ = std::fs::create_dir_all(&crash_dir);
                        let path =
                            crash_dir.join(format!("{}-{}.bin", target.name, stats[t].crashes));
                        let _ = std::fs::write(&path, &input);
                        eprintln!(
                            "crash in {}: input saved to {}",
                            target.name,
                            path.display()
                        );
                    }
                }
            }
        }
    }
    let mut total = Stats::default();
    println!(
        "{:<12} {:>12} {:>8} {:>7}",
        "target", "executions", "corpus", "crashes"
    );
    for (t, target) in targets.iter().enumerate() {
        let s = &stats[t];
        println!(
            "{:<12} {:>12} {:>8} {:>7}",
            target.name,
            s.execs,
            corpora[t].len(),
            s.crashes
        );
        total.execs += s.execs;
        total.crashes += s.crashes;
    }
    println!(
        "{:<12} {:>12} {:>8} {:>7}",
        "total", total.execs, "", total.crashes
    );
    if total.crashes > 0 {
        std::process::exit(1);
    }
}
