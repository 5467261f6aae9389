//! Pure decisions: no I/O, no async. Each takes what was read and says what to do.

pub mod conditions;
pub mod derived;
pub mod jobs;
pub mod liveness;
pub mod mesh;
pub mod names;
pub mod placement;
pub mod services;
pub mod sets;
pub mod sweep;
