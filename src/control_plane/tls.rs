//! Loading the PEM certificate and key for HTTPS and WSS.

use std::path::Path;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ControlPlaneError, TlsFiles};

/// Reads the certificate chain and private key and builds a rustls server
/// configuration with the aws-lc-rs provider, offering HTTP/2 and HTTP/1.1.
pub(super) async fn load_config(files: &TlsFiles) -> Result<RustlsConfig, ControlPlaneError> {
    let cert_pem = read_file("certificate", &files.cert).await?;
    let key_pem = read_file("private key", &files.key).await?;

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error("certificate", &files.cert, format!("invalid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(tls_error(
            "certificate",
            &files.cert,
            "the file contains no CERTIFICATE block; point it at a PEM certificate chain"
                .to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        tls_error(
            "private key",
            &files.key,
            format!("no usable PKCS#8, PKCS#1 or SEC1 PEM key ({error})"),
        )
    })?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error("certificate", &files.cert, error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            tls_error(
                "certificate",
                &files.cert,
                format!("the certificate and key do not form a valid pair ({error})"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

async fn read_file(file_kind: &'static str, path: &Path) -> Result<Vec<u8>, ControlPlaneError> {
    tokio::fs::read(path).await.map_err(|error| {
        tls_error(
            file_kind,
            path,
            format!("the file could not be read ({error})"),
        )
    })
}

fn tls_error(file_kind: &'static str, path: &Path, problem: String) -> ControlPlaneError {
    ControlPlaneError::Tls {
        file_kind,
        path: path.to_path_buf(),
        problem,
    }
}
