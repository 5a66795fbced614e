//! JSON Web Tokens bound to an X.509 certificate: upstream Conveyor's API authentication.
//!
//! A token is a JWS in compact form whose header carries the certificate chain (`x5c`, leaf
//! first, standard base64 DER) and whose claims carry the leaf's SHA-256 thumbprint
//! (`cnf.x5t#S256`); it is signed with the leaf's private key. [`Verifier`] checks one as
//! upstream's API middleware does (the embedded API's `[api.auth.jwt]`); [`Signer`] makes them
//! as upstream's Go driver runtime does (NATS mode's REST client).
//!
//! Built on rustls-webpki (path validation, and the signature with the leaf's public key) and
//! *ring* through rustls (signing), which the host already has for TLS; a JWT library would
//! add a second crypto stack for the four algorithms below and still need the certificate
//! binding written by hand. *ring* has no P-521, so `ES512` is refused.

pub mod sign;
pub mod verify;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub use sign::Signer;
pub use verify::{Identity, Verifier};

/// The JWS algorithms accepted and made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256 (salt as long as the hash, as RFC 7518 requires).
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
}

impl Alg {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
        }
    }

    /// The algorithm of an `alg` header value, if it is one of those accepted.
    pub fn from_name(name: &str) -> Option<Alg> {
        [Alg::Rs256, Alg::Ps256, Alg::Es256, Alg::Es384]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// For ECDSA, the byte length of `r` and of `s` in the JWS signature (`r || s`).
    fn ecdsa_width(self) -> Option<usize> {
        match self {
            Alg::Es256 => Some(32),
            Alg::Es384 => Some(48),
            Alg::Rs256 | Alg::Ps256 => None,
        }
    }
}

/// base64url without padding of SHA-256 of a certificate's DER: `x5t#S256`.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// Whether a bearer value has the shape of a JWS in compact form: three parts separated by
/// dots, each of base64url characters, the first two not empty.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let b64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| b64url(p))
}

/// One DER element: its tag, its contents and what follows it. `None` for truncated input or
/// a length form DER does not allow (indefinite, or more than four length bytes).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const DER_INTEGER: u8 = 0x02;
const DER_SEQUENCE: u8 = 0x30;
const DER_SET: u8 = 0x31;
const DER_OID: u8 = 0x06;

/// A DER header (tag and length) for `len` bytes of contents.
fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

