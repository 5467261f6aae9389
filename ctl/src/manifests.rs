//! Reading manifests from files and stdin, and checking all of them before anything
//! is sent.

use crate::checks;
use crate::error::{CtlError, Result};
use crate::ops;
use std::collections::BTreeSet;
use std::io::Read;
use voiyd_messages::manifest::{self, AnyResource};

/// Reads every `-f` argument: a path, or `-` for stdin (at most once).
pub fn read_sources(files: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stdin_used = false;
    for f in files {
        if f == "-" {
            if stdin_used {
                return Err(CtlError::Usage(
                    "`-f -` given twice: stdin can be read only once".to_string(),
                ));
            }
            stdin_used = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CtlError::io("cannot read", "stdin", e))?;
            out.push(("stdin".to_string(), text));
        } else {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CtlError::io("cannot read manifest", f, e))?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

/// Parses and validates every document of every source. Nothing is returned unless
/// all of them are good, so a bad document keeps the whole batch from being sent.
/// `writable` also rejects kinds the API cannot write (leases) and duplicates.
pub fn parse_all(sources: &[(String, String)], writable: bool) -> Result<Vec<AnyResource>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (origin, text) in sources {
        let docs =
            manifest::parse(text).map_err(|e| CtlError::Invalid(format!("{origin}: {e}")))?;
        for doc in docs {
            let what = ops::ref_of(&doc);
            if doc.name().is_empty() {
                return Err(CtlError::Invalid(format!(
                    "{origin}: a {} has no meta.name: give every resource a name",
                    doc.kind().singular()
                )));
            }
            if writable {
                ops::ensure_writable(doc.kind())
                    .map_err(|e| CtlError::Invalid(format!("{origin}: {what}: {e}")))?;
                checks::validate(&doc)
                    .map_err(|e| CtlError::Invalid(format!("{origin}: {what}: {e}")))?;
            }
            if !seen.insert((doc.kind(), doc.name().to_string())) {
                return Err(CtlError::Invalid(format!(
                    "{origin}: {what} appears more than once: keep one definition of each resource"
                )));
            }
            out.push(doc);
        }
    }
    Ok(out)
}
