//! TLS settings for the outbound session and helpers for test certificates.
//!
//! Server certificates are always verified: against the public web roots and
//! the system's roots, plus an optional CA file from runner.yaml.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Errors building the TLS client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {detail}; check control_plane.tls.ca_file")]
    CaFile { path: PathBuf, detail: String },
    #[error("CA file {0} holds no PEM certificate")]
    EmptyCaFile(PathBuf),
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// Installs the process-wide crypto provider; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Builds a client configuration trusting the default roots and `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for certificate in native.certs {
        let _ = roots.add(certificate);
    }
    if let Some(path) = ca_file {
        for certificate in read_certificates(path)? {
            roots.add(certificate).map_err(|error| TlsError::CaFile {
                path: path.to_path_buf(),
                detail: error.to_string(),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| TlsError::CaFile {
            path: path.to_path_buf(),
            detail: error.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::CaFile {
            path: path.to_path_buf(),
            detail: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::EmptyCaFile(path.to_path_buf()));
    }
    Ok(certificates)
}

/// A self-signed certificate for loopback servers in demos and tests.
pub struct LocalCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a certificate valid for `localhost` and `127.0.0.1`.
pub fn local_certificate() -> Result<LocalCertificate, TlsError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|error| TlsError::Setup(error.to_string()))?;
    Ok(LocalCertificate {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}