/// A JWS ECDSA signature (`r || s`, each `width` bytes) as the ASN.1 DER
/// `SEQUENCE { INTEGER r, INTEGER s }` that *ring* and webpki verify. `None` when the length
/// is not `2 * width`.
fn ecdsa_raw_to_der(raw: &[u8], width: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * width {
        return None;
    }
    let integer = |n: &[u8]| {
        let first = n.iter().position(|b| *b != 0).unwrap_or(n.len() - 1);
        let n = &n[first..];
        let pad = n[0] & 0x80 != 0;
        let mut out = der_header(DER_INTEGER, n.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(n);
        out
    };
    let mut body = integer(&raw[..width]);
    body.extend(integer(&raw[width..]));
    let mut out = der_header(DER_SEQUENCE, body.len());
    out.extend(body);
    Some(out)
}

/// An ASN.1 DER ECDSA signature (as rustls's signers return it) as JWS's `r || s`, each
/// left-padded to `width` bytes. `None` for anything but a well-formed pair of non-negative
/// integers that fit.
fn ecdsa_der_to_raw(der: &[u8], width: usize) -> Option<Vec<u8>> {
    let (tag, body, rest) = der_element(der)?;
    if tag != DER_SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(2 * width);
    let mut body = body;
    for _ in 0..2 {
        let (tag, n, rest) = der_element(body)?;
        if tag != DER_INTEGER || n.is_empty() || n[0] & 0x80 != 0 {
            return None;
        }
        let n = if n.len() > 1 && n[0] == 0 { &n[1..] } else { n };
        if n.len() > width {
            return None;
        }
        out.extend(std::iter::repeat_n(0, width - n.len()));
        out.extend_from_slice(n);
        body = rest;
    }
    body.is_empty().then_some(out)
}

/// The common names (`CN`, OID 2.5.4.3) in a certificate's subject, given as the contents of
/// its `Name` SEQUENCE (what webpki's `Cert::subject` returns). Values that are not UTF-8,
/// Printable, IA5 or Teletex strings of valid UTF-8 are skipped.
fn common_names(subject: &[u8]) -> Vec<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut out = Vec::new();
    let mut rdns = subject;
    while let Some((tag, set, rest)) = der_element(rdns) {
        rdns = rest;
        if tag != DER_SET {
            continue;
        }
        let mut attributes = set;
        while let Some((tag, attribute, rest)) = der_element(attributes) {
            attributes = rest;
            if tag != DER_SEQUENCE {
                continue;
            }
            let Some((DER_OID, oid, value)) = der_element(attribute) else {
                continue;
            };
            if oid != CN {
                continue;
            }
            // UTF8String, PrintableString, TeletexString, IA5String.
            if let Some((0x0c | 0x13 | 0x14 | 0x16, text, _)) = der_element(value)
                && let Ok(text) = std::str::from_utf8(text)
            {
                out.push(text.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Test CAs, certificates and tokens.

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// The test RSA-2048 key, PKCS#8 and PKCS#1.
    pub const RSA_PK8: &str = include_str!("testdata/rsa2048.pk8.pem");
    /// The same key as PKCS#1.
    pub const RSA_PKCS1: &str = include_str!("testdata/rsa2048.pkcs1.pem");
    /// The test P-384 key, PKCS#8.
    pub const P384_PK8: &str = include_str!("testdata/p384.pk8.pem");
    /// The same key as SEC1.
    pub const P384_SEC1: &str = include_str!("testdata/p384.sec1.pem");

    /// A test CA.
    pub struct Ca {
        /// Its certificate.
        pub der: CertificateDer<'static>,
        params: CertificateParams,
        key: KeyPair,
    }

    /// A leaf certificate and its key.
    pub struct Leaf {
        /// The chain, leaf first.
        pub chain: Vec<CertificateDer<'static>>,
        /// The key, PKCS#8.
        pub key: PrivateKeyDer<'static>,
    }

    impl Ca {
        /// A self-signed P-256 CA.
        pub fn new(name: &str) -> Ca {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let der = params.self_signed(&key).unwrap().der().clone();
            Ca { der, params, key }
        }

        /// An intermediate CA signed by this one.
        pub fn intermediate(&self, name: &str) -> (Ca, CertificateDer<'static>) {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer = Issuer::from_params(&self.params, &self.key);
            let der = params.signed_by(&key, &issuer).unwrap().der().clone();
            (
                Ca {
                    der: der.clone(),
                    params,
                    key,
                },
                der,
            )
        }

        /// A leaf with subject `CN=<cn>`, the given EKUs and a key: PKCS#8 PEM, or a fresh
        /// P-256 key when `None`.
        pub fn leaf(&self, cn: &str, ekus: &[ExtendedKeyUsagePurpose], key: Option<&str>) -> Leaf {
            let key = match key {
                Some(pem) => KeyPair::from_pem(pem).unwrap(),
                None => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            };
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = ekus.to_vec();
            let issuer = Issuer::from_params(&self.params, &self.key);
            let der = params.signed_by(&key, &issuer).unwrap().der().clone();
            Leaf {
                chain: vec![der],
                key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            }
        }
    }

    /// Both EKUs, as `conveyor init`'s certificate has.
    pub fn both() -> Vec<ExtendedKeyUsagePurpose> {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJi."));
        assert!(!looks_like_jwt("a-static-token-0123456789"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a+.b.c"));
        assert!(!looks_like_jwt("a.b=.c"));
    }

    #[test]
    fn ecdsa_signatures_convert_both_ways() {
        for width in [32, 48] {
            // High bits set, leading zeros, and a one-byte value.
            let mut cases = vec![vec![0xffu8; 2 * width], vec![1u8; 2 * width]];
            let mut small = vec![0u8; 2 * width];
            small[width - 1] = 7;
            small[2 * width - 1] = 0x80;
            cases.push(small);
            for raw in cases {
                let der = ecdsa_raw_to_der(&raw, width).unwrap();
                assert_eq!(ecdsa_der_to_raw(&der, width).unwrap(), raw);
            }
            assert!(ecdsa_raw_to_der(&[1; 10], width).is_none());
        }
        // r = 0x80 needs a leading zero in DER.
        let mut raw = vec![0u8; 64];
        raw[31] = 0x80;
        raw[63] = 1;
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(der, [0x30, 7, 2, 2, 0, 0x80, 2, 1, 1]);
        // Trailing bytes, a negative integer or one too wide are refused.
        assert!(ecdsa_der_to_raw(&[0x30, 6, 2, 1, 1, 2, 1, 1, 0], 32).is_none());
        assert!(ecdsa_der_to_raw(&[0x30, 6, 2, 1, 0x81, 2, 1, 1], 32).is_none());
        assert!(ecdsa_der_to_raw(&[0x30, 6, 2, 1, 1, 2, 1], 32).is_none());
        let wide = ecdsa_raw_to_der(&[0x7f; 96], 48).unwrap();
        assert!(ecdsa_der_to_raw(&wide, 32).is_none());
    }

    #[test]
    fn common_names_are_read_from_the_subject() {
        let ca = testing::Ca::new("Test CA");
        let leaf = ca.leaf("ci-bot", &[], None);
        let cert = webpki::EndEntityCert::try_from(&leaf.chain[0]).unwrap();
        assert_eq!(common_names(cert.subject()), ["ci-bot"]);
        assert!(common_names(&[0x31, 0x05, 0x30]).is_empty());
    }
}
