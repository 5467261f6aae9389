//! `create volume host-local NAME` and `create volume template NAME FILE`.

use crate::cli::CreateArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::flags::parse_pairs;
use std::io::Read;
use voiyd_messages::v1::{HostLocal, Meta, Template, Volume, VolumeConfig};
use voiyd_nats::api::ApiError;

const USAGE: &str =
    "use `voiydctl create volume host-local NAME` or `voiydctl create volume template NAME FILE`";

/// Builds the volume the positional arguments describe.
pub fn volume_from_args(args: &CreateArgs) -> Result<Volume> {
    let what: Vec<&str> = args.what.iter().map(String::as_str).collect();
    let usage = |why: &str| CtlError::Usage(format!("{why}: {USAGE}"));
    let (kind, rest) = match what.as_slice() {
        ["volume" | "volumes", kind, rest @ ..] => (*kind, rest),
        [other, ..] => return Err(usage(&format!("cannot create `{other}` from arguments"))),
        [] => return Err(usage("nothing to create")),
    };
    let mut config = VolumeConfig {
        node_selector: parse_pairs("node selector", &args.node_selector)
            .map_err(CtlError::Usage)?
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let name = match (kind, rest) {
        ("host-local" | "hostlocal", [name]) => {
            config.host_local = Some(HostLocal {
                recreate: args.recreate,
            });
            *name
        }
        ("template", [name, file]) => {
            let data = if *file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| CtlError::Other(format!("cannot read stdin: {e}")))?;
                s
            } else {
                std::fs::read_to_string(file)
                    .map_err(|e| CtlError::Other(format!("cannot read {file}: {e}")))?
            };
            let file_name = std::path::Path::new(file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .filter(|f| *f != "-")
                .unwrap_or_else(|| (*name).to_string());
            if !args.node_selector.is_empty() || args.recreate {
                return Err(usage(
                    "--node-selector and --recreate are for host-local volumes",
                ));
            }
            config.template = Some(Template {
                name: file_name,
                data,
            });
            *name
        }
        ("host-local" | "hostlocal", _) => return Err(usage("host-local takes one NAME")),
        ("template", _) => return Err(usage("template takes NAME and FILE")),
        (other, _) => {
            return Err(usage(&format!(
                "`{other}` is not a volume type: use host-local or template"
            )))
        }
    };
    Ok(Volume {
        version: "volume/v1".into(),
        meta: Some(Meta {
            name: name.to_string(),
            labels: parse_pairs("label", &args.labels)
                .map_err(CtlError::Usage)?
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        config: Some(config),
        status: None,
    })
}

/// `create volume ...`.
pub async fn create(globals: &Globals, args: &CreateArgs) -> Result<()> {
    let volume = volume_from_args(args)?;
    let name = volume
        .meta
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let session = connection::session(globals).await?;
    match session.api.create(&volume).await {
        Ok(_) => {
            outln!("volume/{name} created");
            Ok(())
        }
        Err(ApiError::Conflict(_)) => Err(CtlError::Other(format!(
            "volume {name} already exists: use `voiydctl apply -f` or `voiydctl edit volume {name}` to change it"
        ))),
        Err(e) => Err(CtlError::Other(format!("cannot create volume {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(what: &[&str], sel: &[&str]) -> CreateArgs {
        CreateArgs {
            files: vec![],
            what: what.iter().map(|s| s.to_string()).collect(),
            node_selector: sel.iter().map(|s| s.to_string()).collect(),
            labels: vec![],
            recreate: false,
            from_literal: vec![],
            from_file: vec![],
        }
    }

    #[test]
    fn builds_volumes_from_arguments() {
        let v = volume_from_args(&args(&["volume", "host-local", "data"], &["disk=ssd"])).unwrap();
        let c = v.config.unwrap();
        assert!(c.host_local.is_some());
        assert_eq!(c.node_selector.get("disk").map(String::as_str), Some("ssd"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.conf");
        std::fs::write(&f, "x=1\n").unwrap();
        let v = volume_from_args(&args(
            &["volume", "template", "conf", f.to_str().unwrap()],
            &[],
        ))
        .unwrap();
        let t = v.config.unwrap().template.unwrap();
        assert_eq!((t.name.as_str(), t.data.as_str()), ("app.conf", "x=1\n"));
        for bad in [
            &["volume", "nfs", "x"][..],
            &["volume", "template", "x"],
            &["task", "x"],
            &["volume", "host-local", "a", "b"],
        ] {
            assert!(volume_from_args(&args(bad, &[])).is_err(), "{bad:?}");
        }
    }
}
