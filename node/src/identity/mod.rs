//! The node's name, kept in its data directory so that a restarted agent (or one whose
//! host was renamed) comes back as the same node.

pub mod host;
pub mod join;

use std::io;
use std::path::Path;

/// File in the data directory that holds the node name.
pub const NAME_FILE: &str = "node-name";

/// The node name: the flag when given (and then remembered), else the remembered name,
/// else `hostname` (remembered from then on).
pub fn resolve(data_dir: &Path, flag: Option<&str>, hostname: &str) -> io::Result<String> {
    let file = data_dir.join(NAME_FILE);
    let remembered = std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = match (flag, remembered) {
        (Some(f), _) => f.to_string(),
        (None, Some(r)) => r,
        (None, None) => hostname.trim().to_string(),
    };
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{NAME_FILE}.tmp"));
    std::fs::write(&tmp, format!("{name}\n"))?;
    std::fs::rename(tmp, file)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_remembered_then_hostname() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve(d.path(), None, "host-a\n").unwrap(), "host-a");
        assert_eq!(
            resolve(d.path(), None, "host-b").unwrap(),
            "host-a",
            "renamed host keeps its node name"
        );
        assert_eq!(resolve(d.path(), Some("n1"), "host-b").unwrap(), "n1");
        assert_eq!(resolve(d.path(), None, "host-b").unwrap(), "n1");
    }
}
