//! The Consul HTTP API client: requests with failover across the URL's servers, the ACL
//! token, TLS from the URL options, and status codes mapped onto [`ErrorKind`].

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};

use crate::error::{Error, ErrorKind, Result};
use crate::store::StoreUrl;
use crate::store::remote::cause;

/// Characters left as they are in a key's URL path: `/` separates segments in Consul too.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// A Consul agent connection.
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: reqwest::Client,
    bases: Arc<Vec<String>>,
    token: Option<String>,
    timeout: Duration,
}

/// A response: status, the `X-Consul-Index` header, body.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) index: u64,
    pub(super) body: Vec<u8>,
}

fn tls_config(url: &StoreUrl) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let o = &url.options;
    let bad = |what: &str, path: &std::path::Path, e: String| {
        Error::invalid(
            "connect Consul",
            format!("cannot use the {what} file {}: {e}", path.display()),
        )
        .with_hint("fix the ca=, cert= or key= option of the store URL (PEM files)")
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("connect Consul", format!("TLS setup: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &o.tls_ca {
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad("CA", ca, e.to_string()))? {
            let cert = cert.map_err(|e| bad("CA", ca, e.to_string()))?;
            roots.add(cert).map_err(|e| bad("CA", ca, e.to_string()))?;
        }
    }
    let builder = builder.with_root_certificates(roots);
    match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| bad("certificate", cert, e.to_string()))?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad("certificate", cert, e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl Http {
    pub(super) fn new(url: &StoreUrl) -> Result<Self> {
        let tls = url.options.tls_ca.is_some() || url.options.tls_cert.is_some();
        let scheme = if tls { "https" } else { "http" };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(url)?)
            .connect_timeout(url.options.timeout)
            .timeout(url.options.timeout)
            .build()
            .map_err(|e| Error::internal("connect Consul", format!("HTTP client setup: {e}")))?;
        Ok(Http {
            client,
            bases: Arc::new(
                url.servers
                    .iter()
                    .map(|s| format!("{scheme}://{s}"))
                    .collect(),
            ),
            token: url.options.token.clone(),
            timeout: url.options.timeout,
        })
    }

    /// `path` with every character a key may hold but a URL path may not percent-encoded.
    pub(super) fn encode(path: &str) -> String {
        utf8_percent_encode(path, PATH).to_string()
    }

    /// Sends a request to the first server that answers; `wait` lengthens the deadline of a
    /// blocking query.
    pub(super) async fn call(
        &self,
        op: &'static str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        wait: Option<Duration>,
    ) -> Result<Reply> {
        let mut last = None;
        for base in self.bases.iter() {
            let mut req = self
                .client
                .request(method.clone(), format!("{base}{path_and_query}"));
            if let Some(t) = &self.token {
                req = req.header("X-Consul-Token", t);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            if let Some(w) = wait {
                req = req.timeout(w + self.timeout);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let index = resp
                        .headers()
                        .get("X-Consul-Index")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let body = resp
                        .bytes()
                        .await
                        .map_err(|e| transport(op, base, &e))?
                        .to_vec();
                    return check(
                        op,
                        base,
                        Reply {
                            status,
                            index,
                            body,
                        },
                    );
                }
                Err(e) => last = Some(transport(op, base, &e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid(op, "the store URL names no Consul server")))
    }
}

fn transport(op: &'static str, base: &str, e: &reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    let what = match kind {
        ErrorKind::Timeout => format!("no answer from Consul at {base} in time"),
        _ => format!("cannot reach Consul at {base}: {}", cause(e)),
    };
    Error::new(kind, op, what)
        .with_hint("check that the Consul agent is running and reachable, then retry")
}

/// Turns error statuses into errors; 404 and 409 are answers the callers interpret.
fn check(op: &'static str, base: &str, r: Reply) -> Result<Reply> {
    let s = r.status;
    if s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::CONFLICT {
        return Ok(r);
    }
    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        .trim()
        .to_string();
    let (kind, hint) = match s {
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => (
            ErrorKind::PermissionDenied,
            "check the token= option and its ACL policy",
        ),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorKind::InvalidArgument,
            "the request was refused as malformed or too large",
        ),
        _ if s.is_server_error() => (
            ErrorKind::Unavailable,
            "the Consul cluster may have no leader; retry",
        ),
        _ => (ErrorKind::Internal, "see the Consul agent's log"),
    };
    Err(Error::new(kind, op, format!("Consul at {base} answered {s}: {text}")).with_hint(hint))
}
