//! JSON Schemas of the messages, as their protobuf-JSON form is written (the form of the
//! HTTP API and of manifests), derived from the compiled .proto descriptors so that they
//! cannot drift from the types. The HTTP API's OpenAPI document is built from them.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};

/// The compiled descriptors of every voiyd .proto (written by build.rs).
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/voiyd_descriptor.bin"));

const PACKAGE: &str = "voiyd.v1";

/// A schema per message and enum of package `voiyd.v1`, keyed by name (nested messages
/// as `Outer.Inner`; map entries become `additionalProperties` instead).
pub fn schemas() -> Map<String, Value> {
    let set = FileDescriptorSet::decode(DESCRIPTORS).expect("descriptors compiled by build.rs");
    let mut out = Map::new();
    for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
        for m in &file.message_type {
            message(&mut out, "", m);
        }
        for e in &file.enum_type {
            out.insert(e.name().to_string(), enum_schema(e));
        }
    }
    out
}

fn enum_schema(e: &prost_types::EnumDescriptorProto) -> Value {
    let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
    json!({"type": "string", "enum": names})
}

fn message(out: &mut Map<String, Value>, prefix: &str, m: &DescriptorProto) {
    let name = format!("{prefix}{}", m.name());
    if m.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    for nested in &m.nested_type {
        message(out, &format!("{name}."), nested);
    }
    for e in &m.enum_type {
        out.insert(format!("{name}.{}", e.name()), enum_schema(e));
    }
    let mut props = Map::new();
    for f in &m.field {
        let mut schema = field_type(m, f);
        if f.label() == Label::Repeated && !is_map(m, f) {
            schema = json!({"type": "array", "items": schema});
        }
        props.insert(f.json_name().to_string(), schema);
    }
    out.insert(
        name,
        json!({"type": "object", "properties": props, "additionalProperties": false}),
    );
}

/// The map entry message a map field refers to, if it is one.
fn map_entry<'a>(
    m: &'a DescriptorProto,
    f: &prost_types::FieldDescriptorProto,
) -> Option<&'a DescriptorProto> {
    let last = f.type_name().rsplit('.').next()?;
    m.nested_type
        .iter()
        .find(|n| n.name() == last && n.options.as_ref().is_some_and(|o| o.map_entry()))
}

fn is_map(m: &DescriptorProto, f: &prost_types::FieldDescriptorProto) -> bool {
    f.r#type() == Type::Message && map_entry(m, f).is_some()
}

fn field_type(m: &DescriptorProto, f: &prost_types::FieldDescriptorProto) -> Value {
    if let Some(entry) = map_entry(m, f).filter(|_| f.r#type() == Type::Message) {
        let value = entry.field.iter().find(|v| v.number() == 2);
        let values = value.map(|v| field_type(entry, v)).unwrap_or(json!({}));
        return json!({"type": "object", "additionalProperties": values});
    }
    match f.r#type() {
        Type::String => json!({"type": "string"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Int32 | Type::Uint32 | Type::Sint32 | Type::Fixed32 | Type::Sfixed32 => {
            json!({"type": "integer"})
        }
        // protobuf-JSON writes 64-bit integers as strings and reads either.
        Type::Int64 | Type::Uint64 | Type::Sint64 | Type::Fixed64 | Type::Sfixed64 => {
            json!({"type": ["string", "integer"], "format": "int64"})
        }
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Type::Enum | Type::Message => reference(f.type_name()),
        Type::Group => json!({}),
    }
}

/// A reference to a named type: ours by name, well-known ones by their JSON form.
fn reference(type_name: &str) -> Value {
    match type_name {
        ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        ".google.protobuf.Duration" => json!({"type": "string"}),
        ".google.protobuf.Any" | ".google.protobuf.Struct" | ".google.protobuf.Value" => json!({}),
        _ => {
            let name = type_name
                .strip_prefix(&format!(".{PACKAGE}."))
                .unwrap_or(type_name.trim_start_matches('.'));
            json!({"$ref": format!("#/components/schemas/{name}")})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_json_form() {
        let s = schemas();
        let task = &s["Task"]["properties"];
        assert_eq!(
            task["config"],
            json!({"$ref": "#/components/schemas/TaskConfig"})
        );
        let config = &s["TaskConfig"]["properties"];
        assert_eq!(config["image"], json!({"type": "string"}));
        assert_eq!(config["portMappings"]["type"], "array");
        assert_eq!(
            config["nodeSelector"],
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        assert_eq!(config["readOnlyRootFilesystem"], json!({"type": "boolean"}));
        assert_eq!(s["Meta"]["properties"]["created"]["format"], "date-time");
        assert_eq!(
            s["Meta"]["properties"]["resourceVersion"]["format"],
            "int64"
        );
        // Every reference resolves.
        let text = Value::Object(s.clone()).to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(s.contains_key(name), "dangling reference to {name}");
        }
    }
}
