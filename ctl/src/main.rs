//! voiydctl: parses the command line and hands it to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    voiyd_nats::connect::install_crypto_provider();
    let cli = voiyd_ctl::Cli::parse();
    match voiyd_ctl::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ voiyd_ctl::error::CtlError::Differs(_)) => ExitCode::from(e.exit_code() as u8),
        Err(e) => {
            // One line, whatever the error carries.
            eprintln!("error: {}", e.to_string().replace(['\r', '\n'], " "));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
