//! Checking a bearer JWT as upstream Conveyor's API middleware does, in its order:
//!
//! 1. the token is three base64url parts (no padding), its header and claims JSON objects;
//! 2. `alg` is `RS256`, `PS256`, `ES256` or `ES384` (`ES512` is refused: *ring* has no
//!    P-521; `none` and anything else are refused too), and the header has no `crit`;
//! 3. `x5c` is a non-empty array of standard-base64 DER certificates, leaf first; the leaf
//!    chains to a CA of `api.auth.jwt.ca` through `x5c[1..]`, is valid now and fit for
//!    server authentication as Go's `x509.Verify` requires by default (no extended key usage,
//!    or one that lists serverAuth; a certificate for clientAuth only is refused);
//! 4. `cnf` binds the token to the leaf: its `x5t#S256` (or, without it, `jkt`) is
//!    base64url-without-padding of SHA-256 of the leaf's DER;
//! 5. the signature verifies with the leaf's public key (a JWS ECDSA signature is `r || s`);
//! 6. `exp`, when present, is in the future and `nbf`, when present, is not; `iat`, when
//!    present, is not in the future. No leeway, as upstream.
//!
//! Every failure is upstream's `401 {"error":"invalid token"}` but an `iat` in the future,
//! which is `token issued in the future`; the precise reason is for the host's log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde_json::{Map, Value};

use super::{Alg, common_names, ecdsa_raw_to_der, thumbprint};
use crate::api::Role;

/// The longest token looked at (three RSA-4096 certificates take about 8 KiB).
const MAX_TOKEN: usize = 64 << 10;
/// The most certificates in `x5c`.
const MAX_CHAIN: usize = 8;

/// The algorithms a certificate of the chain may be signed with.
static CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or longer than the host reads.
    #[error("not a JWT in compact form (three base64url parts)")]
    Malformed,
    /// The header or the claims are not a JSON object.
    #[error("the token's {0} is not a JSON object")]
    NotJson(&'static str),
    /// `alg` is missing or not accepted.
    #[error(
        "algorithm {0:?} is not accepted (RS256, PS256, ES256 and ES384 are; ES512 needs P-521, \
         which this host's crypto lacks)"
    )]
    Algorithm(String),
    /// The header lists `crit` extensions, none of which this host understands.
    #[error("the header has crit extensions, which this host does not support")]
    Critical,
    /// `x5c` is missing or malformed.
    #[error("x5c: {0}")]
    X5c(&'static str),
    /// The leaf certificate cannot be parsed.
    #[error("the leaf certificate is not usable: {0}")]
    Certificate(webpki::Error),
    /// The chain does not lead to a configured CA, a certificate is not valid now, or the
    /// leaf is not fit for server authentication.
    #[error("the certificate chain does not verify against api.auth.jwt.ca: {0}")]
    Chain(webpki::Error),
    /// `cnf` is missing, malformed or names another certificate.
    #[error("cnf: {0}")]
    Binding(&'static str),
    /// The signature is not the leaf key's.
    #[error("the signature does not verify with the leaf's key: {0}")]
    Signature(String),
    /// A time claim is not a number.
    #[error("the {0} claim is not a number")]
    Claim(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
}

impl JwtError {
    /// The `error` of the 401 answer, worded as upstream's: `invalid token`, or `token issued
    /// in the future`.
    pub fn public_message(&self) -> &'static str {
        match self {
            JwtError::IssuedInFuture => "token issued in the future",
            _ => "invalid token",
        }
    }
}

/// Why `[api.auth.jwt]`'s CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The PEM file cannot be read.
    #[error("cannot read {path}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file has no certificate.
    #[error("{0} has no certificate")]
    Empty(std::path::PathBuf),
    /// A certificate cannot be a trust anchor.
    #[error("certificate {index} of {path} cannot be a trust anchor")]
    Anchor {
        /// The file.
        path: std::path::PathBuf,
        /// Which certificate, from 0.
        index: usize,
        /// Why.
        #[source]
        source: webpki::Error,
    },
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The leaf certificate's subject common name, when it has exactly one.
    pub common_name: Option<String>,
    /// Its role: the subject's in the mapping, else the default; `None` when neither.
    pub role: Option<Role>,
}

/// Verifies bearer JWTs against configured CAs and maps their certificates to roles.
pub struct Verifier {
    anchors: Vec<TrustAnchor<'static>>,
    subjects: BTreeMap<String, Role>,
    default_role: Option<Role>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("anchors", &self.anchors.len())
            .field("subjects", &self.subjects)
            .field("default_role", &self.default_role)
            .finish()
    }
}

