//! `edit KIND NAME`: the resource in an editor, then a CAS update.

use crate::checks;
use crate::cli::EditArgs;
use crate::compare;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::ops;
use std::io::Write;
use std::path::{Path, PathBuf};
use voiyd_messages::manifest::{self, AnyResource, ManifestError};
use voiyd_nats::api::ApiError;

/// The editor command: `$VISUAL`, else `$EDITOR`, else `vi`. It may carry arguments.
pub fn editor_command() -> String {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// Runs the editor on a file, through `sh` so that an editor value with arguments or
/// quotes works as it does in a shell.
pub fn run_editor(editor: &str, path: &Path) -> Result<()> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("voiydctl-edit")
        .arg(path)
        .status()
        .map_err(|e| {
            CtlError::Other(format!(
                "cannot run editor `{editor}`: {e}: set $EDITOR to an editor that is installed"
            ))
        })?;
    if !status.success() {
        return Err(CtlError::Other(format!(
            "editor `{editor}` exited with {status}: nothing was changed (your copy is in {})",
            path.display()
        )));
    }
    Ok(())
}

/// The text put in front of the user: the resource without status or server-managed
/// fields, after a comment saying how the edit works.
pub fn edit_text(r: &AnyResource) -> String {
    let mut r = r.clone();
    compare::strip_any(&mut r);
    format!(
        "# Edit {} and save to apply; lines starting with '#' are ignored.\n# Status and server-managed fields are not shown. An empty file cancels the edit.\n{}",
        ops::ref_of(&r),
        manifest::to_yaml(&r)
    )
}

/// What an edit amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Edited {
    /// The file was emptied: cancel.
    Cancelled,
    /// Nothing that matters changed.
    Unchanged,
    /// The new resource to store.
    Changed(Box<AnyResource>),
}

/// Reads back an edited file and compares it with the original. Errors are one line.
pub fn interpret(original: &AnyResource, text: &str) -> Result<Edited, String> {
    let docs = match manifest::parse(text) {
        Ok(d) => d,
        Err(ManifestError::Empty) => return Ok(Edited::Cancelled),
        Err(e) => return Err(e.to_string()),
    };
    let [doc] = docs.as_slice() else {
        return Err(format!(
            "the file holds {} documents: keep exactly one, {}",
            docs.len(),
            ops::ref_of(original)
        ));
    };
    if doc.kind() != original.kind() || doc.name() != original.name() {
        return Err(format!(
            "the edit turned {} into {}: kind and name cannot change (create a new resource with `voiydctl apply` instead)",
            ops::ref_of(original),
            ops::ref_of(doc)
        ));
    }
    if compare::any_spec_equal(doc, original) {
        return Ok(Edited::Unchanged);
    }
    checks::validate(doc)?;
    Ok(Edited::Changed(Box::new(doc.clone())))
}

fn temp_copy(r: &AnyResource) -> Result<PathBuf> {
    let mut file = tempfile::Builder::new()
        .prefix(&format!(
            "voiydctl-edit-{}-{}-",
            r.kind().singular(),
            r.name()
        ))
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| CtlError::io("cannot create a temporary file in", std::env::temp_dir(), e))?;
    file.write_all(edit_text(r).as_bytes())
        .map_err(|e| CtlError::io("cannot write", file.path().to_path_buf(), e))?;
    // Keep the file: if the update fails the user's edits must survive.
    let (_, path) = file
        .keep()
        .map_err(|e| CtlError::io("cannot keep", std::env::temp_dir(), e.error))?;
    Ok(path)
}

/// `edit`.
pub async fn run(globals: &Globals, args: &EditArgs) -> Result<()> {
    let kind = ops::parse_kind(&args.kind)?;
    ops::ensure_writable(kind)?;
    let session = connection::session(globals).await?;
    let Some(original) = ops::get_any(&session.api, kind, &args.name).await? else {
        return Err(CtlError::Other(format!(
            "{} {} not found: see `voiydctl get {}`",
            kind.singular(),
            args.name,
            kind.plural()
        )));
    };
    let what = ops::ref_of(&original);
    let path = temp_copy(&original)?;
    run_editor(&editor_command(), &path)?;
    let text = std::fs::read_to_string(&path).map_err(|e| CtlError::io("cannot read", &path, e))?;
    let keep = |msg: String| {
        CtlError::Invalid(format!("{msg} (your edited copy is in {})", path.display()))
    };
    let mut edited = match interpret(&original, &text).map_err(|e| keep(format!("{what}: {e}")))? {
        Edited::Cancelled => {
            let _ = std::fs::remove_file(&path);
            outln!("{what} edit cancelled (empty file)");
            return Ok(());
        }
        Edited::Unchanged => {
            let _ = std::fs::remove_file(&path);
            outln!("{what} unchanged (no edits)");
            return Ok(());
        }
        Edited::Changed(r) => *r,
    };
    compare::strip_any(&mut edited);
    ops::set_resource_version(&mut edited, ops::resource_version(&original));
    match ops::update_any(&session.api, &edited).await {
        Ok(_) => {
            let _ = std::fs::remove_file(&path);
            outln!("{what} edited");
            Ok(())
        }
        Err(ApiError::Conflict(_)) => Err(CtlError::Other(format!(
            "{} {} was changed by someone else while you edited it: run edit again (your edited copy is in {})",
            kind.singular(),
            args.name,
            path.display()
        ))),
        Err(e) => Err(keep(format!("cannot update {what}: {e}"))),
    }
}
