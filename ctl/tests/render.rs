//! Rendering for `get`: tables with AGE, and YAML/JSON that apply back unchanged.

use voiyd_ctl::cli::Output;
use voiyd_ctl::commands::apply::{plan, Outcome};
use voiyd_ctl::compare::{any_spec_equal, spec_equal};
use voiyd_ctl::render::{render_events, render_resources};
use voiyd_messages::manifest::{self, AnyResource};
use voiyd_messages::v1::{
    ContainerSet, ContainerSetStatus, Event, Lease, Meta, Node, NodeConfig, NodeResources,
    NodeStatus, PortMapping, Task, TaskConfig, TaskStatus,
};
use voiyd_messages::Timestamp;

const NOW: i64 = 1_700_000_000;

fn ts(secs_ago: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: NOW - secs_ago,
        nanos: 0,
    })
}

fn task(name: &str, age: i64, phase: &str) -> Task {
    Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: name.into(),
            labels: [("app".to_string(), name.to_string())].into(),
            created: ts(age),
            updated: ts(1),
            generation: 3,
            resource_version: 17,
            uid: "u-1".into(),
        }),
        config: Some(TaskConfig {
            image: "busybox:test".into(),
            args: vec!["httpd".into(), "-f".into()],
            port_mappings: vec![PortMapping {
                name: "http".into(),
                host_port: 8080,
                target_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..TaskConfig::default()
        }),
        status: Some(TaskStatus {
            phase: phase.into(),
            node: "n1".into(),
            restart_count: 2,
            ip: "10.88.0.2".into(),
            id: "0123456789abcdef".into(),
            ..TaskStatus::default()
        }),
    }
}

#[test]
fn task_tables() {
    let mut web = task("web", 5, "Running");
    web.status.as_mut().unwrap().conditions = vec![voiyd_messages::v1::Condition {
        r#type: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    }];
    let items = vec![web, task("database", 3 * 3600, "Pulling")];
    let t = render_resources(&items, Output::Table, NOW, false);
    assert_eq!(
        t,
        "NAME       READY   PHASE     NODE   RESTARTS   AGE\n\
         web        1/1     Running   n1     2          5s\n\
         database   0/1     Pulling   n1     2          3h\n"
    );
    let w = render_resources(&items, Output::Wide, NOW, false);
    assert!(w.starts_with("NAME       READY   PHASE     NODE   RESTARTS   AGE   IMAGE          IP          ID             REASON\n"), "{w}");
    assert!(w.contains("0123456789ab "), "ids are shortened: {w}");
    assert_eq!(
        render_resources(&items, Output::Name, NOW, false),
        "task/web\ntask/database\n"
    );
}

#[test]
fn node_set_lease_tables() {
    let node = Node {
        version: "node/v1".into(),
        meta: Some(Meta {
            name: "n1".into(),
            created: ts(4 * 86_400),
            ..Meta::default()
        }),
        config: Some(NodeConfig {
            unschedulable: true,
            ..NodeConfig::default()
        }),
        status: Some(NodeStatus {
            phase: "Ready".into(),
            version: "0.1.0".into(),
            capacity: Some(NodeResources {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
            }),
            allocated: Some(NodeResources {
                cpu_millis: 500,
                memory_bytes: 256 << 20,
            }),
            ..NodeStatus::default()
        }),
    };
    let t = render_resources(&[node], Output::Table, NOW, false);
    assert_eq!(
        t,
        "NAME   STATE                      CPU      MEMORY      VERSION   AGE\n\
         n1     Ready,SchedulingDisabled   500m/2   256Mi/4Gi   0.1.0     4d\n"
    );
    let set = ContainerSet {
        version: "containerset/v1".into(),
        meta: Some(Meta {
            name: "api".into(),
            created: ts(120),
            ..Meta::default()
        }),
        replicas: Some(3),
        status: Some(ContainerSetStatus {
            desired: 3,
            ready: 2,
            updated: 3,
            available: 2,
            ..ContainerSetStatus::default()
        }),
        ..ContainerSet::default()
    };
    assert_eq!(
        render_resources(&[set], Output::Table, NOW, false),
        "NAME   DESIRED   READY   UPDATED   AVAILABLE   AGE\napi    3         2       3         2           2m\n"
    );
    let lease = Lease {
        meta: Some(Meta {
            name: "web".into(),
            ..Meta::default()
        }),
        task: "web".into(),
        holder: "n1".into(),
        renewals: 7,
        expires: ts(-9),
        ..Lease::default()
    };
    assert_eq!(
        render_resources(&[lease], Output::Table, NOW, false),
        "NAME   TASK   HOLDER   RENEWALS   EXPIRES\nweb    web    n1       7          in 9s\n"
    );
}

#[test]
fn yaml_list_parses_back_to_the_same_objects() {
    let items = vec![task("web", 5, "Running"), task("db", 50, "Failed")];
    let yaml = render_resources(&items, Output::Yaml, NOW, false);
    assert_eq!(yaml.matches("\n---\n").count(), 1, "{yaml}");
    let back = manifest::parse(&yaml).unwrap();
    let want: Vec<AnyResource> = items.iter().cloned().map(AnyResource::Task).collect();
    assert_eq!(back, want, "every field survives, status included");
    // ...and apply would report every one unchanged.
    for (b, w) in back.iter().zip(&want) {
        assert_eq!(plan(b, Some(w)), Outcome::Unchanged);
    }
}

#[test]
fn json_list_and_single_object_parse_back() {
    let items = vec![task("web", 5, "Running"), task("db", 50, "Failed")];
    let json = render_resources(&items, Output::Json, NOW, false);
    assert!(json.trim_start().starts_with('['), "{json}");
    let back = manifest::parse(&json).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1], AnyResource::Task(items[1].clone()));
    let one = render_resources(&items[..1], Output::Json, NOW, true);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v["config"]["image"], "busybox:test");
    assert_eq!(
        manifest::parse(&one).unwrap(),
        vec![AnyResource::Task(items[0].clone())]
    );
}

