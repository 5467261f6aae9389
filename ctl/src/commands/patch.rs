//! Small changes by JSON merge patch (RFC 7386): `scale`, `cordon`, `uncordon`, `label`.

use crate::cli::{LabelArgs, ScaleArgs};
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::ops;
use serde_json::{json, Map, Value};
use voiyd_messages::v1::{ContainerSet, Job, Node, Task, Volume};
use voiyd_messages::Kind;
use voiyd_nats::api::{ApiClient, ApiError};

/// Turns `k=v` (set) and `k-` (remove) arguments into a merge patch of `meta.labels`.
pub fn label_patch(changes: &[String]) -> Result<Value, String> {
    let mut labels = Map::new();
    for c in changes {
        if let Some(key) = c.strip_suffix('-').filter(|k| !k.contains('=')) {
            if key.is_empty() {
                return Err(format!(
                    "invalid label change `{c}`: use KEY=VALUE to set or KEY- to remove"
                ));
            }
            labels.insert(key.to_string(), Value::Null);
        } else {
            match c.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    labels.insert(k.to_string(), Value::String(v.to_string()));
                }
                _ => {
                    return Err(format!(
                        "invalid label change `{c}`: use KEY=VALUE to set or KEY- to remove"
                    ))
                }
            }
        }
    }
    Ok(json!({ "meta": { "labels": labels } }))
}

/// The merge patch of `scale`.
pub fn scale_patch(replicas: u32) -> Value {
    json!({ "replicas": replicas })
}

/// The merge patch of `cordon` (true) and `uncordon` (false).
pub fn cordon_patch(unschedulable: bool) -> Value {
    if unschedulable {
        json!({ "config": { "unschedulable": true } })
    } else {
        // Uncordoning also ends a drain.
        json!({ "config": { "unschedulable": false }, "meta": { "labels": { "voiyd.io/drain": null } } })
    }
}

async fn patch_any(api: &ApiClient, kind: Kind, name: &str, patch: &Value) -> Result<()> {
    let p = patch.to_string();
    let r = match kind {
        Kind::Task => api.patch::<Task>(name, &p, 0).await.map(drop),
        Kind::Node => api.patch::<Node>(name, &p, 0).await.map(drop),
        Kind::Volume => api.patch::<Volume>(name, &p, 0).await.map(drop),
        Kind::ContainerSet => api.patch::<ContainerSet>(name, &p, 0).await.map(drop),
        Kind::Job => api.patch::<Job>(name, &p, 0).await.map(drop),
        Kind::Lease => return ops::ensure_writable(kind),
        Kind::Secret => {
            return Err(CtlError::Usage(
                "secrets are not patched (their values are never read back): apply the whole secret, or create it again".into(),
            ))
        }
    };
    r.map_err(|e| match e {
        ApiError::NotFound(_) => CtlError::Other(format!(
            "{} {name} not found: see `voiydctl get {}`",
            kind.singular(),
            kind.plural()
        )),
        e => e.into(),
    })
}

/// `scale set NAME --replicas N`.
pub async fn scale(globals: &Globals, args: &ScaleArgs) -> Result<()> {
    let kind = ops::parse_kind(&args.kind)?;
    if kind != Kind::ContainerSet {
        return Err(CtlError::Usage(format!(
            "only sets can be scaled, not {}: use `voiydctl scale set NAME --replicas N`",
            kind.plural()
        )));
    }
    let session = connection::session(globals).await?;
    patch_any(&session.api, kind, &args.name, &scale_patch(args.replicas)).await?;
    outln!("set/{} scaled to {}", args.name, args.replicas);
    Ok(())
}

/// `cordon NODE` / `uncordon NODE`.
pub async fn cordon(globals: &Globals, node: &str, unschedulable: bool) -> Result<()> {
    let session = connection::session(globals).await?;
    patch_any(&session.api, Kind::Node, node, &cordon_patch(unschedulable)).await?;
    outln!(
        "node/{node} {}",
        if unschedulable {
            "cordoned"
        } else {
            "uncordoned"
        }
    );
    Ok(())
}

/// `label KIND NAME k=v k-...`.
pub async fn label(globals: &Globals, args: &LabelArgs) -> Result<()> {
    let kind = ops::parse_kind(&args.kind)?;
    ops::ensure_writable(kind)?;
    let patch = label_patch(&args.labels).map_err(CtlError::Usage)?;
    let session = connection::session(globals).await?;
    patch_any(&session.api, kind, &args.name, &patch).await?;
    outln!("{}/{} labeled", kind.singular(), args.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let p = label_patch(&["zone=a".into(), "old-".into(), "e=".into()]).unwrap();
        assert_eq!(
            p,
            json!({"meta": {"labels": {"zone": "a", "old": null, "e": ""}}})
        );
        assert_eq!(
            label_patch(&["zone".into()]).unwrap_err(),
            "invalid label change `zone`: use KEY=VALUE to set or KEY- to remove"
        );
        assert!(label_patch(&["-".into()]).is_err());
        assert_eq!(
            cordon_patch(true),
            json!({"config": {"unschedulable": true}})
        );
        assert_eq!(scale_patch(3), json!({"replicas": 3}));
    }
}
