//! What the set controller last read of every set's networking: the services and names
//! controllers derive their records from it and from the view, without reading the
//! bucket of sets themselves.

pub use crate::schedule::services::SetNetwork;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every set's networking by set, with a number that changes whenever it does.
#[derive(Debug, Default)]
pub struct SetNetworks(Mutex<(u64, BTreeMap<String, SetNetwork>)>);

impl SetNetworks {
    /// Replaces the picture (the version moves only when something changed).
    pub fn replace(&self, sets: BTreeMap<String, SetNetwork>) {
        let mut g = self.0.lock().expect("set networks lock");
        if g.1 != sets {
            g.0 += 1;
            g.1 = sets;
        }
    }

    /// The current picture.
    pub fn get(&self) -> BTreeMap<String, SetNetwork> {
        self.0.lock().expect("set networks lock").1.clone()
    }

    /// Changes whenever the picture does.
    pub fn version(&self) -> u64 {
        self.0.lock().expect("set networks lock").0
    }
}
