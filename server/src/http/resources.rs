//! `/api/v1/<kind>[/<name>]`: the NATS API's verbs as HTTP methods. Bodies are
//! manifests (JSON, or YAML with a YAML content type) in the form `voiydctl get -o json`
//! prints; replies are JSON in the same form.
//!
//! | method | path | NATS verb |
//! |---|---|---|
//! | GET | `/api/v1/KIND` (`?selector=`, `?fieldSelector=`) | list |
//! | POST | `/api/v1/KIND` | create (`?dryRun=true`: plan) |
//! | GET, PUT, PATCH, DELETE | `/api/v1/KIND/NAME` | get, update, patch (JSON merge patch), delete |
//! | POST | `/api/v1/tasks/NAME/start\|stop\|kill` | start, stop, kill |
//! | POST | `/api/v1/tokens` | tokens.create |

use super::{json_response, HttpError, HttpState};
use crate::api::handle;
use crate::service::resources as service;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use voiyd_messages::manifest;
use voiyd_messages::v1::{
    ContainerSet, DeleteReply, DeleteRequest, GetRequest, Job, ListRequest, Node, PatchRequest,
    PlanReply, Task, TaskActionRequest, TokenCreateReply, TokenCreateRequest, Volume,
};
use voiyd_messages::{Kind, Resource};

type Params = Query<HashMap<String, String>>;

/// Runs `$body` with `$R` bound to the managed type that the path's kind names.
macro_rules! for_kind {
    ($kind:expr, $R:ident => $body:expr) => {
        match parse_kind($kind)? {
            Kind::Task => {
                type $R = Task;
                $body
            }
            Kind::Node => {
                type $R = Node;
                $body
            }
            Kind::Volume => {
                type $R = Volume;
                $body
            }
            Kind::ContainerSet => {
                type $R = ContainerSet;
                $body
            }
            Kind::Job => {
                type $R = Job;
                $body
            }
            Kind::Lease => Err(HttpError::bad_request(
                "leases are read-only: GET /api/v1/leases or /api/v1/leases/NAME",
            )),
            Kind::Secret => Err(HttpError::bad_request(
                "secrets are managed with voiydctl (create secret, get secrets, delete secret), not over HTTP",
            )),
        }
    };
}

fn parse_kind(kind: &str) -> Result<Kind, HttpError> {
    Kind::parse(kind).ok_or_else(|| {
        HttpError::not_found(format!(
            "unknown kind `{kind}`: use tasks, nodes, volumes, sets, jobs or leases"
        ))
    })
}

/// Calls a NATS API operation in-process with a request message and decodes its reply.
async fn call<Rep: Message + Default>(
    st: &HttpState,
    kind: Kind,
    verb: &str,
    req: impl Message,
) -> Result<Rep, HttpError> {
    let reply = handle(
        &st.ctx,
        kind.plural(),
        verb,
        Bytes::from(req.encode_to_vec()),
    )
    .await?;
    Rep::decode(reply).map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("undecodable reply: {e}"),
        )
    })
}

fn ok<T: serde::Serialize>(status: StatusCode, value: &T) -> Result<Response, HttpError> {
    let body = serde_json::to_string(value).map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the reply: {e}"),
        )
    })?;
    Ok(json_response(status, body))
}

/// A manifest body of kind `R`.
fn manifest_body<R: Resource>(body: &Bytes) -> Result<R, HttpError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| HttpError::bad_request("the body is not UTF-8 text: send JSON or YAML"))?;
    manifest::parse_one::<R>(text).map_err(|e| HttpError::bad_request(e.to_string()))
}

/// A `?name=` query flag: true when present as `1`/`true` (or bare).
fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, HttpError> {
    flag_value(q.get(name).map(String::as_str), name)
}

/// The value of flag `?name=`.
pub(super) fn flag_value(value: Option<&str>, name: &str) -> Result<bool, HttpError> {
    match value {
        None | Some("0") | Some("false") => Ok(false),
        Some("") | Some("1") | Some("true") => Ok(true),
        Some(v) => Err(HttpError::bad_request(format!(
            "?{name}={v}: give true or false"
        ))),
    }
}

/// `?resourceVersion=` (0 when absent: no precondition).
fn resource_version(q: &HashMap<String, String>) -> Result<u64, HttpError> {
    q.get("resourceVersion").map_or(Ok(0), |v| {
        v.parse().map_err(|_| {
            HttpError::bad_request(format!(
                "?resourceVersion={v}: give the number from the resource's meta.resourceVersion"
            ))
        })
    })
}

/// GET `/api/v1/KIND`: `{"items": [...]}`.
pub async fn list(
    State(st): State<HttpState>,
    Path(kind): Path<String>,
    Query(q): Params,
) -> Result<Response, HttpError> {
    let req = ListRequest {
        selector: q
            .get("selector")
            .or_else(|| q.get("labelSelector"))
            .cloned()
            .unwrap_or_default(),
        field_selector: q.get("fieldSelector").cloned().unwrap_or_default(),
    };
    if parse_kind(&kind)? == Kind::Lease {
        let (labels, fields) = service::selectors::<voiyd_messages::v1::Lease>(&req)?;
        let mut items = crate::service::leases::list(&st.ctx).await?;
        items.retain(|l| labels.matches(&l.labels()) && fields.matches(l));
        return ok(StatusCode::OK, &serde_json::json!({ "items": items }));
    }
    for_kind!(&kind, R => {
        let items = service::list::<R>(&st.ctx, &req).await?;
        ok(StatusCode::OK, &serde_json::json!({ "items": items }))
    })
}

