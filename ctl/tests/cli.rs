//! The command-line definition itself.

use clap::{CommandFactory, Parser};
use voiyd_ctl::cli::{Command, Output};
use voiyd_ctl::Cli;

#[test]
fn definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_flags_after_the_command() {
    let cli = Cli::try_parse_from([
        "voiydctl",
        "get",
        "tasks",
        "--server",
        "h:1",
        "--timeout",
        "2s",
        "-o",
        "yaml",
        "-c",
        "/x",
    ])
    .unwrap();
    assert_eq!(cli.server.as_deref(), Some("h:1"));
    assert_eq!(cli.timeout.as_deref(), Some("2s"));
    assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("/x")));
    match cli.command {
        Command::Get(g) => assert_eq!(g.output, Output::Yaml),
        other => panic!("{other:?}"),
    }
    // -v before the command is verbose; after `run` it is a volume.
    let cli =
        Cli::try_parse_from(["voiydctl", "-v", "run", "w", "--image", "x", "-v", "d:/d"]).unwrap();
    assert!(cli.verbose);
    match cli.command {
        Command::Run(r) => assert_eq!(r.volumes, vec!["d:/d"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_timeout_is_a_usage_error() {
    let cli = Cli::try_parse_from(["voiydctl", "--timeout", "soon", "get", "tasks"]).unwrap();
    let e = voiyd_ctl::run(cli).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        e.to_string(),
        "--timeout: duration \"soon\" is not valid (expected a number): write numbers with units ns, us, ms, s, m, h, d, e.g. 10s, 1m30s, 1.5s, 500ms, 2h, 7d"
    );
}
