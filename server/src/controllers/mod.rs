//! Level-triggered loops: each compares desired with actual state and acts on the
//! difference (trigger, decide with [`crate::schedule`], store through
//! [`crate::service`]). Every server runs them; CAS writes keep them from fighting.

pub mod derived;
pub mod failover;
pub mod jobs;
pub mod mesh;
pub mod names;
pub mod placer;
pub mod services;
pub mod sets;
pub mod sweep;
pub mod upkeep;
