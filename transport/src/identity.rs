//! Per-node identities: client certificates the gateway's CA issues to
//! agents (`gateway cert issue`), and reading the node id back from one;
//! the server certificates of agents' direct ports (look-aside calls).
//!
//! A node's client certificate carries its node id as the subject's common
//! name (and as a DNS subject alternative name when the id is a valid DNS
//! name), with the `clientAuth` extended key usage. A direct port's
//! certificate carries the node id as common name, the names clients dial
//! as subject alternative names, and the `serverAuth` extended key usage.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use crate::tls::{self, TlsError, TlsFiles};

/// Where [`issue_client_cert`] or [`issue_direct_cert`] wrote a node's
/// certificate and key.
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
    let mut params = rcgen::CertificateParams::default();
    if let Ok(name) = rcgen::string::Ia5String::try_from(node)
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        params.subject_alt_names = vec![rcgen::SanType::DnsName(name)];
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    issue(files, node, params, out, "client")
}

/// Issues the server certificate of a node's direct port (look-aside
/// calls) for `node` signed by the CA in `files`: common name `node`, the
/// `serverAuth` extended key usage, subject alternative names `names` (DNS
/// names or IP addresses: what clients dial, e.g. `10.0.0.5`,
/// `gpu-1.example`). Writes `direct-cert.pem` (the chain: the certificate,
/// then the CA) and `direct-key.pem` (mode 0600) into `out` (created if
/// missing); existing files there are not overwritten.
///
/// # Errors
/// As [`issue_client_cert`], and [`TlsError::Generate`] when `names` is
/// empty or a name cannot be a certificate name.
pub fn issue_direct_cert(
    files: &TlsFiles,
    node: &str,
    names: &[String],
    out: &Path,
) -> Result<IssuedCert, TlsError> {
    if names.is_empty() {
        return Err(TlsError::Generate(
            "a direct certificate names at least one DNS name or IP address".to_string(),
        ));
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(format!("direct certificate names: {e}")))?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    issue(files, node, params, out, "direct")
}

/// Signs `params` (common name `node` added) with the CA in `files` and
/// writes `{stem}-cert.pem` (with the CA after it) and `{stem}-key.pem`
/// into `out`.
fn issue(
    files: &TlsFiles,
    node: &str,
    mut params: rcgen::CertificateParams,
    out: &Path,
    stem: &str,
) -> Result<IssuedCert, TlsError> {
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
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;

    std::fs::create_dir_all(out).map_err(|source| TlsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let issued = IssuedCert {
        cert: out.join(format!("{stem}-cert.pem")),
        key: out.join(format!("{stem}-key.pem")),
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
    fn issues_a_direct_certificate_a_client_of_the_ca_accepts() {
        use rustls::client::danger::ServerCertVerifier as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        files.create_if_missing(&["localhost".into()]).expect("ca");
        let out = dir.path().join("node-a");
        let names = vec!["node-a.example".to_string(), "127.0.0.1".to_string()];
        let issued = issue_direct_cert(&files, "node-a", &names, &out).expect("issued");
        assert_eq!(issued.cert, out.join("direct-cert.pem"));
        let chain = tls::load_certs(&issued.cert).expect("chain");
        assert_eq!(chain.len(), 2, "direct certificate, then the CA");
        assert_eq!(node_id_of(&chain[0]).expect("cn"), "node-a");
        let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref()).expect("x509");
        let eku = parsed
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans: Vec<String> = parsed
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            sans.iter().any(|s| s.contains("node-a.example")),
            "{sans:?}"
        );
        assert!(sans.iter().any(|s| s.contains("IPAddress")), "{sans:?}");
        // A server configuration takes it, and the client verifier of the
        // CA accepts it for each name.
        let server = TlsFiles {
            cert: issued.cert.clone(),
            key: issued.key.clone(),
            ..files.clone()
        };
        server.server_config().expect("server config");
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for c in tls::load_certs(&files.ca).expect("ca") {
                roots.add(c).expect("root");
            }
            std::sync::Arc::new(roots)
        };
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        for name in ["node-a.example", "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(&chain[0], &[], &name, &[], now)
                .expect("verifies");
        }
        let other = rustls::pki_types::ServerName::try_from("other.example").expect("name");
        assert!(
            verifier
                .verify_server_cert(&chain[0], &[], &other, &[], now)
                .is_err()
        );
        let again = issue_direct_cert(&files, "node-a", &names, &out).expect_err("kept");
        assert!(again.to_string().contains("exists already"), "{again}");
        let none = issue_direct_cert(&files, "node-a", &[], &dir.path().join("x"));
        assert!(none.is_err());
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
