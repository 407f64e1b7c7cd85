//! The deployment's certificate authority and the certificates it issues: `gatewan pki
//! init` makes the CA (`ca.pem`, `ca.key`), `gatewan pki issue --role R --name N` a member's
//! certificate and key (`N.R.pem`, `N.R.key`), signed by it. Keys are ECDSA P-256 and never
//! leave the directory they are written to (mode 0600).
//!
//! The CA's distinguished name is fixed, so an issuer is rebuilt from `ca.key` alone: the
//! certificates it signs verify against the `ca.pem` every member holds.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

use super::identity::Identity;

const CA_NAME: &str = "gatewan deployment CA";
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists: remove it first to make a new one")]
    Exists { path: PathBuf },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("validity of {0} days is out of range (1 to 36500)")]
    Days(u32),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                PkiError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

/// Validity from a year ago (clocks that lag) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) -> Result<(), PkiError> {
    if !(1..=36_500).contains(&days) {
        return Err(PkiError::Days(days));
    }
    let now = chrono::Utc::now();
    let end = now + chrono::Duration::days(i64::from(days));
    let month = |m: u32| u8::try_from(m).unwrap_or(1);
    let day = |d: u32| u8::try_from(d.min(28)).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(now.year() - 1, month(now.month()), day(now.day()));
    params.not_after = rcgen::date_time_ymd(end.year(), month(end.month()), day(end.day()));
    Ok(())
}

fn ca_params(days: u32) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days)?;
    Ok(params)
}

/// Makes a new CA in `dir`: `ca.pem` (hand to every member) and `ca.key` (keep offline).
pub fn init(dir: &Path, days: u32) -> Result<(PathBuf, PathBuf), PkiError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate()?;
    let cert = ca_params(days)?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Issues `identity`'s certificate and key in `out`, signed by the CA in `ca_dir`.
pub fn issue(
    ca_dir: &Path,
    identity: &Identity,
    out: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let ca = ca_params(days)?.self_signed(&ca_key)?;
    let dns = identity.dns_name();
    let mut params = CertificateParams::new(vec![dns.clone()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns);
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, days)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    fs::create_dir_all(out).map_err(io(out))?;
    let base = format!("{}.{}", identity.name, identity.role);
    let (cert_path, key_path) = (
        out.join(format!("{base}.pem")),
        out.join(format!("{base}.key")),
    );
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}
