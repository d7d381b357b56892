//! The guarded way out to homeservers: names resolved with hickory (the
//! system's resolvers, or `keys.nameservers`), loopback and private
//! addresses refused unless `keys.allow_private_addresses`, and a bounded
//! HTTP client that resolves through that guard.

use crate::config::KeysConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Longest a connection or a whole fetch may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the fetcher could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot read the system's DNS configuration (/etc/resolv.conf): {0}")]
    Dns(String),
}

/// The client every fetch uses: bounded, no redirects, no proxy, names
/// resolved through the guard.
pub(super) fn client_builder(resolver: &Arc<GuardedResolver>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("Assent/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(resolver.clone())
}

pub(super) fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an address is reachable on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            // Addresses that carry an IPv4 address inside: judge that one.
            let embedded = |high: u16, low: u16| {
                std::net::Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
            };
            if segments[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_public(IpAddr::V4(embedded(segments[6], segments[7])));
                // IPv4-compatible
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(segments[6], segments[7])));
                // NAT64
            }
            if first == 0x2002 {
                return is_public(IpAddr::V4(embedded(segments[1], segments[2])));
                // 6to4
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// The resolver's refusal, found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to loopback or private addresses")]
pub(super) struct PrivateOnly(String);

pub(super) fn refused_as_private(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<PrivateOnly>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// One SRV record, as discovery uses it.
pub(super) struct Srv {
    pub(super) priority: u16,
    pub(super) weight: u16,
    pub(super) port: u16,
    pub(super) target: String,
}

/// Why a name gave no address to connect to.
pub(super) enum Lookup {
    Private,
    Failed(String),
}

/// Resolves names (with hickory: the system's resolvers, or
/// `keys.nameservers`) and drops non-public addresses unless allowed.
pub(super) struct GuardedResolver {
    pub(super) dns: hickory_resolver::TokioResolver,
    allow_private: bool,
}

impl GuardedResolver {
    pub(super) fn new(config: &KeysConfig) -> Result<Self, SetupError> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        use hickory_resolver::proto::xfer::Protocol;
        let builder = if config.nameservers.is_empty() {
            hickory_resolver::TokioResolver::builder_tokio()
                .map_err(|e| SetupError::Dns(e.to_string()))?
        } else {
            let mut resolvers = ResolverConfig::new();
            for address in &config.nameservers {
                resolvers.add_name_server(NameServerConfig::new(*address, Protocol::Udp));
                resolvers.add_name_server(NameServerConfig::new(*address, Protocol::Tcp));
            }
            hickory_resolver::TokioResolver::builder_with_config(
                resolvers,
                TokioConnectionProvider::default(),
            )
        };
        Ok(GuardedResolver {
            dns: builder.build(),
            allow_private: config.allow_private_addresses,
        })
    }

    /// `name`'s addresses on `port` that may be connected to.
    pub(super) async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, Lookup> {
        let absolute = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let found = self
            .dns
            .lookup_ip(absolute)
            .await
            .map_err(|e| Lookup::Failed(e.to_string()))?;
        let allowed: Vec<SocketAddr> = found
            .iter()
            .filter(|ip| self.allow_private || is_public(*ip))
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if allowed.is_empty() {
            return Err(Lookup::Private);
        }
        Ok(allowed)
    }

    /// The SRV records of `name`; none when there are none or the lookup
    /// fails (the spec then goes on to port 8448). A target of `.` says
    /// the service is not offered, which is taken the same way.
    pub(super) async fn srv(&self, name: &str) -> Vec<Srv> {
        let Ok(found) = self.dns.srv_lookup(name).await else {
            return Vec::new();
        };
        found
            .iter()
            .filter(|r| !r.target().is_root())
            .map(|r| Srv {
                priority: r.priority(),
                weight: r.weight(),
                port: r.port(),
                target: r.target().to_ascii(),
            })
            .collect()
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let dns = self.dns.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let guard = GuardedResolver { dns, allow_private };
            match guard.addresses(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(Lookup::Private) => {
                    Err(Box::new(PrivateOnly(host)) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(Lookup::Failed(why)) => Err(why.into()),
            }
        })
    }
}
