//! Turning `run` flags (`-p`, `-v`, `-e`, `-l`, ...) into a [`Task`].

use crate::checks;
use crate::cli::RunArgs;
use crate::timefmt::{format_duration, parse_duration};
use std::collections::BTreeMap;
use std::net::IpAddr;
use voiyd_messages::v1::{
    Capabilities, EnvVar, ExecAction, Mount, PortMapping, Probe, Resources, Task, TaskConfig,
};

/// Parses `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
pub fn parse_port(text: &str) -> Result<PortMapping, String> {
    let usage = || {
        format!("invalid port mapping `{text}`: use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80")
    };
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) => {
            let p = p.to_ascii_lowercase();
            if p != "tcp" && p != "udp" {
                return Err(format!(
                    "invalid port mapping `{text}`: protocol `{p}` must be tcp or udp"
                ));
            }
            (s, p)
        }
        None => (text, "tcp".to_string()),
    };
    // The host IP may be an IPv6 literal in brackets, which contains colons itself.
    let (host_ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
        let (ip, ports) = rest.split_once("]:").ok_or_else(usage)?;
        (Some(ip), ports)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (None, spec),
            3 => (
                Some(parts[0]),
                spec.split_once(':').map(|(_, p)| p).unwrap_or(""),
            ),
            _ => return Err(usage()),
        }
    };
    let (host, container) = ports.split_once(':').ok_or_else(usage)?;
    let port = |which: &str, p: &str| -> Result<u32, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(u32::from(n)),
            _ => Err(format!(
                "invalid port mapping `{text}`: {which} port `{p}` must be a number from 1 to 65535"
            )),
        }
    };
    let host_port = port("host", host)?;
    let target_port = port("container", container)?;
    let host_ip = match host_ip {
        Some(ip) => {
            ip.parse::<IpAddr>().map_err(|_| {
                format!("invalid port mapping `{text}`: host IP `{ip}` is not an IP address")
            })?;
            ip.to_string()
        }
        None => String::new(),
    };
    Ok(PortMapping {
        name: format!("{protocol}-{host_port}"),
        host_port,
        target_port,
        protocol,
        host_ip,
    })
}

/// Parses `-v VOLUME:/path[:ro|rw]`, or `/host/dir:/path[:ro|rw]` for a bind mount.
pub fn parse_volume(text: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, dest, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, None),
        [s, d, m] => (*s, *d, Some(*m)),
        _ => {
            return Err(format!(
                "invalid volume `{text}`: use VOLUME:/container/path[:ro], e.g. data:/var/lib/data"
            ))
        }
    };
    if source.is_empty() || dest.is_empty() {
        return Err(format!(
            "invalid volume `{text}`: use VOLUME:/container/path[:ro], e.g. data:/var/lib/data"
        ));
    }
    if !dest.starts_with('/') {
        return Err(format!(
            "invalid volume `{text}`: container path `{dest}` must be absolute"
        ));
    }
    let options = match mode {
        None | Some("rw") => Vec::new(),
        Some("ro") => vec!["ro".to_string()],
        Some(m) => {
            return Err(format!(
                "invalid volume `{text}`: option `{m}` must be ro or rw"
            ))
        }
    };
    Ok(if source.starts_with('/') {
        Mount {
            name: String::new(),
            destination: dest.to_string(),
            r#type: "bind".to_string(),
            volume: String::new(),
            source: source.to_string(),
            options,
            secret: String::new(),
        }
    } else {
        Mount {
            name: source.to_string(),
            destination: dest.to_string(),
            r#type: "volume".to_string(),
            volume: source.to_string(),
            source: String::new(),
            options,
            secret: String::new(),
        }
    })
}

/// Parses `-e NAME=VALUE`.
pub fn parse_env(text: &str) -> Result<EnvVar, String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok(EnvVar {
            name: name.to_string(),
            value: value.to_string(),
            value_from: None,
        }),
        _ => Err(format!(
            "invalid environment variable `{text}`: use NAME=VALUE, e.g. -e LOG_LEVEL=debug"
        )),
    }
}

