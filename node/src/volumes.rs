//! Volumes on the node. A host-local volume is a directory under the data directory,
//! created on first use and kept until the volume is purged. A template volume is one
//! file whose content the server delivers with each assignment that mounts it; the file
//! is rewritten in place (same inode), so running containers see updates through their
//! read-only bind mount.

use crate::decide::reconcile::Desired;
use crate::spec::{MountKind, ResolvedMount};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use voiyd_messages::v1::{NodeVolume, TaskConfig};

/// Where a node keeps volume data.
#[derive(Debug, Clone)]
pub struct Volumes {
    data_dir: PathBuf,
}

/// How often a volume's size is measured again: walking a large one is not free, and
/// every new size is a status write.
const MEASURE_SMALL_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const MEASURE_LARGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Volumes with at least this many entries are large.
const LARGE: u64 = 1_000;

/// Volume sizes as last measured, by path: (when, bytes, how long that holds).
#[derive(Debug, Default)]
pub struct Sizes(
    std::sync::Mutex<BTreeMap<PathBuf, (std::time::Instant, u64, std::time::Duration)>>,
);

impl Sizes {
    /// The size of the files under `path`, measured again once the last measure is
    /// older than [`MEASURE_SMALL_EVERY`] (small volumes) or [`MEASURE_LARGE_EVERY`].
    pub fn of(&self, path: &Path) -> u64 {
        let mut known = self.0.lock().expect("sizes lock");
        if let Some((at, size, holds)) = known.get(path) {
            if at.elapsed() < *holds {
                return *size;
            }
        }
        let (size, entries) = du(path);
        let holds = if entries >= LARGE {
            MEASURE_LARGE_EVERY
        } else {
            MEASURE_SMALL_EVERY
        };
        known.insert(path.to_path_buf(), (std::time::Instant::now(), size, holds));
        size
    }
}

/// Bytes of the regular files under `path` (symbolic links are not followed), and the
/// number of entries walked.
pub fn du(path: &Path) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if meta.is_file() {
        return (meta.len(), 1);
    }
    if !meta.is_dir() {
        return (0, 1);
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries.flatten().fold((0, 1), |(b, n), e| {
                let (b2, n2) = du(&e.path());
                (b + b2, n + n2)
            })
        })
        .unwrap_or((0, 1))
}

/// The volume mounts of a task: (volume name, destination, options).
pub fn volume_mounts(config: &TaskConfig) -> Vec<(&str, &str, &[String])> {
    config
        .mounts
        .iter()
        .filter(|m| voiyd_messages::validate::mount_type(m).as_deref() == Some("volume"))
        .map(|m| {
            (
                m.volume.as_str(),
                m.destination.as_str(),
                m.options.as_slice(),
            )
        })
        .collect()
}

/// Which tasks use which volume, from the node's desired tasks.
pub fn in_use<'a>(desired: impl IntoIterator<Item = &'a Desired>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in desired {
        for (v, _, _) in volume_mounts(&d.config) {
            let tasks = out.entry(v.to_string()).or_default();
            if !tasks.contains(&d.task) {
                tasks.push(d.task.clone());
            }
        }
    }
    for tasks in out.values_mut() {
        tasks.sort();
    }
    out
}

fn template_of(desired: &Desired, name: &str) -> Option<(String, String)> {
    desired
        .volumes
        .iter()
        .find(|v| v.meta.as_ref().is_some_and(|m| m.name == name))
        .and_then(|v| v.config.as_ref()?.template.as_ref())
        .map(|t| (t.name.clone(), t.data.clone()))
}

impl Volumes {
    /// Volumes under `data_dir` (`volumes/<name>`, `templates/<name>/<file>`).
    pub fn new(data_dir: &Path) -> Self {
        Volumes {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Directory of a host-local volume.
    pub fn host_local_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("volumes").join(name)
    }

    fn template_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("templates").join(name)
    }

