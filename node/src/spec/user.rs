//! Who the container process runs as: a `USER` value resolved against the image's own
//! `/etc/passwd` and `/etc/group`, as Docker resolves it.

use super::SpecError;

/// The resolved identity of the container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) additional_gids: Vec<u32>,
    pub(super) home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or("/"),
        })
    })
}

/// `(name, gid, members)` of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || line.starts_with('#') {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `name|uid[:group|gid]` against the image's passwd and group files, as Docker does:
/// a known user brings its primary gid, home and supplementary groups.
pub(super) fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match user_part.parse::<u32>() {
            Ok(uid) => e.uid == uid,
            Err(_) => e.name == user_part,
        })
    });
    let (uid, mut gid, name, home) = match (user_part.parse::<u32>(), &entry) {
        (_, Some(e)) => (e.uid, e.gid, Some(e.name), e.home.to_string()),
        (Ok(uid), None) => (uid, 0, None, "/".to_string()),
        (Err(_), None) => return Err(SpecError::UserNotFound(user_part.to_string())),
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .and_then(|gr| {
                    group_entries(gr)
                        .find(|(n, _, _)| *n == g)
                        .map(|(_, id, _)| id)
                })
                .ok_or_else(|| SpecError::GroupNotFound(g.to_string()))?,
        };
    }
    let mut additional_gids: Vec<u32> = match (name, group) {
        (Some(name), Some(gr)) => group_entries(gr)
            .filter(|(_, id, members)| *id != gid && members.contains(&name))
            .map(|(_, id, _)| id)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
    })
}
