//! Traces over OTLP: one `voiydctl run` is one trace across voiydctl, voiyd-server and
//! voiyd-node, received by a small OTLP/HTTP (JSON) collector in the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voiyd_tests::{eventually, stderr, stdout, ContainerdCluster};

/// One span as the collector got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

/// A collector on loopback: answers every POST with 200 and keeps the spans.
fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let keep = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(1000) {
            let Ok(conn) = conn else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Requests on one connection, one after the other (keep-alive).
                for _ in 0..1000 {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            first = false;
                            continue;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
                        keep.lock().unwrap().extend(spans_in(&doc));
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (url, spans)
}

/// The spans of an OTLP JSON export request.
fn spans_in(doc: &serde_json::Value) -> Vec<Span> {
    let mut out = Vec::new();
    let empty = vec![];
    for rs in doc["resourceSpans"].as_array().unwrap_or(&empty) {
        let service = rs["resource"]["attributes"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or("")
            .to_string();
        for ss in rs["scopeSpans"].as_array().unwrap_or(&empty) {
            for s in ss["spans"].as_array().unwrap_or(&empty) {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
                out.push(Span {
                    service: service.clone(),
                    name: text("name"),
                    trace: text("traceId"),
                    id: text("spanId"),
                    parent: text("parentSpanId"),
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn one_run_is_one_trace_across_cli_server_and_node() {
    let (url, spans) = collector();
    let c = ContainerdCluster::start_with(&["--otlp-endpoint", &url]).await;
    let _n1 = c.agent("n1", &["--otlp-endpoint", &url]);
    eventually(Duration::from_secs(20), "n1 ready", || async {
        let out = stdout(&c.voiydctl(&["get", "nodes"]));
        out.contains(" Ready").then_some(())
    })
    .await;
    let image = c.registry.image("busybox");
    let out = c.voiydctl(&[
        "--otlp-endpoint",
        &url,
        "run",
        "traced",
        "--image",
        &image,
        "--timeout",
        "60s",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The CLI's root span, and everything in its trace, from all three programs.
    let trace = eventually(
        Duration::from_secs(30),
        "the three programs' spans",
        || async {
            let all = spans.lock().unwrap().clone();
            let root = all
                .iter()
                .find(|s| s.service == "voiydctl" && s.name == "voiydctl run")?
                .trace
                .clone();
            let ours: Vec<Span> = all.into_iter().filter(|s| s.trace == root).collect();
            let has = |service: &str, name: &str| {
                ours.iter().any(|s| s.service == service && s.name == name)
            };
            (has("voiyd-server", "api tasks.create")
                && has("voiyd-server", "place")
                && has("voiyd-node", "node start")
                && has("voiyd-node", "node report Running"))
            .then_some(ours)
        },
    )
    .await;
    // One tree: every span but the root has its parent in the trace.
    let ids: std::collections::BTreeSet<&str> = trace.iter().map(|s| s.id.as_str()).collect();
    let orphans: Vec<&Span> = trace
        .iter()
        .filter(|s| !s.parent.is_empty() && !ids.contains(s.parent.as_str()))
        .collect();
    assert!(
        orphans.is_empty(),
        "spans whose parent is not in the trace: {orphans:?}"
    );
    let by_service: BTreeMap<&str, Vec<&str>> = trace.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.service.as_str())
            .or_default()
            .push(s.name.as_str());
        m
    });
    eprintln!("one trace: {by_service:?}");
    assert_eq!(by_service.len(), 3, "{by_service:?}");
}
