//! Image references: the distribution grammar (`[host[:port]/]path[:tag][@digest]`).

use super::*;

pub(super) fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("required".to_string());
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_IMAGE_LEN}",
            image.len()
        ));
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains {}: an image reference has no spaces or control characters",
            shown(image),
            shown(&c.to_string())
        ));
    }
    image_reference_problem(image).map_err(|why| {
        format!(
            "{} is not an image reference ({why}): write e.g. busybox, registry:5000/team/app:1.0 or app@sha256:<64 hex digits>",
            shown(image)
        )
    })
}

/// Checks the grammar of a distribution reference: `[host[:port]/]path[:tag][@digest]`.
pub(super) fn image_reference_problem(image: &str) -> Result<(), &'static str> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':').ok_or("a digest is algorithm:hex")?;
        let want = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err("the digest algorithm must be sha256, sha384 or sha512"),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("the digest must have the right number of lower-case hex digits");
        }
    }
    // A tag is a ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let b = t.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err("a tag is up to 128 letters, digits, '_', '.' or '-'");
        }
    }
    if name.is_empty() {
        return Err("the repository name is missing");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry host when it looks like one (as Docker decides).
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        check_registry_host(parts[0])?;
        parts.remove(0);
    }
    for p in parts {
        if !is_path_component(p) {
            return Err("repository path parts are lower-case letters and digits joined by '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

pub(super) fn check_registry_host(host: &str) -> Result<(), &'static str> {
    const BAD: &str = "the registry must be host[:port]";
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or(BAD)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| BAD)?;
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(h) = h {
        let ok = !h.is_empty()
            && h.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            });
        if !ok {
            return Err(BAD);
        }
    }
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535)
        {
            return Err("the registry port must be a number 1-65535");
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub(super) fn is_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}
