//! Lists at size and `get -w`, the way users meet them: voiydctl against a real
//! nats-server, a real voiyd-server and simulated nodes.

use futures::StreamExt;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use voiyd_messages::v1::{EventsRequest, ListRequest, Task, TaskConfig};
use voiyd_messages::Resource;
use voiyd_nats::api::{ApiClient, ApiError};
use voiyd_nats::names;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{
    bin, eventually, sim_nodes, stderr, stdout, voiydctl, voiydctl_ok, wait_nodes, Server,
};

const TASKS: usize = 20_000;

fn task(name: &str, app: &str) -> Task {
    Task::new(name, TaskConfig::image("sim/app:1")).with_labels([("app", app)])
}

async fn running(api: &ApiClient) -> usize {
    let req = ListRequest {
        field_selector: "phase=Running".into(),
        ..Default::default()
    };
    api.list_with::<Task>(&req)
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_tasks_list_filter_and_print() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await.with_timeout(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(
        &nats.url(),
        "big",
        20,
        dir.path(),
        &["--sim-cpu", "1000", "--sim-memory", "1000Gi"],
    );
    wait_nodes(&api, 20).await;

    let start = Instant::now();
    futures::stream::iter(0..TASKS)
        .map(|i| {
            let api = api.clone();
            async move {
                let t = task(&format!("t{i:05}"), &format!("a{}", i % 4));
                api.create(&t).await.expect("create task");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    eprintln!("{TASKS} creates took {:?}", start.elapsed());
    eventually(
        Duration::from_secs(180),
        &format!("{TASKS} tasks running"),
        || async { (running(&api).await == TASKS).then_some(()) },
    )
    .await;

    // The whole table, through the CLI.
    let start = Instant::now();
    let table = voiydctl_ok(&server.url, &["get", "tasks"], None);
    eprintln!("get tasks ({TASKS}) took {:?}", start.elapsed());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), TASKS + 1, "header plus one row per task");
    assert!(lines[0].starts_with("NAME"), "{}", lines[0]);
    assert!(lines[1].starts_with("t00000 ") && lines[TASKS].starts_with("t19999 "));
    assert!(lines[1..].iter().all(|l| l.contains("Running")));

    let json = voiydctl_ok(&server.url, &["get", "tasks", "-o", "json"], None);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).expect("a JSON array");
    assert_eq!(all.len(), TASKS);

    // Label selector, on the server.
    let a1 = voiydctl_ok(
        &server.url,
        &["get", "tasks", "-l", "app=a1", "-o", "name"],
        None,
    );
    assert_eq!(a1.lines().count(), TASKS / 4);
    assert!(a1.lines().all(|l| {
        let n: usize = l.trim_start_matches("task/t").parse().unwrap();
        n % 4 == 1
    }));

    // Field selectors: the tasks of one node are exactly those the full list puts there.
    let everything = api.list::<Task>("").await.unwrap();
    let node = everything[0].status.as_ref().unwrap().node.clone();
    let on_node = everything
        .iter()
        .filter(|t| t.status.as_ref().unwrap().node == node)
        .count();
    assert!(on_node > 0 && on_node < TASKS, "{on_node}");
    let selected = voiydctl_ok(
        &server.url,
        &[
            "get",
            "tasks",
            "--field-selector",
            &format!("node={node}"),
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(selected.lines().count(), on_node);
    let both = voiydctl_ok(
        &server.url,
        &[
            "get",
            "tasks",
            "-l",
            "app=a2",
            "--field-selector",
            &format!("node!={node},phase=Running"),
            "-o",
            "name",
        ],
        None,
    );
    let expect = everything
        .iter()
        .filter(|t| {
            t.labels().get("app").map(String::as_str) == Some("a2")
                && t.status.as_ref().unwrap().node != node
        })
        .count();
    assert_eq!(both.lines().count(), expect);
    let o = voiydctl(
        &server.url,
        &["get", "tasks", "--field-selector", "phase!=Running"],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("No tasks found."), "{}", stderr(&o));

    // Bad input: one line that says what is wrong, exit 2, no request made.
    let o = voiydctl(
        &server.url,
        &["get", "tasks", "--field-selector", "host=x"],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown field `host`") && err.contains("node, phase"),
        "{err}"
    );

    // One by name stays one read.
    let one = voiydctl_ok(&server.url, &["get", "tasks", "t12345"], None);
    assert_eq!(one.lines().count(), 2, "{one}");

    // A client that reads one reply only is told to upgrade, not given a short list.
    let raw = async_nats::connect(&server.url).await.unwrap();
    let msg = raw
        .request(
            names::api_subject("tasks", "list"),
            prost::Message::encode_to_vec(&ListRequest::default()).into(),
        )
        .await
        .unwrap();
    let e = voiyd_nats::api::decode_reply::<voiyd_messages::v1::TaskList>("tasks.list", &msg)
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::TooLarge(m) if m.contains("upgrade")),
        "{e}"
    );

    // A page of 10,000 events with their objects is more than one NATS message too.
    let page = api
        .events(&EventsRequest {
            kind: "task".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 10_000);
    assert!(page.items.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line with every word, returning it; panics with what came instead.
fn expect_line(rx: &mpsc::Receiver<String>, words: &[&str], seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if words.iter().all(|w| line.contains(w)) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {words:?}; got:\n{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_every_change_from_the_list_on() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "w", 1, dir.path(), &[]);
    wait_nodes(&api, 1).await;
    api.create(&task("before", "x")).await.unwrap();
    eventually(Duration::from_secs(30), "before running", || async {
        (running(&api).await == 1).then_some(())
    })
    .await;

    let mut child = Command::new(bin("voiydctl"))
        .args([
            "--server",
            &server.url,
            "get",
            "tasks",
            "-w",
            "--output-watch-events",
            "-l",
            "app=x",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut seen = Vec::new();
    let header = expect_line(&rx, &["EVENT", "NAME", "PHASE"], &mut seen);
    expect_line(&rx, &["ADDED", "before", "Running"], &mut seen);

    // A task of another app never shows; ours shows as it is added, runs and goes.
    api.create(&task("other", "y")).await.unwrap();
    api.create(&task("after", "x")).await.unwrap();
    let added = expect_line(&rx, &["after"], &mut seen);
    assert!(added.starts_with("ADDED"), "{added}");
    let col = header.find("NAME").unwrap();
    assert_eq!(
        &added[col..col + 5],
        "after",
        "rows keep the header's columns"
    );
    // Sim containers start at once: the first row may already say Running.
    if !added.contains("Running") {
        expect_line(&rx, &["MODIFIED", "after", "Running"], &mut seen);
    }
    voiydctl_ok(&server.url, &["delete", "task", "after"], None);
    expect_line(&rx, &["DELETED", "after"], &mut seen);
    voiydctl_ok(&server.url, &["stop", "task", "before"], None);
    expect_line(&rx, &["MODIFIED", "before", "Stopped"], &mut seen);
    assert!(
        !seen.iter().any(|l| l.contains("other")),
        "{}",
        seen.join("\n")
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Misuse is one line and exit 2.
    let o = voiydctl(
        &server.url,
        &["get", "tasks", "--output-watch-events"],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = voiydctl(&server.url, &["get", "leases", "-w"], None, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
