//! Prometheus metrics: a small registry of counters, gauges and histograms, its text
//! exposition (format 0.0.4), and a tiny HTTP server for `/metrics` on a tokio
//! `TcpListener` (no HTTP framework: one GET a connection is all a scraper needs).
//!
//! Counters and histograms are recorded as things happen, through the process-wide
//! [`global`] registry. Gauges that describe current state (tasks by phase, container
//! usage) are refreshed by a collector just before each scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Sorted label pairs of one sample.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Count of observations at or below each bound of [`LATENCY_BUCKETS`].
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone)]
struct Family {
    help: String,
    kind: MetricType,
    values: BTreeMap<Labels, f64>,
    histograms: BTreeMap<Labels, Histogram>,
}

/// A set of metric families.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        f: impl FnOnce(&mut Family) -> R,
    ) -> R {
        let mut fams = self.families.lock().expect("metrics lock");
        let fam = fams.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            values: BTreeMap::new(),
            histograms: BTreeMap::new(),
        });
        f(fam)
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &str, help: &str, pairs: &[(&str, &str)], by: f64) {
        self.with(name, help, MetricType::Counter, |f| {
            *f.values.entry(labels(pairs)).or_insert(0.0) += by;
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, help: &str, pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, MetricType::Gauge, |f| {
            f.values.insert(labels(pairs), value);
        });
    }

    /// Records one observation (seconds) in a histogram with [`LATENCY_BUCKETS`].
    pub fn observe(&self, name: &str, help: &str, pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, MetricType::Histogram, |f| {
            let h = f
                .histograms
                .entry(labels(pairs))
                .or_insert_with(|| Histogram {
                    buckets: vec![0; LATENCY_BUCKETS.len()],
                    ..Default::default()
                });
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                if value <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// Forgets every sample of a family (gauges about things that may be gone), keeping
    /// its help and type so that it still renders when empty.
    pub fn clear(&self, name: &str, help: &str, kind: MetricType) {
        self.with(name, help, kind, |f| {
            f.values.clear();
            f.histograms.clear();
        });
    }

    /// The value of one counter or gauge sample, if recorded.
    pub fn value(&self, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let fams = self.families.lock().expect("metrics lock");
        fams.get(name)?.values.get(&labels(pairs)).copied()
    }

    /// The Prometheus text exposition of every family, sorted by name.
    pub fn render(&self) -> String {
        let fams = self.families.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&fam.help));
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind.as_str());
            for (l, v) in &fam.values {
                let _ = writeln!(out, "{name}{} {}", render_labels(l, None), number(*v));
            }
            for (l, h) in &fam.histograms {
                for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                    let le = number(*b);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        render_labels(l, Some(&le)),
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(l, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    render_labels(l, None),
                    number(h.sum)
                );
                let _ = writeln!(out, "{name}_count{} {}", render_labels(l, None), h.count);
            }
        }
        out
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(l: &Labels, le: Option<&str>) -> String {
    if l.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The process-wide registry.
pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::new)
}

/// Refreshes scrape-time gauges before each scrape.
pub type Collector = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Errors starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}; pick another --metrics-addr")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds `addr` and serves `/metrics` (the [`global`] registry, after `collect`) and
/// `/healthz` until the returned task is aborted. Returns the bound address (useful
/// with port 0).
pub async fn serve(
    addr: SocketAddr,
    collect: Collector,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    tracing::info!(addr = %bound, "metrics at /metrics");
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let collect = collect.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(conn, collect)).await;
            });
        }
    });
    Ok((bound, task))
}

/// The request line of an HTTP request head, if complete.
pub fn request_target(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    Some((method, target))
}

async fn answer(mut conn: tokio::net::TcpStream, collect: Collector) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (status, ctype, body) = match request_target(&head) {
        Some((m, t)) if m == "GET" && t.split('?').next() == Some("/metrics") => {
            collect().await;
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                global().render(),
            )
        }
        Some((m, t)) if m == "GET" && t == "/healthz" => {
            ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string())
        }
        Some(_) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".to_string(),
        ),
        None => return,
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Records the state of a NATS connection as `voiyd_nats_connected` (1 or 0).
pub fn record_nats_state(client: &async_nats::Client) {
    let up = matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    global().set(
        "voiyd_nats_connected",
        "1 when the NATS connection is up",
        &[],
        if up { 1.0 } else { 0.0 },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let r = Registry::new();
        r.inc(
            "req_total",
            "Requests.",
            &[("verb", "get"), ("code", "200")],
            1.0,
        );
        r.inc(
            "req_total",
            "Requests.",
            &[("code", "200"), ("verb", "get")],
            2.0,
        );
        r.set(
            "temp",
            "A \"gauge\"\nwith lines.",
            &[("name", "a\"b\\c")],
            1.5,
        );
        r.observe("lat_seconds", "Latency.", &[("verb", "get")], 0.003);
        r.observe("lat_seconds", "Latency.", &[("verb", "get")], 20.0);
        let text = r.render();
        assert!(text.contains("# TYPE req_total counter\n"), "{text}");
        // Label order does not make a second sample.
        assert!(
            text.contains("req_total{code=\"200\",verb=\"get\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP temp A \"gauge\"\\nwith lines.\n"),
            "{text}"
        );
        assert!(text.contains("temp{name=\"a\\\"b\\\\c\"} 1.5\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{verb=\"get\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{verb=\"get\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{verb=\"get\",le=\"10\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{verb=\"get\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_count{verb=\"get\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_sum{verb=\"get\"} 20.003\n"),
            "{text}"
        );
        assert_eq!(
            r.value("req_total", &[("verb", "get"), ("code", "200")]),
            Some(3.0)
        );
    }

    #[test]
    fn cleared_family_still_renders_its_type() {
        let r = Registry::new();
        r.set("tasks", "Tasks.", &[("phase", "Running")], 2.0);
        r.clear("tasks", "Tasks.", MetricType::Gauge);
        assert_eq!(r.render(), "# HELP tasks Tasks.\n# TYPE tasks gauge\n");
    }

    #[test]
    fn parses_request_line() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET".into(), "/metrics".into()))
        );
        assert_eq!(request_target(b""), None);
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        global().inc("voiyd_test_hits_total", "Test.", &[], 1.0);
        let collect: Collector = Arc::new(|| {
            Box::pin(async {
                global().set("voiyd_test_collected", "Set at scrape.", &[], 7.0);
            })
        });
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), collect)
            .await
            .unwrap();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("voiyd_test_hits_total 1\n"), "{resp}");
        assert!(resp.contains("voiyd_test_collected 7\n"), "{resp}");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        task.abort();
    }
}