    /// The task's mounts with volumes resolved to host paths (directories are created and
    /// template files written).
    pub fn resolve(&self, desired: &Desired) -> Result<Vec<ResolvedMount>, String> {
        let mut out = Vec::new();
        for m in &desired.config.mounts {
            let kind = voiyd_messages::validate::mount_type(m).unwrap_or_default();
            let mut options = m.options.clone();
            let (source, kind) = match kind.as_str() {
                "bind" => (m.source.clone(), MountKind::Bind),
                "tmpfs" => (String::new(), MountKind::Tmpfs),
                "secret" => {
                    // Written by [`crate::secrets::Secrets::materialize`] before this.
                    let dir = crate::secrets::mount_dir(&self.data_dir, &desired.task, &m.secret);
                    options.retain(|o| o != "rw");
                    if !options.iter().any(|o| o == "ro") {
                        options.push("ro".into());
                    }
                    (dir.to_string_lossy().into_owned(), MountKind::Bind)
                }
                _ => match template_of(desired, &m.volume) {
                    Some((file, data)) => {
                        let path = self.write_template(&m.volume, &file, &data)?;
                        if !options.iter().any(|o| o == "ro") {
                            options.retain(|o| o != "rw");
                            options.push("ro".into());
                        }
                        (path.to_string_lossy().into_owned(), MountKind::Bind)
                    }
                    None => {
                        let dir = self.host_local_dir(&m.volume);
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| format!("volume {}: {}: {e}", m.volume, dir.display()))?;
                        (dir.to_string_lossy().into_owned(), MountKind::Bind)
                    }
                },
            };
            out.push(ResolvedMount {
                source,
                destination: m.destination.clone(),
                kind,
                options,
            });
        }
        Ok(out)
    }

    fn write_template(&self, volume: &str, file: &str, data: &str) -> Result<PathBuf, String> {
        let path = self.template_dir(volume).join(file);
        crate::network::write_in_place(&path, data.as_bytes())
            .map_err(|e| format!("template volume {volume}: {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Brings the template files the task mounts up to date with its assignment.
    pub fn sync_templates(&self, desired: &Desired) -> Result<(), String> {
        for (volume, _, _) in volume_mounts(&desired.config) {
            if let Some((file, data)) = template_of(desired, volume) {
                self.write_template(volume, &file, &data)?;
            }
        }
        Ok(())
    }

    /// Removes a volume's data from the node.
    pub fn purge(&self, name: &str) -> std::io::Result<()> {
        for dir in [self.host_local_dir(name), self.template_dir(name)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(volume = %name, path = %dir.display(), "volume data removed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every volume present on the node, with the tasks that use it.
    pub fn report(&self, in_use: &BTreeMap<String, Vec<String>>, sizes: &Sizes) -> Vec<NodeVolume> {
        let mut out: BTreeMap<String, NodeVolume> = BTreeMap::new();
        use voiyd_messages::volume::{HOST_LOCAL, TEMPLATE};
        for (kind, dir) in [(HOST_LOCAL, "volumes"), (TEMPLATE, "templates")] {
            let Ok(entries) = std::fs::read_dir(self.data_dir.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.insert(
                    name.clone(),
                    NodeVolume {
                        path: e.path().to_string_lossy().into_owned(),
                        in_use_by: in_use.get(&name).cloned().unwrap_or_default(),
                        kind: kind.to_string(),
                        size_bytes: sizes.of(&e.path()),
                        name,
                    },
                );
            }
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::{Meta, Mount, Template, Volume, VolumeConfig};

    fn desired(task: &str, mounts: Vec<Mount>, volumes: Vec<Volume>) -> Desired {
        Desired {
            task: task.into(),
            uid: "u".into(),
            generation: 1,
            config: TaskConfig {
                mounts,
                ..Default::default()
            },
            kill: false,
            volumes,
            trace_parent: String::new(),
        }
    }

    fn vol_mount(v: &str, dest: &str) -> Mount {
        Mount {
            volume: v.into(),
            destination: dest.into(),
            ..Default::default()
        }
    }

    fn template(name: &str, file: &str, data: &str) -> Volume {
        Volume {
            meta: Some(Meta {
                name: name.into(),
                ..Default::default()
            }),
            config: Some(VolumeConfig {
                template: Some(Template {
                    name: file.into(),
                    data: data.into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_host_local_and_template_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(dir.path());
        let d = desired(
            "web",
            vec![
                vol_mount("data", "/data"),
                vol_mount("conf", "/etc/app.conf"),
            ],
            vec![template("conf", "app.conf", "a=1\n")],
        );
        let m = v.resolve(&d).unwrap();
        assert_eq!(
            m[0].source,
            dir.path().join("volumes/data").to_str().unwrap()
        );
        assert!(dir.path().join("volumes/data").is_dir());
        let file = dir.path().join("templates/conf/app.conf");
        assert_eq!(m[1].source, file.to_str().unwrap());
        assert_eq!(m[1].options, vec!["ro".to_string()]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a=1\n");

        // An update rewrites the same inode.
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&file).unwrap().ino();
        let d2 = desired(
            "web",
            d.config.mounts.clone(),
            vec![template("conf", "app.conf", "a=2\n")],
        );
        v.sync_templates(&d2).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a=2\n");
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);

        let use_map = in_use([&d, &desired("db", vec![vol_mount("data", "/d")], vec![])]);
        assert_eq!(use_map["data"], vec!["db".to_string(), "web".to_string()]);
        std::fs::write(v.host_local_dir("data").join("f"), [0u8; 1000]).unwrap();
        let report = v.report(&use_map, &Sizes::default());
        assert_eq!(report.len(), 2);
        assert_eq!(report[1].name, "data");
        assert_eq!(report[1].kind, "host-local");
        assert_eq!(report[1].size_bytes, 1000);
        assert_eq!(report[0].size_bytes, 4, "a=2\n");

        v.purge("data").unwrap();
        v.purge("conf").unwrap();
        v.purge("never-there").unwrap();
        assert!(v.report(&use_map, &Sizes::default()).is_empty());
    }
}
