//! Typed store against a real nats-server: CRUD, optimistic concurrency, watches.

use voiyd_messages::v1::{Task, TaskConfig};
use voiyd_nats::{bootstrap, BootstrapOptions, Cluster, StoreError};
use voiyd_testkit::nats::TestNats;

fn task(name: &str, image: &str) -> Task {
    Task::new(name, TaskConfig::image(image))
}

fn image(t: &Task) -> &str {
    &t.config.as_ref().unwrap().image
}

async fn cluster(nats: &TestNats) -> Cluster {
    bootstrap(&nats.jetstream().await, &BootstrapOptions::default())
        .await
        .expect("bootstrap")
}

#[tokio::test]
async fn crud_and_conflicts() {
    let nats = TestNats::start().await;
    let c = cluster(&nats).await;

    assert_eq!(c.tasks.get("web").await.unwrap(), None);
    let created = c.tasks.create(&task("web", "a:1")).await.unwrap();
    let rev1 = created.meta.as_ref().unwrap().resource_version;
    assert!(rev1 > 0);

    let got = c.tasks.get("web").await.unwrap().expect("stored");
    assert_eq!(got.meta.as_ref().unwrap().resource_version, rev1);
    assert_eq!(image(&got), "a:1");

    // Creating an existing name is refused.
    let err = c.tasks.create(&task("web", "a:2")).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::AlreadyExists {
            kind: "task".into(),
            name: "web".into()
        }
    );

    // Update at the current revision wins; a stale one is refused.
    let updated = c.tasks.update(&task("web", "a:2"), rev1).await.unwrap();
    let rev2 = updated.meta.as_ref().unwrap().resource_version;
    assert!(rev2 > rev1);
    let err = c.tasks.update(&task("web", "a:3"), rev1).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            kind: "task".into(),
            name: "web".into(),
            expected: rev1
        }
    );
    assert_eq!(
        err.to_string(),
        format!("task web was changed by someone else (expected version {rev1}): get it again and retry")
    );
    assert_eq!(image(&c.tasks.get("web").await.unwrap().unwrap()), "a:2");

    // Updating a missing resource is NotFound, not Conflict.
    let err = c.tasks.update(&task("nope", "x"), 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    // Delete with a stale revision is refused, with the current one succeeds.
    let err = c.tasks.delete("web", Some(rev1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    c.tasks.delete("web", Some(rev2)).await.unwrap();
    assert_eq!(c.tasks.get("web").await.unwrap(), None);
    let err = c.tasks.delete("web", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    // A deleted name can be created again.
    c.tasks.create(&task("web", "b:1")).await.unwrap();

    // Dotted names round-trip and list sorts by name.
    c.tasks.create(&task("api.v2", "c:1")).await.unwrap();
    c.tasks.create(&task("db", "d:1")).await.unwrap();
    let names: Vec<String> = c
        .tasks
        .list()
        .await
        .unwrap()
        .iter()
        .map(|t| t.meta.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, vec!["api.v2", "db", "web"]);
    for t in c.tasks.list().await.unwrap() {
        assert!(t.meta.unwrap().resource_version > 0);
    }
    c.tasks.delete("api.v2", None).await.unwrap();
    assert_eq!(c.tasks.list().await.unwrap().len(), 2);

    nats.stop().await;
}

#[tokio::test]
async fn concurrent_updaters_exactly_one_wins() {
    let nats = TestNats::start().await;
    let a = cluster(&nats).await;
    let b = voiyd_nats::open(&nats.jetstream().await).await.unwrap();
    for round in 0..10 {
        let name = format!("t{round}");
        let rev = a.tasks.create(&task(&name, "base")).await.unwrap();
        let rev = rev.meta.unwrap().resource_version;
        let (ta, tb) = (task(&name, "from-a"), task(&name, "from-b"));
        let (sa, sb) = (a.tasks.clone(), b.tasks.clone());
        let ja = tokio::spawn(async move { sa.update(&ta, rev).await });
        let jb = tokio::spawn(async move { sb.update(&tb, rev).await });
        let (ra, rb) = (ja.await.unwrap(), jb.await.unwrap());
        let winner = match (&ra, &rb) {
            (Ok(_), Err(StoreError::Conflict { .. })) => "from-a",
            (Err(StoreError::Conflict { .. }), Ok(_)) => "from-b",
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        assert_eq!(image(&a.tasks.get(&name).await.unwrap().unwrap()), winner);
    }
    nats.stop().await;
}

#[tokio::test]
async fn raw_kv_filters_keys() {
    let nats = TestNats::start().await;
    let c = cluster(&nats).await;
    let work = c.work.typed::<Task>();
    assert!(work.keys(">").await.unwrap().is_empty());
    for (node, t) in [("n1", "a"), ("n1", "b"), ("n2", "a"), ("n1.x", "c")] {
        work.put(&voiyd_nats::names::work_key(node, t), &task(t, node))
            .await
            .unwrap();
    }
    assert_eq!(
        work.keys(&voiyd_nats::names::work_filter("n1"))
            .await
            .unwrap(),
        vec!["n1.a", "n1.b"]
    );
    let entries = work.entries("n2.>").await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "n2.a");
    assert_eq!(image(&entries[0].1), "n2");
    work.delete("n1.a", None).await.unwrap();
    assert_eq!(work.keys("n1.>").await.unwrap(), vec!["n1.b"]);
    assert!(work.entries("n9.>").await.unwrap().is_empty());

    // A value that is not a Task is reported as undecodable, not as a panic.
    c.work
        .put("n3.bad", bytes::Bytes::from_static(&[0xff, 0xff]))
        .await
        .unwrap();
    assert!(matches!(
        work.get("n3.bad").await,
        Err(StoreError::Decode { .. })
    ));
    nats.stop().await;
}

/// A snapshot read while keys are rewritten and deleted lists each live key once, with
/// its newest value, and never a key deleted during the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_under_writes_list_each_key_once() {
    let nats = TestNats::start().await;
    let c = cluster(&nats).await;
    for i in 0..3000 {
        c.work
            .put(&format!("n.t{i}"), format!("v0-{i}").into())
            .await
            .unwrap();
    }
    let writer = {
        let work = c.work.clone();
        tokio::spawn(async move {
            for round in 1.. {
                for i in (0..3000).step_by(7) {
                    let _ = work
                        .put(&format!("n.t{i}"), format!("v{round}-{i}").into())
                        .await;
                }
                let _ = work.delete(&format!("n.t{}", round % 3000), None).await;
            }
        })
    };
    for _ in 0..5 {
        let entries = c.work.entries(">").await.unwrap();
        let mut keys: Vec<&str> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key listed twice");
        assert!(n <= 3000 && n > 2900, "{n}");
    }
    writer.abort();
}
