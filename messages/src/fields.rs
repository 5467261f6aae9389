//! Field selectors, as in `kubectl get --field-selector`: `node=n1,phase!=Running`.
//!
//! A field selector is a conjunction of equalities and inequalities on a kind's named
//! fields (see [`Fields::FIELDS`]); the empty selector matches everything. Servers apply
//! it after joining the spec with its status, so `phase` and `node` are the observed ones.

use crate::v1::{ContainerSet, Job, Lease, Node, Secret, Task, Volume};
use std::fmt;

/// A list request's label and field selectors, parsed for the kind `R`; the error is one
/// line naming what is wrong.
pub fn list_selectors<R: Fields>(
    req: &crate::v1::ListRequest,
) -> Result<(crate::selector::Selector, FieldSelector), String> {
    let labels = crate::selector::Selector::parse(&req.selector).map_err(|e| e.to_string())?;
    let fields = FieldSelector::parse(&req.field_selector, R::FIELDS).map_err(|e| e.to_string())?;
    Ok((labels, fields))
}

/// Why a field selector could not be parsed or does not fit the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad field selector `{part}`: {problem}")]
pub struct FieldSelectorError {
    /// The offending part.
    pub part: String,
    /// What is wrong, and what would be right.
    pub problem: String,
}

/// One `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field's name.
    pub field: String,
    /// True for `=`/`==`, false for `!=`.
    pub equal: bool,
    /// The value compared with.
    pub value: String,
}

/// A conjunction of field requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `f=v,f==v,f!=v` for a kind whose fields are `fields`. An empty value is
    /// allowed (`node=` selects tasks on no node).
    pub fn parse(s: &str, fields: &[&str]) -> Result<FieldSelector, FieldSelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in s.split(',') {
            let bad = |problem: String| FieldSelectorError {
                part: part.trim().to_string(),
                problem,
            };
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(bad(
                    "expected field=value or field!=value, separated by commas".to_string(),
                ));
            };
            let field = field.trim();
            if !fields.contains(&field) {
                return Err(bad(format!(
                    "unknown field `{field}`; this kind has {}",
                    fields.join(", ")
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether nothing is required.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `r` satisfies every requirement.
    pub fn matches<R: Fields>(&self, r: &R) -> bool {
        self.requirements
            .iter()
            .all(|q| (r.field(&q.field).unwrap_or_default() == q.value) == q.equal)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, q) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if q.equal { "=" } else { "!=" };
            write!(f, "{}{op}{}", q.field, q.value)?;
        }
        Ok(())
    }
}

/// The fields a kind can be selected by.
pub trait Fields {
    /// The selectable field names, `name` first.
    const FIELDS: &'static [&'static str];
    /// A field's current value ("" when unset); `None` for a field the kind lacks.
    fn field(&self, field: &str) -> Option<String>;
}

fn name_of(meta: &Option<crate::v1::Meta>) -> String {
    meta.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

impl Fields for Task {
    const FIELDS: &'static [&'static str] = &["name", "node", "phase", "reason", "image"];
    fn field(&self, field: &str) -> Option<String> {
        let status = self.status.as_ref();
        Some(match field {
            "name" => name_of(&self.meta),
            "node" => status.map(|s| s.node.clone()).unwrap_or_default(),
            "phase" => status.map(|s| s.phase.clone()).unwrap_or_default(),
            "reason" => status.map(|s| s.reason.clone()).unwrap_or_default(),
            "image" => self
                .config
                .as_ref()
                .map(|c| c.image.clone())
                .unwrap_or_default(),
            _ => return None,
        })
    }
}

impl Fields for Node {
    const FIELDS: &'static [&'static str] = &["name", "phase", "runtime", "version"];
    fn field(&self, field: &str) -> Option<String> {
        let status = self.status.as_ref();
        Some(match field {
            "name" => name_of(&self.meta),
            "phase" => status.map(|s| s.phase.clone()).unwrap_or_default(),
            "runtime" => status.map(|s| s.runtime.clone()).unwrap_or_default(),
            "version" => status.map(|s| s.version.clone()).unwrap_or_default(),
            _ => return None,
        })
    }
}

impl Fields for Volume {
    const FIELDS: &'static [&'static str] = &["name", "type"];
    fn field(&self, field: &str) -> Option<String> {
        Some(match field {
            "name" => name_of(&self.meta),
            "type" => match self.config.as_ref() {
                Some(c) if c.template.is_some() => "template".to_string(),
                Some(c) if c.host_local.is_some() => "hostLocal".to_string(),
                _ => String::new(),
            },
            _ => return None,
        })
    }
}

impl Fields for ContainerSet {
    const FIELDS: &'static [&'static str] = &["name"];
    fn field(&self, field: &str) -> Option<String> {
        (field == "name").then(|| name_of(&self.meta))
    }
}

impl Fields for Job {
    const FIELDS: &'static [&'static str] = &["name"];
    fn field(&self, field: &str) -> Option<String> {
        (field == "name").then(|| name_of(&self.meta))
    }
}

impl Fields for Secret {
    const FIELDS: &'static [&'static str] = &["name"];
    fn field(&self, field: &str) -> Option<String> {
        (field == "name").then(|| name_of(&self.meta))
    }
}

impl Fields for Lease {
    const FIELDS: &'static [&'static str] = &["name", "task", "holder"];
    fn field(&self, field: &str) -> Option<String> {
        Some(match field {
            "name" => name_of(&self.meta),
            "task" => self.task.clone(),
            "holder" => self.holder.clone(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{TaskConfig, TaskStatus};

    fn task(name: &str, node: &str, phase: &str) -> Task {
        Task::new(name, TaskConfig::default()).with_status(TaskStatus {
            node: node.into(),
            phase: phase.into(),
            ..Default::default()
        })
    }

    #[test]
    fn selects_by_status_fields() {
        let s = FieldSelector::parse("node=n1, phase!=Running", Task::FIELDS).unwrap();
        assert!(s.matches(&task("a", "n1", "Pulling")));
        assert!(!s.matches(&task("a", "n1", "Running")));
        assert!(!s.matches(&task("a", "n2", "Pulling")));
        assert_eq!(s.to_string(), "node=n1,phase!=Running");
        let unplaced = FieldSelector::parse("node=", Task::FIELDS).unwrap();
        assert!(unplaced.matches(&Task::default()));
        assert!(FieldSelector::parse(" ", Task::FIELDS).unwrap().is_empty());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_syntax() {
        let e = FieldSelector::parse("host=x", Task::FIELDS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad field selector `host=x`: unknown field `host`; this kind has name, node, phase, reason, image"
        );
        let e = FieldSelector::parse("node", Task::FIELDS).unwrap_err();
        assert!(e.to_string().contains("expected field=value"), "{e}");
        assert!(FieldSelector::parse("node=a,", Task::FIELDS).is_err());
    }

    #[test]
    fn every_listed_field_is_known() {
        fn check<R: Fields + Default>() {
            for f in R::FIELDS {
                assert!(R::default().field(f).is_some(), "{f}");
            }
            assert!(R::default().field("nope").is_none());
        }
        check::<Task>();
        check::<Node>();
        check::<Volume>();
        check::<ContainerSet>();
        check::<Lease>();
        check::<Secret>();
    }
}
