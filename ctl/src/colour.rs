//! Colour on a terminal: phases and statuses in tables, `-`/`+` lines of `diff`. Off when
//! stdout is not a terminal, with `--no-color`, or with `NO_COLOR` set (no-color.org).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Decides once, at start, from the flag, the environment and stdout.
pub fn init(no_color: bool) {
    let on = !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    ON.store(on, Ordering::Relaxed);
}

/// Whether output is coloured.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// The colour a table cell gets, by its word: healthy green, on its way yellow, broken
/// red; anything else none.
pub fn of_cell(cell: &str) -> Option<&'static str> {
    match cell {
        "Running" | "Ready" | "Succeeded" | "Complete" | "True" => Some(GREEN),
        "Pending" | "Scheduled" | "Pulling" | "Starting" | "Stopping" | "Progressing" => {
            Some(YELLOW)
        }
        "Failed" | "NotReady" | "Unknown" | "CrashLoop" | "False" => Some(RED),
        _ => None,
    }
}

/// `text` in `colour`.
pub fn paint(colour: &str, text: &str) -> String {
    format!("{colour}{text}{RESET}")
}

/// A table cell, coloured when colour is on and the cell is a known word.
pub fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    match (on(), of_cell(text)) {
        (true, Some(c)) => paint(c, text).into(),
        _ => text.into(),
    }
}

/// A `diff` line: `-` red, `+` green.
pub fn diff_line(sign: char, text: &str, on: bool) -> String {
    let line = format!("{sign} {text}");
    match (on, sign) {
        (true, '-') => paint(RED, &line),
        (true, '+') => paint(GREEN, &line),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_lines() {
        assert_eq!(of_cell("Running"), Some(GREEN));
        assert_eq!(of_cell("web-1"), None);
        assert_eq!(diff_line('-', "a: 1", true), "\x1b[31m- a: 1\x1b[0m");
        assert_eq!(diff_line('+', "a: 1", false), "+ a: 1");
        // Off unless init turned it on (tests' stdout is not a terminal).
        assert_eq!(cell("Running"), "Running");
    }
}
