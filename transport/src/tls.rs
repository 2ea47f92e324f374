//! TLS material: a self-signed CA and a server certificate it signs, created
//! on first start (rcgen) and loaded from PEM files afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rcgen could not make a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls refused the material.
    #[error("tls configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where a gateway's certificate, key and CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
    /// The CA that signed `cert`, PEM: what agents and clients trust.
    pub ca: PathBuf,
    /// The CA's private key, PEM (mode 0600): written when the CA is
    /// generated, needed only to issue agents' client certificates
    /// (`gateway cert issue`).
    pub ca_key: PathBuf,
}

impl TlsFiles {
    /// The files a gateway keeps in `data_dir`: `cert.pem`, `key.pem`,
    /// `ca.pem`, `ca-key.pem`.
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            cert: data_dir.join("cert.pem"),
            key: data_dir.join("key.pem"),
            ca: data_dir.join("ca.pem"),
            ca_key: data_dir.join("ca-key.pem"),
        }
    }

    /// Creates a CA and a server certificate for `names` (DNS names or IP
    /// addresses, e.g. `localhost`, `127.0.0.1`) signed by it, unless all
    /// three files exist already. Returns whether it created them. The CA's
    /// key goes to `ca_key`.
    ///
    /// The key file is written with mode 0600 on Unix.
    ///
    /// # Errors
    /// [`TlsError::Io`] when the files cannot be written,
    /// [`TlsError::Generate`] when rcgen fails.
    pub fn create_if_missing(&self, names: &[String]) -> Result<bool, TlsError> {
        if self.cert.exists() && self.key.exists() && self.ca.exists() {
            return Ok(false);
        }
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard gateway CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate)?;

        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard gateway");
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &ca).map_err(generate)?;

        for path in [&self.cert, &self.key, &self.ca, &self.ca_key] {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        write(
            &self.cert,
            format!("{}{}", cert.pem(), ca.pem()).as_bytes(),
            false,
        )?;
        write(&self.key, key.serialize_pem().as_bytes(), true)?;
        write(&self.ca_key, ca.key().serialize_pem().as_bytes(), true)?;
        write(&self.ca, ca.pem().as_bytes(), false)?;
        Ok(true)
    }

    /// A rustls server configuration from the certificate chain and key.
    ///
    /// # Errors
    /// [`TlsError::Io`] or [`TlsError::Pem`] for unreadable files,
    /// [`TlsError::Rustls`] when the key does not match.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let chain = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(config)
    }

    /// As [`TlsFiles::server_config`], asking clients for a certificate
    /// signed by the CA in `client_ca`: a client may send none (SDK callers
    /// do not; rustls' `WebPkiClientVerifier` with `allow_unauthenticated`),
    /// but one it sends must verify, else the handshake fails. Whether a
    /// connection without one may register as an agent is the gateway's
    /// decision.
    ///
    /// # Errors
    /// As [`TlsFiles::server_config`], for `client_ca` too.
    pub fn server_config_with_clients(
        &self,
        client_ca: &Path,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let chain = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(client_ca)? {
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Generate(format!("client certificate verifier: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(config)
    }
}

/// A rustls client configuration that trusts the CA certificates in the PEM
/// file `ca`.
///
/// # Errors
/// [`TlsError::Io`] or [`TlsError::Pem`] when the file is unreadable or holds
/// no certificate, [`TlsError::Rustls`] when a certificate is refused.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// As [`client_config`], presenting the client certificate chain in `cert`
/// with its key in `key` (PEM files), e.g. one `gateway cert issue` made.
///
/// # Errors
/// As [`client_config`], for `cert` and `key` too; [`TlsError::Rustls`]
/// when the key does not match the certificate.
pub fn client_config_with_cert(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(config)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read(path).and_then(|pem| {
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
}

/// The certificates in the PEM file `path` (at least one).
///
/// # Errors
/// [`TlsError::Io`] or [`TlsError::Pem`] when the file is unreadable or holds
/// no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        assert!(files.create_if_missing(&names).expect("create"));
        let first = std::fs::read(&files.ca).expect("ca");
        assert!(!files.create_if_missing(&names).expect("exists"));
        assert_eq!(std::fs::read(&files.ca).expect("ca"), first, "kept");
        files.server_config().expect("server config");
        client_config(&files.ca).expect("client config");
    }

    #[test]
    fn a_file_without_certificates_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a pem").expect("write");
        let err = client_config(&path).expect_err("no certs");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
