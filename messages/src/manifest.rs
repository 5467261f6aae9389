//! Manifests: YAML or JSON documents with `version: <kind>/v1`, `meta` and the kind's
//! fields, exactly as the Go voiyd writes them (lowerCamel or snake_case field names).

use crate::resource::{Kind, Resource};
use crate::v1::{ContainerSet, Job, Lease, Node, Secret, Task, Volume};
use serde::Serialize;

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The text is not YAML or JSON.
    #[error("document {doc}: not valid YAML or JSON: {reason}")]
    Syntax {
        /// 1-based document index.
        doc: usize,
        /// The parser's message.
        reason: String,
    },
    /// The document has no `version`.
    #[error(
        "document {doc}: missing `version` (one of task/v1, node/v1, volume/v1, containerset/v1, job/v1, secret/v1)"
    )]
    MissingVersion {
        /// 1-based document index.
        doc: usize,
    },
    /// The `version` names no known kind.
    #[error("document {doc}: unknown version `{version}` (use task/v1, node/v1, volume/v1, containerset/v1, job/v1 or secret/v1)")]
    UnknownVersion {
        /// 1-based document index.
        doc: usize,
        /// What the document said.
        version: String,
    },
    /// A field is unknown or has the wrong type.
    #[error("document {doc} ({kind}): {reason}")]
    Field {
        /// 1-based document index.
        doc: usize,
        /// The document's kind.
        kind: Kind,
        /// The decoder's message, naming the field.
        reason: String,
    },
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {size} bytes, more than the limit of {limit} bytes: split it into several files")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Nothing in the input.
    #[error("the manifest holds no document")]
    Empty,
}

/// Any resource a manifest may hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyResource {
    /// `task/v1`
    Task(Task),
    /// `node/v1`
    Node(Node),
    /// `volume/v1`
    Volume(Volume),
    /// `containerset/v1`
    ContainerSet(ContainerSet),
    /// `lease/v1`
    Lease(Lease),
    /// `job/v1`
    Job(Job),
    /// `secret/v1`
    Secret(Secret),
}

impl AnyResource {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyResource::Task(_) => Kind::Task,
            AnyResource::Node(_) => Kind::Node,
            AnyResource::Volume(_) => Kind::Volume,
            AnyResource::ContainerSet(_) => Kind::ContainerSet,
            AnyResource::Lease(_) => Kind::Lease,
            AnyResource::Job(_) => Kind::Job,
            AnyResource::Secret(_) => Kind::Secret,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            AnyResource::Task(r) => r.name(),
            AnyResource::Node(r) => r.name(),
            AnyResource::Volume(r) => r.name(),
            AnyResource::ContainerSet(r) => r.name(),
            AnyResource::Lease(r) => r.name(),
            AnyResource::Job(r) => r.name(),
            AnyResource::Secret(r) => r.name(),
        }
    }
}

/// Parses a manifest: one or more YAML documents (separated by `---`), a JSON object,
/// or a YAML/JSON sequence of resources.
pub fn parse(text: &str) -> Result<Vec<AnyResource>, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let mut out = Vec::new();
    let mut doc = 0usize;
    for de in yaml_serde::Deserializer::from_str(text) {
        let value = match <yaml_serde::Value as serde::Deserialize>::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                return Err(ManifestError::Syntax {
                    doc: doc + 1,
                    reason: e.to_string(),
                })
            }
        };
        match value {
            yaml_serde::Value::Null => continue,
            yaml_serde::Value::Sequence(items) => {
                for item in items {
                    doc += 1;
                    out.push(parse_value(doc, item)?);
                }
            }
            other => {
                doc += 1;
                out.push(parse_value(doc, other)?);
            }
        }
    }
    if out.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(out)
}

fn parse_value(doc: usize, value: yaml_serde::Value) -> Result<AnyResource, ManifestError> {
    let version = match value.get("version") {
        Some(yaml_serde::Value::String(v)) => v.clone(),
        Some(_) | None => return Err(ManifestError::MissingVersion { doc }),
    };
    let kind = Kind::from_manifest_version(&version)
        .ok_or(ManifestError::UnknownVersion { doc, version })?;
    // Re-read the document from text so that errors carry the field path and line.
    let text = yaml_serde::to_string(&value).map_err(|e| ManifestError::Syntax {
        doc,
        reason: e.to_string(),
    })?;
    let field = |e: yaml_serde::Error| ManifestError::Field {
        doc,
        kind,
        reason: e.to_string(),
    };
    Ok(match kind {
        Kind::Task => AnyResource::Task(yaml_serde::from_str(&text).map_err(field)?),
        Kind::Node => AnyResource::Node(yaml_serde::from_str(&text).map_err(field)?),
        Kind::Volume => AnyResource::Volume(yaml_serde::from_str(&text).map_err(field)?),
        Kind::ContainerSet => {
            AnyResource::ContainerSet(yaml_serde::from_str(&text).map_err(field)?)
        }
        Kind::Lease => AnyResource::Lease(yaml_serde::from_str(&text).map_err(field)?),
        Kind::Job => AnyResource::Job(yaml_serde::from_str(&text).map_err(field)?),
        Kind::Secret => AnyResource::Secret(yaml_serde::from_str(&text).map_err(field)?),
    })
}

/// Parses a single resource of a known type from YAML or JSON.
pub fn parse_one<R: Resource>(text: &str) -> Result<R, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    yaml_serde::from_str(text).map_err(|e| ManifestError::Field {
        doc: 1,
        kind: R::KIND,
        reason: e.to_string(),
    })
}

/// Renders a value as YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    yaml_serde::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

/// Renders a value as pretty JSON.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_task_manifest() {
        let m = "version: task/v1\nmeta:\n  name: web\n  labels:\n    app: web\nconfig:\n  image: docker.io/library/nginx:latest\n  portMappings:\n    - name: http\n      hostPort: 8080\n      targetPort: 80\n      protocol: tcp\n  envvars:\n    - name: A\n      value: b\n  node_selector:\n    zone: a\n";
        let r = parse(m).unwrap();
        let AnyResource::Task(t) = &r[0] else {
            panic!("not a task")
        };
        let c = t.config.as_ref().unwrap();
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.node_selector["zone"], "a");
        assert_eq!(t.name(), "web");
    }

    #[test]
    fn multi_document_and_errors() {
        let m = "version: volume/v1\nmeta: {name: v}\nconfig: {hostLocal: {}}\n---\nversion: containerset/v1\nmeta: {name: s}\ntemplate: {image: x}\n";
        let r = parse(m).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].kind(), Kind::ContainerSet);
        let e = parse("version: task/v1\nmeta: {name: a}\nconfig: {image: x, imagee: y}\n")
            .unwrap_err();
        assert!(e.to_string().contains("imagee"), "{e}");
        assert!(matches!(
            parse("meta: {name: a}\n").unwrap_err(),
            ManifestError::MissingVersion { doc: 1 }
        ));
        assert!(matches!(
            parse("version: pod/v1\n").unwrap_err(),
            ManifestError::UnknownVersion { .. }
        ));
        assert!(matches!(
            parse("a: [1\n").unwrap_err(),
            ManifestError::Syntax { .. }
        ));
        assert_eq!(parse("").unwrap_err(), ManifestError::Empty);
    }

    #[test]
    fn json_input_and_yaml_round_trip() {
        let j = r#"{"version":"task/v1","meta":{"name":"a"},"config":{"image":"x","args":["1"]}}"#;
        let r = parse(j).unwrap();
        let back = parse(&to_yaml(&r[0])).unwrap();
        assert_eq!(r, back);
    }
}
