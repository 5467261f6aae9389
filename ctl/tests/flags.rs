//! `run` flags into a TaskConfig: good input, and bad input with exact messages.

use clap::Parser;
use voiyd_ctl::cli::{Command, RunArgs};
use voiyd_ctl::flags::{parse_env, parse_port, parse_volume, task_from_run};
use voiyd_ctl::Cli;

fn run_args(argv: &[&str]) -> RunArgs {
    let mut full = vec!["voiydctl", "run"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).expect("parses").command {
        Command::Run(a) => *a,
        other => panic!("not run: {other:?}"),
    }
}

#[test]
fn ports() {
    let p = parse_port("8080:80").unwrap();
    assert_eq!(
        (
            p.host_port,
            p.target_port,
            p.protocol.as_str(),
            p.host_ip.as_str()
        ),
        (8080, 80, "tcp", "")
    );
    let p = parse_port("127.0.0.1:53:5353/udp").unwrap();
    assert_eq!(
        (
            p.host_port,
            p.target_port,
            p.protocol.as_str(),
            p.host_ip.as_str()
        ),
        (53, 5353, "udp", "127.0.0.1")
    );
    let p = parse_port("[::1]:8443:443/TCP").unwrap();
    assert_eq!(
        (p.host_ip.as_str(), p.host_port, p.protocol.as_str()),
        ("::1", 8443, "tcp")
    );

    let cases = [
        ("80", "invalid port mapping `80`: use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80"),
        ("a:b:c:d", "invalid port mapping `a:b:c:d`: use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80"),
        ("8080:80/sctp", "invalid port mapping `8080:80/sctp`: protocol `sctp` must be tcp or udp"),
        ("8080:0", "invalid port mapping `8080:0`: container port `0` must be a number from 1 to 65535"),
        ("70000:80", "invalid port mapping `70000:80`: host port `70000` must be a number from 1 to 65535"),
        ("x:8080:80", "invalid port mapping `x:8080:80`: host IP `x` is not an IP address"),
    ];
    for (input, msg) in cases {
        assert_eq!(parse_port(input).unwrap_err(), msg, "{input}");
    }
}

