//! Jobs, cron jobs and `run --rm` end to end: real nats-server, voiyd-server (three of
//! them for cron), voiyd-node (sim nodes, and containerd with a registry) and voiydctl.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use voiyd_messages::v1::{Job, Task};
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{
    eventually, sim_nodes, stderr, stdout, voiydctl, voiydctl_ok, wait_nodes, ContainerdCluster,
    Server,
};

fn finished(j: &Job) -> Option<(String, String)> {
    j.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.status == "True" && (c.r#type == "Complete" || c.r#type == "Failed"))
            .then(|| (c.r#type.clone(), c.reason.clone()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn a_job_runs_its_completions_parallelism_at_a_time_on_real_containerd() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n1 = c.agent("n1", &[]);
    eventually(Duration::from_secs(20), "node n1 ready", || async {
        stdout(&c.voiydctl(&["get", "nodes"]))
            .contains(" Ready")
            .then_some(())
    })
    .await;
    let image = c.registry.image("busybox");
    let manifest = format!(
        "version: job/v1
meta: {{name: batch}}
completions: 5
parallelism: 2
template:
  image: {image}
  args: [sh, -c, 'echo piece done; sleep 1']
"
    );
    let o = voiydctl(&c.server.url, &["apply", "-f", "-"], Some(&manifest), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Sampled throughout: never more than two tasks unfinished at once.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tasks: Vec<Task> = c.api.list("voiyd.io/job=batch").await.unwrap_or_default();
        let unfinished = tasks
            .iter()
            .filter(|t| {
                let p = t.status.as_ref().map_or("", |s| s.phase.as_str());
                p != "Succeeded" && p != "Failed"
            })
            .count();
        most = most.max(unfinished);
        let job: Job = c.api.get("batch").await.unwrap();
        if finished(&job).is_some() {
            let st = job.status.clone().unwrap();
            assert_eq!(finished(&job).unwrap().0, "Complete");
            assert_eq!((st.succeeded, st.failed), (5, 0));
            assert_eq!(tasks.len(), 5, "exactly five tasks were started");
            break;
        }
        assert!(Instant::now() < deadline, "job did not complete: {job:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= 2, "{most} tasks ran at once, parallelism is 2");
    assert!(most == 2, "never two at once: parallelism unused");
    let table = c.ok(&["get", "jobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("batch") && l.contains("5/5") && l.contains("Complete")),
        "{table}"
    );
    let logs = c.ok(&["logs", "job/batch"]);
    assert_eq!(logs.matches("piece done").count(), 5, "{logs}");

    // run --rm: the output, then the exit code; the task is gone afterwards.
    let o = c.voiydctl(&[
        "run",
        "once",
        "--rm",
        "--image",
        &image,
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "echo hello from once; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stdout(&o).contains("hello from once"), "{}", stdout(&o));
    eventually(Duration::from_secs(10), "task once deleted", || async {
        c.api.get::<Task>("once").await.is_err().then_some(())
    })
    .await;
    let o = c.voiydctl(&[
        "run",
        "fine",
        "--rm",
        "--image",
        &image,
        "--timeout",
        "60s",
        "--",
        "echo",
        "fine",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_run_once_per_slot_across_three_servers() {
    let nats = TestNats::start().await;
    let servers = [
        Server::external(&nats.url()).await,
        Server::external(&nats.url()).await,
        Server::external(&nats.url()).await,
    ];
    let url = servers[0].url.clone();
    let api = servers[0].api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "c", 2, dir.path(), &[]);
    wait_nodes(&api, 2).await;

    // Bad input: one line naming the field and the fix.
    let bad = "version: job/v1
meta: {name: bad}
completions: 1
parallelism: 3
schedule: '0 0 30 2 *'
template: {image: sim/app:1}
";
    let o = voiydctl(&url, &["apply", "-f", "-"], Some(bad), &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("parallelism: 3 is more than completions (1)") && e.contains("never fires"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // A job whose tasks fail gives up after its backoff limit.
    let failing = "version: job/v1
meta: {name: doomed}
backoffLimit: 1
template: {image: sim/app:1, args: [sim-exit, '3']}
";
    voiydctl_ok(&url, &["apply", "-f", "-"], Some(failing));
    let job = eventually(Duration::from_secs(20), "doomed failed", || async {
        let j: Job = api.get("doomed").await.ok()?;
        finished(&j).is_some().then_some(j)
    })
    .await;
    assert_eq!(
        finished(&job),
        Some(("Failed".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(job.status.unwrap().failed, 2);

    // A cron job every 5 s, watched by three servers.
    let cron = "version: job/v1
meta: {name: tick}
schedule: '@every 5s'
successfulJobsHistoryLimit: 20
template: {image: sim/app:1, args: [sim-exit, '0']}
";
    voiydctl_ok(&url, &["apply", "-f", "-"], Some(cron));
    let started = Instant::now();
    let runs = eventually(Duration::from_secs(40), "four runs", || async {
        let runs: Vec<Job> = api.list("voiyd.io/cronjob=tick").await.ok()?;
        (runs.len() >= 4 && runs.iter().all(|r| finished(r).is_some())).then_some(runs)
    })
    .await;
    let elapsed = started.elapsed().as_secs();
    let slots: BTreeSet<i64> = runs
        .iter()
        .map(|r| {
            r.meta.as_ref().unwrap().name["tick-".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(slots.len(), runs.len());
    assert!(slots.iter().all(|s| s % 5 == 0), "{slots:?}");
    let v: Vec<i64> = slots.iter().copied().collect();
    assert!(
        v.windows(2).all(|w| w[1] - w[0] == 5),
        "a slot was missed or repeated: {v:?}"
    );
    assert!(
        (runs.len() as u64) <= elapsed / 5 + 2,
        "{} runs in {elapsed}s",
        runs.len()
    );
    // Each run started exactly one task, whichever server saw the slot.
    let tasks: Vec<Task> = api.list("voiyd.io/job").await.unwrap();
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tasks {
        let job = t.meta.as_ref().unwrap().labels["voiyd.io/job"].clone();
        *per_run.entry(job).or_default() += 1;
    }
    for r in &runs {
        let name = &r.meta.as_ref().unwrap().name;
        assert_eq!(per_run.get(name), Some(&1), "{name}: {per_run:?}");
    }
    let table = voiydctl_ok(&url, &["get", "jobs"], None);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("tick ") && l.contains("@every 5s")),
        "{table}"
    );
    // Deleting the cron job deletes its runs and their tasks.
    voiydctl_ok(&url, &["delete", "job", "tick"], None);
    eventually(Duration::from_secs(20), "runs gone", || async {
        let runs: Vec<Job> = api.list("voiyd.io/cronjob=tick").await.ok()?;
        runs.is_empty().then_some(())
    })
    .await;
}
