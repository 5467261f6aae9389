//! The one KV watcher against a real nats-server: current values then changes, an
//! empty bucket is current at once, a value that does not decode is reported and not
//! taken for a delete, and a watch carries on after nats-server is killed and
//! restarted, from where it was (nothing twice, nothing missed).

use futures::stream::BoxStream;
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::{Meta, Task};
use voiyd_nats::connect::{connect_linked, ConnectOptions};
use voiyd_nats::watch::{WatchEvent, Watcher};
use voiyd_testkit::nats::TestNats;

fn task(name: &str) -> bytes::Bytes {
    Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

async fn next<V: std::fmt::Debug>(w: &mut BoxStream<'static, WatchEvent<V>>) -> WatchEvent<V> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch event within 20 s")
        .expect("the watch never ends")
}

/// A compact form of an event, for comparisons.
fn said<V>(e: &WatchEvent<V>) -> String {
    match e {
        WatchEvent::Put { key, .. } => format!("put {key}"),
        WatchEvent::Delete { key, .. } => format!("delete {key}"),
        WatchEvent::Invalid { key, .. } => format!("invalid {key}"),
        WatchEvent::Current => "current".into(),
    }
}

async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::kv::Store {
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: name.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn current_values_then_changes_and_bad_values_are_not_deletes() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let kv = bucket(&js, "w").await;
    kv.put("a", task("a")).await.unwrap();
    kv.put("b", task("b")).await.unwrap();
    kv.put("other.x", task("x")).await.unwrap();

    let mut w = Watcher::new(js.clone(), "w", "*", "task").typed::<Task>();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(said(&next(&mut w).await));
    }
    assert_eq!(first, ["put a", "put b", "current"]);

    kv.put("c", task("c")).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Put { key, value, .. } => {
            assert_eq!(key, "c");
            assert_eq!(value.meta.unwrap().name, "c");
        }
        other => panic!("not the put of c: {other:?}"),
    }
    kv.delete("a").await.unwrap();
    assert_eq!(said(&next(&mut w).await), "delete a");
    // Not a task: said as such, with the reason, and never as a delete.
    kv.put("b", bytes::Bytes::from_static(b"\xff\xff not protobuf"))
        .await
        .unwrap();
    match next(&mut w).await {
        WatchEvent::Invalid { key, error, .. } => {
            assert_eq!(key, "b");
            assert!(error.to_string().contains("task"), "{error}");
        }
        other => panic!("a bad value must be Invalid: {other:?}"),
    }

    // An empty bucket is current at once.
    bucket(&js, "empty").await;
    let mut e = Watcher::new(js.clone(), "empty", ">", "task").raw();
    assert_eq!(said(&next(&mut e).await), "current");
    nats.stop().await;
}

#[tokio::test]
async fn a_watch_opens_its_bucket_once_it_exists() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let mut w = Watcher::new(js.clone(), "late", ">", "task").raw();
    let waiting = tokio::spawn(async move {
        let first = next(&mut w).await;
        let second = next(&mut w).await;
        (said(&first), said(&second))
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch is retrying meanwhile
    let kv = bucket(&js, "late").await;
    kv.put("k", task("k")).await.unwrap();
    let (first, second) = waiting.await.unwrap();
    // Created empty, then written: current first, or the put first when it won the race.
    let mut got = [first, second];
    got.sort();
    assert_eq!(got, ["current".to_string(), "put k".to_string()]);
    nats.stop().await;
}

#[tokio::test]
async fn a_watch_resumes_after_nats_server_is_killed() {
    let nats = TestNats::start().await;
    let (client, link) = connect_linked(&ConnectOptions {
        urls: vec![nats.url()],
        name: "watch-test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = bucket(&js, "r").await;
    for i in 0..5 {
        kv.put(format!("k{i}"), task("x")).await.unwrap();
    }
    let mut w = Watcher::of(kv.clone(), ">", "task")
        .on_reconnect(link.clone())
        .raw();
    let mut revisions = Vec::new();
    loop {
        let e = next(&mut w).await;
        match e.revision() {
            Some(r) => revisions.push(r),
            None => break,
        }
    }
    assert_eq!(revisions.len(), 5);

    let old = nats.server().pid().expect("running");
    let before = link.state();
    voiyd_testkit::kill(old, voiyd_testkit::Signal::KILL);
    tokio::time::timeout(Duration::from_secs(30), link.reconnected_after(before))
        .await
        .expect("the client reconnects to the restarted nats-server");
    // Written after the restart: the watch delivers it, once, and nothing from before.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match kv.put("after", task("after")).await {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = Vec::new();
    loop {
        let e = next(&mut w).await;
        if let Some(r) = e.revision() {
            assert!(
                !revisions.contains(&r),
                "revision {r} delivered twice: {}",
                said(&e)
            );
            seen.push(said(&e));
            if said(&e) == "put after" {
                break;
            }
        }
    }
    assert_eq!(seen, ["put after"]);
    nats.stop().await;
}
