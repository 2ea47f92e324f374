//! Per-node identities: client certificates the gateway's CA issues to
//! agents (`gateway cert issue`), and reading the node id back from one.
//!
//! A node's certificate carries its node id as the subject's common name
//! (and as a DNS subject alternative name when the id is a valid DNS name),
//! with the `clientAuth` extended key usage.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use crate::tls::{self, TlsError, TlsFiles};

/// Where `issue_client_cert` wrote a node's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate chain (node certificate, then the CA), PEM.
    pub cert: PathBuf,
    /// The node's private key, PEM (mode 0600 on Unix).
    pub key: PathBuf,
}

/// Issues a client certificate for `node` signed by the CA in `files`
/// (`ca` and `ca_key`), writing `client-cert.pem` and `client-key.pem` into
/// `out` (created if missing). Existing files there are not overwritten.
///
/// # Errors
/// [`TlsError::Io`] when the CA key is missing (a CA generated before
/// gateways kept it cannot issue: make a new one), a file cannot be read or
/// written, or an output file exists already; [`TlsError::Generate`] when
/// `node` cannot be a certificate name or rcgen fails.
pub fn issue_client_cert(files: &TlsFiles, node: &str, out: &Path) -> Result<IssuedCert, TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    if node.is_empty() || node.len() > 256 {
        return Err(TlsError::Generate("a node id is 1..=256 bytes".to_string()));
    }
    let ca_pem = String::from_utf8_lossy(&tls::read(&files.ca)?).into_owned();
    let ca_key_pem = String::from_utf8_lossy(&tls::read(&files.ca_key)?).into_owned();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: files.ca_key.clone(),
        reason: e.to_string(),
    })?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| TlsError::Pem {
        path: files.ca.clone(),
        reason: e.to_string(),
    })?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    if let Ok(name) = rcgen::string::Ia5String::try_from(node)
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        params.subject_alt_names = vec![rcgen::SanType::DnsName(name)];
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;

    std::fs::create_dir_all(out).map_err(|source| TlsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let issued = IssuedCert {
        cert: out.join("client-cert.pem"),
        key: out.join("client-key.pem"),
    };
    for path in [&issued.cert, &issued.key] {
        if path.exists() {
            return Err(TlsError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists already; not overwritten",
                ),
            });
        }
    }
    tls::write(&issued.key, key.serialize_pem().as_bytes(), true)?;
    tls::write(
        &issued.cert,
        format!("{}{ca_pem}", cert.pem()).as_bytes(),
        false,
    )?;
    Ok(issued)
}

/// The node id a client certificate names: its subject's common name.
///
/// # Errors
/// [`TlsError::Pem`] (path `peer certificate`) when the certificate does not
/// parse or has no UTF-8 common name.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: PathBuf::from("peer certificate"),
        reason,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| bad(format!("not a certificate: {e}")))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| bad("no common name".into()))?;
    cn.as_str()
        .map(str::to_string)
        .map_err(|e| bad(format!("common name is not text: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn issues_a_certificate_naming_the_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        files.create_if_missing(&["localhost".into()]).expect("ca");
        let out = dir.path().join("node-a");
        let issued = issue_client_cert(&files, "node-a", &out).expect("issued");
        let chain = tls::load_certs(&issued.cert).expect("chain");
        assert_eq!(chain.len(), 2, "node certificate, then the CA");
        assert_eq!(node_id_of(&chain[0]).expect("cn"), "node-a");
        tls::client_config_with_cert(&files.ca, &issued.cert, &issued.key).expect("usable");
        let again = issue_client_cert(&files, "node-a", &out).expect_err("kept");
        assert!(again.to_string().contains("exists already"), "{again}");
    }

    #[test]
    fn without_the_ca_key_nothing_is_issued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        files.create_if_missing(&["localhost".into()]).expect("ca");
        std::fs::remove_file(&files.ca_key).expect("rm");
        let err = issue_client_cert(&files, "n", &dir.path().join("o")).expect_err("no key");
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }
}
