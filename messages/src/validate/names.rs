//! Names and labels: resource names, label keys and values, the manifest header.

use super::*;

/// Checks a resource name: runs of ASCII letters and digits joined by single `.`, `_` or
/// `-`, 1 to `max` characters. The error message says what is wrong and what to write.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("required".to_string());
    }
    if name.len() > max {
        return Err(format!(
            "is {} characters long, more than {max}: use a shorter name",
            name.len()
        ));
    }
    let mut prev_sep = true; // at the start a separator is as bad as after one
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(bad_name(name, max));
        }
    }
    if prev_sep {
        return Err(bad_name(name, max));
    }
    Ok(())
}

pub(super) fn bad_name(name: &str, max: usize) -> String {
    format!(
        "{} is not a valid name: use letters and digits joined by single '.', '_' or '-' (at most {max} characters), e.g. web-1",
        shown(name)
    )
}

/// Validates a resource name on its own (e.g. the name in a get or delete request).
/// `kind_label` is `task`, `node`, `volume`, `set` or `lease`; node names may be up to 253
/// characters, all others up to 63.
pub fn validate_name(kind_label: &str, name: &str) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    errs.check("meta.name", check_name(name, name_limit(kind_label)));
    errs.finish(kind_label, name)
}

pub(super) fn name_limit(kind_label: &str) -> usize {
    if kind_label == Kind::Node.singular() {
        MAX_NODE_NAME_LEN
    } else {
        MAX_NAME_LEN
    }
}

/// Whether `s` is `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (any length).
pub(super) fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `s` is a DNS subdomain: lower-case RFC 1123 labels joined by dots, each at most
/// 63 characters, the whole at most 253.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_PREFIX_LEN
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63
/// characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (e.g. `app`, `voiyd.io/zone`).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err(format!(
                "{} has an invalid prefix {}: the part before '/' must be a lower-case DNS name such as example.com (at most 253 characters)",
                shown(key),
                shown(p)
            ));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "{} has an empty name: write e.g. app or example.com/app",
            shown(key)
        ));
    }
    if name.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{} has a name of {} characters, more than {MAX_LABEL_LEN}: shorten it",
            shown(key),
            name.len()
        ));
    }
    if !is_label_token(name) {
        return Err(format!(
            "{} is not a valid label key: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional prefix like example.com/",
            shown(key)
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or 1 to 63 characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{} is {} characters long, more than {MAX_LABEL_LEN}: shorten it",
            shown(value),
            value.len()
        ));
    }
    if !is_label_token(value) {
        return Err(format!(
            "{} is not a valid label value: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            shown(value)
        ));
    }
    Ok(())
}

pub(super) fn check_label_map(errs: &mut Errors, prefix: &str, labels: &BTreeMap<String, String>) {
    if labels.len() > MAX_LABELS {
        errs.add(
            prefix,
            format!(
                "{} entries, more than {MAX_LABELS}: remove some",
                labels.len()
            ),
        );
    }
    for (k, v) in labels {
        let path = key_path(prefix, k);
        errs.check(path.clone(), check_label_key(k));
        errs.check(path, check_label_value(v));
    }
}

/// Validates a set of labels on its own (e.g. labels a node reports); paths read `labels[key]`.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_label_map(&mut errs, "labels", labels);
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            subject: "labels".to_string(),
            errors: errs.0,
        })
    }
}

/// Checks `version` and `meta` (name and labels) of any resource.
pub(super) fn check_header(errs: &mut Errors, kind: Kind, version: &str, meta: Option<&Meta>) {
    if !version.is_empty() && version != kind.manifest_version() {
        errs.add(
            "version",
            format!(
                "{} does not match this kind: write {} or leave it empty",
                shown(version),
                kind.manifest_version()
            ),
        );
    }
    match meta {
        None => errs.add("meta.name", "required"),
        Some(m) => {
            errs.check(
                "meta.name",
                check_name(&m.name, name_limit(kind.singular())),
            );
            check_label_map(errs, "meta.labels", &m.labels);
        }
    }
}