impl Verifier {
    /// A verifier trusting the CA certificates of a PEM file.
    pub fn from_pem_file(
        ca: &Path,
        subjects: BTreeMap<String, Role>,
        default_role: Option<Role>,
    ) -> Result<Verifier, CaError> {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| CaError::Pem {
                path: ca.to_path_buf(),
                source,
            })?;
        if certs.is_empty() {
            return Err(CaError::Empty(ca.to_path_buf()));
        }
        let mut anchors = Vec::new();
        for (index, cert) in certs.iter().enumerate() {
            let anchor =
                webpki::anchor_from_trusted_cert(cert).map_err(|source| CaError::Anchor {
                    path: ca.to_path_buf(),
                    index,
                    source,
                })?;
            anchors.push(anchor.to_owned());
        }
        Ok(Verifier {
            anchors,
            subjects,
            default_role,
        })
    }

    /// A verifier trusting these CA certificates (DER).
    pub fn new(
        ca: &[CertificateDer<'_>],
        subjects: BTreeMap<String, Role>,
        default_role: Option<Role>,
    ) -> Result<Verifier, webpki::Error> {
        let anchors = ca
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<_, _>>()?;
        Ok(Verifier {
            anchors,
            subjects,
            default_role,
        })
    }

    /// Verifies a token at time `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, JwtError> {
        if token.len() > MAX_TOKEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = json_object(header_b64, "header")?;
        let claims = json_object(claims_b64, "claims")?;

        let alg = match header.get("alg") {
            Some(Value::String(name)) => {
                Alg::from_name(name).ok_or_else(|| JwtError::Algorithm(name.clone()))?
            }
            other => return Err(JwtError::Algorithm(format!("{other:?}"))),
        };
        if header.contains_key("crit") {
            return Err(JwtError::Critical);
        }

        let chain = x5c(&header)?;
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(JwtError::Certificate)?;
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        leaf.verify_for_usage(
            CHAIN_ALGS,
            &self.anchors,
            &chain[1..],
            time,
            ServerAuthOrAny,
            None,
            None,
        )
        .map_err(JwtError::Chain)?;

        let cnf = match claims.get("cnf") {
            Some(Value::Object(cnf)) => cnf,
            Some(_) => return Err(JwtError::Binding("not an object")),
            None => return Err(JwtError::Binding("missing")),
        };
        let bound = match cnf.get("x5t#S256").or_else(|| cnf.get("jkt")) {
            Some(Value::String(t)) => t,
            Some(_) => return Err(JwtError::Binding("the thumbprint is not a string")),
            None => return Err(JwtError::Binding("has neither x5t#S256 nor jkt")),
        };
        if *bound != thumbprint(&chain[0]) {
            return Err(JwtError::Binding(
                "the thumbprint is not the leaf certificate's",
            ));
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| JwtError::Malformed)?;
        let signature = match alg.ecdsa_width() {
            Some(width) => ecdsa_raw_to_der(&signature, width).ok_or_else(|| {
                JwtError::Signature(format!(
                    "an {} signature is {} bytes, not {}",
                    alg.name(),
                    2 * width,
                    signature.len()
                ))
            })?,
            None => signature,
        };
        let verification: &dyn SignatureVerificationAlgorithm = match alg {
            Alg::Rs256 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            Alg::Ps256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            Alg::Es256 => webpki::ring::ECDSA_P256_SHA256,
            Alg::Es384 => webpki::ring::ECDSA_P384_SHA384,
        };
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        leaf.verify_signature(verification, signed.as_bytes(), &signature)
            .map_err(|e| JwtError::Signature(e.to_string()))?;

        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // As jwt/v5: a time claim counts in whole seconds; valid while now < exp, from nbf.
        if let Some(exp) = time_claim(&claims, "exp")?
            && now >= exp
        {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = time_claim(&claims, "nbf")?
            && now < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iat) = time_claim(&claims, "iat")?
            && iat > now.floor()
        {
            return Err(JwtError::IssuedInFuture);
        }

        let names = common_names(leaf.subject());
        let common_name = match <[String; 1]>::try_from(names) {
            Ok([name]) => Some(name),
            Err(_) => None,
        };
        let role = common_name
            .as_ref()
            .and_then(|cn| self.subjects.get(cn).copied())
            .or(self.default_role);
        Ok(Identity { common_name, role })
    }
}

