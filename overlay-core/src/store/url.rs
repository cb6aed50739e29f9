//! Cluster store URLs, as Docker's `--cluster-store` took them.
//!
//! ```text
//! zk://10.211.55.2:2181                       the seed's form; prefix overlay/v1
//! etcd://h1:2379,h2:2379/prod?timeout=2s      several servers, prefix "prod"
//! consul://[::1]:8500/overlay?token=secret
//! file:///var/lib/overlay/store.db?ttl=5s     embedded, one host, no server
//! ```
//!
//! Options: `timeout`, `ttl` (durations such as `500ms`, `5s`, `1m`), `ca`, `cert`, `key`
//! (TLS files), `username`, `password`, `token`, and for `file://` also `prefix`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};
use crate::store::key::validate_prefix;

/// The key prefix used when the URL names none.
pub const DEFAULT_PREFIX: &str = "overlay/v1";

/// Which kind of store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `etcd://`
    Etcd,
    /// `zk://`
    ZooKeeper,
    /// `consul://`
    Consul,
    /// `file://`, the embedded store.
    File,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "etcd" => Some(Scheme::Etcd),
            "zk" | "zookeeper" => Some(Scheme::ZooKeeper),
            "consul" => Some(Scheme::Consul),
            "file" => Some(Scheme::File),
            _ => None,
        }
    }

    /// The port used when a server is given without one.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Etcd => 2379,
            Scheme::ZooKeeper => 2181,
            Scheme::Consul => 8500,
            Scheme::File => 0,
        }
    }

    /// The store's name in messages: `etcd`, `ZooKeeper`, `Consul`, `the embedded store`.
    pub fn server_name(self) -> &'static str {
        match self {
            Scheme::Etcd => "etcd",
            Scheme::ZooKeeper => "ZooKeeper",
            Scheme::Consul => "Consul",
            Scheme::File => "the embedded store",
        }
    }

    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Etcd => "etcd",
            Scheme::ZooKeeper => "zk",
            Scheme::Consul => "consul",
            Scheme::File => "file",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server of a cluster store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Options from the URL's query string.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Deadline of one store operation (default 5 s).
    pub timeout: Duration,
    /// Session or lease TTL of ephemeral keys (default 10 s).
    pub ttl: Duration,
    /// CA certificate file for TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate file for TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key file for TLS.
    pub tls_key: Option<PathBuf>,
    /// User name (etcd auth, ZooKeeper digest).
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// ACL token (Consul).
    pub token: Option<String>,
    /// Largest value (and largest sum of a transaction's values) the client sends, in bytes;
    /// `None`: the backend's default, which fits its servers' default request limit. Larger
    /// writes are refused before any I/O. Raise it only with the servers' own limit (etcd's
    /// `--max-request-bytes`, ZooKeeper's `-Djute.maxbuffer`).
    pub max_value: Option<usize>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(10),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            username: None,
            password: None,
            token: None,
            max_value: None,
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_value", &self.max_value)
            .finish()
    }
}

/// A parsed cluster store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// Which backend.
    pub scheme: Scheme,
    /// Servers, in the order given (empty for `file://`).
    pub servers: Vec<ServerAddr>,
    /// The database file (only for `file://`).
    pub path: Option<PathBuf>,
    /// Key prefix, without leading or trailing `/`.
    pub prefix: String,
    /// Options.
    pub options: StoreOptions,
}

fn bad(url: &str, why: impl fmt::Display) -> Error {
    Error::invalid(
        "parse store URL",
        format!("store URL {:?} {why}", redact(url)),
    )
    .with_hint(
        "write SCHEME://HOST[:PORT][,HOST[:PORT]...][/PREFIX][?OPTION=VALUE&...] with SCHEME \
         etcd, zk or consul, or file:///PATH for the embedded store",
    )
}

/// Hides a password given in the URL before it is echoed into an error message.
fn redact(url: &str) -> String {
    let mut out = url.to_string();
    for key in ["password=", "token="] {
        if let Some(start) = out.find(key) {
            let from = start + key.len();
            let end = out[from..].find('&').map_or(out.len(), |i| from + i);
            out.replace_range(from..end, "***");
        }
    }
    out
}

fn decode(url: &str, s: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            bad(
                url,
                format!("has {s:?}, which is not UTF-8 once percent-decoded"),
            )
        })
}

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0 && secs < 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// A byte count: a number with an optional `K` or `M` (binary: 1K = 1024), at least 1 and at
/// most 1 GiB.
pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let (num, scale) = match s.strip_suffix(['K', 'k']) {
        Some(n) => (n, 1 << 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(n) => (n, 1 << 20),
            None => (s, 1),
        },
    };
    let n: usize = num.parse().ok()?;
    n.checked_mul(scale).filter(|b| (1..=1 << 30).contains(b))
}

