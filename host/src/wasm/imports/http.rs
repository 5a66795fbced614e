//! Outbound HTTP (`wasi:http`) behind an allow-list. A request is refused unless its host
//! and port match the driver's allow-list; the name is then resolved here, every address is
//! judged (loopback, private, link-local and other non-public ranges are refused unless the
//! driver has `allow_private`), and the connection goes to the address that was checked, so
//! a DNS answer cannot swap in an internal address between the check and the connect.
//!
//! A refusal is an error returned to the guest (`HTTP-request-denied` for a host outside the
//! list, `destination-IP-prohibited` for a refused address); the host also records it in the
//! run, writes a `source=host` log line, and a run that then fails is reported as `denied`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use super::log::RunLogger;

/// How long a connection attempt may take when the guest sets no timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `wasi:http` capability of one run: wasmtime's HTTP context and this host's hooks,
/// which enforce the driver's [`HttpPolicy`].
pub struct HttpCtx {
    ctx: WasiHttpCtx,
    hooks: HttpHooks,
}

impl HttpCtx {
    /// The capability of a run with this policy; refusals go to `denials` and the run's log.
    pub fn new(policy: Arc<HttpPolicy>, denials: Denials, logger: RunLogger) -> Self {
        HttpCtx {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                policy,
                denials,
                logger,
            },
        }
    }

    /// The view `wasmtime-wasi-http` works on, sharing the store's resource table.
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// A driver's HTTP allow-list, parsed once.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    allow: Vec<HostPattern>,
    allow_private: bool,
}

impl HttpPolicy {
    /// A policy allowing `allow`; `allow_private` lets the allowed hosts resolve to
    /// non-public addresses.
    pub fn new(allow: Vec<HostPattern>, allow_private: bool) -> HttpPolicy {
        HttpPolicy {
            allow,
            allow_private,
        }
    }

    /// Whether any HTTP is granted.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|p| p.matches(host, port))
    }

    fn address_ok(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// One entry of an HTTP allow-list, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// `None` for `*` (any host); a leading `*.` matches any subdomain (not the domain
    /// itself).
    host: Option<String>,
    /// `None` for the default ports (80 and 443); `Some(None)` for `*`.
    port: Option<Option<u16>>,
}

impl HostPattern {
    /// Parses `host`, `host:port`, `*.domain`, `host:*` or `*`.
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.contains("://") || pattern.contains('/') {
            return Err("give a host (and port), not a URL".into());
        }
        // An IPv6 literal is written in brackets, so its colons are not a port separator.
        let (host, port) = match pattern.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
                (h.to_string(), Some(p.to_string()))
            }
            _ => (pattern.clone(), None),
        };
        let port = match port.as_deref() {
            None => None,
            Some("*") => Some(None),
            Some(p) => Some(Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("bad port {p:?}"))?,
            )),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err("the host is empty".into());
        }
        let wildcard_body = host.strip_prefix("*.").unwrap_or(&host);
        if host != "*" && (wildcard_body.is_empty() || wildcard_body.contains('*')) {
            return Err("`*` may only stand alone or start the name as `*.`".into());
        }
        Ok(HostPattern {
            host: (host != "*").then_some(host),
            port,
        })
    }

    /// Whether a request to `host:port` is allowed by this entry. `host` is lower case,
    /// without brackets.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            None => port == 80 || port == 443,
            Some(None) => true,
            Some(Some(p)) => p == port,
        };
        let host_ok = match &self.host {
            None => true,
            Some(h) => match h.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => h == host,
            },
        };
        port_ok && host_ok
    }
}

/// Denials recorded during one run, shared between the HTTP hooks and the sandbox.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Vec<String>>>);

