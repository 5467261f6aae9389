//! `voiyd-server certs`: a small certificate authority for TLS between voiyd and NATS.
//!
//! `init` creates a CA and the server certificate (names: localhost, 127.0.0.1, ::1,
//! the host name and any `--host`); `issue` signs client certificates (mutual TLS) or
//! more server certificates with that CA. Every file is written with mode 0600 and an
//! existing file is never overwritten. rcgen with the ring backend signs (ECDSA P-256).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Common name of the CA. Issued certificates name it as issuer, so `issue` rebuilds
/// the CA's parameters from it and the CA key alone (no certificate parsing needed).
const CA_NAME: &str = "voiyd CA";

/// The CA certificate file in a certs directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key file.
pub const CA_KEY: &str = "ca-key.pem";

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file exists already.
    #[error("{} exists already: remove it or choose another --dir", .0.display())]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("cannot {action} {}: {reason}", .path.display())]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot create the {what}: {reason}")]
    Generate {
        /// Which certificate.
        what: String,
        /// rcgen's message.
        reason: String,
    },
    /// A name is not usable in a certificate or file name.
    #[error("invalid certificate name {0:?}: use letters, digits, `.`, `-` and `_`")]
    BadName(String),
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A NATS server (serverAuth).
    Server,
    /// A NATS client (clientAuth): voiyd-server, nodes, voiydctl under mutual TLS.
    Client,
    /// A client that the HTTP API takes for an administrator: clientAuth, with the
    /// organizational unit [`ADMIN_UNIT`] in its subject.
    Admin,
}

/// The subject's organizational unit that makes a client certificate an administrator's
/// on the HTTP API (`certs issue NAME --admin`).
pub const ADMIN_UNIT: &str = "voiyd-admin";

/// Files `init` or `issue` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// Creates the CA and a server certificate named `server` in `dir`.
pub fn init(dir: &Path, hosts: &[String], valid: Duration) -> Result<Written, CertError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create directory", dir, e))?;
    for f in [CA_CERT, CA_KEY, "server.pem", "server-key.pem"] {
        if dir.join(f).exists() {
            return Err(CertError::Exists(dir.join(f)));
        }
    }
    let ca_key = KeyPair::generate().map_err(|e| generate("CA key", e))?;
    let ca_params = ca_params(valid);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| generate("CA certificate", e))?;
    write_private(&dir.join(CA_KEY), &ca_key.serialize_pem())?;
    write_private(&dir.join(CA_CERT), &ca_cert.pem())?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_string());
    }
    names.extend(hosts.iter().cloned());
    issue(dir, "server", Usage::Server, &names, valid)
}

/// Signs a certificate `<name>.pem` (+ `<name>-key.pem`) with the CA in `dir`.
/// `names` become subject alternative names (IP addresses as IP SANs).
pub fn issue(
    dir: &Path,
    name: &str,
    usage: Usage,
    names: &[String],
    valid: Duration,
) -> Result<Written, CertError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        || name.starts_with('.')
    {
        return Err(CertError::BadName(name.to_string()));
    }
    let out = Written {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    for f in [&out.cert, &out.key] {
        if f.exists() {
            return Err(CertError::Exists(f.clone()));
        }
    }
    let ca_key_path = dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| io("read", &ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_pem).map_err(|e| generate("CA key", e))?;
    let issuer = Issuer::new(ca_params(valid), ca_key);

    let mut sans: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    sans.dedup();
    let mut params = CertificateParams::default();
    for n in &sans {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|_| CertError::BadName(n.clone()))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "voiyd");
    if usage == Usage::Admin {
        dn.push(DnType::OrganizationalUnitName, ADMIN_UNIT);
    }
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + valid;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        // A server certificate is also the client side of the routes between the
        // embedded NATS nodes of a cluster, which verify each other.
        Usage::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client | Usage::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| generate(name, e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| generate(name, e))?;
    write_private(&out.key, &key.serialize_pem())?;
    write_private(&out.cert, &cert.pem())?;
    Ok(out)
}

fn ca_params(valid: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "voiyd");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    // The CA outlives what it signs.
    params.not_after = time::OffsetDateTime::now_utc() + valid * 2;
    params
}

/// Writes a new file readable by its owner only; never replaces an existing one.
pub fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists(path.to_path_buf())
            } else {
                io("create", path, e)
            }
        })?;
    f.write_all(text.as_bytes())
        .map_err(|e| io("write", path, e))
}

fn io(action: &'static str, path: &Path, e: std::io::Error) -> CertError {
    CertError::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn generate(what: &str, e: rcgen::Error) -> CertError {
    CertError::Generate {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_then_issue_writes_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let year = Duration::from_secs(365 * 24 * 3600);
        let server = init(dir.path(), &["nats.example".to_string()], year).unwrap();
        let client = issue(dir.path(), "n1", Usage::Client, &["n1".to_string()], year).unwrap();
        for f in [
            dir.path().join(CA_CERT),
            dir.path().join(CA_KEY),
            server.cert.clone(),
            server.key.clone(),
            client.cert.clone(),
            client.key.clone(),
        ] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let pem = std::fs::read_to_string(&server.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // Never overwrite.
        assert!(matches!(
            init(dir.path(), &[], year),
            Err(CertError::Exists(_))
        ));
        assert!(matches!(
            issue(dir.path(), "n1", Usage::Client, &[], year),
            Err(CertError::Exists(_))
        ));
        assert!(matches!(
            issue(dir.path(), "../x", Usage::Client, &[], year),
            Err(CertError::BadName(_))
        ));
    }
}
