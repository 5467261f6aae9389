//! The program: flags and subcommands, start-up, and the tasks it runs.

pub mod backup;
pub mod commands;
pub mod run;
pub mod scrape;