/// GET `/api/v1/KIND/NAME`.
pub async fn get(
    State(st): State<HttpState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    if parse_kind(&kind)? == Kind::Lease {
        let lease = crate::service::leases::get(&st.ctx, &GetRequest { name }).await?;
        return ok(StatusCode::OK, &lease);
    }
    for_kind!(&kind, R => {
        let r: R = call(&st, R::KIND, "get", GetRequest { name }).await?;
        ok(StatusCode::OK, &r)
    })
}

/// POST `/api/v1/KIND`: creates the resource in the body; 201 with it. With
/// `?dryRun=true`, writes nothing and answers what applying it would do (`PlanReply`).
pub async fn create(
    State(st): State<HttpState>,
    Path(kind): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, HttpError> {
    let dry_run = flag(&q, "dryRun")?;
    for_kind!(&kind, R => {
        let r: R = manifest_body(&body)?;
        if dry_run {
            let plan: PlanReply = call(&st, R::KIND, "plan", r).await?;
            return ok(StatusCode::OK, &plan);
        }
        let created: R = call(&st, R::KIND, "create", r).await?;
        ok(StatusCode::CREATED, &created)
    })
}

/// PUT `/api/v1/KIND/NAME`: replaces the spec (with `meta.resourceVersion` set, only
/// if nobody changed it since); `?dryRun=true` as for create.
pub async fn update(
    State(st): State<HttpState>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, HttpError> {
    let dry_run = flag(&q, "dryRun")?;
    for_kind!(&kind, R => {
        let mut r: R = manifest_body(&body)?;
        named::<R>(&mut r, &name)?;
        if dry_run {
            let plan: PlanReply = call(&st, R::KIND, "plan", r).await?;
            return ok(StatusCode::OK, &plan);
        }
        let updated: R = call(&st, R::KIND, "update", r).await?;
        ok(StatusCode::OK, &updated)
    })
}

/// The body's name must be the path's (or absent, then the path's is used).
fn named<R: Resource>(r: &mut R, name: &str) -> Result<(), HttpError> {
    let meta = r.meta_mut();
    if meta.name.is_empty() {
        meta.name = name.to_string();
    } else if meta.name != name {
        return Err(HttpError::bad_request(format!(
            "the body names `{}` but the path names `{name}`: make them match",
            meta.name
        )));
    }
    Ok(())
}

/// PATCH `/api/v1/KIND/NAME`: a JSON merge patch (RFC 7396) of the spec.
pub async fn patch(
    State(st): State<HttpState>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, HttpError> {
    let merge_patch = String::from_utf8(body.to_vec())
        .map_err(|_| HttpError::bad_request("the patch is not UTF-8 JSON"))?;
    let req = PatchRequest {
        name,
        merge_patch,
        resource_version: resource_version(&q)?,
    };
    for_kind!(&kind, R => {
        let patched: R = call(&st, R::KIND, "patch", req).await?;
        ok(StatusCode::OK, &patched)
    })
}

/// DELETE `/api/v1/KIND/NAME` (`?force=true`, `?purge=true`, `?resourceVersion=`).
pub async fn delete(
    State(st): State<HttpState>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, HttpError> {
    let req = DeleteRequest {
        name,
        resource_version: resource_version(&q)?,
        purge: flag(&q, "purge")?,
        force: flag(&q, "force")?,
    };
    let kind = parse_kind(&kind)?;
    if kind == Kind::Lease {
        return Err(HttpError::bad_request("leases are read-only"));
    }
    let reply: DeleteReply = call(&st, kind, "delete", req).await?;
    ok(StatusCode::OK, &reply)
}

/// POST `/api/v1/tasks/NAME/start|stop|kill` (`?force=true` stops at once).
pub async fn task_action(
    State(st): State<HttpState>,
    Path((name, action)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, HttpError> {
    if !matches!(action.as_str(), "start" | "stop" | "kill") {
        return Err(HttpError::not_found(format!(
            "unknown task action `{action}`: use start, stop or kill"
        )));
    }
    let req = TaskActionRequest {
        name,
        force: flag(&q, "force")?,
    };
    let task: Task = call(&st, Kind::Task, &action, req).await?;
    ok(StatusCode::OK, &task)
}

/// POST `/api/v1/tokens`: `{"ttlSeconds": 3600, "admin": true}` (all optional); 201
/// with `{"token": ..., "expiresAt": ...}`.
pub async fn create_token(State(st): State<HttpState>, body: Bytes) -> Result<Response, HttpError> {
    let req: TokenCreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenCreateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::bad_request(format!("not a token request: {e}")))?
    };
    let reply: TokenCreateReply = crate::service::tokens::create_token(&st.ctx, &req).await?;
    ok(StatusCode::CREATED, &reply)
}
