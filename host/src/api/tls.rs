//! TLS for the API listener (`[api.tls]`): the server's certificate chain and key, and
//! optionally a CA whose client certificates the server requires (mTLS). rustls, TLS 1.2 and
//! 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path} ({what})")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `api.tls.cert`, say.
        what: &'static str,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate, key or CA.
    #[error("the {0} is not usable")]
    Rustls(&'static str, #[source] rustls::Error),
    /// The client CA could not be turned into a verifier.
    #[error("api.tls.client_ca is not usable")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            what,
            source,
        })
}

/// The acceptor for `cert` (PEM chain, leaf first) and `key` (PEM), requiring client
/// certificates signed by `client_ca` when given.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(cert, "api.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_path_buf(),
        what: "api.tls.key",
        source,
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("TLS provider", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "api.tls.client_ca")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Rustls("api.tls.client_ca", e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls("api.tls.cert and api.tls.key pair", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