#[test]
fn spec_equal_ignores_status_and_server_fields_only() {
    let stored = task("web", 5, "Running");
    let mut manifest_copy = stored.clone();
    manifest_copy.status = None;
    manifest_copy.meta = Some(Meta {
        name: "web".into(),
        labels: stored.meta.as_ref().unwrap().labels.clone(),
        ..Meta::default()
    });
    assert!(spec_equal(&stored, &manifest_copy));

    let mut changed = manifest_copy.clone();
    changed.config.as_mut().unwrap().args.push("-v".into());
    assert!(!spec_equal(&stored, &changed));
    let mut relabeled = manifest_copy.clone();
    relabeled
        .meta
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "front".into());
    assert!(!spec_equal(&stored, &relabeled));

    // A default the server fills in (protocol tcp) is not a change.
    let mut no_proto = manifest_copy.clone();
    no_proto.config.as_mut().unwrap().port_mappings[0]
        .protocol
        .clear();
    assert!(any_spec_equal(
        &AnyResource::Task(no_proto.clone()),
        &AnyResource::Task(stored.clone())
    ));
    assert_eq!(
        plan(
            &AnyResource::Task(no_proto),
            Some(&AnyResource::Task(stored.clone()))
        ),
        Outcome::Unchanged
    );
    assert_eq!(
        plan(
            &AnyResource::Task(changed.clone()),
            Some(&AnyResource::Task(stored))
        ),
        Outcome::Configured
    );
    assert_eq!(plan(&AnyResource::Task(changed), None), Outcome::Created);
}

#[test]
fn events_table() {
    let ev = Event {
        seq: 42,
        time: ts(65),
        kind: "task".into(),
        name: "web".into(),
        r#type: "created".into(),
        reason: "Created".into(),
        source: "server-1".into(),
        message: "line one\nline two".into(),
        exit_code: 0,
        object: None,
    };
    assert_eq!(
        render_events(&[ev], NOW),
        "SEQ   AGE   KIND   NAME   TYPE      REASON    SOURCE     MESSAGE\n\
         42    1m    task   web    created   Created   server-1   line one line two\n"
    );
}