/// The extended key usage Go's `x509.Verify` requires by default: none at all, serverAuth,
/// or anyExtendedKeyUsage (webpki's own `KeyUsage::server_auth` refuses the last).
struct ServerAuthOrAny;

impl webpki::ExtendedKeyUsageValidator for ServerAuthOrAny {
    fn validate(&self, ekus: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
        const ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
        let mut present = Vec::new();
        for eku in ekus {
            let eku = eku?;
            if eku == webpki::KeyPurposeId::new(SERVER_AUTH)
                || eku == webpki::KeyPurposeId::new(ANY)
            {
                return Ok(());
            }
            present.push(eku.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: webpki::KeyUsage::server_auth(),
                present,
            },
        ))
    }
}

fn json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::NotJson(what)),
    }
}

fn x5c(header: &Map<String, Value>) -> Result<Vec<CertificateDer<'static>>, JwtError> {
    let entries = match header.get("x5c") {
        Some(Value::Array(entries)) if entries.is_empty() => {
            return Err(JwtError::X5c("the array is empty"));
        }
        Some(Value::Array(entries)) if entries.len() > MAX_CHAIN => {
            return Err(JwtError::X5c("more than 8 certificates"));
        }
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(JwtError::X5c("not an array")),
        None => return Err(JwtError::X5c("missing")),
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::String(b64) => STANDARD
                .decode(b64)
                .map(CertificateDer::from)
                .map_err(|_| JwtError::X5c("a certificate is not standard base64")),
            _ => Err(JwtError::X5c("a certificate is not a string")),
        })
        .collect()
}

