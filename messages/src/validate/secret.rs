//! Secrets: key names, sizes, and that a secret holds something.

use super::{check_header, Errors, ValidationError};
use crate::quantity::shown;
use crate::resource::{Kind, Resource};
use crate::v1::Secret;

/// Most bytes of values one secret may hold, all keys together. A secret travels in one
/// NATS message (sealed for a node) and is kept in memory on nodes.
pub const MAX_SECRET_BYTES: usize = 256 * 1024;
/// Most keys one secret may hold.
pub const MAX_SECRET_KEYS: usize = 256;

/// Checks a secret key: also a file name in a secret mount, so letters, digits, `-`, `_`
/// and `.`, at most 253 characters, not `.` or `..`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("required: the key of a value in the secret".into());
    }
    if key.len() > 253
        || key == "."
        || key == ".."
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{} is not a secret key: use letters, digits, '-', '_' and '.', at most 253 characters (it is also the file name in a secret mount)",
            shown(key)
        ));
    }
    Ok(())
}

/// Validates a secret as given to create or update: header, keys, sizes, and that
/// `stringData` and `data` do not both set a key.
pub fn validate_secret(secret: &Secret) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(
        &mut errs,
        Kind::Secret,
        &secret.version,
        secret.meta.as_ref(),
    );
    let count = secret.string_data.len() + secret.data.len();
    if count == 0 {
        errs.add(
            "data",
            "a secret needs at least one value: set stringData: {key: value} or data: {key: base64}",
        );
    }
    if count > MAX_SECRET_KEYS {
        errs.add("data", format!("{count} keys, more than {MAX_SECRET_KEYS}"));
    }
    for k in secret.string_data.keys() {
        errs.check(format!("stringData.{k}"), check_key(k));
        if secret.data.contains_key(k) {
            errs.add(
                format!("data.{k}"),
                "also set in stringData: give each key once",
            );
        }
    }
    for k in secret.data.keys() {
        errs.check(format!("data.{k}"), check_key(k));
    }
    let size: usize = secret.string_data.values().map(String::len).sum::<usize>()
        + secret.data.values().map(Vec::len).sum::<usize>();
    if size > MAX_SECRET_BYTES {
        errs.add(
            "data",
            format!(
                "the values hold {size} bytes, more than {MAX_SECRET_BYTES} (256 KiB): keep large files in a volume"
            ),
        );
    }
    errs.finish(Kind::Secret.singular(), secret.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Meta;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            version: "secret/v1".into(),
            meta: Some(Meta {
                name: "db".into(),
                ..Default::default()
            }),
            string_data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_sizes_and_emptiness_are_checked() {
        assert!(validate_secret(&secret(&[("password", "x"), ("tls.crt", "y")])).is_ok());
        let e = validate_secret(&secret(&[])).unwrap_err().to_string();
        assert!(e.contains("at least one value"), "{e}");
        let e = validate_secret(&secret(&[("a/b", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a secret key"), "{e}");
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        let e = validate_secret(&secret(&[("k", &big)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 262144 (256 KiB)"), "{e}");
        let mut both = secret(&[("k", "x")]);
        both.data.insert("k".into(), b"y".to_vec());
        let e = validate_secret(&both).unwrap_err().to_string();
        assert!(e.contains("give each key once"), "{e}");
    }
}
