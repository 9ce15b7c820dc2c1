//! TLS for both transports (rustls with ring): the certificate chain and key are read from PEM
//! files once at start, and optionally a CA whose certificates clients must present (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is closed: it holds a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's TLS material is (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Which application protocols a listener offers in ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    /// REST: HTTP/2 or HTTP/1.1.
    Http,
    /// gRPC: HTTP/2 only.
    Grpc,
}

/// Reads and checks the files (the key must match the certificate), for one listener.
pub fn acceptor(files: &TlsFiles, alpn: Alpn) -> Result<TlsAcceptor> {
    let chain = read_certs(&files.cert, "--tls-cert")?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, "--tls-key", "a private key", e))?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .with_context(|| format!("--tls-client-ca {}: not a usable CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("--tls-client-ca {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "--tls-cert {} with --tls-key {}: the key does not fit the certificate",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = match alpn {
        Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Grpc => vec![b"h2".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, flag, "certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, flag, "certificates", e))?;
    if certs.is_empty() {
        bail!("{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file", path.display());
    }
    Ok(certs)
}

fn pem_error(path: &Path, flag: &str, what: &str, err: rustls::pki_types::pem::Error) -> anyhow::Error {
    use rustls::pki_types::pem::Error;
    match err {
        Error::Io(io) => anyhow::anyhow!("{flag} {}: {io}", path.display()),
        Error::NoItemsFound => anyhow::anyhow!("{flag} {}: no PEM {what} in the file", path.display()),
        other => anyhow::anyhow!("{flag} {}: not valid PEM {what}: {other}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn files(cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles { cert, key, client_ca: None }
    }

    #[test]
    fn bad_files_give_errors_that_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_pem = write(dir.path(), "cert.pem", &cert.cert.pem());
        let key_pem = write(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
        let other_key = write(dir.path(), "other.pem", &other.signing_key.serialize_pem());
        let text = write(dir.path(), "text.pem", "hello\n");
        let missing = dir.path().join("missing.pem");

        assert!(acceptor(&files(cert_pem.clone(), key_pem.clone()), Alpn::Http).is_ok());
        let err = |f: TlsFiles| format!("{:#}", acceptor(&f, Alpn::Grpc).err().expect("should fail"));
        let e = err(files(missing.clone(), key_pem.clone()));
        assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
        let e = err(files(text.clone(), key_pem.clone()));
        assert!(e.contains("--tls-cert") && e.contains("no PEM certificate"), "{e}");
        let e = err(files(cert_pem.clone(), text));
        assert!(e.contains("--tls-key") && e.contains("private key"), "{e}");
        let e = err(files(cert_pem.clone(), cert_pem.clone()));
        assert!(e.contains("--tls-key"), "{e}");
        let e = err(files(cert_pem.clone(), other_key));
        assert!(e.contains("does not fit"), "{e}");
        let e = err(TlsFiles { cert: cert_pem, key: key_pem, client_ca: Some(missing) });
        assert!(e.contains("--tls-client-ca"), "{e}");
    }
}
