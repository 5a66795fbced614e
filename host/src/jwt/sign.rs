//! Making upstream Conveyor's bearer JWTs, as its Go driver runtime does (`createSignedJWT`):
//! a fresh token per request with `iat` = now, `exp` = now + [`TOKEN_TTL`], `cnf` =
//! `{"x5t#S256": <leaf thumbprint>}`, and the header's `x5c` = the whole chain; `RS256` for an
//! RSA key, `ES256` or `ES384` for a P-256 or P-384 key (PKCS#1, SEC1 or PKCS#8).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Alg, ecdsa_der_to_raw, thumbprint};

/// How long a token is valid, as upstream's default.
pub const TOKEN_TTL: Duration = Duration::from_secs(120);

/// Why tokens cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// A PEM file cannot be read.
    #[error("cannot read {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file has no certificate.
    #[error("{0} has no certificate")]
    NoCertificate(PathBuf),
    /// rustls cannot load the key.
    #[error("the private key is not usable (RSA, or ECDSA P-256 or P-384, are; P-521 is not)")]
    Key(#[source] rustls::Error),
    /// The key is of a type JWS signing here does not cover.
    #[error(
        "the private key is neither RSA nor ECDSA P-256 or P-384, the keys this host signs \
         RS256, ES256 and ES384 tokens with"
    )]
    UnsupportedKey,
    /// The key is not the certificate's.
    #[error("the private key does not belong to the first certificate: {0}")]
    Mismatch(String),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Makes bearer JWTs bound to one certificate.
pub struct Signer {
    alg: Alg,
    signer: Box<dyn rustls::sign::Signer>,
    /// The encoded header, the same for every token.
    header: String,
    thumbprint: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("x5t#S256", &self.thumbprint)
            .finish()
    }
}

