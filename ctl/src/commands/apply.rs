//! `apply -f` and `create -f`.

use crate::checks;
use crate::compare;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::manifests;
use crate::ops;
use voiyd_messages::manifest::AnyResource;
use voiyd_nats::api::{ApiClient, ApiError};

/// What `apply` did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed with the same spec.
    Unchanged,
    /// It existed and was updated.
    Configured,
}

impl Outcome {
    /// The word printed after `kind/name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Unchanged => "unchanged",
            Outcome::Configured => "configured",
        }
    }
}

/// Decides what apply must do, given the desired resource and what is stored.
pub fn plan(desired: &AnyResource, stored: Option<&AnyResource>) -> Outcome {
    match stored {
        None => Outcome::Created,
        Some(s) if compare::any_spec_equal(desired, s) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    }
}

/// How often apply re-reads and retries when a concurrent writer wins the CAS race.
const CONFLICT_RETRIES: usize = 3;

async fn apply_one(api: &ApiClient, desired: &AnyResource) -> Result<Outcome> {
    let mut desired = desired.clone();
    compare::strip_any(&mut desired);
    checks::normalize(&mut desired);
    for _ in 0..CONFLICT_RETRIES {
        let stored = ops::get_any(api, desired.kind(), desired.name()).await?;
        let outcome = plan(&desired, stored.as_ref());
        let result = match (outcome, &stored) {
            (Outcome::Unchanged, _) => return Ok(outcome),
            (Outcome::Created, _) => ops::create_any(api, &desired).await,
            (Outcome::Configured, Some(s)) => {
                let mut update = desired.clone();
                ops::set_resource_version(&mut update, ops::resource_version(s));
                ops::update_any(api, &update).await
            }
            (Outcome::Configured, None) => unreachable!("configured implies stored"),
        };
        match result {
            Ok(_) => return Ok(outcome),
            // Someone created or changed it between our get and write: read again.
            Err(ApiError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CtlError::Other(format!(
        "{} keeps changing while being applied: run apply again",
        ops::ref_of(&desired)
    )))
}

/// Puts volumes and secrets first (keeping the order otherwise): the server refuses a
/// task or set that uses one which does not exist yet, even one defined later in the file.
pub fn volumes_first(docs: &mut [AnyResource]) {
    docs.sort_by_key(|d| !matches!(d, AnyResource::Volume(_) | AnyResource::Secret(_)));
}

/// `apply -f FILE...`: creates or updates every resource, printing one line each.
pub async fn apply(globals: &Globals, files: &[String]) -> Result<()> {
    let mut docs = manifests::parse_all(&manifests::read_sources(files)?, true)?;
    volumes_first(&mut docs);
    let session = connection::session(globals).await?;
    for doc in &docs {
        let outcome = apply_one(&session.api, doc)
            .await
            .map_err(|e| CtlError::Other(format!("cannot apply {}: {e}", ops::ref_of(doc))))?;
        outln!("{} {}", ops::ref_of(doc), outcome.as_str());
    }
    Ok(())
}

/// `create -f FILE...`: creates every resource; one that exists is an error.
pub async fn create(globals: &Globals, files: &[String]) -> Result<()> {
    let mut docs = manifests::parse_all(&manifests::read_sources(files)?, true)?;
    volumes_first(&mut docs);
    let session = connection::session(globals).await?;
    for doc in &docs {
        let mut d = doc.clone();
        compare::strip_any(&mut d);
        match ops::create_any(&session.api, &d).await {
            Ok(_) => outln!("{} created", ops::ref_of(doc)),
            Err(ApiError::Conflict(_)) => {
                return Err(CtlError::Other(format!(
                    "{} already exists: use `voiydctl apply -f` to update it",
                    ops::ref_of(doc)
                )))
            }
            Err(e) => {
                return Err(CtlError::Other(format!(
                    "cannot create {}: {e}",
                    ops::ref_of(doc)
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::{Meta, Task, Volume};

    fn meta(name: &str) -> Option<Meta> {
        Some(Meta {
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn volumes_go_first_and_the_rest_keeps_its_order() {
        let task = |n: &str| {
            AnyResource::Task(Task {
                meta: meta(n),
                ..Default::default()
            })
        };
        let volume = |n: &str| {
            AnyResource::Volume(Volume {
                meta: meta(n),
                ..Default::default()
            })
        };
        let mut docs = vec![task("a"), volume("v1"), task("b"), volume("v2")];
        volumes_first(&mut docs);
        let names: Vec<&str> = docs.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["v1", "v2", "a", "b"]);
    }
}
