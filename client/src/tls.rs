//! TLS for `https://` addresses, REST and gRPC alike (rustls with ring): the system's root
//! certificates plus `--ca-cert` (a private CA, or a self-signed server certificate), and a client
//! certificate for servers that require one (`--client-cert`, `--client-key`: mutual TLS).

use std::path::{Path, PathBuf};

use crate::ClientError;

/// What the user pointed at; files are read once, when a connection is built.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The files' contents, ready for either transport.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate chain and key, both PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    pub(crate) fn load(&self) -> Result<TlsMaterial, ClientError> {
        let ca_pem = self.ca_cert.as_deref().map(|p| read_pem(p, "--ca-cert", "CERTIFICATE")).transpose()?;
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                Some((read_pem(cert, "--client-cert", "CERTIFICATE")?, read_pem(key, "--client-key", "PRIVATE KEY")?))
            }
            (None, None) => None,
            _ => return Err(ClientError::Input("--client-cert and --client-key go together".into())),
        };
        Ok(TlsMaterial { ca_pem, identity })
    }
}

impl TlsMaterial {
    /// Trust and identity for the REST client.
    pub(crate) fn apply_rest(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, ClientError> {
        let mut builder = builder;
        if let Some(pem) = &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Input(format!("--ca-cert: not usable: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut both = key.clone();
            both.push(b'\n');
            both.extend_from_slice(cert);
            let identity = reqwest::Identity::from_pem(&both)
                .map_err(|e| ClientError::Input(format!("--client-cert/--client-key: not usable: {e}")))?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    /// The gRPC channel's TLS settings (used for `https://` addresses only).
    pub(crate) fn grpc(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = &self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

/// Reads a PEM file and checks it holds a block of the expected kind (e.g. `PRIVATE KEY` also
/// matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`), so a mixed-up path fails here, clearly.
fn read_pem(path: &Path, flag: &str, kind: &str) -> Result<Vec<u8>, ClientError> {
    let bytes = std::fs::read(path).map_err(|e| ClientError::Input(format!("{flag} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let found =
        text.lines().any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{kind}-----")));
    if !found {
        return Err(ClientError::Input(format!("{flag} {}: no PEM {kind} block in the file", path.display())));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_for_the_right_pem_block() {
        let dir = std::env::temp_dir().join(format!("csp-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        std::fs::write(&key, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n").unwrap();
        let options = |ca: Option<&Path>, c: Option<&Path>, k: Option<&Path>| TlsOptions {
            ca_cert: ca.map(Path::to_path_buf),
            client_cert: c.map(Path::to_path_buf),
            client_key: k.map(Path::to_path_buf),
        };
        let loaded = options(Some(&cert), Some(&cert), Some(&key)).load().unwrap();
        assert!(loaded.ca_pem.is_some() && loaded.identity.is_some());
        let err = |o: TlsOptions| o.load().unwrap_err().to_string();
        assert!(err(options(Some(&key), None, None)).contains("--ca-cert"));
        assert!(err(options(None, Some(&key), Some(&cert))).contains("--client-cert"));
        assert!(err(options(None, Some(&cert), None)).contains("go together"));
        assert!(err(options(Some(&dir.join("none.pem")), None, None)).contains("none.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
