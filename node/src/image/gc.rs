//! Image garbage collection (`voiyd-node --image-gc-high/--image-gc-low`): when the
//! filesystem that holds containerd's data is fuller than the high mark, the images of
//! this node's namespace that no container uses and that were not pulled within the
//! last `--image-gc-min-age` are removed, oldest first, until it is below the low mark
//! (or none is left to remove). [`victims`] decides; [`run`] acts. The minimum age keeps
//! an image pulled for a task whose container is not created yet.

use crate::containerd::client::Containerd;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// When to collect.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Collect above this percentage of the filesystem used.
    pub high: f64,
    /// Until below this percentage.
    pub low: f64,
    /// A path on the filesystem containerd keeps its content on.
    pub path: PathBuf,
    /// How often to look.
    pub every: Duration,
    /// Images pulled more recently than this stay.
    pub min_age: Duration,
}

/// One image of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its name (reference).
    pub name: String,
    /// When it was last created or updated (pulled), seconds since 1970.
    pub updated: i64,
}

/// The images that may go, oldest first: those no container uses, last pulled before
/// `before` (seconds since 1970).
pub fn victims(images: &[Held], in_use: &HashSet<String>, before: i64) -> Vec<String> {
    let mut unused: Vec<&Held> = images
        .iter()
        .filter(|i| !in_use.contains(&i.name) && i.updated < before)
        .collect();
    unused.sort_by(|a, b| a.updated.cmp(&b.updated).then(a.name.cmp(&b.name)));
    unused.into_iter().map(|i| i.name.clone()).collect()
}

/// How full the filesystem holding `path` is, in percent, as `df` counts it (blocks in
/// use against those an unprivileged user could have).
pub fn used_percent(path: &std::path::Path) -> std::io::Result<f64> {
    let s = rustix::fs::statvfs(path)?;
    let used = s.f_blocks.saturating_sub(s.f_bfree);
    let usable = used + s.f_bavail;
    if usable == 0 {
        return Ok(0.0);
    }
    Ok(used as f64 * 100.0 / usable as f64)
}

/// Checks every `cfg.every` and collects when needed, for the life of the node.
pub async fn run(cd: Containerd, cfg: GcConfig) {
    loop {
        tokio::time::sleep(cfg.every).await;
        if let Err(e) = collect_once(&cd, &cfg).await {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
    }
}

/// One pass; returns the images removed.
pub async fn collect_once(cd: &Containerd, cfg: &GcConfig) -> Result<Vec<String>, String> {
    let full = |p: &std::path::Path| used_percent(p).map_err(|e| format!("{}: {e}", p.display()));
    let now = full(&cfg.path)?;
    if now < cfg.high {
        return Ok(Vec::new());
    }
    let images = list_images(cd).await?;
    let in_use = images_in_use(cd).await?;
    let before = voiyd_messages::time::now().seconds - cfg.min_age.as_secs() as i64;
    let mut removed = Vec::new();
    for name in victims(&images, &in_use, before) {
        if full(&cfg.path)? < cfg.low {
            break;
        }
        match crate::image::pull::remove_image(cd, &name).await {
            Ok(_) => {
                tracing::info!(image = %name, used = format!("{now:.1}%"), "unused image removed");
                removed.push(name);
            }
            Err(e) => tracing::warn!(image = %name, error = %e, "cannot remove image"),
        }
    }
    Ok(removed)
}

async fn list_images(cd: &Containerd) -> Result<Vec<Held>, String> {
    use containerd_client::services::v1::ListImagesRequest;
    let reply = cd
        .images()
        .list(cd.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(|s| cd.map_status("list images", s).to_string())?;
    Ok(reply
        .into_inner()
        .images
        .into_iter()
        .map(|i| Held {
            updated: i
                .updated_at
                .or(i.created_at)
                .map(|t| t.seconds)
                .unwrap_or(0),
            name: i.name,
        })
        .collect())
}

async fn images_in_use(cd: &Containerd) -> Result<HashSet<String>, String> {
    use containerd_client::services::v1::ListContainersRequest;
    let reply = cd
        .containers()
        .list(cd.request(ListContainersRequest { filters: vec![] }))
        .await
        .map_err(|s| cd.map_status("list containers", s).to_string())?;
    Ok(reply
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.image)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_images_go_oldest_first() {
        let held = |n: &str, t: i64| Held {
            name: n.into(),
            updated: t,
        };
        let images = [
            held("new", 30),
            held("used", 10),
            held("old", 5),
            held("mid", 20),
        ];
        let in_use: HashSet<String> = ["used".to_string()].into();
        assert_eq!(victims(&images, &in_use, 100), vec!["old", "mid", "new"]);
        assert!(victims(&[held("used", 1)], &in_use, 100).is_empty());
        // Pulled too recently: kept.
        assert_eq!(victims(&images, &in_use, 25), vec!["old", "mid"]);
    }

    #[test]
    fn usage_of_a_real_filesystem() {
        let p = used_percent(std::path::Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&p), "{p}");
    }
}
