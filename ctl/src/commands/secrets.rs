//! `create secret NAME --from-literal KEY=VALUE --from-file [KEY=]PATH`.

use crate::cli::CreateArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::flags::parse_pairs;
use std::collections::BTreeMap;
use voiyd_messages::v1::{Meta, Secret};
use voiyd_messages::Kind;
use voiyd_nats::api::ApiError;

const USAGE: &str =
    "use `voiydctl create secret NAME --from-literal KEY=VALUE --from-file [KEY=]PATH`";

/// Builds the secret the arguments describe (files read here; nothing is sent yet).
pub fn secret_from_args(args: &CreateArgs) -> Result<Secret> {
    let usage = |why: &str| CtlError::Usage(format!("{why}: {USAGE}"));
    let name = match args.what.as_slice() {
        [_, name] => name.clone(),
        _ => return Err(usage("secret takes one NAME")),
    };
    if !args.node_selector.is_empty() {
        return Err(usage("--node-selector is for volumes"));
    }
    if args.from_literal.is_empty() && args.from_file.is_empty() {
        return Err(usage("a secret needs at least one value"));
    }
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut add = |key: String, value: Vec<u8>| {
        if data.insert(key.clone(), value).is_some() {
            return Err(usage(&format!("key {key} is given twice")));
        }
        Ok(())
    };
    for pair in &args.from_literal {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => add(k.to_string(), v.as_bytes().to_vec())?,
            _ => return Err(usage(&format!("--from-literal `{pair}` is not KEY=VALUE"))),
        }
    }
    for item in &args.from_file {
        let (key, path) = match item.split_once('=') {
            Some((k, p)) if !k.is_empty() => (k.to_string(), p),
            _ => {
                let key = std::path::Path::new(item)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (key, item.as_str())
            }
        };
        let value = std::fs::read(path).map_err(|source| CtlError::Io {
            action: "cannot read",
            path: path.into(),
            source,
        })?;
        add(key, value)?;
    }
    Ok(Secret {
        version: Kind::Secret.manifest_version().into(),
        meta: Some(Meta {
            name,
            labels: parse_pairs("label", &args.labels)
                .map_err(CtlError::Usage)?
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        data: data.into_iter().collect(),
        ..Default::default()
    })
}

/// `create secret ...`.
pub async fn create(globals: &Globals, args: &CreateArgs) -> Result<()> {
    let secret = secret_from_args(args)?;
    crate::checks::validate(&voiyd_messages::manifest::AnyResource::Secret(
        secret.clone(),
    ))
    .map_err(CtlError::Invalid)?;
    let name = voiyd_messages::Resource::name(&secret).to_string();
    let session = connection::session(globals).await?;
    match session.api.create(&secret).await {
        Ok(s) => {
            outln!("secret/{name} created ({})", s.keys.join(", "));
            Ok(())
        }
        Err(ApiError::Conflict(_)) => Err(CtlError::Other(format!(
            "secret {name} already exists: change it with `voiydctl apply -f`, or delete it first"
        ))),
        Err(e) => Err(CtlError::Other(format!("cannot create secret {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(what: &[&str], literal: &[&str], file: &[&str]) -> CreateArgs {
        CreateArgs {
            files: vec![],
            what: what.iter().map(|s| s.to_string()).collect(),
            node_selector: vec![],
            labels: vec![],
            recreate: false,
            from_literal: literal.iter().map(|s| s.to_string()).collect(),
            from_file: file.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn literals_and_files_become_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tls.crt");
        std::fs::write(&f, b"CERT").unwrap();
        let path = f.to_str().unwrap();
        let s = secret_from_args(&args(
            &["secret", "db"],
            &["user=admin", "password=a=b"],
            &[path, &format!("ca={path}")],
        ))
        .unwrap();
        assert_eq!(s.data["password"], b"a=b");
        assert_eq!(s.data["tls.crt"], b"CERT");
        assert_eq!(s.data["ca"], b"CERT");
        assert_eq!(s.data.len(), 4);
        for bad in [
            args(&["secret"], &["a=b"], &[]),
            args(&["secret", "db"], &[], &[]),
            args(&["secret", "db"], &["novalue"], &[]),
            args(&["secret", "db"], &["a=1", "a=2"], &[]),
        ] {
            assert!(secret_from_args(&bad).is_err());
        }
        let e = secret_from_args(&args(&["secret", "db"], &[], &["/no/such/file"])).unwrap_err();
        assert!(e.to_string().contains("/no/such/file"), "{e}");
    }
}
