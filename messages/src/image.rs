//! Image references: one grammar for the whole project.
//!
//! The server validates `image:` fields with it and the node pulls with it, so a reference that
//! passes validation is the reference the node resolves. The value is oci-spec's [`Reference`]
//! (what oci-client takes); the parser is voiyd's: Docker's grammar
//! (`[host[:port]/]path[:tag][@digest]`, with bracketed IPv6 hosts, a port range and lower-case
//! hex digests) and Docker's normalisation (`busybox` is `docker.io/library/busybox:latest`).
//! oci-spec's own parser compiles one large regular expression on first use: about 96 ms and
//! 13-18 MiB of memory, measured here, which every voiydctl call, server and node would pay.

pub use oci_spec::distribution::Reference;

/// Longest image reference accepted.
pub const MAX_LEN: usize = 512;

/// Why an image reference is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong, in words a user can act on.
    pub reason: String,
}

/// Parses and normalises `image`.
pub fn parse(image: &str) -> Result<Reference, ReferenceError> {
    let err = |reason: &str| ReferenceError {
        reference: image.to_string(),
        reason: reason.to_string(),
    };
    if image.is_empty() {
        return Err(err("it is empty"));
    }
    if image.len() > MAX_LEN {
        return Err(err(&format!("it is longer than {MAX_LEN} characters")));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "it contains spaces or control characters; an image reference has none",
        ));
    }
    grammar_problem(image).map_err(err)?;
    Ok(normalise(image))
}

/// True for references that float: no digest and the tag `latest` (written or implied). Pull
/// policies default to Always for them, as Kubernetes does.
pub fn is_floating(r: &Reference) -> bool {
    r.digest().is_none() && r.tag().is_none_or(|t| t == "latest")
}

/// Splits a reference that passed [`grammar_problem`] and fills in Docker's defaults: a first
/// path component with a `.` or `:`, `localhost` or an upper-case letter is a registry host
/// (`index.docker.io` is `docker.io`); otherwise the registry is Docker Hub, with `library/` for
/// one-component names; without tag and digest the tag is `latest`.
fn normalise(image: &str) -> Reference {
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (image, None),
    };
    // The tag follows the last ':' unless that ':' belongs to a host:port (a '/' follows it).
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if !name_tag[i + 1..].contains('/') && !name_tag[i + 1..].contains(']') => {
            (&name_tag[..i], Some(name_tag[i + 1..].to_string()))
        }
        _ => (name_tag, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':', '['])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            let host = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            (host.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (t, None) => {
            Reference::with_tag(registry, repository, t.unwrap_or_else(|| "latest".into()))
        }
    }
}

/// The registry Docker Hub references resolve to.
const DOCKER_HUB: &str = "docker.io";

/// Checks Docker's grammar: `[host[:port]/]path[:tag][@digest]`.
fn grammar_problem(image: &str) -> Result<(), &'static str> {
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
        if hex.len() != want {
            return Err("the digest must have the right number of hex digits (64 for sha256)");
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("the digest must be lower-case hex");
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
    if parts.len() > 1
        && (parts[0].contains(['.', ':', '['])
            || parts[0] == "localhost"
            || parts[0].chars().any(|c| c.is_ascii_uppercase()))
    {
        registry_host_problem(parts[0])?;
        parts.remove(0);
    }
    if parts.iter().map(|p| p.len() + 1).sum::<usize>() > 256 {
        return Err("the repository name is longer than 255 characters");
    }
    for p in parts {
        if !is_path_component(p) {
            return Err("repository path parts are lower-case letters and digits joined by '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

/// `host[:port]`, `[v6addr][:port]`; labels of letters, digits and inner '-'.
fn registry_host_problem(host: &str) -> Result<(), &'static str> {
    const BAD: &str = "the registry must be host[:port] or [IPv6 address][:port]";
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
            || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535)
        {
            return Err("the registry port must be a number 1-65535");
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(p: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("team/app", "docker.io/team/app:latest"),
            ("index.docker.io/x", "docker.io/library/x:latest"),
            ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
            ("localhost/a", "localhost/a:latest"),
            ("[::1]:5000/a:1", "[::1]:5000/a:1"),
            ("[fe80::1]/a", "[fe80::1]/a:latest"),
        ];
        for (given, want) in cases {
            assert_eq!(parse(given).unwrap().to_string(), want, "{given}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = parse(&format!("[::1]:5/x@{d}")).unwrap();
        assert_eq!(pinned.registry(), "[::1]:5");
        assert_eq!(pinned.digest(), Some(d.as_str()));
        assert_eq!(pinned.tag(), None);
    }

    /// The references oci-spec's own (Docker-derived) parser accepts normalise the same way.
    #[test]
    fn agrees_with_oci_specs_parser() {
        let d = format!("sha256:{}", "c".repeat(64));
        for r in [
            "busybox",
            "busybox:1.36",
            "team/app:v1",
            "index.docker.io/library/x:2",
            "registry.example.com:5000/a/b/c:t-1_2.3",
            "localhost:5000/x",
            "UPPER.example.com/x",
            &format!("x@{d}"),
            &format!("reg.io/x:1@{d}"),
        ] {
            let theirs: Reference = r.parse().unwrap();
            assert_eq!(parse(r).unwrap(), theirs, "{r}");
        }
    }

    #[test]
    fn floating_means_latest_without_digest() {
        let d = format!("@sha256:{}", "b".repeat(64));
        assert!(is_floating(&parse("busybox").unwrap()));
        assert!(is_floating(&parse("busybox:latest").unwrap()));
        assert!(!is_floating(&parse("busybox:1.36").unwrap()));
        assert!(!is_floating(&parse(&format!("busybox{d}")).unwrap()));
        assert!(!is_floating(&parse(&format!("busybox:latest{d}")).unwrap()));
    }

    #[test]
    fn refusals_say_why() {
        let why = |s: &str| parse(s).unwrap_err().reason;
        assert!(why("").contains("empty"));
        assert!(why("a b").contains("spaces"));
        assert!(why("reg:99999/a").contains("port"));
        assert!(why(&format!("x@sha256:{}", "A".repeat(64))).contains("lower-case"));
        assert!(why(&format!("x@sha256:{}", "a".repeat(40))).contains("hex digits"));
        assert!(why(&format!("x@md5:{}", "a".repeat(32))).contains("algorithm"));
        assert!(why("[zz]:5/a").contains("IPv6"));
        assert!(why("Bad/Name").contains("lower-case"));
        assert!(why("reg:/a").contains("port"));
        assert_eq!(
            parse("a//b").unwrap_err().to_string(),
            format!("invalid image reference 'a//b': {}", why("a//b"))
        );
    }
}
