//! Pure decisions of the node: no I/O, no async. [`reconcile`] says what to do with a
//! task given what is desired and what runs; [`phase`] what to report; [`restart`]
//! when to start again; [`probe`] how probe results become a run's health; [`admission`] whether new work fits; [`work_ledger`] which
//! work revisions were seen.

pub mod admission;
pub mod phase;
pub mod probe;
pub mod reconcile;
pub mod restart;
pub mod work_ledger;