impl StoreUrl {
    /// The servers as one comma-separated list, as messages and clients name them.
    pub(crate) fn server_list(&self) -> String {
        self.servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a store URL; every malformed part gives
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming it.
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme_text, rest) = url
            .split_once("://")
            .ok_or_else(|| bad(url, "has no \"://\" after the scheme"))?;
        let scheme = Scheme::parse(scheme_text).ok_or_else(|| {
            bad(
                url,
                format!("has unknown scheme {scheme_text:?} (use etcd, zk, consul or file)"),
            )
        })?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = StoreOptions::default();
        let mut prefix_opt = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(url, format!("has option {k:?} without a value", k = pair)))?;
            let v = decode(url, v)?;
            if v.is_empty() {
                return Err(bad(url, format!("has an empty value for option {k:?}")));
            }
            let dur = || {
                parse_duration(&v).ok_or_else(|| {
                    bad(
                        url,
                        format!("has {k}={v:?}, not a duration such as 500ms, 5s or 1m"),
                    )
                })
            };
            match k {
                "timeout" => options.timeout = dur()?,
                "ttl" => options.ttl = dur()?,
                "ca" => options.tls_ca = Some(v.into()),
                "cert" => options.tls_cert = Some(v.into()),
                "key" => options.tls_key = Some(v.into()),
                "username" => options.username = Some(v),
                "password" => options.password = Some(v),
                "token" => options.token = Some(v),
                "max_value" => {
                    options.max_value = Some(parse_size(&v).ok_or_else(|| {
                        bad(
                            url,
                            format!("has max_value={v:?}, not a size such as 500K, 4M or 65536"),
                        )
                    })?)
                }
                "prefix" if scheme == Scheme::File => prefix_opt = Some(v),
                _ => {
                    return Err(bad(
                        url,
                        format!(
                            "has unknown option {k:?} (known: timeout, ttl, ca, cert, key, \
                             username, password, token, max_value{})",
                            if scheme == Scheme::File {
                                ", prefix"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        }
        if options.tls_cert.is_some() != options.tls_key.is_some() {
            return Err(bad(
                url,
                "gives only one of the options cert and key; give both",
            ));
        }
        if options.password.is_some() && options.username.is_none() {
            return Err(bad(url, "gives a password without a username"));
        }

        let (servers, path, prefix) = if scheme == Scheme::File {
            let p = decode(url, main)?;
            if p.is_empty() {
                return Err(bad(
                    url,
                    "has no file path (write file:///var/lib/overlay/store.db)",
                ));
            }
            (Vec::new(), Some(PathBuf::from(p)), prefix_opt)
        } else {
            let (hosts, path) = match main.find('/') {
                Some(i) => (&main[..i], Some(&main[i + 1..])),
                None => (main, None),
            };
            let servers = Self::parse_servers(url, scheme, hosts)?;
            let prefix = path.map(|p| decode(url, p)).transpose()?;
            (servers, None, prefix)
        };
        let prefix = prefix
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let prefix = prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        validate_prefix(&prefix)
            .map_err(|e| bad(url, format!("has a bad prefix: {}", e.context())))?;
        Ok(StoreUrl {
            scheme,
            servers,
            path,
            prefix,
            options,
        })
    }

    fn parse_servers(url: &str, scheme: Scheme, hosts: &str) -> Result<Vec<ServerAddr>> {
        if hosts.contains('@') {
            return Err(bad(
                url,
                "has credentials before the host; pass them as ?username=...&password=...",
            ));
        }
        if hosts.is_empty() {
            return Err(bad(url, "names no server"));
        }
        hosts
            .split(',')
            .map(|h| {
                if h.is_empty() {
                    return Err(bad(url, "has an empty server between commas"));
                }
                let (host, port) = if let Some(rest) = h.strip_prefix('[') {
                    let (ip6, after) = rest.split_once(']').ok_or_else(|| {
                        bad(url, format!("has server {h:?} with an unclosed '['"))
                    })?;
                    if ip6.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(bad(
                            url,
                            format!("has {ip6:?} in brackets, not an IPv6 address"),
                        ));
                    }
                    match after {
                        "" => (ip6, None),
                        p => match p.strip_prefix(':') {
                            Some(port) => (ip6, Some(port)),
                            None => return Err(bad(url, format!("has junk {p:?} after {h:?}"))),
                        },
                    }
                } else {
                    match h.rsplit_once(':') {
                        Some((host, port)) if !host.contains(':') => (host, Some(port)),
                        Some(_) => {
                            return Err(bad(
                                url,
                                format!("has IPv6 server {h:?} without brackets; write [{h}]"),
                            ));
                        }
                        None => (h, None),
                    }
                };
                if host.is_empty()
                    || !host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
                {
                    return Err(bad(url, format!("has an invalid host {host:?}")));
                }
                let port = match port {
                    None => scheme.default_port(),
                    Some(p) => match p.parse::<u16>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(bad(url, format!("has an invalid port {p:?} for {host}"))),
                    },
                };
                Ok(ServerAddr {
                    host: host.to_string(),
                    port,
                })
            })
            .collect()
    }
}

impl fmt::Display for StoreUrl {
    /// The URL in canonical form, without secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(path) = &self.path {
            write!(f, "{}", path.display())?;
            if self.prefix != DEFAULT_PREFIX {
                write!(f, "?prefix={}", self.prefix)?;
            }
            return Ok(());
        }
        write!(f, "{}/{}", self.server_list(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn seed_form_parses() {
        let u = StoreUrl::parse("zk://10.211.55.2:2181").unwrap();
        assert_eq!(u.scheme, Scheme::ZooKeeper);
        assert_eq!(
            u.servers,
            vec![ServerAddr {
                host: "10.211.55.2".into(),
                port: 2181
            }]
        );
        assert_eq!(u.prefix, DEFAULT_PREFIX);
        assert_eq!(u.options, StoreOptions::default());
    }

    #[test]
    fn several_servers_prefix_and_options() {
        let u = StoreUrl::parse(
            "etcd://h1,h2:2380,[::1]:23/prod/net?timeout=250ms&ttl=3s&ca=/a%20b.pem&username=u&password=p",
        )
        .unwrap();
        assert_eq!(u.scheme, Scheme::Etcd);
        let s: Vec<String> = u.servers.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["h1:2379", "h2:2380", "[::1]:23"]);
        assert_eq!(u.prefix, "prod/net");
        assert_eq!(u.options.timeout, Duration::from_millis(250));
        assert_eq!(u.options.ttl, Duration::from_secs(3));
        assert_eq!(u.options.tls_ca, Some(PathBuf::from("/a b.pem")));
        assert_eq!(u.options.password.as_deref(), Some("p"));
        assert!(!format!("{:?}", u.options).contains("\"p\""));
        assert_eq!(u.to_string(), "etcd://h1:2379,h2:2380,[::1]:23/prod/net");
    }

    #[test]
    fn file_urls() {
        let u = StoreUrl::parse("file:///var/lib/overlay/store.db?ttl=2s&prefix=x/y").unwrap();
        assert_eq!(u.path, Some(PathBuf::from("/var/lib/overlay/store.db")));
        assert_eq!(u.prefix, "x/y");
        assert!(u.servers.is_empty());
        let c = StoreUrl::parse("consul://localhost").unwrap();
        assert_eq!(c.servers[0].port, 8500);
    }

    #[test]
    fn malformed_urls_name_the_bad_part() {
        let cases = [
            ("10.211.55.2:2181", "no \"://\""),
            ("redis://h", "unknown scheme \"redis\""),
            ("zk://", "names no server"),
            ("zk://h1,,h2", "empty server"),
            ("zk://h:99999", "invalid port \"99999\""),
            ("zk://h:0", "invalid port \"0\""),
            ("zk://h:abc", "invalid port \"abc\""),
            ("etcd://::1:2379", "without brackets"),
            ("etcd://[::1:2379", "unclosed"),
            ("etcd://[zz]:1", "not an IPv6"),
            ("etcd://h?timeout=soon", "timeout=\"soon\""),
            ("etcd://h?colour=blue", "unknown option \"colour\""),
            ("etcd://h?timeout", "without a value"),
            ("etcd://h?cert=/c.pem", "cert and key"),
            ("etcd://u:secret@h", "credentials before the host"),
            ("etcd://h/a//b", "bad prefix"),
            ("etcd://h/a/../b", "bad prefix"),
            ("etcd://h a", "invalid host"),
            ("file://", "no file path"),
        ];
        for (url, want) in cases {
            let e = StoreUrl::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url}");
            assert!(e.to_string().contains(want), "{url}: {e}");
        }
        let e = StoreUrl::parse("etcd://h?password=hunter2&colour=1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500K"), Some(512_000));
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("65536"), Some(65_536));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("2G"), None);
        assert_eq!(parse_size("-1K"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1h"), None);
    }
}
