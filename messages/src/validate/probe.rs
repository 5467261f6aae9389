//! Probes: exactly one handler, ports in range, a command to run, sane timings.

use super::*;
use crate::v1::Probe;

/// Longest period, delay or timeout a probe may set, in seconds (one day).
pub const MAX_PROBE_SECONDS: u32 = 86_400;
/// Largest failure or success threshold.
pub const MAX_PROBE_THRESHOLD: u32 = 1_000;

/// Validates the three probes of a task configuration.
pub(super) fn check_probes(errs: &mut Errors, p: &str, c: &TaskConfig) {
    for (field, probe, liveness_like) in [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ] {
        if let Some(probe) = probe {
            check_probe(errs, &format!("{p}{field}"), probe, liveness_like);
        }
    }
}

fn check_port(errs: &mut Errors, path: String, port: u32) {
    if port == 0 || port > 65535 {
        errs.add(
            path,
            format!(
                "{port} is out of range: write the container port the probe connects to, 1-65535"
            ),
        );
    }
}

fn check_probe(errs: &mut Errors, path: &str, probe: &Probe, liveness_like: bool) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    match handlers {
        0 => errs.add(
            path,
            "no check: give one of exec: {command: [...]}, httpGet: {path, port} or tcpSocket: {port}",
        ),
        1 => {}
        _ => errs.add(
            path,
            "more than one check: keep exactly one of exec, httpGet and tcpSocket",
        ),
    }
    if let Some(e) = &probe.exec {
        let cp = format!("{path}.exec.command");
        if e.command.is_empty() || e.command[0].trim().is_empty() {
            errs.add(
                cp.clone(),
                "empty: give the command to run in the container, e.g. [cat, /tmp/ready]",
            );
        }
        check_strings(errs, &cp, &e.command, MAX_ARGS);
    }
    if let Some(h) = &probe.http_get {
        check_port(errs, format!("{path}.httpGet.port"), h.port);
        if !h.path.is_empty() && !h.path.starts_with('/') {
            errs.add(
                format!("{path}.httpGet.path"),
                format!("{} must start with '/'", shown(&h.path)),
            );
        }
        if h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errs.add(
                format!("{path}.httpGet.path"),
                "contains spaces or control characters: percent-encode them",
            );
        }
        if !h.scheme.is_empty() && !h.scheme.eq_ignore_ascii_case("http") {
            errs.add(
                format!("{path}.httpGet.scheme"),
                format!(
                    "{} is not supported: probes speak plain HTTP (remove scheme, or use tcpSocket)",
                    shown(&h.scheme)
                ),
            );
        }
        if !h.host.is_empty() && h.host.parse::<IpAddr>().is_err() {
            errs.add(
                format!("{path}.httpGet.host"),
                format!(
                    "{} is not an IP address: remove it to probe the task's own address",
                    shown(&h.host)
                ),
            );
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            let ok = !hd.name.is_empty()
                && hd
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                errs.add(
                    format!("{path}.httpGet.httpHeaders[{i}].name"),
                    format!(
                        "{} is not a header name: use letters, digits and '-'",
                        shown(&hd.name)
                    ),
                );
            }
            if hd
                .value
                .chars()
                .any(|c| c == '\r' || c == '\n' || c == '\0')
            {
                errs.add(
                    format!("{path}.httpGet.httpHeaders[{i}].value"),
                    "contains a line break: a header value is one line",
                );
            }
        }
    }
    if let Some(t) = &probe.tcp_socket {
        check_port(errs, format!("{path}.tcpSocket.port"), t.port);
        if !t.host.is_empty() && t.host.parse::<IpAddr>().is_err() {
            errs.add(
                format!("{path}.tcpSocket.host"),
                format!(
                    "{} is not an IP address: remove it to probe the task's own address",
                    shown(&t.host)
                ),
            );
        }
    }
    for (field, v) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
    ] {
        if v > MAX_PROBE_SECONDS {
            errs.add(
                format!("{path}.{field}"),
                format!("{v} is more than a day ({MAX_PROBE_SECONDS})"),
            );
        }
    }
    for (field, v) in [
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ] {
        if v > MAX_PROBE_THRESHOLD {
            errs.add(
                format!("{path}.{field}"),
                format!("{v} is more than {MAX_PROBE_THRESHOLD}"),
            );
        }
    }
    if liveness_like && probe.success_threshold > 1 {
        errs.add(
            format!("{path}.successThreshold"),
            format!(
                "{} is not allowed here: one success is enough for liveness and startup probes (remove it or write 1)",
                probe.success_threshold
            ),
        );
    }
}
