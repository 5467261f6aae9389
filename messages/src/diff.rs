//! What differs between two versions of a resource's spec, field by field: for
//! `voiydctl diff` and the dry run of `apply` (the server's `plan`).

use crate::Resource;
use serde_json::Value;

/// Clears the status and the server-managed meta fields (created, updated, generation,
/// resource_version, uid), leaving what a user writes.
pub fn strip_managed<R: Resource>(r: &mut R) {
    r.clear_status();
    if r.meta().is_some() {
        let m = r.meta_mut();
        m.created = None;
        m.updated = None;
        m.generation = 0;
        m.resource_version = 0;
        m.uid = String::new();
    }
}

/// One field that differs: its dotted path (`config.envvars[1].value`) and the value on
/// each side (`None`: absent there).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where.
    pub path: String,
    /// The stored value.
    pub old: Option<Value>,
    /// The new value.
    pub new: Option<Value>,
}

/// The spec fields that differ from `old` to `new`, in path order (objects by key,
/// arrays of equal length element by element, other arrays whole).
pub fn spec_changes<R: Resource>(old: &R, new: &R) -> Vec<Change> {
    let (mut old, mut new) = (old.clone(), new.clone());
    strip_managed(&mut old);
    strip_managed(&mut new);
    let as_json = |r: &R| serde_json::to_value(r).unwrap_or(Value::Null);
    changes(&as_json(&old), &as_json(&new))
}

/// The differences between two JSON values, as [`Change`]s.
pub fn changes(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An empty value and an absent one are the same spec (JSON omits defaults).
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Bool(b) => *b,
        _ => true,
    })
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    let (old, new) = (present(old), present(new));
    let object = |v: Option<&Value>| matches!(v, None | Some(Value::Object(_)));
    match (old, new) {
        (None, None) => {}
        // Objects field by field, also when one side is absent (every field of a new
        // object is an addition).
        (a, b) if object(a) && object(b) => {
            let empty = serde_json::Map::new();
            let a = a.and_then(Value::as_object).unwrap_or(&empty);
            let b = b.and_then(Value::as_object).unwrap_or(&empty);
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(&join(path, k), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: path.to_string(),
            old: a.cloned(),
            new: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_changed_added_and_removed_fields() {
        let old = json!({"meta": {"name": "web", "labels": {"a": "1"}}, "config": {"image": "x:1", "args": ["a"], "envvars": [{"name": "A", "value": "1"}]}});
        let new = json!({"meta": {"name": "web", "labels": {"b": "2"}}, "config": {"image": "x:2", "args": ["a", "b"], "envvars": [{"name": "A", "value": "2"}]}});
        let paths: Vec<(String, Option<Value>, Option<Value>)> = changes(&old, &new)
            .into_iter()
            .map(|c| (c.path, c.old, c.new))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    "config.args".into(),
                    Some(json!(["a"])),
                    Some(json!(["a", "b"]))
                ),
                (
                    "config.envvars[0].value".into(),
                    Some(json!("1")),
                    Some(json!("2"))
                ),
                (
                    "config.image".into(),
                    Some(json!("x:1")),
                    Some(json!("x:2"))
                ),
                ("meta.labels.a".into(), Some(json!("1")), None),
                ("meta.labels.b".into(), None, Some(json!("2"))),
            ]
        );
    }

    #[test]
    fn a_new_object_is_each_of_its_fields_added() {
        let c = changes(&json!({}), &json!({"meta": {"name": "a"}, "replicas": 2}));
        let paths: Vec<&str> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["meta.name", "replicas"]);
        assert!(c.iter().all(|c| c.old.is_none()));
    }

    #[test]
    fn defaults_and_absent_fields_are_equal() {
        let old = json!({"config": {"image": "x", "privileged": false, "args": [], "env": {}}});
        let new = json!({"config": {"image": "x"}});
        assert!(changes(&old, &new).is_empty());
        assert!(changes(&new, &new).is_empty());
    }
}