impl Signer {
    /// A signer for the PEM certificate chain in `cert` (leaf first) and the PEM private key
    /// in `key`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Signer, SignerError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| SignerError::Pem {
                path: cert.to_path_buf(),
                source,
            })?;
        if chain.is_empty() {
            return Err(SignerError::NoCertificate(cert.to_path_buf()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| SignerError::Pem {
            path: key.to_path_buf(),
            source,
        })?;
        Signer::new(chain, &key)
    }

    /// A signer for a chain (leaf first, not empty) and the leaf's key. The key is checked
    /// against the leaf by signing a probe and verifying it with the leaf's public key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'_>,
    ) -> Result<Signer, SignerError> {
        let leaf = chain
            .first()
            .ok_or_else(|| SignerError::NoCertificate(PathBuf::new()))?;
        let key = rustls::crypto::ring::sign::any_supported_type(key).map_err(SignerError::Key)?;
        let (alg, signer) = [
            (Alg::Rs256, SignatureScheme::RSA_PKCS1_SHA256),
            (Alg::Es256, SignatureScheme::ECDSA_NISTP256_SHA256),
            (Alg::Es384, SignatureScheme::ECDSA_NISTP384_SHA384),
        ]
        .into_iter()
        .find_map(|(alg, scheme)| key.choose_scheme(&[scheme]).map(|s| (alg, s)))
        .ok_or(SignerError::UnsupportedKey)?;
        let x5c: Vec<String> = chain.iter().map(|c| STANDARD.encode(c)).collect();
        let header = serde_json::json!({"alg": alg.name(), "typ": "JWT", "x5c": x5c});
        let signer = Signer {
            alg,
            signer,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            thumbprint: thumbprint(leaf),
        };
        signer.check_key(leaf)?;
        Ok(signer)
    }

    /// The algorithm the tokens are signed with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// A token issued at `now`, valid for [`TOKEN_TTL`].
    pub fn token(&self, now: SystemTime) -> Result<String, SignerError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "iat": iat,
            "exp": iat + TOKEN_TTL.as_secs(),
            "cnf": {"x5t#S256": self.thumbprint},
        });
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The JWS signature of `message`: as rustls gives it for RSA, `r || s` for ECDSA.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| SignerError::Sign(e.to_string()))?;
        match self.alg.ecdsa_width() {
            Some(width) => ecdsa_der_to_raw(&signature, width).ok_or_else(|| {
                SignerError::Sign("the ECDSA signature is not a DER pair of integers".into())
            }),
            None => Ok(signature),
        }
    }

    fn check_key(&self, leaf: &CertificateDer<'_>) -> Result<(), SignerError> {
        let probe = b"conveyor-host: does this key belong to this certificate?";
        let signature = self.sign(probe)?;
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| SignerError::Mismatch(format!("the certificate is not usable: {e}")))?;
        let (verification, signature): (&dyn rustls::pki_types::SignatureVerificationAlgorithm, _) =
            match self.alg {
                Alg::Rs256 | Alg::Ps256 => (webpki::ring::RSA_PKCS1_2048_8192_SHA256, signature),
                Alg::Es256 => (
                    webpki::ring::ECDSA_P256_SHA256,
                    super::ecdsa_raw_to_der(&signature, 32).unwrap_or_default(),
                ),
                Alg::Es384 => (
                    webpki::ring::ECDSA_P384_SHA384,
                    super::ecdsa_raw_to_der(&signature, 48).unwrap_or_default(),
                ),
            };
        cert.verify_signature(verification, probe, &signature)
            .map_err(|e| SignerError::Mismatch(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::super::Verifier;
    use super::super::testing::{self, Ca};
    use super::*;
    use crate::api::Role;

    fn key(pem: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn part(token: &str, i: usize) -> Value {
        let part = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Tokens of every key type and encoding verify with the verifier, with the claims and
    /// header upstream's runtime sends.
    #[test]
    fn round_trip_through_the_verifier() {
        let ca = Ca::new("Test CA");
        let verifier = Verifier::new(
            std::slice::from_ref(&ca.der),
            BTreeMap::from([("ci-bot".to_string(), Role::Admin)]),
            None,
        )
        .unwrap();
        let cases = [
            (Some(testing::RSA_PK8), testing::RSA_PKCS1, Alg::Rs256),
            (Some(testing::RSA_PK8), testing::RSA_PK8, Alg::Rs256),
            (Some(testing::P384_PK8), testing::P384_SEC1, Alg::Es384),
            (Some(testing::P384_PK8), testing::P384_PK8, Alg::Es384),
            (None, "", Alg::Es256),
        ];
        for (cert_key, signing_key, alg) in cases {
            let leaf = ca.leaf("ci-bot", &testing::both(), cert_key);
            let key = match cert_key {
                Some(_) => key(signing_key),
                None => leaf.key.clone_key(),
            };
            let signer = Signer::new(leaf.chain.clone(), &key).unwrap();
            assert_eq!(signer.alg(), alg);
            let now = SystemTime::now();
            let token = signer.token(now).unwrap();
            let id = verifier.verify(&token, now).unwrap();
            assert_eq!(id.role, Some(Role::Admin), "{alg:?}");

            let header = part(&token, 0);
            assert_eq!(header["alg"], alg.name());
            assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
            let claims = part(&token, 1);
            let iat = claims["iat"].as_u64().unwrap();
            assert_eq!(claims["exp"].as_u64().unwrap(), iat + 120);
            assert_eq!(claims["cnf"]["x5t#S256"], thumbprint(&leaf.chain[0]));
            // Two minutes later it has expired.
            assert!(matches!(
                verifier.verify(&token, now + TOKEN_TTL + Duration::from_secs(1)),
                Err(super::super::verify::JwtError::Expired)
            ));
        }
    }

    #[test]
    fn the_whole_chain_goes_into_x5c() {
        let ca = Ca::new("Root");
        let (intermediate, intermediate_der) = ca.intermediate("Issuing CA");
        let mut leaf = intermediate.leaf("ci-bot", &[], None);
        leaf.chain.push(intermediate_der);
        let signer = Signer::new(leaf.chain.clone(), &leaf.key).unwrap();
        let token = signer.token(SystemTime::now()).unwrap();
        assert_eq!(part(&token, 0)["x5c"].as_array().unwrap().len(), 2);
        let verifier = Verifier::new(
            std::slice::from_ref(&ca.der),
            BTreeMap::new(),
            Some(Role::Read),
        )
        .unwrap();
        assert!(verifier.verify(&token, SystemTime::now()).is_ok());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &[], None);
        let other = ca.leaf("ci-bot", &[], None);
        assert!(matches!(
            Signer::new(leaf.chain, &other.key),
            Err(SignerError::Mismatch(_))
        ));
        let rsa = ca.leaf("ci-bot", &[], Some(testing::RSA_PK8));
        assert!(matches!(
            Signer::new(rsa.chain, &key(testing::P384_SEC1)),
            Err(SignerError::Mismatch(_))
        ));
    }

    #[test]
    fn pem_files_load() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &[], Some(testing::P384_PK8));
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("client.crt");
        let b64 = STANDARD.encode(&leaf.chain[0]);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        std::fs::write(&cert, pem).unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, testing::P384_SEC1).unwrap();
        let signer = Signer::from_pem_files(&cert, &key).unwrap();
        assert_eq!(signer.alg(), Alg::Es384);
        assert!(matches!(
            Signer::from_pem_files(&key, &key),
            Err(SignerError::NoCertificate(_))
        ));
        assert!(matches!(
            Signer::from_pem_files(&dir.path().join("missing"), &key),
            Err(SignerError::Pem { .. })
        ));
    }
}
