//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document of the HTTP API, its schemas
//! derived from the .proto descriptors ([`voiyd_messages::schema`]), its paths from the
//! same kinds and verbs the router serves. Built once per process.

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use voiyd_messages::Kind;

/// The kinds with the full set of verbs, and their message names.
const KINDS: &[(Kind, &str)] = &[
    (Kind::Task, "Task"),
    (Kind::Node, "Node"),
    (Kind::Volume, "Volume"),
    (Kind::ContainerSet, "ContainerSet"),
    (Kind::Job, "Job"),
];

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"content": {"application/json": {"schema": schema(name)}}})
}

fn reply(description: &str, name: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn list_of(name: &str) -> Value {
    json!({"description": "the items", "content": {"application/json": {"schema":
        {"type": "object", "properties": {"items": {"type": "array", "items": schema(name)}}}}}})
}

/// The error replies every operation may give.
fn errors(mut responses: Map<String, Value>) -> Value {
    for (code, what) in [
        ("400", "invalid: the message says what to fix"),
        ("401", "no or a bad API token (with --auth)"),
        ("404", "no such resource, kind or path"),
        ("409", "exists already, or changed since read"),
        ("503", "the store is unavailable: retry"),
    ] {
        responses.insert(code.into(), reply(what, "Error"));
    }
    Value::Object(responses)
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn document() -> Value {
    let mut paths = Map::new();
    for (kind, msg) in KINDS {
        let plural = kind.plural();
        let ok = |d: &str| {
            let mut m = Map::new();
            m.insert("200".into(), reply(d, msg));
            m
        };
        let mut created = Map::new();
        created.insert("201".into(), reply("created", msg));
        created.insert(
            "200".into(),
            reply("with ?dryRun=true: what applying would do", "PlanReply"),
        );
        let mut listed = Map::new();
        listed.insert("200".into(), list_of(msg));
        paths.insert(
            format!("/api/v1/{plural}"),
            json!({
                "get": {"summary": format!("List {plural}"), "parameters": [
                    query("selector", "label selector, e.g. app=web,tier!=db"),
                    query("fieldSelector", "field selector, e.g. phase=Running")],
                    "responses": errors(listed)},
                "post": {"summary": format!("Create a {}", kind.singular()), "parameters": [query("dryRun", "true: write nothing")],
                    "requestBody": body(msg), "responses": errors(created)},
            }),
        );
        let mut deleted = Map::new();
        deleted.insert("200".into(), reply("deleted", "DeleteReply"));
        paths.insert(
            format!("/api/v1/{plural}/{{name}}"),
            json!({
                "parameters": [name_param()],
                "get": {"summary": format!("Get a {} with its status", kind.singular()), "responses": errors(ok("the resource"))},
                "put": {"summary": "Replace the spec (CAS on meta.resourceVersion when set)", "parameters": [query("dryRun", "true: write nothing")],
                    "requestBody": body(msg), "responses": errors(ok("the stored resource"))},
                "patch": {"summary": "JSON merge patch (RFC 7396) of the spec", "parameters": [query("resourceVersion", "precondition")],
                    "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                    "responses": errors(ok("the stored resource"))},
                "delete": {"summary": format!("Delete a {}", kind.singular()), "parameters": [
                    query("force", "tasks: kill at once"), query("purge", "volumes: remove the data"),
                    query("resourceVersion", "precondition")],
                    "responses": errors(deleted)},
            }),
        );
    }
    let mut leases = Map::new();
    leases.insert("200".into(), list_of("Lease"));
    paths.insert(
        "/api/v1/leases".into(),
        json!({"get": {"summary": "List leases", "responses": errors(leases)}}),
    );
    let mut lease = Map::new();
    lease.insert("200".into(), reply("the lease", "Lease"));
    paths.insert("/api/v1/leases/{name}".into(), json!({"parameters": [name_param()], "get": {"summary": "Get a lease", "responses": errors(lease)}}));
    let mut task = Map::new();
    task.insert("200".into(), reply("the task", "Task"));
    paths.insert(
        "/api/v1/tasks/{name}/{action}".into(),
        json!({"parameters": [name_param(), {"name": "action", "in": "path", "required": true,
            "schema": {"type": "string", "enum": ["start", "stop", "kill"]}}],
            "post": {"summary": "Start, stop or kill a task", "parameters": [query("force", "stop: kill at once")], "responses": errors(task)}}),
    );
    let mut logs = Map::new();
    logs.insert("200".into(), json!({"description": "text/plain lines, or with follow=true text/event-stream messages of LogLine",
        "content": {"text/plain": {"schema": {"type": "string"}}, "text/event-stream": {"schema": schema("LogLine")}}}));
    paths.insert(
        "/api/v1/tasks/{name}/logs".into(),
        json!({"parameters": [name_param()], "get": {"summary": "A task's output", "parameters": [
            query("tail", "the last N lines"), query("stream", "stdout or stderr"), query("follow", "true: Server-Sent Events")],
            "responses": errors(logs)}}),
    );
    let mut events = Map::new();
    events.insert("200".into(), json!({"description": "a list, or with watch=true (or Accept: text/event-stream) Server-Sent Events, id = sequence",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"items": {"type": "array", "items": schema("Event")}}}},
                    "text/event-stream": {"schema": schema("Event")}}}));
    paths.insert(
        "/api/v1/events".into(),
        json!({"get": {"summary": "Events", "parameters": [
            query("kind", "task, node, volume, set, job"), query("name", "resource name"),
            query("since", "first sequence"), query("last", "the N newest"), query("limit", "lists only"),
            query("watch", "true: follow as Server-Sent Events")], "responses": errors(events)}}),
    );
    let mut token = Map::new();
    token.insert(
        "201".into(),
        reply("the token, shown once", "TokenCreateReply"),
    );
    paths.insert(
        "/api/v1/tokens".into(),
        json!({"post": {"summary": "Create a join token, or with admin an API token", "requestBody": body("TokenCreateRequest"), "responses": errors(token)}}),
    );
    let mut schemas = voiyd_messages::schema::schemas();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {"code": {"type": "integer"}, "error": {"type": "string"}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "voiyd HTTP API", "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON over HTTP for every kind and verb of voiyd's NATS API (docs/http-api.md). Schemas describe the canonical protobuf-JSON form; manifests may also use snake_case names."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "voiydctl token create --admin (only with --auth)"}},
        },
        "security": [{"bearer": []}, {}],
    })
}

/// The handler.
pub async fn openapi() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        assert!(doc["paths"]["/api/v1/sets/{name}"]["patch"].is_object());
    }
}