impl Denials {
    /// Records one.
    pub fn record(&self, what: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    /// Everything recorded, in order.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The `wasi:http` hooks of one run.
struct HttpHooks {
    policy: Arc<HttpPolicy>,
    denials: Denials,
    logger: RunLogger,
}

fn deny(denials: &Denials, logger: &RunLogger, what: String) {
    logger.host_line(format!("denied: {what}"));
    denials.record(what);
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let policy = self.policy.clone();
        let denials = self.denials.clone();
        let logger = self.logger.clone();
        Box::new(async move {
            let uri = request.uri();
            let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = uri
                .host()
                .ok_or(Error::HttpRequestUriInvalid)?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            if !policy.allows(&host, port) {
                deny(
                    &denials,
                    &logger,
                    format!(
                        "HTTP request to {host}:{port}: the host is not in the driver's http.allow list"
                    ),
                );
                return Err(Error::HttpRequestDenied);
            }
            let connect_timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(CONNECT_TIMEOUT);
            let addrs: Vec<SocketAddr> = match tokio::time::timeout(
                connect_timeout,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            {
                Err(_) => return Err(Error::DnsTimeout),
                Ok(Err(e)) => {
                    return Err(Error::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    });
                }
                Ok(Ok(a)) => a.collect(),
            };
            let Some(addr) = addrs.iter().copied().find(|a| policy.address_ok(a.ip())) else {
                let shown = addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                deny(
                    &denials,
                    &logger,
                    format!(
                        "HTTP request to {host}:{port}: it resolves to {shown}, a loopback, private \
                         or link-local address, which the driver's http.allow_private does not allow"
                    ),
                );
                return Err(Error::DestinationIpProhibited);
            };
            let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await
            {
                Err(_) => return Err(Error::ConnectionTimeout),
                Ok(Err(e)) => return Err(Error::Connect(e)),
                Ok(Ok(s)) => s,
            };
            let stream: Box<dyn Io> = if tls {
                Box::new(tls_connect(&host, stream).await?)
            } else {
                Box::new(stream)
            };
            let (mut sender, conn) = tokio::time::timeout(
                connect_timeout,
                hyper::client::conn::http1::handshake(TokioIo::new(stream)),
            )
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
            let conn = tokio::spawn(conn);

            // The request line carries only the path: scheme and authority are for proxies.
            let mut request = request;
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            *request.uri_mut() = http::Uri::builder()
                .path_and_query(path)
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let first_byte = options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(Duration::from_secs(600));
            let response = tokio::time::timeout(first_byte, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)??;
            let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
                match conn.await {
                    Ok(r) => r.map_err(Error::from),
                    Err(_) => Err(Error::ConnectionTerminated),
                }
            });
            Ok((response, io))
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn tls_connect(
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        })
        .clone();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

/// Whether an address is on the public internet: not loopback, private, link-local
/// (including the cloud metadata address 169.254.169.254), shared, unspecified, broadcast,
/// multicast, documentation, benchmarking or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x64 && ip.segments()[1] == 0xff9b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["1.1.1.1", "140.82.112.3", "2606:4700::1111"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn policy_needs_allow_private_for_internal_addresses() {
        let p = HttpPolicy::new(vec![HostPattern::parse("localhost:8080").unwrap()], false);
        assert!(p.allows("localhost", 8080));
        assert!(!p.allows("localhost", 8081));
        assert!(!p.address_ok("127.0.0.1".parse().unwrap()));
        assert!(HttpPolicy::default().is_empty());
    }

    #[test]
    fn host_patterns() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert!(p("api.github.com").matches("api.github.com", 443));
        assert!(!p("api.github.com").matches("api.github.com", 8080));
        assert!(p("api.github.com:8080").matches("api.github.com", 8080));
        assert!(p("*.example.com").matches("a.b.example.com", 80));
        assert!(!p("*.example.com").matches("example.com", 80));
        assert!(!p("*.example.com").matches("badexample.com", 80));
        assert!(p("127.0.0.1:*").matches("127.0.0.1", 9));
        assert!(p("[::1]:8080").matches("::1", 8080));
        assert!(p("*").matches("anything", 443));
        assert!(HostPattern::parse("a*.com").is_err());
        assert!(HostPattern::parse("x.com:0").is_err());
    }
}
