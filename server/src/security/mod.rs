//! Who may connect and what they may do: NATS identities and the auth callout,
//! certificates, and the cluster's admission policy.

pub mod callout;
pub mod certs;
pub mod identities;
pub mod keyring;
pub mod policy;
