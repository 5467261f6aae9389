//! The API end to end: real nats-server, real voiyd-server processes.

use std::collections::BTreeMap;
use std::time::Duration;
use voiyd_messages::v1::{
    ContainerSet, DeleteRequest, EventsRequest, HostLocal, Meta, Task, TaskConfig, Volume,
    VolumeConfig,
};
use voiyd_messages::{Kind, Resource};
use voiyd_nats::api::{ApiClient, ApiError};
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{eventually, Server};

fn task(name: &str, image: &str, labels: &[(&str, &str)]) -> Task {
    Task::new(name, TaskConfig::image(image)).with_labels(labels.iter().copied())
}

fn rv<R: Resource>(r: &R) -> u64 {
    r.meta().unwrap().resource_version
}

#[tokio::test]
async fn task_verbs_and_their_errors() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;

    // create assigns server fields
    let t = api
        .create(&task("web", "busybox:1", &[("app", "web")]))
        .await
        .unwrap();
    let m = t.meta.clone().unwrap();
    assert_eq!(m.generation, 1);
    assert!(m.resource_version > 0 && !m.uid.is_empty() && m.created.is_some());
    // with no node, the task waits with an explanation
    let st = t.status.clone().unwrap();
    assert_eq!(st.phase, "Pending");
    assert!(st.message.contains("start voiyd-node"), "{}", st.message);

    // create again: conflict
    let e = api
        .create(&task("web", "busybox:1", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::Conflict(ref m) if m.contains("already exists")),
        "{e}"
    );

    // invalid name and missing image: one line naming the fields
    let e = api.create(&task("bad name!", "", &[])).await.unwrap_err();
    let ApiError::Invalid(msg) = e else {
        panic!("want Invalid, got {e:?}")
    };
    assert!(
        msg.contains("name") && msg.contains("image") && !msg.contains('\n'),
        "{msg}"
    );

    // get / not found
    let got: Task = api.get("web").await.unwrap();
    assert_eq!(got.meta.as_ref().unwrap().uid, m.uid);
    let e = api.get::<Task>("nope").await.unwrap_err();
    assert!(
        matches!(e, ApiError::NotFound(ref m) if m.contains("task nope not found")),
        "{e}"
    );

    // list with selectors
    api.create(&task("db", "busybox:1", &[("app", "db")]))
        .await
        .unwrap();
    let all: Vec<Task> = api.list("").await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.name()).collect::<Vec<_>>(),
        ["db", "web"]
    );
    let webs: Vec<Task> = api.list("app=web").await.unwrap();
    assert_eq!(webs.len(), 1);
    let not_web: Vec<Task> = api.list("app notin (web)").await.unwrap();
    assert_eq!(not_web.iter().map(|t| t.name()).collect::<Vec<_>>(), ["db"]);
    assert!(matches!(
        api.list::<Task>("app in (").await.unwrap_err(),
        ApiError::Invalid(_)
    ));

    // update bumps generation when the spec changes, not when only labels do
    let mut changed = got.clone();
    changed.config.as_mut().unwrap().image = "busybox:2".into();
    let updated = api.update(&changed).await.unwrap();
    assert_eq!(updated.meta.as_ref().unwrap().generation, 2);
    assert!(rv(&updated) > rv(&got));
    let mut relabel = updated.clone();
    relabel
        .meta
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "front".into());
    let relabeled = api.update(&relabel).await.unwrap();
    assert_eq!(relabeled.meta.as_ref().unwrap().generation, 2);
    // an update that changes nothing writes nothing
    let same = api.update(&relabeled).await.unwrap();
    assert_eq!(rv(&same), rv(&relabeled));

    // stale resource_version is refused, and nothing is written
    let e = api.update(&changed).await.unwrap_err();
    assert!(
        matches!(e, ApiError::Conflict(ref m) if m.contains("changed by someone else")),
        "{e}"
    );
    let now: Task = api.get("web").await.unwrap();
    assert_eq!(now.config.as_ref().unwrap().image, "busybox:2");

    // patch (merge patch), with and without the right version
    let p: Task = api
        .patch("web", r#"{"config":{"args":["-c","echo hi"]}}"#, 0)
        .await
        .unwrap();
    assert_eq!(p.config.as_ref().unwrap().args, ["-c", "echo hi"]);
    assert_eq!(p.config.as_ref().unwrap().image, "busybox:2");
    assert!(matches!(
        api.patch::<Task>("web", r#"{"config":{"args":[]}}"#, 1)
            .await,
        Err(ApiError::Conflict(_))
    ));
    assert!(
        matches!(api.patch::<Task>("web", r#"{"config":{"bogus":1}}"#, 0).await, Err(ApiError::Invalid(ref m)) if m.contains("bogus"))
    );
    assert!(matches!(
        api.patch::<Task>("web", "not json", 0).await,
        Err(ApiError::Invalid(_))
    ));

    // stop / start change desired state
    let stopped = api.task_action("stop", "web", false).await.unwrap();
    assert!(stopped.config.as_ref().unwrap().stopped);
    let started = api.task_action("start", "web", false).await.unwrap();
    assert!(!started.config.as_ref().unwrap().stopped);

    // delete, with a stale version refused first
    let req = DeleteRequest {
        name: "web".into(),
        resource_version: 1,
        ..Default::default()
    };
    assert!(matches!(
        api.delete(Kind::Task, &req).await,
        Err(ApiError::Conflict(_))
    ));
    let req = DeleteRequest {
        name: "web".into(),
        ..Default::default()
    };
    api.delete(Kind::Task, &req).await.unwrap();
    assert!(matches!(
        api.get::<Task>("web").await,
        Err(ApiError::NotFound(_))
    ));
    assert!(matches!(
        api.delete(Kind::Task, &req).await,
        Err(ApiError::NotFound(_))
    ));

    // oversize payload
    let mut big = task("big", "busybox:1", &[]);
    big.config.as_mut().unwrap().args = vec!["x".repeat(1024); 1100];
    let e = api.create(&big).await.unwrap_err();
    assert!(
        matches!(e, ApiError::TooLarge(_) | ApiError::Invalid(_)),
        "{e}"
    );
    assert!(matches!(
        api.get::<Task>("big").await,
        Err(ApiError::NotFound(_))
    ));

    // malformed body
    let e = api
        .call_raw::<Task>(
            &voiyd_nats::names::api_subject("tasks", "create"),
            vec![0xff, 0xff, 0xff].into(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::Invalid(ref m) if m.contains("malformed")),
        "{e}"
    );
}

#[tokio::test]
async fn volumes_sets_and_events() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;

    let vol = Volume {
        version: String::new(),
        meta: Some(Meta {
            name: "data".into(),
            ..Default::default()
        }),
        config: Some(VolumeConfig {
            host_local: Some(HostLocal::default()),
            ..Default::default()
        }),
        status: None,
    };
    let v = api.create(&vol).await.unwrap();
    assert_eq!(v.version, "volume/v1");
    let set = ContainerSet {
        version: "containerset/v1".into(),
        meta: Some(Meta {
            name: "web".into(),
            ..Default::default()
        }),
        template: Some(TaskConfig {
            image: "busybox:1".into(),
            ..Default::default()
        }),
        replicas: Some(3),
        ..Default::default()
    };
    api.create(&set).await.unwrap();
    let sets: Vec<ContainerSet> = api.list("").await.unwrap();
    assert_eq!(sets[0].replicas, Some(3));
    // a version of another kind is refused
    let mut wrong = vol.clone();
    wrong.version = "task/v1".into();
    wrong.meta.as_mut().unwrap().name = "other".into();
    assert!(matches!(
        api.create(&wrong).await,
        Err(ApiError::Invalid(_))
    ));
    api.delete(
        Kind::Volume,
        &DeleteRequest {
            name: "data".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // events: in order, readable from any sequence, filterable (stored a moment after
    // the replies of the calls they record). The set controller creates the set's tasks
    // at its own pace, so their events may stand anywhere after the set's: left out.
    let not_tasks = |items: Vec<voiyd_messages::v1::Event>| -> Vec<voiyd_messages::v1::Event> {
        items.into_iter().filter(|e| e.kind != "task").collect()
    };
    let all = eventually(Duration::from_secs(10), "three events", || {
        let api = api.clone();
        async move {
            let items = not_tasks(api.events(&EventsRequest::default()).await.ok()?.items);
            (items.len() >= 3).then_some(items)
        }
    })
    .await;
    let kinds: Vec<(String, String)> = all
        .iter()
        .map(|e| (e.kind.clone(), e.r#type.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("volume".into(), "created".into()),
            ("set".into(), "created".into()),
            ("volume".into(), "deleted".into())
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let from = not_tasks(
        api.events(&EventsRequest {
            since_seq: all[1].seq,
            ..Default::default()
        })
        .await
        .unwrap()
        .items,
    );
    assert_eq!(from.len(), 2);
    let vols = api
        .events(&EventsRequest {
            kind: "volume".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(vols.len(), 2);
    let none = not_tasks(
        api.events(&EventsRequest {
            since_seq: all[2].seq + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .items,
    );
    assert!(none.is_empty());
}

#[tokio::test]
async fn two_servers_share_the_work_and_never_double_create() {
    let nats = TestNats::start().await;
    let a = Server::external(&nats.url()).await;
    let b = Server::external(&nats.url()).await;
    let api = a.api().await;

    // 200 distinct creates, and 20 racing creates of each of 5 names
    let mut jobs = Vec::new();
    for i in 0..200 {
        let api = api.clone();
        jobs.push(tokio::spawn(async move {
            api.create(&task(&format!("t{i}"), "busybox:1", &[]))
                .await
                .map(|_| ())
        }));
    }
    for i in 0..100 {
        let api = api.clone();
        jobs.push(tokio::spawn(async move {
            api.create(&task(&format!("race{}", i % 5), "busybox:1", &[]))
                .await
                .map(|_| ())
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for j in jobs {
        match j.await.unwrap() {
            Ok(()) => ok += 1,
            Err(ApiError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, conflicts), (205, 95));
    let all: Vec<Task> = api.list("").await.unwrap();
    assert_eq!(all.len(), 205);

    // Both servers answered requests (the service framework reports per-instance stats).
    let stats = service_request_counts(api.nats()).await;
    assert_eq!(stats.len(), 2, "two API instances expected: {stats:?}");
    assert!(
        stats.iter().all(|n| *n > 0),
        "a server served nothing: {stats:?}"
    );

    // Concurrent CAS updates of one task from the same version: exactly one wins.
    let base: Task = api.get("t1").await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..10 {
        let api = api.clone();
        let mut t = base.clone();
        t.config.as_mut().unwrap().args = vec![i.to_string()];
        jobs.push(tokio::spawn(async move { api.update(&t).await.is_ok() }));
    }
    let mut wins = 0;
    for j in jobs {
        wins += usize::from(j.await.unwrap());
    }
    assert_eq!(wins, 1);

    // One server going away leaves the other serving.
    drop(a);
    let api_b = b.api().await;
    let _: Vec<Task> = eventually(Duration::from_secs(10), "b alone serving", || {
        let api_b = api_b.clone();
        async move { api_b.list("").await.ok() }
    })
    .await;
}

/// Requests served by each voiyd-api instance, via `$SRV.STATS`.
async fn service_request_counts(client: &async_nats::Client) -> Vec<u64> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(
            format!("$SRV.STATS.{}", voiyd_nats::names::API_SERVICE),
            inbox,
            "".into(),
        )
        .await
        .unwrap();
    let mut counts = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let n: u64 = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["num_requests"].as_u64().unwrap_or(0))
            .sum();
        counts.push(n);
    }
    counts
}

#[tokio::test]
async fn no_server_answering_is_a_clear_error() {
    let nats = TestNats::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let api = ApiClient::new(client).with_timeout(Duration::from_secs(2));
    let e = api.list::<Task>("").await.unwrap_err();
    assert!(matches!(e, ApiError::NoServer { .. }), "{e}");
    assert!(e.to_string().contains("no voiyd-server is answering"));
    let _ = BTreeMap::<String, String>::new();
}

/// `delete node` while the node's agent keeps sending heartbeats as fast as it can: the
/// node record never comes back, whatever instant a heartbeat lands in.
#[tokio::test]
async fn deleting_a_node_under_a_heartbeat_flood_leaves_no_record() {
    use prost::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use voiyd_messages::v1::{DeleteRequest, Node, NodeStatus, NodeStatusReport};
    use voiyd_nats::names;

    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let client = nats.client().await;
    let beat = |node: &str| {
        NodeStatusReport {
            node: node.into(),
            status: Some(NodeStatus {
                runtime: "sim".into(),
                session: format!("session-{node}"),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    // Rounds of 25 nodes deleted at once, each node beating every half millisecond.
    for round in 0..4 {
        let nodes: Vec<String> = (0..25).map(|j| format!("flood{round}-{j}")).collect();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let sent = Arc::new(AtomicUsize::new(0));
        let flood = {
            let beats: Vec<(String, Vec<u8>)> = nodes
                .iter()
                .map(|n| (names::node::heartbeat(n), beat(n)))
                .collect();
            let (client, sent) = (client.clone(), sent.clone());
            tokio::spawn(async move {
                // Bounded: at most 20,000 rounds of beats.
                for _ in 0..20_000 {
                    for (subject, body) in &beats {
                        client
                            .publish(subject.clone(), body.clone().into())
                            .await
                            .unwrap();
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = tokio::time::sleep(Duration::from_micros(500)) => {}
                    }
                }
                client.flush().await.unwrap();
            })
        };
        eventually(Duration::from_secs(10), "nodes registered", || {
            let api = api.clone();
            let nodes = nodes.clone();
            async move {
                let list: Vec<Node> = api.list("").await.ok()?;
                let have = nodes
                    .iter()
                    .filter(|n| list.iter().any(|l| l.name() == n.as_str()));
                (have.count() == nodes.len()).then_some(())
            }
        })
        .await;
        futures::future::join_all(nodes.iter().map(|node| {
            let api = api.clone();
            async move {
                let req = DeleteRequest {
                    name: node.clone(),
                    ..Default::default()
                };
                api.delete(Kind::Node, &req).await.unwrap();
            }
        }))
        .await;
        let at_delete = sent.load(Ordering::Relaxed);
        eventually(Duration::from_secs(10), "beats after the deletions", || {
            let n = sent.load(Ordering::Relaxed);
            async move { (n >= at_delete + 100).then_some(()) }
        })
        .await;
        stop.send(true).unwrap();
        flood.await.unwrap();
        // Let the server drain what was sent: a new node's registration, sent after
        // every beat, marks the end.
        let probe = format!("probe{round}");
        client
            .publish(names::node::heartbeat(&probe), beat(&probe).into())
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "probe registered", || {
            let api = api.clone();
            let probe = probe.clone();
            async move { api.get::<Node>(&probe).await.ok() }
        })
        .await;
        let list: Vec<Node> = api.list("").await.unwrap();
        let back: Vec<&str> = list
            .iter()
            .map(|n| n.name())
            .filter(|n| n.starts_with("flood"))
            .collect();
        assert!(back.is_empty(), "deleted nodes came back: {back:?}");
    }
}

#[tokio::test]
async fn heartbeats_register_nodes_and_reports_are_fenced() {
    use prost::Message;
    use voiyd_messages::v1::{Node, NodeStatus, NodeStatusReport, TaskStatus, TaskStatusReport};
    use voiyd_nats::names;

    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let client = nats.client().await;

    // A heartbeat registers the node with its labels and makes it Ready.
    let hb = NodeStatusReport {
        node: "n1".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        status: Some(NodeStatus {
            runtime: "containerd".into(),
            ..Default::default()
        }),
    };
    client
        .publish(names::node::heartbeat("n1"), hb.encode_to_vec().into())
        .await
        .unwrap();
    // A heartbeat published on another node's subject is refused.
    let forged = NodeStatusReport {
        node: "n9".into(),
        ..Default::default()
    };
    client
        .publish(names::node::heartbeat("n1"), forged.encode_to_vec().into())
        .await
        .unwrap();
    let n1: Node = eventually(Duration::from_secs(10), "n1 registered and ready", || {
        let api = api.clone();
        async move {
            let n: Node = api.get("n1").await.ok()?;
            (n.status.as_ref()?.phase == "Ready").then_some(n)
        }
    })
    .await;
    assert_eq!(n1.labels()["zone"], "a");
    assert!(matches!(
        api.get::<Node>("n9").await,
        Err(ApiError::NotFound(_))
    ));

    // A task is placed on it, with its work written under n1's key.
    let mut t = task("t", "busybox:1", &[]);
    t.config
        .as_mut()
        .unwrap()
        .node_selector
        .insert("zone".into(), "a".into());
    let t = api.create(&t).await.unwrap();
    let st = t.status.clone().unwrap();
    assert_eq!((st.node.as_str(), st.phase.as_str()), ("n1", "Scheduled"));
    let scheduled = st
        .conditions
        .iter()
        .find(|c| c.r#type == "Scheduled")
        .unwrap();
    assert_eq!(scheduled.status, "True");
    let js = async_nats::jetstream::new(client.clone());
    let work = js.get_key_value(names::BUCKET_WORK).await.unwrap();
    assert!(work
        .get(names::work_key("n1", "t"))
        .await
        .unwrap()
        .is_some());
    assert!(work
        .get(names::work_key("n2", "t"))
        .await
        .unwrap()
        .is_none());

    // A report from a node that does not hold the task, and one for an older task of
    // the same name, are ignored; the holder's report is folded in.
    let uid = t.meta.as_ref().unwrap().uid.clone();
    let report = |node: &str, uid: &str, phase: &str, msg: &str| TaskStatusReport {
        task: "t".into(),
        node: node.into(),
        uid: uid.into(),
        status: Some(TaskStatus {
            phase: phase.into(),
            message: msg.into(),
            ..Default::default()
        }),
    };
    for (subject_node, r) in [
        ("n2", report("n2", &uid, "Running", "impostor")),
        ("n1", report("n1", "old-uid", "Failed", "stale")),
        ("n1", report("n1", &uid, "Starting", "genuine")),
    ] {
        client
            .publish(names::node::status(subject_node), r.encode_to_vec().into())
            .await
            .unwrap();
    }
    let got: Task = eventually(Duration::from_secs(10), "holder's report folded in", || {
        let api = api.clone();
        async move {
            let t: Task = api.get("t").await.ok()?;
            (t.status.as_ref()?.message == "genuine").then_some(t)
        }
    })
    .await;
    assert_eq!(got.status.as_ref().unwrap().phase, "Starting");
    let events = api
        .events(&EventsRequest {
            kind: "task".into(),
            name: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = events.items.iter().map(|e| e.r#type.as_str()).collect();
    assert!(
        !types.contains(&"running") && !types.contains(&"failed"),
        "fenced reports leaked: {types:?}"
    );
    assert!(types.contains(&"starting"), "{types:?}");

    // Without heartbeats the node turns NotReady.
    eventually(Duration::from_secs(15), "n1 NotReady", || {
        let api = api.clone();
        async move {
            let n: Node = api.get("n1").await.ok()?;
            (n.status.as_ref()?.phase == "NotReady").then_some(())
        }
    })
    .await;
}
