//! Set services across hosts, on real kernel networking: three node agents, each in a
//! network namespace of its own standing in for a host, joined by the mesh. A set with a
//! virtual IP answers through it and through its name from every host, spread over its
//! replicas on all three; a stopped replica leaves the answers; a published port of a
//! set answers on a host that runs none of its replicas; an isolated set admits only its
//! own tasks and those its allowFrom names; stopped agents leave no rule behind.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use voiyd_messages::v1::{ContainerSet, Node};
use voiyd_tests::hosts::Underlay;
use voiyd_tests::{eventually, stdout, ContainerdCluster};

/// busybox httpd on 8080 answering with the task's host name (its task name).
const HTTPD: &str =
    "'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www'";

/// What one host's iptables hold.
fn rules(netns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "iptables-save"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn a_set_answers_by_virtual_ip_from_every_host_and_isolation_keeps_others_out() {
    let c = ContainerdCluster::start_with(&[]).await;
    let u = Underlay::new(3);
    let mut agents = voiyd_tests::hosts::mesh_agents(&c, &u, "svc");
    for name in ["svc-a", "svc-b", "svc-c"] {
        eventually(
            Duration::from_secs(40),
            &format!("{name} Ready in the mesh"),
            || {
                let api = c.api.clone();
                async move {
                    let n: Node = api.get(name).await.ok()?;
                    let st = n.status?;
                    (st.phase == "Ready" && st.mesh.is_some() && !st.subnet.is_empty())
                        .then_some(())
                }
            },
        )
        .await;
    }
    let image = c.registry.image("busybox");
    // One web replica and one client on every host; an isolated db on b that admits
    // tasks labelled role=api; one replica of `one` on c, published on port 18081.
    c.apply(&format!(
        "version: containerset/v1\nmeta: {{name: web}}\nmode: global\nvip: true\ntemplate:\n  image: {image}\n  stopGracePeriod: 1s\n  args: [sh, -c, {HTTPD}]\n---\nversion: containerset/v1\nmeta: {{name: probe}}\nmode: global\ntemplate:\n  image: {image}\n  stopGracePeriod: 1s\n  args: [sleep, '3600']\n---\nversion: containerset/v1\nmeta: {{name: db}}\nnetwork: isolated\nallowFrom: {{role: api}}\ntemplate:\n  image: {image}\n  nodeSelector: {{host: b}}\n  stopGracePeriod: 1s\n  args: [sh, -c, {HTTPD}]\n---\nversion: task/v1\nmeta: {{name: api, labels: {{role: api}}}}\nconfig:\n  image: {image}\n  nodeSelector: {{host: a}}\n  stopGracePeriod: 1s\n  args: [sleep, '3600']\n---\nversion: containerset/v1\nmeta: {{name: one}}\ntemplate:\n  image: {image}\n  nodeSelector: {{host: c}}\n  stopGracePeriod: 1s\n  portMappings: [{{hostPort: 18081, targetPort: 8080}}]\n  args: [sh, -c, {HTTPD}]\n"
    ));
    let webs: BTreeSet<String> = ["web-svc-a", "web-svc-b", "web-svc-c"]
        .map(String::from)
        .into();
    let api = &c.api;
    let running = |name: String| async move {
        voiyd_tests::running_task(api, &name)
            .await
            .map(|(_, ip)| ip)
    };
    for t in webs.iter().cloned().chain(
        [
            "probe-svc-a",
            "probe-svc-b",
            "probe-svc-c",
            "db-0",
            "api",
            "one-0",
        ]
        .map(String::from),
    ) {
        eventually(Duration::from_secs(90), &format!("{t} Running"), || {
            running(t.clone())
        })
        .await;
    }
    let vip = eventually(Duration::from_secs(20), "web's virtual IP", || async {
        let s: ContainerSet = c.api.get("web").await.ok()?;
        let vip = s.status?.vip;
        (!vip.is_empty()).then_some(vip)
    })
    .await;
    assert!(vip.starts_with("10.68."), "{vip}");

    // From every host, the virtual IP and the set's name lead to all three replicas.
    let answers = |client: &str, url: &str, n: usize| {
        let script =
            format!("for i in $(seq {n}); do timeout 3 wget -q -O - {url} 2>/dev/null; done; true");
        let out = c.voiydctl(&["exec", client, "--", "sh", "-c", &script]);
        stdout(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<Vec<String>>()
    };
    for client in ["probe-svc-a", "probe-svc-b", "probe-svc-c"] {
        let seen: BTreeSet<String> = eventually(
            Duration::from_secs(30),
            &format!("{client} reaches every replica"),
            || async {
                let seen: BTreeSet<String> = answers(client, &format!("http://{vip}:8080/"), 30)
                    .into_iter()
                    .collect();
                (seen == webs).then_some(seen)
            },
        )
        .await;
        assert_eq!(seen, webs);
        let out = c.voiydctl(&["exec", client, "--", "nslookup", "web"]);
        assert!(
            stdout(&out).contains(&vip),
            "{client}: web resolves to {}",
            stdout(&out)
        );
        let by_name: BTreeSet<String> = answers(client, "http://web.voiyd:8080/", 20)
            .into_iter()
            .collect();
        assert!(
            by_name.len() >= 2 && by_name.is_subset(&webs),
            "{client} by name: {by_name:?}"
        );
    }

    // A stopped replica leaves the answers.
    let (ha, hb, hc) = (&u.hosts[0], &u.hosts[1], &u.hosts[2]);
    let b_ip = running("web-svc-b".to_string())
        .await
        .expect("web-svc-b running");
    // (whole lines: 10.69.1.3 is a prefix of 10.69.1.34)
    let leads_to = |r: &str, ip: &str| {
        r.lines()
            .any(|l| l.ends_with(&format!("--to-destination {ip}")))
    };
    assert!(leads_to(&rules(&ha.netns), &b_ip));
    c.ok(&["stop", "task", "web-svc-b"]);
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the stopped replica out of a's rules",
        || async {
            let r = rules(&ha.netns);
            (r.contains(&format!("-d {vip}/32")) && !leads_to(&r, &b_ip)).then_some(())
        },
    )
    .await;
    let left_after = stopped.elapsed();
    let after: BTreeSet<String> = answers("probe-svc-a", &format!("http://{vip}:8080/"), 20)
        .into_iter()
        .collect();
    assert!(
        !after.contains("web-svc-b") && !after.is_empty(),
        "after the stop: {after:?}"
    );
    // (`stop` returns once the task is Stopped: the rest is the services' propagation)
    println!("a stopped replica left host a's rules {left_after:?} after `voiydctl stop` returned");
    assert!(left_after < Duration::from_secs(2), "took {left_after:?}");

    // A published port answers on hosts with no replica of the set (a and b; `one` runs
    // on c), for a client outside the cluster's networks (another host itself).
    for (h, from) in [(ha, hb), (hb, hc), (hc, ha)] {
        let got = eventually(
            Duration::from_secs(20),
            &format!("port 18081 on {}", h.addr),
            || async {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &from.netns, "curl", "-s", "-m", "3"])
                    .arg(format!("http://{}:18081/", h.addr))
                    .output()
                    .ok()?;
                let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
                (body == "one-0").then_some(body)
            },
        )
        .await;
        assert_eq!(got, "one-0");
    }

    // Isolation: the db admits its allowFrom (api, on a) and refuses an unlabelled task
    // on another host (probe on a) and on its own (probe on b).
    let db_ip = running("db-0".to_string()).await.expect("db running");
    let fetch = |client: &str| {
        let out = c.voiydctl(&[
            "exec",
            client,
            "--",
            "sh",
            "-c",
            &format!("timeout 5 wget -q -O - http://{db_ip}:8080/ 2>&1; echo rc=$?"),
        ]);
        stdout(&out)
    };
    let admitted = eventually(Duration::from_secs(20), "api reaches the db", || async {
        let out = fetch("api");
        out.contains("db-0").then_some(out)
    })
    .await;
    assert!(admitted.contains("rc=0"), "{admitted}");
    for outsider in ["probe-svc-a", "probe-svc-b"] {
        let out = eventually(
            Duration::from_secs(20),
            &format!("{outsider} refused"),
            || async {
                let out = fetch(outsider);
                (!out.contains("db-0") && !out.contains("rc=0")).then_some(out)
            },
        )
        .await;
        // Refused at once (REJECT), not left to time out.
        assert!(!out.contains("rc=143"), "{outsider}: {out}");
    }
    let s: ContainerSet = c.api.get("db").await.unwrap();
    assert_eq!(s.network, "isolated");

    // An agent killed with -9 takes its device and routes with it; started again, it
    // joins with a new key, replaces its rules rather than adding to them, and tasks on
    // other hosts reach its tasks again.
    let a_web = running("web-svc-a".to_string())
        .await
        .expect("web-svc-a running");
    let _ = agents[0].proc.child.kill();
    let _ = agents[0].proc.child.wait();
    assert!(
        !voiyd_tests::hosts::in_netns(&ha.netns, "ip", &["link", "show", "voiyd-mesh"]),
        "the mesh device outlived a killed agent"
    );
    let key_before = {
        let n: Node = c.api.get("svc-a").await.unwrap();
        n.status.unwrap().mesh.unwrap().public_key
    };
    agents[0].restart(1);
    eventually(
        Duration::from_secs(40),
        "svc-a back with a new key",
        || async {
            let n: Node = c.api.get("svc-a").await.ok()?;
            let st = n.status?;
            (st.phase == "Ready" && st.mesh?.public_key != key_before).then_some(())
        },
    )
    .await;
    let back = eventually(
        Duration::from_secs(30),
        "b reaches a's replica again",
        || async {
            let out = c.voiydctl(&[
                "exec",
                "probe-svc-b",
                "--",
                "sh",
                "-c",
                &format!("timeout 3 wget -q -O - http://{a_web}:8080/"),
            ]);
            let out = stdout(&out);
            out.contains("web-svc-a").then_some(out)
        },
    )
    .await;
    assert_eq!(back.trim(), "web-svc-a");
    let r = eventually(Duration::from_secs(15), "a's rules back", || async {
        let r = rules(&ha.netns);
        r.contains(&format!("-d {vip}/32")).then_some(r)
    })
    .await;
    let count = |needle: &str| r.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("-A PREROUTING -i "),
        1,
        "one jump to the VIP chain:\n{r}"
    );
    assert_eq!(
        count("-A FORWARD -j VOIYD-POL-"),
        1,
        "one jump to the policy chain:\n{r}"
    );
    assert_eq!(
        r.lines()
            .filter(|l| l.starts_with("-A FORWARD") && l.contains("voiyd-mesh"))
            .count(),
        2,
        "two mesh forward rules:\n{r}"
    );

    // The set's virtual IP goes with `vip: false`: its claim is released, no host keeps
    // rules for it; back on, it gets one again, and deleting the set releases that too.
    let web_set = |vip: bool| {
        format!("version: containerset/v1\nmeta: {{name: web}}\nmode: global\nvip: {vip}\ntemplate:\n  image: {image}\n  stopGracePeriod: 1s\n  args: [sh, -c, {HTTPD}]\n")
    };
    let nats = async_nats::connect(&c.server.url).await.unwrap();
    let subnets = async_nats::jetstream::new(nats)
        .get_key_value(voiyd_nats::names::BUCKET_SUBNETS)
        .await
        .unwrap();
    let claimed_by_web = || {
        let subnets = subnets.clone();
        async move {
            let keys: Vec<String> =
                futures::TryStreamExt::try_collect(subnets.keys().await.unwrap())
                    .await
                    .unwrap();
            let mut n = 0;
            for k in keys {
                if subnets.get(&k).await.unwrap().as_deref() == Some(b"vip=web".as_slice()) {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(claimed_by_web().await, 1, "web's claim before vip: false");
    c.apply(&web_set(false));
    eventually(Duration::from_secs(20), "web's VIP released", || async {
        let s: ContainerSet = c.api.get("web").await.ok()?;
        (s.status?.vip.is_empty() && claimed_by_web().await == 0).then_some(())
    })
    .await;
    for h in [ha, hb, hc] {
        eventually(
            Duration::from_secs(15),
            &format!("{}: no rule for the old VIP", h.netns),
            || async { (!rules(&h.netns).contains(&format!("-d {vip}/32"))).then_some(()) },
        )
        .await;
    }
    c.apply(&web_set(true));
    eventually(Duration::from_secs(20), "web's VIP again", || async {
        let s: ContainerSet = c.api.get("web").await.ok()?;
        (!s.status?.vip.is_empty() && claimed_by_web().await == 1).then_some(())
    })
    .await;
    c.ok(&["delete", "set", "web"]);
    eventually(
        Duration::from_secs(20),
        "the deleted set's VIP released",
        || async { (claimed_by_web().await == 0).then_some(()) },
    )
    .await;

    // Agents that stop leave none of their rules behind (containers keep running).
    for h in [ha, hb, hc] {
        assert!(
            rules(&h.netns).contains("VOIYD-SVC-"),
            "{}: rules before the stop",
            h.netns
        );
    }
    for a in agents.iter_mut() {
        a.proc.stop(Duration::from_secs(10));
    }
    for h in [ha, hb, hc] {
        let r = rules(&h.netns);
        assert!(
            !r.contains("VOIYD-") && !r.contains("voiyd-mesh"),
            "{}: left behind:\n{r}",
            h.netns
        );
        let link = std::process::Command::new("ip")
            .args(["-n", &h.netns, "link", "show", "voiyd-mesh"])
            .output()
            .unwrap();
        assert!(
            !link.status.success(),
            "{}: the mesh device outlived its agent",
            h.netns
        );
    }
}

#[test]
fn a_virtual_ip_range_over_the_node_subnets_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before connecting: no NATS answers on this port. `timeout`: a server that
    // did not refuse would retry on; the test fails then too.
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg(voiyd_tests::bin("voiyd-server"))
        .args(["--nats-url", "nats://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .args([
            "--cluster-cidr",
            "10.69.0.0/16",
            "--vip-cidr",
            "10.69.200.0/24",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("10.69.200.0/24 overlaps the cluster CIDR 10.69.0.0/16")
            && last.contains("--vip-cidr"),
        "{err}"
    );
}
