//! The registry: counters, gauges and histograms by name and labels, and their text
//! exposition (format 0.0.4).
//!
//! Counters and histograms are recorded as things happen, through the process-wide
//! [`global`] registry. Gauges that describe current state (tasks by phase, container
//! usage) are refreshed by a collector just before each scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

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
}
