//! Bootstrap against a real nats-server: idempotence, concurrency, open, lease expiry.

use futures::StreamExt;
use std::time::{Duration, Instant};
use voiyd_nats::{bootstrap, names, open, BootstrapError, BootstrapOptions, RawKv};
use voiyd_testkit::nats::TestNats;

#[tokio::test]
async fn open_before_bootstrap_says_what_is_missing() {
    let nats = TestNats::start().await;
    let err = open(&nats.jetstream().await).await.unwrap_err();
    assert!(matches!(err, BootstrapError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("start voiyd-server"), "{err}");
    nats.stop().await;
}

#[tokio::test]
async fn bootstrap_twice_and_concurrently() {
    let nats = TestNats::start().await;
    let opts = BootstrapOptions::default();
    let (js1, js2) = (nats.jetstream().await, nats.jetstream().await);
    let (a, b) = tokio::join!(bootstrap(&js1, &opts), bootstrap(&js2, &opts));
    a.expect("first concurrent bootstrap");
    b.expect("second concurrent bootstrap");

    // Data survives a later bootstrap, which may also change limits.
    let c = bootstrap(&js1, &opts).await.unwrap();
    c.status
        .put("task.x", bytes::Bytes::from_static(b"v"))
        .await
        .unwrap();
    let changed = BootstrapOptions {
        events_max_msgs: 1000,
        ..opts
    };
    let c = bootstrap(&js2, &changed).await.unwrap();
    assert!(c.status.get("task.x").await.unwrap().is_some());
    let mut events = c.events.clone();
    let info = events.info().await.unwrap();
    assert_eq!(info.config.max_messages, 1000);
    assert_eq!(
        info.config.subjects,
        vec![names::EVENTS_SUBJECTS.to_string()]
    );

    // Every bucket exists; open binds to them.
    let opened = open(&js1).await.unwrap();
    for bucket in names::ALL_BUCKETS {
        js1.get_key_value(*bucket).await.unwrap();
    }
    assert_eq!(
        opened.leases.status().await.unwrap().max_age(),
        opts.lease_ttl
    );
    nats.stop().await;
}

#[tokio::test]
async fn lease_expiry_is_seen_by_watchers() {
    let nats = TestNats::start().await;
    let opts = BootstrapOptions {
        lease_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    let c = bootstrap(&nats.jetstream().await, &opts).await.unwrap();
    let leases = RawKv::new(c.leases.clone(), "lease");
    let key = names::node_lease_key("n1");
    let mut watch = leases.watch(">").await.unwrap();
    let rev = leases
        .create(&key, bytes::Bytes::from_static(b"holder"))
        .await
        .unwrap();
    // A held lease cannot be taken by someone else.
    assert!(leases
        .create(&key, bytes::Bytes::from_static(b"other"))
        .await
        .is_err());

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut saw_put = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let change = tokio::time::timeout(left, watch.next())
            .await
            .expect("lease did not expire within 15 s")
            .expect("watch ended")
            .expect("watch error");
        assert_eq!(change.key, key);
        match change.value {
            Some(_) => {
                assert_eq!(change.revision, rev);
                saw_put = true;
            }
            None => break,
        }
    }
    assert!(saw_put);
    assert_eq!(leases.get(&key).await.unwrap(), None);
    // An expired lease can be acquired again.
    leases
        .create(&key, bytes::Bytes::from_static(b"next"))
        .await
        .unwrap();
    nats.stop().await;
}

/// nats-server 2.15 caps a stream at 1,000 consumers unless it sets its own limit; a
/// cluster of more than 1,000 nodes keeps that many consumers on its work.
#[tokio::test]
async fn buckets_take_more_than_a_thousand_consumers() {
    use async_nats::jetstream::consumer::pull;
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let opts = BootstrapOptions::default();
    bootstrap(&js, &opts).await.unwrap();
    let stream = js
        .get_stream(format!("KV_{}", names::BUCKET_WORK))
        .await
        .unwrap();
    assert_eq!(
        stream.cached_info().config.max_consumers,
        opts.max_consumers
    );
    let creates = (0..1100).map(|i| {
        let stream = stream.clone();
        async move {
            stream
                .create_consumer(pull::Config {
                    name: Some(format!("c{i}")),
                    filter_subject: format!("$KV.{}.n{i}.>", names::BUCKET_WORK),
                    // Unused consumers go after 5 s by default; on a loaded machine
                    // creating 1,100 takes longer than that, and the count below
                    // would measure expiry, not the limit.
                    inactive_threshold: Duration::from_secs(600),
                    ..Default::default()
                })
                .await
        }
    });
    let results = futures::stream::iter(creates)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {}",
        failed.len(),
        failed[0]
    );

    // A snapshot read removes its consumer: reads leave the count where it was.
    let work = open(&js).await.unwrap().work;
    for _ in 0..20 {
        work.entries(">").await.unwrap();
    }
    let mut stream = stream;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = stream.info().await.unwrap().state.consumer_count;
        if count == 1100 {
            break;
        }
        assert!(Instant::now() < deadline, "{count} consumers, not 1100");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.stop().await;
}
