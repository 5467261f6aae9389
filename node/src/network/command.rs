//! Running the host's network tools (`ip`, `iptables`) for the mesh and the service
//! rules: success, or one line naming the command and what it said.

/// Runs `program` with `args`; its stderr becomes the error.
pub fn run<S: AsRef<std::ffi::OsStr> + AsRef<str>>(
    program: &str,
    args: &[S],
) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Err(format!(
            "{program} {}: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
