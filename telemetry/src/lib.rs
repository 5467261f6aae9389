//! Logging and tracing, said once for the three programs: a `tracing` subscriber on
//! stderr with a level filter (`--log-level`, `VOIYD_LOG`) in text or JSON lines
//! (`--log-format`), and, with `--otlp-endpoint URL`, the programs' spans exported as
//! OpenTelemetry traces over OTLP/HTTP. A trace crosses processes through W3C
//! `traceparent` values ([`traceparent`], [`continue_from`]), which voiyd carries in NATS
//! message headers and in the work it stores for nodes.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The NATS header (and W3C field) that carries a span's context between processes.
pub const TRACEPARENT: &str = "traceparent";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// What [`init`] set up; dropping it (or [`Telemetry::shutdown`]) sends the spans still
/// buffered, so a short-lived program must keep it until it exits.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops exporting.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the process's subscriber (once: later calls change nothing). `level` is a
/// level (`info`) or a tracing filter (`voiyd_node=debug,warn`); one that does not parse
/// falls back to `fallback`. With `otlp` (an OTLP/HTTP collector, e.g.
/// `http://127.0.0.1:4318`), voiyd's own spans go there too, as `service`, whatever the
/// log level.
pub fn init(
    level: &str,
    format: LogFormat,
    fallback: &str,
    otlp: Option<&str>,
    service: &'static str,
) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut telemetry = Telemetry::default();
    let traces = match otlp {
        Some(endpoint) => {
            let provider = provider(endpoint, service)?;
            let tracer = provider.tracer(service);
            telemetry.provider = Some(provider);
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            // voiyd's spans at info and above, not those of the libraries.
            let ours = tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("voiyd") && *m.level() <= tracing::Level::INFO
            });
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(ours),
            )
        }
        None => None,
    };
    // A second call (a test running a program's entry point twice) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init();
    Ok(telemetry)
}

/// [`init`] for a program's `main`: a bad `--otlp-endpoint` ends the program with its
/// one-line error and exit code 2.
pub fn init_or_exit(
    level: &str,
    format: LogFormat,
    fallback: &str,
    otlp: Option<&str>,
    service: &'static str,
) -> Telemetry {
    init(level, format, fallback, otlp, service).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    })
}

/// The OTLP/HTTP exporter's address: `URL` as given when it names a path, else with
/// the traces path (`/v1/traces`) added, as OTLP's base endpoint works.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

fn provider(
    endpoint: &str,
    service: &'static str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let url = traces_url(endpoint);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--otlp-endpoint {endpoint}: give an http:// or https:// URL of an OTLP/HTTP collector"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The `traceparent` of the current span, when it is being traced.
pub fn traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut fields: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    fields.remove(TRACEPARENT)
}

/// Makes `span` a child of the span a `traceparent` names (from another process).
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let fields = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&fields);
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_base_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
    }
}
