//! Certificates made by the test: a CA, and leaves it signs for a server (`localhost`,
//! `127.0.0.1`) or a client (a subject common name), each with a fresh ECDSA P-256 key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority.
pub struct Ca {
    /// Its certificate, PEM.
    pub pem: String,
    params: CertificateParams,
    key: KeyPair,
}

/// A certificate signed by a [`Ca`], and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Ca {
    /// A self-signed CA named `cn`.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        Ca { pem, params, key }
    }

    /// A certificate for `localhost` and `127.0.0.1`, subject `CN=<cn>`, fit for server and
    /// client authentication (as `conveyor init`'s certificates are).
    pub fn leaf(&self, cn: &str) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("leaf parameters");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign the leaf");
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA's certificate to `dir/<name>.pem` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write(dir, &format!("{name}.pem"), &self.pem)
    }
}

impl Leaf {
    /// Writes `dir/<name>.crt`, `dir/<name>.key` and `dir/<name>.der`; returns the first two.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        std::fs::write(dir.join(format!("{name}.der")), &self.der)
            .unwrap_or_else(|e| panic!("cannot write {name}.der: {e}"));
        (
            write(dir, &format!("{name}.crt"), &self.pem),
            write(dir, &format!("{name}.key"), &self.key_pem),
        )
    }
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}
