//! Who is asking: the client address per-source limits key on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use http::request::Parts;
use ipnet::IpNet;

use crate::ConfigError;

/// Finds the address of the client behind a request (for per-source limits).
///
/// Implemented by [`PeerAddress`] (the default), [`TrustedProxies`], and any
/// `Fn(&Parts) -> Option<IpAddr>`. `None` means unknown: such requests share one bucket, so a
/// missing address never lifts a limit.
pub trait ClientAddress: Send + Sync + 'static {
    /// The client's address, if it can be told.
    fn client_address(&self, parts: &Parts) -> Option<IpAddr>;
}

impl<F> ClientAddress for F
where
    F: Fn(&Parts) -> Option<IpAddr> + Send + Sync + 'static,
{
    fn client_address(&self, parts: &Parts) -> Option<IpAddr> {
        self(parts)
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The TCP peer address, from axum's `ConnectInfo<SocketAddr>`: serve the app with
/// `into_make_service_with_connect_info::<SocketAddr>()`. Right when clients connect directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerAddress;

impl ClientAddress for PeerAddress {
    fn client_address(&self, parts: &Parts) -> Option<IpAddr> {
        peer(parts)
    }
}

/// The client address as reported by reverse proxies the operator trusts.
///
/// Starting from the TCP peer, each hop that is a trusted proxy is replaced by the address it
/// reports in `X-Forwarded-For` (read from the right); the first untrusted address is the
/// client. A peer that is not a trusted proxy is the client, whatever headers it sends.
///
/// ```
/// use tower_mcp_auth::server::{ClientAddress, TrustedProxies};
///
/// let proxies = TrustedProxies::new(["10.0.0.0/8", "192.0.2.7"]).unwrap();
/// let mut request = http::Request::builder()
///     .header("x-forwarded-for", "198.51.100.4, 10.1.2.3")
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(axum::extract::ConnectInfo(
///     "192.0.2.7:443".parse::<std::net::SocketAddr>().unwrap(),
/// ));
/// let (parts, ()) = request.into_parts();
/// assert_eq!(proxies.client_address(&parts), Some("198.51.100.4".parse().unwrap()));
/// ```
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts the proxies at these addresses or CIDR networks (`10.0.0.0/8`, `::1`).
    pub fn new<I, S>(networks: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let networks = networks
            .into_iter()
            .map(|n| {
                let n = n.as_ref().trim();
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::InvalidAddress(format!(
                            "`{n}` is not an IP address or CIDR network"
                        ))
                    })
            })
            .collect::<Result<Arc<[IpNet]>, _>>()?;
        Ok(TrustedProxies { networks })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

impl ClientAddress for TrustedProxies {
    fn client_address(&self, parts: &Parts) -> Option<IpAddr> {
        let mut client = peer(parts)?;
        if !self.trusted(client) {
            return Some(client);
        }
        let hops: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.into_iter().rev() {
            // A hop that does not parse ends the walk: the last address a trusted proxy
            // vouched for stands.
            // An address, or one written with its port (`203.0.113.7:4711`, `[2001:db8::1]:443`),
            // as some proxies write it.
            let hop = hop.trim();
            let Some(ip) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
            else {
                break;
            };
            client = ip;
            if !self.trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut builder = http::Request::builder();
        for f in forwarded {
            builder = builder.header("x-forwarded-for", *f);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request.into_parts().0
    }

    #[test]
    fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let p = parts("203.0.113.9:5000", &["1.2.3.4"]);
        assert_eq!(proxies.client_address(&p), "203.0.113.9".parse().ok());
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let proxies = TrustedProxies::new(["10.0.0.0/8", "::1"]).unwrap();
        // The client prepended a lie; the trusted chain reported 198.51.100.4.
        let p = parts("[::1]:5000", &["6.6.6.6, 198.51.100.4", "10.0.0.2"]);
        assert_eq!(proxies.client_address(&p), "198.51.100.4".parse().ok());
        // Garbage ends the walk at the last vouched-for hop.
        let p = parts("10.0.0.1:5000", &["not-an-ip, 10.0.0.5"]);
        assert_eq!(proxies.client_address(&p), "10.0.0.5".parse().ok());
        // IPv4-mapped peers count as their IPv4 address.
        let p = parts("[::ffff:10.0.0.1]:5000", &["198.51.100.8"]);
        assert_eq!(proxies.client_address(&p), "198.51.100.8".parse().ok());
    }

    #[test]
    fn forwarded_hops_written_with_a_port_are_read() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let p = parts("10.0.0.1:5000", &["198.51.100.4:4711"]);
        assert_eq!(proxies.client_address(&p), "198.51.100.4".parse().ok());
        let p = parts("10.0.0.1:5000", &["[2001:db8::7]:443"]);
        assert_eq!(proxies.client_address(&p), "2001:db8::7".parse().ok());
    }

    #[test]
    fn bad_networks_are_refused() {
        assert!(TrustedProxies::new(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::new(["proxy.local"]).is_err());
    }
}
