//! Test fixtures for voiyd's crates, a dev-only crate: a real nats-server ([`nats`]),
//! a private containerd and a local registry holding the test images ([`containerd`]).
//! The end-to-end harness (voiyd's own processes) is `voiyd-tests`.

pub mod containerd;
pub mod nats;

pub use rustix::process::Signal;

/// Sends `sig` to `pid`, a process a test started (or a child of one).
pub fn kill(pid: u32, sig: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
