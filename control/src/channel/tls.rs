//! rustls configurations for the channel, from the CA and the member's own certificate:
//! TLS 1.3 only, ALPN `h2`, and client certificates required and verified against the CA.
//! A peer's identity is then the name its certificate is valid for ([`peer_is`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::identity::Identity;

/// Where a member's TLS files are (gateway.yaml's and controller.yaml's `api`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The deployment's CA certificate (`gatewan pki init`).
    pub ca: PathBuf,
    /// This member's certificate and key (`gatewan pki issue`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("{path} is not a certificate for {identity} (its DNS name must be {dns})")]
    NotMine {
        path: PathBuf,
        identity: String,
        dns: String,
    },
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Both ends' configurations, ready to use.
#[derive(Clone)]
pub struct TlsSetup {
    pub identity: Identity,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let list = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if list.is_empty() {
        return Err(file_err(path, "holds no certificate"));
    }
    Ok(list)
}

/// Whether `cert` is valid for `identity`'s DNS name (the chain was verified by rustls).
pub fn peer_is(cert: &CertificateDer<'_>, identity: &Identity) -> bool {
    let Ok(name) = ServerName::try_from(identity.dns_name()) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|ee| ee.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

impl TlsSetup {
    /// Loads the files and checks that the certificate is `identity`'s.
    pub fn load(files: &TlsFiles, identity: Identity) -> Result<TlsSetup, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots.add(ca).map_err(|e| file_err(&files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let chain = certs(&files.cert)?;
        if !chain.first().is_some_and(|c| peer_is(c, &identity)) {
            return Err(TlsError::NotMine {
                path: files.cert.clone(),
                identity: identity.to_string(),
                dns: identity.dns_name(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsSetup {
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}
