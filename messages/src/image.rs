//! Image references: one grammar for the whole project.
//!
//! The server validates `image:` fields with it and the node pulls with it, so a reference that
//! passes validation is the reference the node resolves. The grammar and Docker's normalisation
//! (`busybox` is `docker.io/library/busybox:latest`) are oci-spec's port of Docker's
//! `distribution/reference`; voiyd adds what that port leaves out: bracketed IPv6 registry hosts,
//! a port range check, and lower-case hex digests (containerd refuses upper-case ones).

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
    let reference = match split_ipv6_host(image).map_err(&err)? {
        None => Reference::try_from(image).map_err(|e| err(&reason(&e)))?,
        Some((host, rest)) => {
            // Parse the rest under a stand-in host of the same shape, then put the real one back.
            let parsed =
                Reference::try_from(format!("localhost/{rest}")).map_err(|e| err(&reason(&e)))?;
            rebuild(host, &parsed)
        }
    };
    check_port(reference.registry()).map_err(err)?;
    if let Some(d) = reference.digest() {
        let hex = d.split_once(':').map_or("", |(_, h)| h);
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("the digest must be lower-case hex"));
        }
    }
    Ok(reference)
}

/// True for references that float: no digest and the tag `latest` (written or implied). Pull
/// policies default to Always for them, as Kubernetes does.
pub fn is_floating(r: &Reference) -> bool {
    r.digest().is_none() && r.tag().is_none_or(|t| t == "latest")
}

fn reason(e: &oci_spec::distribution::ParseError) -> String {
    use oci_spec::distribution::ParseError as P;
    match e {
        P::DigestInvalidFormat => "a digest is algorithm:hex".into(),
        P::DigestInvalidLength => {
            "the digest must have the right number of hex digits (64 for sha256)".into()
        }
        P::DigestUnsupported => "the digest algorithm must be sha256, sha384 or sha512".into(),
        P::NameContainsUppercase => "the repository name must be lower-case".into(),
        P::NameEmpty => "the repository name is missing".into(),
        P::NameTooLong => "the repository name is longer than 255 characters".into(),
        P::TagInvalidFormat => "a tag is up to 128 letters, digits, '_', '.' or '-'".into(),
        P::ReferenceInvalidFormat => "it is not [host[:port]/]path[:tag][@digest] with a lower-case path of letters and digits joined by '.', '_', '__' or '-'".into(),
    }
}

/// `[v6addr]:port/rest` → (`[v6addr]:port`, `rest`); `None` when the host is not bracketed.
fn split_ipv6_host(image: &str) -> Result<Option<(&str, &str)>, &'static str> {
    const BAD: &str = "a bracketed registry host is [IPv6 address][:port]/repository";
    let Some(inner) = image.strip_prefix('[') else {
        return Ok(None);
    };
    let (ip, after) = inner.split_once(']').ok_or(BAD)?;
    ip.parse::<std::net::Ipv6Addr>().map_err(|_| BAD)?;
    let slash = after.find('/').ok_or(BAD)?;
    let port = &after[..slash];
    if !port.is_empty() && !port.strip_prefix(':').is_some_and(is_digits) {
        return Err(BAD);
    }
    let host_len = 1 + ip.len() + 1 + port.len();
    Ok(Some((&image[..host_len], &after[slash + 1..])))
}

fn rebuild(host: &str, parsed: &Reference) -> Reference {
    let (host, repo) = (host.to_string(), parsed.repository().to_string());
    match (parsed.tag(), parsed.digest()) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(host, repo, t.into(), d.into()),
        (None, Some(d)) => Reference::with_digest(host, repo, d.into()),
        (t, None) => Reference::with_tag(host, repo, t.unwrap_or("latest").into()),
    }
}

fn check_port(registry: &str) -> Result<(), &'static str> {
    let port = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => p,
        _ => return Ok(()),
    };
    match port.parse::<u32>() {
        Ok(1..=65535) if is_digits(port) => Ok(()),
        _ => Err("the registry port must be a number 1-65535"),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
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
        assert!(why("Bad/Name").contains("host[:port]"));
        assert_eq!(
            parse("a//b").unwrap_err().to_string(),
            format!("invalid image reference 'a//b': {}", why("a//b"))
        );
    }
}