#[test]
fn volumes() {
    let m = parse_volume("data:/var/lib/data").unwrap();
    assert_eq!(
        (m.r#type.as_str(), m.volume.as_str(), m.destination.as_str()),
        ("volume", "data", "/var/lib/data")
    );
    assert!(m.options.is_empty());
    let m = parse_volume("data:/d:ro").unwrap();
    assert_eq!(m.options, vec!["ro"]);
    let m = parse_volume("/srv/www:/usr/share/www:rw").unwrap();
    assert_eq!((m.r#type.as_str(), m.source.as_str()), ("bind", "/srv/www"));
    assert!(m.options.is_empty());

    assert_eq!(
        parse_volume("data").unwrap_err(),
        "invalid volume `data`: use VOLUME:/container/path[:ro], e.g. data:/var/lib/data"
    );
    assert_eq!(
        parse_volume(":/d").unwrap_err(),
        "invalid volume `:/d`: use VOLUME:/container/path[:ro], e.g. data:/var/lib/data"
    );
    assert_eq!(
        parse_volume("data:rel").unwrap_err(),
        "invalid volume `data:rel`: container path `rel` must be absolute"
    );
    assert_eq!(
        parse_volume("data:/d:rx").unwrap_err(),
        "invalid volume `data:/d:rx`: option `rx` must be ro or rw"
    );
}

#[test]
fn env() {
    let e = parse_env("A=b=c").unwrap();
    assert_eq!((e.name.as_str(), e.value.as_str()), ("A", "b=c"));
    assert_eq!(parse_env("EMPTY=").unwrap().value, "");
    assert_eq!(
        parse_env("NOVALUE").unwrap_err(),
        "invalid environment variable `NOVALUE`: use NAME=VALUE, e.g. -e LOG_LEVEL=debug"
    );
    assert!(parse_env("=x").is_err());
}

#[test]
fn whole_run_command() {
    let a = run_args(&[
        "web",
        "--image",
        "busybox:test",
        "-e",
        "A=1",
        "-l",
        "app=web",
        "--node-selector",
        "zone=a",
        "--restart",
        "on-failure",
        "--cpu",
        "500m",
        "--memory",
        "64Mi",
        "-p",
        "8080:80",
        "-v",
        "data:/data:ro",
        "--user",
        "1000:1000",
        "--workdir",
        "/w",
        "--privileged",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "ALL",
        "--host-network",
        "--command",
        "httpd",
        "--pull-policy",
        "always",
        "--stop-grace",
        "90s",
        "--no-wait",
        "--",
        "-f",
        "-p",
        "80",
    ]);
    assert!(!a.wait.enabled());
    let t = task_from_run(&a).unwrap();
    assert_eq!(t.version, "task/v1");
    let meta = t.meta.as_ref().unwrap();
    assert_eq!(meta.name, "web");
    assert_eq!(meta.labels["app"], "web");
    let c = t.config.unwrap();
    assert_eq!(c.image, "busybox:test");
    assert_eq!(c.args, vec!["-f", "-p", "80"]);
    assert_eq!(c.command, vec!["httpd"]);
    assert_eq!(c.envvars[0].name, "A");
    assert_eq!(c.node_selector["zone"], "a");
    assert_eq!(c.restart_policy, "on-failure");
    let r = c.resources.unwrap();
    assert_eq!((r.cpu.as_str(), r.memory.as_str()), ("500m", "64Mi"));
    assert_eq!(c.port_mappings[0].host_port, 8080);
    assert_eq!(c.mounts[0].volume, "data");
    assert_eq!(
        (c.user.as_str(), c.working_dir.as_str()),
        ("1000:1000", "/w")
    );
    assert!(c.privileged && c.host_network);
    let caps = c.capabilities.unwrap();
    assert_eq!(
        (caps.add, caps.drop),
        (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
    );
    assert_eq!(c.pull_policy, "Always");
    assert_eq!(c.stop_grace_period, "1m30s");
    // Fractions are kept: the grace the node reads back is the one asked for.
    let t = task_from_run(&run_args(&["w", "--image", "x", "--stop-grace", "1.5s"])).unwrap();
    assert_eq!(t.config.unwrap().stop_grace_period, "1s500ms");

    // Waiting is the default.
    assert!(run_args(&["web", "--image", "x"]).wait.enabled());
}

#[test]
fn bad_run_flags() {
    let bad = |argv: &[&str]| task_from_run(&run_args(argv)).unwrap_err();
    assert_eq!(
        bad(&["w", "--image", "x", "-l", "app"]),
        "invalid label `app`: use KEY=VALUE, e.g. app=web"
    );
    assert_eq!(
        bad(&["w", "--image", "x", "--node-selector", "=a"]),
        "invalid node selector `=a`: use KEY=VALUE, e.g. app=web"
    );
    assert!(
        bad(&["w", "--image", "x", "--memory", "lots"]).starts_with("invalid --memory `lots`: ")
    );
    assert!(bad(&["w", "--image", "x", "--cpu=-1"]).starts_with("invalid --cpu `-1`: "));
    assert_eq!(
        bad(&["w", "--image", "x", "--stop-grace", "soon"]),
        "invalid --stop-grace: duration \"soon\" is not valid (expected a number): write numbers with units ns, us, ms, s, m, h, d, e.g. 10s, 1m30s, 1.5s, 500ms, 2h, 7d"
    );
    // clap rejects an unknown restart policy itself (exit code 2).
    assert!(Cli::try_parse_from([
        "voiydctl",
        "run",
        "w",
        "--image",
        "x",
        "--restart",
        "sometimes"
    ])
    .is_err());
}