/// A NumericDate claim in whole seconds, as jwt/v5 reads it; `None` when absent.
fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|f| Some(f.floor()))
            .ok_or(JwtError::Claim(name)),
        Some(_) => Err(JwtError::Claim(name)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::ExtendedKeyUsagePurpose;
    use serde_json::json;

    use super::super::testing::{self, Ca};
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token over `header` and `claims`, ES256-signed with a P-256 key.
    fn es256(header: &Value, claims: &Value, key: &rustls::pki_types::PrivateKeyDer<'_>) -> String {
        signed(
            rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
            header,
            claims,
            key,
        )
    }

    /// A token over `header` and `claims` signed with `scheme` (ECDSA as `r || s`).
    fn signed(
        scheme: rustls::SignatureScheme,
        header: &Value,
        claims: &Value,
        key: &rustls::pki_types::PrivateKeyDer<'_>,
    ) -> String {
        let signer = rustls::crypto::ring::sign::any_supported_type(key)
            .unwrap()
            .choose_scheme(&[scheme])
            .unwrap();
        let input = format!("{}.{}", b64(header), b64(claims));
        let mut signature = signer.sign(input.as_bytes()).unwrap();
        if scheme == rustls::SignatureScheme::ECDSA_NISTP256_SHA256 {
            signature = super::super::ecdsa_der_to_raw(&signature, 32).unwrap();
        }
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn header(chain: &[CertificateDer<'_>]) -> Value {
        let x5c: Vec<String> = chain.iter().map(|c| STANDARD.encode(c)).collect();
        json!({"alg": "ES256", "typ": "JWT", "x5c": x5c})
    }

    fn claims(leaf: &CertificateDer<'_>) -> Value {
        json!({"iat": now(), "exp": now() + 120, "cnf": {"x5t#S256": thumbprint(leaf)}})
    }

    fn verifier(ca: &Ca) -> Verifier {
        Verifier::new(
            std::slice::from_ref(&ca.der),
            BTreeMap::from([("ci-bot".to_string(), Role::Write)]),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_gets_its_subjects_role() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &testing::both(), None);
        let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
        let id = verifier(&ca).verify(&token, SystemTime::now()).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("ci-bot"));
        assert_eq!(id.role, Some(Role::Write));

        // jkt instead of x5t#S256, no exp (a token that never expires, as upstream).
        let claims = json!({"iat": now(), "cnf": {"jkt": thumbprint(&leaf.chain[0])}});
        let token = es256(&header(&leaf.chain), &claims, &leaf.key);
        assert!(verifier(&ca).verify(&token, SystemTime::now()).is_ok());
    }

    #[test]
    fn unmapped_subjects_get_the_default_role_or_none() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("someone-else", &[], None);
        let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
        let id = verifier(&ca).verify(&token, SystemTime::now()).unwrap();
        assert_eq!(id.role, None);
        let with_default = Verifier::new(
            std::slice::from_ref(&ca.der),
            BTreeMap::new(),
            Some(Role::Read),
        )
        .unwrap();
        let id = with_default.verify(&token, SystemTime::now()).unwrap();
        assert_eq!(id.role, Some(Role::Read));
    }

    #[test]
    fn intermediates_come_from_x5c() {
        let ca = Ca::new("Root");
        let (intermediate, intermediate_der) = ca.intermediate("Issuing CA");
        let mut leaf = intermediate.leaf("ci-bot", &testing::both(), None);
        let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
        assert!(matches!(
            verifier(&ca).verify(&token, SystemTime::now()),
            Err(JwtError::Chain(_))
        ));
        leaf.chain.push(intermediate_der);
        let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
        assert!(verifier(&ca).verify(&token, SystemTime::now()).is_ok());
    }

    #[test]
    fn refusals_say_why_and_answer_as_upstream() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &testing::both(), None);
        let v = verifier(&ca);
        let check = |token: &str| v.verify(token, SystemTime::now()).unwrap_err();
        let h = header(&leaf.chain);

        // The thumbprint of another certificate.
        let other = ca.leaf("ci-bot", &testing::both(), None);
        let e = check(&es256(&h, &claims(&other.chain[0]), &leaf.key));
        assert!(matches!(e, JwtError::Binding(_)), "{e}");
        assert_eq!(e.public_message(), "invalid token");
        // No cnf at all.
        let e = check(&es256(&h, &json!({"iat": now()}), &leaf.key));
        assert!(matches!(e, JwtError::Binding(_)), "{e}");

        // Expired, and not valid yet: upstream's jwt/v5 answers both as "invalid token".
        let mut c = claims(&leaf.chain[0]);
        c["exp"] = json!(now() - 1);
        let e = check(&es256(&h, &c, &leaf.key));
        assert!(matches!(e, JwtError::Expired), "{e}");
        assert_eq!(e.public_message(), "invalid token");
        let mut c = claims(&leaf.chain[0]);
        c["nbf"] = json!(now() + 60);
        assert!(matches!(
            check(&es256(&h, &c, &leaf.key)),
            JwtError::NotYetValid
        ));
        let mut c = claims(&leaf.chain[0]);
        c["exp"] = json!("tomorrow");
        assert!(matches!(
            check(&es256(&h, &c, &leaf.key)),
            JwtError::Claim("exp")
        ));

        // Issued in the future: upstream's own message.
        let mut c = claims(&leaf.chain[0]);
        c["iat"] = json!(now() + 3600);
        let e = check(&es256(&h, &c, &leaf.key));
        assert!(matches!(e, JwtError::IssuedInFuture), "{e}");
        assert_eq!(e.public_message(), "token issued in the future");

        // A leaf of another CA, binding and signature correct.
        let stranger = Ca::new("Test CA").leaf("ci-bot", &testing::both(), None);
        let e = check(&es256(
            &header(&stranger.chain),
            &claims(&stranger.chain[0]),
            &stranger.key,
        ));
        assert!(matches!(e, JwtError::Chain(_)), "{e}");

        // A certificate for clientAuth only (Go's x509.Verify wants serverAuth, or no EKU).
        let client = ca.leaf("ci-bot", &[ExtendedKeyUsagePurpose::ClientAuth], None);
        let e = check(&es256(
            &header(&client.chain),
            &claims(&client.chain[0]),
            &client.key,
        ));
        assert!(
            matches!(
                e,
                JwtError::Chain(webpki::Error::RequiredEkuNotFoundContext(_))
            ),
            "{e}"
        );
        assert_eq!(e.public_message(), "invalid token");
        // serverAuth alone, anyExtendedKeyUsage, or no EKU at all pass, as with Go.
        for ekus in [
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            vec![ExtendedKeyUsagePurpose::Any],
            vec![
                ExtendedKeyUsagePurpose::CodeSigning,
                ExtendedKeyUsagePurpose::Any,
            ],
            vec![],
        ] {
            let leaf = ca.leaf("ci-bot", &ekus, None);
            let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
            assert!(v.verify(&token, SystemTime::now()).is_ok(), "{ekus:?}");
        }

        // alg none, an unsigned token.
        let mut none = h.clone();
        none["alg"] = json!("none");
        let token = format!("{}.{}.", b64(&none), b64(&claims(&leaf.chain[0])));
        let e = check(&token);
        assert!(
            matches!(e, JwtError::Algorithm(ref a) if a == "none"),
            "{e}"
        );
        // Other algorithms: HS256 (a key confusion attempt), ES512, a missing alg.
        for alg in [json!("HS256"), json!("ES512"), json!("es256"), Value::Null] {
            let mut other = h.clone();
            other["alg"] = alg;
            let e = check(&es256(&other, &claims(&leaf.chain[0]), &leaf.key));
            assert!(matches!(e, JwtError::Algorithm(_)), "{e}");
        }
        // ES384 named but the key is P-256.
        let mut wrong = h.clone();
        wrong["alg"] = json!("ES384");
        let e = check(&es256(&wrong, &claims(&leaf.chain[0]), &leaf.key));
        assert!(matches!(e, JwtError::Signature(_)), "{e}");

        // A signature by another key, and a tampered claim.
        let e = check(&es256(&h, &claims(&leaf.chain[0]), &other.key));
        assert!(matches!(e, JwtError::Signature(_)), "{e}");
        let token = es256(&h, &claims(&leaf.chain[0]), &leaf.key);
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims(&leaf.chain[0]);
        c["exp"] = json!(now() + 99_999);
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert!(matches!(check(&tampered), JwtError::Signature(_)));

        // x5c: missing, empty, not standard base64, crit present.
        for x5c in [Value::Null, json!([]), json!(["-_-_"]), json!("MIIB")] {
            let mut bad = h.clone();
            if x5c.is_null() {
                bad.as_object_mut().unwrap().remove("x5c");
            } else {
                bad["x5c"] = x5c;
            }
            let e = check(&es256(&bad, &claims(&leaf.chain[0]), &leaf.key));
            assert!(matches!(e, JwtError::X5c(_)), "{e}");
        }
        let mut crit = h.clone();
        crit["crit"] = json!(["exp"]);
        assert!(matches!(
            check(&es256(&crit, &claims(&leaf.chain[0]), &leaf.key)),
            JwtError::Critical
        ));

        // Not a JWT at all, or padded base64url.
        assert!(matches!(check("garbage"), JwtError::Malformed));
        assert!(matches!(check("e30=.e30=.AA=="), JwtError::Malformed));
        assert!(matches!(check("W10.e30.AA"), JwtError::NotJson("header")));
    }

    #[test]
    fn rsa_tokens_verify_as_rs256_and_ps256() {
        use rustls::SignatureScheme::{RSA_PKCS1_SHA256, RSA_PSS_SHA256};
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &testing::both(), Some(testing::RSA_PK8));
        let v = verifier(&ca);
        let mut h = header(&leaf.chain);
        let c = claims(&leaf.chain[0]);
        for (alg, scheme) in [("RS256", RSA_PKCS1_SHA256), ("PS256", RSA_PSS_SHA256)] {
            h["alg"] = json!(alg);
            let token = signed(scheme, &h, &c, &leaf.key);
            assert!(v.verify(&token, SystemTime::now()).is_ok(), "{alg}");
        }
        // A PSS signature under an RS256 header, and the other way round.
        h["alg"] = json!("RS256");
        let e = v
            .verify(
                &signed(RSA_PSS_SHA256, &h, &c, &leaf.key),
                SystemTime::now(),
            )
            .unwrap_err();
        assert!(matches!(e, JwtError::Signature(_)), "{e}");
        h["alg"] = json!("PS256");
        let e = v
            .verify(
                &signed(RSA_PKCS1_SHA256, &h, &c, &leaf.key),
                SystemTime::now(),
            )
            .unwrap_err();
        assert!(matches!(e, JwtError::Signature(_)), "{e}");
        // ES256 named for an RSA certificate.
        h["alg"] = json!("ES256");
        let e = v
            .verify(
                &signed(RSA_PKCS1_SHA256, &h, &c, &leaf.key),
                SystemTime::now(),
            )
            .unwrap_err();
        assert!(matches!(e, JwtError::Signature(_)), "{e}");
    }

    #[test]
    fn certificate_validity_counts() {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &testing::both(), None);
        let token = es256(&header(&leaf.chain), &claims(&leaf.chain[0]), &leaf.key);
        // rcgen's certificates are valid from 1975: before that, the chain does not verify.
        let long_ago = UNIX_EPOCH + Duration::from_secs(86_400);
        assert!(matches!(
            verifier(&ca).verify(&token, long_ago),
            Err(JwtError::Chain(_))
        ));
    }
}
