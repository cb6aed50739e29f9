//! Certificates for a secured test store, made fresh for each cluster: a CA, a server
//! certificate for 127.0.0.1 and a client certificate it signed, and a second, unrelated CA
//! with a client certificate of its own, for the tests of what a wrong one does.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files of a secured test store, in the cluster's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the servers' and the client's certificates.
    pub ca: PathBuf,
    /// The servers' certificate (for `127.0.0.1` and `localhost`).
    pub server_cert: PathBuf,
    /// The servers' key.
    pub server_key: PathBuf,
    /// A client certificate the servers trust.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA that signed nothing the servers present: a client trusting only it must refuse
    /// them.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`, which the servers must refuse.
    pub other_client_cert: PathBuf,
    /// Its key.
    pub other_client_key: PathBuf,
}

impl TlsFiles {
    /// The store URL options of a client with the right CA and certificate:
    /// `ca=…&cert=…&key=…`.
    pub fn client_options(&self) -> String {
        format!(
            "ca={}&cert={}&key={}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(tls_error)`
fn tls_error(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("make a test certificate: {e}"))
}

impl Ca {
    fn new(name: &str) -> io::Result<Ca> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(tls_error)?;
        Ok(Ca { cert, key })
    }

    /// A certificate for `names` (IP addresses become IP SANs) and its key, as PEM.
    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: &[ExtendedKeyUsagePurpose],
    ) -> io::Result<(String, String)> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usage.to_vec();
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(tls_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Makes every file of [`TlsFiles`] in `dir`.
pub(crate) fn generate(dir: &Path) -> io::Result<TlsFiles> {
    let ca = Ca::new("overlay test CA")?;
    let other = Ca::new("some other CA")?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        other_ca: dir.join("other-ca.pem"),
        other_client_cert: dir.join("other-client.pem"),
        other_client_key: dir.join("other-client-key.pem"),
    };
    fs::write(&files.ca, ca.cert.pem())?;
    fs::write(&files.other_ca, other.cert.pem())?;
    let (cert, key) = ca.issue(
        "etcd",
        &["127.0.0.1", "localhost"],
        // etcd's own HTTP gateway dials its gRPC server with the server certificate.
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    fs::write(&files.server_cert, cert)?;
    fs::write(&files.server_key, key)?;
    let (cert, key) = ca.issue("overlay", &[], &[ExtendedKeyUsagePurpose::ClientAuth])?;
    fs::write(&files.client_cert, cert)?;
    fs::write(&files.client_key, key)?;
    let (cert, key) = other.issue("overlay", &[], &[ExtendedKeyUsagePurpose::ClientAuth])?;
    fs::write(&files.other_client_cert, cert)?;
    fs::write(&files.other_client_key, key)?;
    Ok(files)
}
