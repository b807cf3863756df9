//! Network addresses: which client a request comes from (for per-source limits), and which
//! servers the library's own outbound fetches may reach.
//!
//! - **Who is asking.** Behind a reverse proxy every request comes from the proxy, so a limit
//!   keyed on the TCP peer throttles everyone at once; a limit keyed on `X-Forwarded-For` as
//!   sent lets any client choose its own address. [`TrustedProxies`] reads the forwarded chain
//!   only as far as hops the operator vouches for.
//! - **Where we fetch.** A JWKS, introspection, discovery or provider URL is configuration, but
//!   the name in it resolves at fetch time, and discovery documents name further URLs: an
//!   [`AddressPolicy`] keeps those fetches off loopback, private and link-local addresses (the
//!   cloud metadata endpoint at `169.254.169.254` among them) unless the operator allows them.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ConfigError;

#[cfg(any(feature = "server", feature = "rate-limit"))]
mod client;
#[cfg(any(feature = "server", feature = "rate-limit"))]
pub use self::client::{ClientAddress, PeerAddress, TrustedProxies};

/// Which addresses the library's outbound fetches (JWKS, introspection, discovery, upstream
/// sign-in and third-party token endpoints) may connect to.
///
/// The default, [`AddressPolicy::public_only`], refuses loopback, private (RFC 1918, unique
/// local, shared address space), link-local, and every other non-global address (unspecified,
/// multicast, documentation, reserved), so a name that resolves inward, or a discovery document
/// naming an internal URL, cannot make this server fetch from its own network. Each class can be
/// allowed, and networks can be allowed one by one.
///
/// The check is made on every address a name resolves to, at connection time (a name that
/// resolves to one public and one private address is refused: DNS rebinding cannot slip the
/// private one in), and on IP-literal URLs when the component is built or a discovery document
/// names them. A component given its own `reqwest::Client` (`http_client`) resolves with that
/// client's resolver: only IP literals are then checked.
///
/// ```
/// use tower_mcp_auth::address::AddressPolicy;
///
/// let policy = AddressPolicy::public_only().allow_loopback();
/// assert!(policy.permits("127.0.0.1".parse().unwrap()));
/// assert!(!policy.permits("10.1.2.3".parse().unwrap()));
/// assert!(!policy.permits("169.254.169.254".parse().unwrap()));
///
/// let internal = AddressPolicy::public_only().allow_network("10.20.0.0/16").unwrap();
/// assert!(internal.permits("10.20.3.4".parse().unwrap()));
/// assert!(!internal.permits("10.21.3.4".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AddressPolicy {
    loopback: bool,
    private: bool,
    link_local: bool,
    unrestricted: bool,
    networks: Vec<IpNet>,
}

impl AddressPolicy {
    /// Public (globally routed) addresses only: the default.
    pub fn public_only() -> Self {
        AddressPolicy::default()
    }

    /// Every address: for development and tests only.
    pub fn unrestricted() -> Self {
        AddressPolicy {
            unrestricted: true,
            ..AddressPolicy::default()
        }
    }

    /// Also loopback (`127.0.0.0/8`, `::1`): an identity provider on the same machine.
    pub fn allow_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// Also private networks (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, `100.64/10`): an
    /// identity provider inside the deployment's network. [`allow_network`](Self::allow_network)
    /// is narrower.
    pub fn allow_private(mut self) -> Self {
        self.private = true;
        self
    }

    /// Also link-local addresses (`169.254/16`, `fe80::/10`). These include cloud instance
    /// metadata endpoints, the classic SSRF target: allow them only knowingly.
    pub fn allow_link_local(mut self) -> Self {
        self.link_local = true;
        self
    }

    /// Also the addresses in `network` (`10.20.0.0/16`, `fd00::/8`, or one address).
    pub fn allow_network(mut self, network: &str) -> Result<Self, ConfigError> {
        let network = network.trim();
        let parsed = network
            .parse::<IpNet>()
            .or_else(|_| network.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ConfigError::InvalidAddress(format!(
                    "`{network}` is not an IP address or CIDR network"
                ))
            })?;
        self.networks.push(parsed);
        Ok(self)
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.unrestricted {
            return true;
        }
        let ip = ip.to_canonical();
        if self.networks.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match class_of(ip) {
            AddressClass::Global => true,
            AddressClass::Loopback => self.loopback,
            AddressClass::Private => self.private,
            AddressClass::LinkLocal => self.link_local,
            AddressClass::Other => false,
        }
    }

    /// Whether every address is allowed.
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// Refuses a URL whose host is an IP literal this policy does not permit (a name is
    /// checked when it resolves).
    #[cfg_attr(
        not(any(feature = "jwks", feature = "introspection")),
        allow(dead_code)
    )]
    pub(crate) fn check_url(&self, what: &str, url: &str) -> Result<(), ConfigError> {
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(()); // Malformed URLs are refused by the URL checks with a better message.
        };
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            return Ok(());
        }
        Err(ConfigError::AddressRefused {
            what: what.to_owned(),
            address: ip.to_string(),
        })
    }
}

