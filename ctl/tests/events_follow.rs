//! `events -w` follows the real event stream of a real nats-server, and resumes after
//! the server restarts without skipping or repeating an event.

use async_nats::jetstream::{self, stream};
use prost::Message;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use voiyd_ctl::commands::events::{follow, Query};
use voiyd_messages::v1::Event;
use voiyd_nats::connect::{connect, connect_linked, ConnectOptions};
use voiyd_nats::embedded::{find_binary, EmbeddedConfig, EmbeddedNats};
use voiyd_nats::names;
use voiyd_testkit::nats::free_port;

async fn publish(js: &jetstream::Context, kind: &str, name: &str, n: u32) {
    let ev = Event {
        kind: kind.into(),
        name: name.into(),
        r#type: "updated".into(),
        message: format!("event {n}"),
        ..Event::default()
    };
    js.publish(
        names::event_subject(kind, name, "updated"),
        ev.encode_to_vec().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
}

async fn client(url: &str) -> async_nats::Client {
    connect(&ConnectOptions {
        name: "test".into(),
        ..ConnectOptions::from_urls(url)
    })
    .await
    .expect("connect")
}

/// Receives until `want` events arrived or the deadline passes. The deadline is well
/// below the ~15 s the ordered consumer alone needs to notice a restarted server, so
/// resuming late fails the test too.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Event>, got: &mut Vec<Event>, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            _ => panic!("only {} of {want} events arrived: {got:?}", got.len()),
        }
    }
}

#[tokio::test]
async fn follows_across_a_server_restart_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig::new(
        find_binary(None).unwrap_or_else(|e| panic!("{e}")),
        dir.path().to_path_buf(),
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()),
        "ctl-test",
    );
    let server = EmbeddedNats::start(cfg.clone()).await.expect("nats-server");
    let url = server.client_url();
    let js = jetstream::new(client(&url).await);
    js.create_stream(stream::Config {
        name: names::STREAM_EVENTS.into(),
        subjects: vec![names::EVENTS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    for n in 1..=3 {
        publish(&js, "task", "web", n).await;
        publish(&js, "node", "n1", n).await; // filtered out below
    }

    let (follower, link) = connect_linked(&ConnectOptions {
        name: "follower".into(),
        ..ConnectOptions::from_urls(&url)
    })
    .await
    .expect("connect");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let q = Query {
        kind: "task".into(),
        ..Query::default()
    };
    let watch = tokio::spawn(async move {
        // Start after the first task event (stream sequence 1), as after a listing.
        let _ = follow(&follower, &link, &q, 1, move |e| {
            let _ = tx.send(e.clone());
        })
        .await;
    });
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 2).await;

    server.stop().await;
    let server = EmbeddedNats::start(cfg).await.expect("nats-server again");
    let js = jetstream::new(client(&url).await);
    for n in 4..=6 {
        publish(&js, "task", "web", n).await;
    }
    collect(&mut rx, &mut got, 5).await;
    // Nothing more is pending: a duplicate would show up here.
    publish(&js, "task", "web", 7).await;
    collect(&mut rx, &mut got, 6).await;

    let messages: Vec<&str> = got.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["event 2", "event 3", "event 4", "event 5", "event 6", "event 7"]
    );
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs[0], 3, "task events 1..3 are stream sequences 1, 3, 5");
    assert!(got.iter().all(|e| e.kind == "task"));

    watch.abort();
    server.stop().await;
}