/// Parses `KEY=VALUE` pairs (labels, node selectors) into a map; `what` names the flag.
pub fn parse_pairs(what: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "invalid {what} `{item}`: use KEY=VALUE, e.g. app=web"
                ))
            }
        }
    }
    Ok(out)
}

fn pull_policy(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "always" => "Always".to_string(),
        "ifnotpresent" | "if-not-present" => "IfNotPresent".to_string(),
        "never" => "Never".to_string(),
        _ => p.to_string(),
    }
}

/// Whole seconds of a `--health-*` duration flag (rounded up: a probe counts seconds).
fn probe_secs(flag: &str, value: Option<&String>) -> Result<u32, String> {
    let Some(v) = value else { return Ok(0) };
    let d = parse_duration(v).map_err(|e| format!("invalid --{flag}: {e}"))?;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).map_err(|_| format!("invalid --{flag}: {v} is too long"))
}

/// The readiness probe Docker's `--health-*` flags describe.
fn health_probe(args: &RunArgs, cmd: &str) -> Result<Probe, String> {
    if cmd.trim().is_empty() {
        return Err(
            "--health-cmd is empty: give a command, e.g. --health-cmd 'test -f /tmp/ready'".into(),
        );
    }
    Ok(Probe {
        exec: Some(ExecAction {
            command: vec!["sh".into(), "-c".into(), cmd.to_string()],
        }),
        period_seconds: probe_secs("health-interval", args.health_interval.as_ref())?,
        timeout_seconds: probe_secs("health-timeout", args.health_timeout.as_ref())?,
        initial_delay_seconds: probe_secs(
            "health-start-period",
            args.health_start_period.as_ref(),
        )?,
        failure_threshold: args.health_retries.unwrap_or(0),
        ..Default::default()
    })
}

/// Builds the task `run` creates. Errors are one line, naming the bad flag value.
pub fn task_from_run(args: &RunArgs) -> Result<Task, String> {
    let mut config = TaskConfig {
        image: args.image.clone(),
        args: args.args.clone(),
        command: args.command.clone(),
        user: args.user.clone().unwrap_or_default(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        privileged: args.privileged,
        host_network: args.host_network,
        restart_policy: args
            .restart
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        pull_policy: args
            .pull_policy
            .as_deref()
            .map(pull_policy)
            .unwrap_or_default(),
        ..TaskConfig::default()
    };
    config.envvars = args
        .env
        .iter()
        .map(|e| parse_env(e))
        .collect::<Result<_, _>>()?;
    config.port_mappings = args
        .publish
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<_, _>>()?;
    config.mounts = args
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<_, _>>()?;
    config.node_selector = parse_pairs("node selector", &args.node_selector)?;
    if !args.cap_add.is_empty() || !args.cap_drop.is_empty() {
        config.capabilities = Some(Capabilities {
            add: args.cap_add.clone(),
            drop: args.cap_drop.clone(),
        });
    }
    if args.cpu.is_some() || args.memory.is_some() {
        let cpu = args.cpu.clone().unwrap_or_default();
        let memory = args.memory.clone().unwrap_or_default();
        if !cpu.is_empty() {
            checks::cpu(&cpu).map_err(|e| format!("invalid --cpu `{cpu}`: {e}"))?;
        }
        if !memory.is_empty() {
            checks::memory(&memory).map_err(|e| format!("invalid --memory `{memory}`: {e}"))?;
        }
        config.resources = Some(Resources { cpu, memory });
    }
    if let Some(g) = &args.stop_grace {
        let d = parse_duration(g).map_err(|e| format!("invalid --stop-grace: {e}"))?;
        config.stop_grace_period = format_duration(d);
    }
    if let Some(cmd) = &args.health_cmd {
        config.readiness_probe = Some(health_probe(args, cmd)?);
    }
    Ok(Task::new(&args.name, config).with_labels(parse_pairs("label", &args.labels)?))
}