/// What kind of address an IP is, for [`AddressPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressClass {
    Global,
    Loopback,
    Private,
    LinkLocal,
    /// Unspecified, multicast, documentation, reserved, tunnels whose target cannot be told.
    Other,
}

fn class_of(ip: IpAddr) -> AddressClass {
    if is_global(ip) {
        return AddressClass::Global;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                AddressClass::Loopback
            } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                AddressClass::Private
            } else if v4.is_link_local() {
                AddressClass::LinkLocal
            } else {
                AddressClass::Other
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                AddressClass::Loopback
            } else if (first & 0xfe00) == 0xfc00 {
                AddressClass::Private
            } else if (first & 0xffc0) == 0xfe80 {
                AddressClass::LinkLocal
            } else {
                AddressClass::Other
            }
        }
    }
}

/// Whether an address may be fetched from the public internet. IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address; Teredo and NAT64's
/// local-use prefix, whose targets cannot be told, are refused.
pub(crate) fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_global(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            if v6.is_loopback() || v6.is_unspecified() {
                return false;
            }
            match s {
                // IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks).
                [0, 0, 0, 0, 0, 0, hi, lo] => return embedded(hi, lo),
                // NAT64, well-known prefix 64:ff9b::/96: the IPv4 address it reaches.
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return embedded(hi, lo),
                // NAT64 local-use 64:ff9b:1::/48: a local translator, target unknown.
                [0x64, 0xff9b, 1, ..] => return false,
                // 6to4 2002::/16: the IPv4 address is in the next 32 bits.
                [0x2002, hi, lo, ..] => return embedded(hi, lo),
                // Teredo 2001::/32: tunnels to an address we cannot vet.
                [0x2001, 0, ..] => return false,
                // Discard-only 100::/64.
                [0x100, 0, 0, 0, ..] => return false,
                _ => {}
            }
            let first = s[0];
            !(v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || first == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes_are_told_apart() {
        let p = AddressPolicy::public_only();
        for refused in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(p.permits(allowed.parse().unwrap()), "{allowed}");
        }
        let loopback = AddressPolicy::public_only().allow_loopback();
        assert!(
            loopback.permits("127.0.0.1".parse().unwrap())
                && loopback.permits("::1".parse().unwrap())
                && loopback.permits("::ffff:127.0.0.1".parse().unwrap())
        );
        assert!(!loopback.permits("10.0.0.1".parse().unwrap()));
        let private = AddressPolicy::public_only().allow_private();
        assert!(
            private.permits("192.168.1.1".parse().unwrap())
                && private.permits("fd00::1".parse().unwrap())
        );
        assert!(
            !private.permits("169.254.169.254".parse().unwrap()),
            "metadata needs its own allowance"
        );
        assert!(
            AddressPolicy::public_only()
                .allow_link_local()
                .permits("169.254.169.254".parse().unwrap())
        );
        assert!(AddressPolicy::unrestricted().permits("0.0.0.0".parse().unwrap()));
        assert!(AddressPolicy::public_only().allow_network("bad").is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_names_are_left_to_the_resolver() {
        let p = AddressPolicy::public_only();
        assert!(p.check_url("JWKS URL", "http://127.0.0.1:9/keys").is_err());
        assert!(p.check_url("JWKS URL", "http://[::1]:9/keys").is_err());
        assert!(
            p.check_url("JWKS URL", "https://id.example.com/keys")
                .is_ok()
        );
        assert!(
            p.clone()
                .allow_loopback()
                .check_url("JWKS URL", "http://127.0.0.1:9/keys")
                .is_ok()
        );
    }

    #[test]
    fn address_fence() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
            // Forms that carry an internal IPv4 address, or tunnel where we cannot see.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::127.0.0.1",
            "::10.0.0.1",
            "192.0.0.8",
            "100::1",
            "fec0::1",
        ] {
            assert!(!is_global(blocked.parse().unwrap()), "{blocked}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_global(public.parse().unwrap()), "{public}");
        }
    }
}
