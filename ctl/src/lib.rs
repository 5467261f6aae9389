//! voiydctl: the command-line client of voiyd.
//!
//! The binary only parses arguments and calls [`run`]; everything else lives here, with
//! rendering and parsing kept in pure functions so they can be tested without a cluster.

/// `print!` that survives a closed stdout (`voiydctl get tasks | head`): see [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::emit(&format!($($arg)*)) };
}

/// `println!` that survives a closed stdout: see [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::emit(&format!("{}\n", format!($($arg)*))) };
}

pub mod checks;
pub mod cli;
pub mod colour;
pub mod commands;
pub mod compare;
pub mod config;
pub mod connection;
pub mod error;
pub mod flags;
pub mod manifests;
pub mod ops;
pub mod render;
pub mod table;
pub mod timefmt;
pub mod wait;

pub use cli::Cli;
pub use error::{CtlError, Result};

use clap::CommandFactory;
use cli::{Command, Shell};
use connection::Globals;
use std::time::Duration;

/// Writes command output to stdout. When the reader has gone away (a closed pipe) the
/// output is no longer wanted, so voiydctl exits quietly instead of panicking like
/// `print!` does.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Default timeout of one API call.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time commands wait for a task to reach a state.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(120);

fn globals(cli: &Cli) -> Result<Globals> {
    let timeout = cli
        .timeout
        .as_deref()
        .map(timefmt::parse_duration)
        .transpose()
        .map_err(|e| CtlError::Usage(format!("--timeout: {e}")))?;
    if timeout == Some(Duration::ZERO) {
        return Err(CtlError::Usage(
            "--timeout must be more than 0, e.g. 30s".to_string(),
        ));
    }
    Ok(Globals {
        config_path: cli.config.clone().unwrap_or_else(config::default_path),
        server: cli.server.clone().filter(|s| !s.trim().is_empty()),
        api_timeout: timeout.unwrap_or(DEFAULT_API_TIMEOUT),
        wait_timeout: timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT),
    })
}

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> Result<()> {
    let g = globals(&cli)?;
    colour::init(cli.no_color);
    // voiydctl's own notes only, and only with -v: a library's warning (a NATS
    // reconnect) must not land in a script's stderr.
    let level = if cli.verbose {
        "voiyd_ctl=info,voiyd_nats=info,warn"
    } else {
        "off"
    };
    let mut telemetry = voiyd_telemetry::init(
        level,
        cli.log_format,
        "off",
        cli.otlp_endpoint.as_deref(),
        "voiydctl",
    )
    .map_err(CtlError::Usage)?;
    match &cli.command {
        // Commands that need no cluster run without an async runtime.
        Command::Config(cmd) => return commands::config::run(&g.config_path, cmd),
        Command::Completion { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "voiydctl",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CtlError::Other(format!("cannot start the async runtime: {e}")))?;
    // The whole command is one span, the root of its trace (`voiydctl run`, ...).
    let name = command_name(&cli.command);
    let span = tracing::info_span!("voiydctl", otel.name = %format!("voiydctl {name}"));
    let outcome = rt.block_on(tracing::Instrument::instrument(
        dispatch(&g, &cli.command),
        span,
    ));
    // Spans still buffered go out before the process ends.
    telemetry.shutdown();
    outcome
}

/// The subcommand's name as typed (`run`, `get`, `upgrade`).
fn command_name(command: &Command) -> String {
    format!("{command:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn dispatch(g: &Globals, command: &Command) -> Result<()> {
    match command {
        Command::Apply(a) if a.dry_run => commands::plan::dry_run(g, &a.files).await,
        Command::Apply(a) => commands::apply::apply(g, &a.files).await,
        Command::Diff(a) => commands::plan::diff(g, a).await,
        Command::Create(a) if a.what.first().is_some_and(|w| w == "secret") => {
            commands::secrets::create(g, a).await
        }
        Command::Create(a) if !a.what.is_empty() => commands::volumes::create(g, a).await,
        Command::Create(a) => commands::apply::create(g, &a.files).await,
        Command::Get(a) => commands::get::run(g, a).await,
        Command::Delete(a) => commands::delete::run(g, a).await,
        Command::Edit(a) => commands::edit::run(g, a).await,
        Command::Events(a) => commands::events::run(g, a).await,
        Command::Run(a) => commands::tasks::run(g, a).await,
        Command::Start(a) => commands::tasks::start(g, a).await,
        Command::Stop(a) => commands::tasks::stop(g, a).await,
        Command::Scale(a) => commands::patch::scale(g, a).await,
        Command::Cordon(a) => commands::patch::cordon(g, &a.node, true).await,
        Command::Uncordon(a) => commands::patch::cordon(g, &a.node, false).await,
        Command::Drain(a) => commands::rollout::drain(g, a).await,
        Command::Rollout(a) => commands::rollout::rollout(g, a).await,
        Command::Label(a) => commands::patch::label(g, a).await,
        Command::Logs(a) => commands::logs::run(g, a).await,
        Command::Exec(a) => {
            let code = commands::exec::run(g, a).await?;
            // The remote process's exit code becomes voiydctl's.
            if code != 0 {
                std::process::exit(code.clamp(1, 255));
            }
            Ok(())
        }
        Command::Top(a) => commands::top::run(g, a).await,
        Command::Upgrade(crate::cli::UpgradeCommand::Nodes(a)) => {
            commands::upgrade::run(g, a).await
        }
        Command::Token(c) => commands::token::run(g, c).await,
        Command::Config(_) | Command::Completion { .. } => unreachable!("handled in run"),
    }
}
