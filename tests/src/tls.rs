//! A throwaway PKI for the TLS tests, made fresh by each test (rcgen): a CA, a server certificate
//! for `localhost` and 127.0.0.1 signed by it, a client certificate signed by it, and a second,
//! unrelated CA with its own client certificate.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// PEM files in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, and a client certificate it issued: trusted by nobody here.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("PKI dir");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ours = new_ca("cspserve test CA");
        let other = new_ca("unrelated CA");
        let (server_cert, server_key) = leaf(&ours, &["localhost", "127.0.0.1"]);
        let (client_cert, client_key) = leaf(&ours, &["client.test"]);
        let (other_cert, other_key) = leaf(&other, &["client.test"]);
        Pki {
            ca: write("ca.pem", ours.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            other_ca: write("other-ca.pem", other.pem()),
            other_client_cert: write("other-client.pem", other_cert),
            other_client_key: write("other-client-key.pem", other_key),
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// (certificate PEM, key PEM) for `names`, issued by `issuer`.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}
