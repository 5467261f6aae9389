//! Logging, said once for the three programs: a `tracing` subscriber on stderr with a
//! level filter (`--log-level`, `VOIYD_LOG`) in text or JSON lines (`--log-format`).

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// Installs the process's subscriber (once: later calls change nothing). `level` is a level (`info`) or a tracing filter
/// (`voiyd_node=debug,warn`); one that does not parse falls back to `fallback`.
pub fn init(level: &str, format: LogFormat, fallback: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (a test running a program's entry point twice) keeps the first.
    let _ = match format {
        LogFormat::Json => fmt.json().try_init(),
        LogFormat::Text => fmt.try_init(),
    };
}
