//! The client's address behind reverse proxies. A connection from a trusted proxy carries the
//! address it was made for in a header the proxy appends to (`X-Forwarded-For`, or RFC 7239
//! `Forwarded`, whichever the operator's proxy sets); the hops are read from the right, past
//! every trusted proxy, and the first other one is the client. Anything a client wrote into the
//! header itself lies further left and is never reached; a connection from anyone else is
//! taken at its own address, whatever it sends.

use std::net::IpAddr;
use std::str::FromStr;

/// A network of trusted proxies: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

/// Why a network was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: not an address or network (10.0.0.0/8, 127.0.0.1, ::1/128)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(text.to_owned());
        let (addr, bits) = match text.trim().split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let most = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(most);
        if bits > most {
            return Err(bad());
        }
        Ok(Cidr { net, bits })
    }
}

impl TryFrom<String> for Cidr {
    type Error = BadCidr;

    fn try_from(text: String) -> Result<Cidr, BadCidr> {
        text.parse()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let keep = |value: u128, width: u32| {
            let drop = width - u32::from(self.bits);
            value.checked_shr(drop).unwrap_or(0)
        };
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                keep(u128::from(u32::from(net)), 32) == keep(u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                keep(u128::from(net), 128) == keep(u128::from(ip), 128)
            }
            _ => false,
        }
    }
}

/// The network a client address stands for, as throttles and limits count it: an IPv4 address
/// itself (written as IPv6 too), an IPv6 address its /64 (a host is given a whole one, and
/// could otherwise count as 2^64 clients).
pub fn client_network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

/// The site an IPv6 client address lies in, its /48 (what a customer is given at most, so one
/// customer's /64s count together); `None` for an IPv4 client.
pub fn client_site(ip: IpAddr) -> Option<std::net::Ipv6Addr> {
    match canonical(ip) {
        IpAddr::V6(v6) => Some(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 80) - 1),
        )),
        IpAddr::V4(_) => None,
    }
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.7`) is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which header the trusted proxies write the client's address in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, Caddy, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<ForwardedHeader, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err(format!("`{text}`: x-forwarded-for or forwarded")),
        }
    }
}

impl TryFrom<String> for ForwardedHeader {
    type Error = String;

    fn try_from(text: String) -> Result<ForwardedHeader, String> {
        text.parse()
    }
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }

    /// The hops a header value lists, left to right; `None` for one that is not an address
    /// (`unknown`, an obfuscated name, bytes that are not text, garbage). A hop may carry a
    /// port (`192.0.2.60:4711`, `[2001:db8::1]:4711`), as some proxies write it.
    fn hops(self, value: &[u8]) -> Vec<Option<IpAddr>> {
        fn text(hop: &[u8]) -> Option<&str> {
            std::str::from_utf8(hop).ok().map(str::trim)
        }
        match self {
            ForwardedHeader::XForwardedFor => value
                .split(|b| *b == b',')
                .map(|hop| text(hop).and_then(node_address))
                .collect(),
            ForwardedHeader::Forwarded => value
                .split(|b| *b == b',')
                .map(|element| {
                    text(element)?.split(';').find_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| node_address(value.trim().trim_matches('"')))
                    })?
                })
                .collect(),
        }
    }
}

/// The address of an RFC 7239 node: `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::1]:4711`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse()
        .ok()
        .or_else(|| node.rsplit_once(':')?.0.parse().ok())
}

/// The client's address: the peer's, unless the peer is a trusted proxy, then the rightmost
/// hop of `values` (the header's values, in order) that is not one. A hop that is not an
/// address stops the walk at the hop after it (the last proxy that named it).
pub fn client_addr(
    peer: IpAddr,
    trusted: &[Cidr],
    header: ForwardedHeader,
    values: &[&[u8]],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = values.iter().flat_map(|v| header.hops(v)).collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop.map(canonical) else {
            return client;
        };
        client = hop;
        if !is_trusted(hop) {
            return hop;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The client of header lines given as text.
    fn client_addr(
        peer: IpAddr,
        trusted: &[Cidr],
        header: ForwardedHeader,
        lines: &[&str],
    ) -> IpAddr {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        super::client_addr(peer, trusted, header, &lines)
    }

    #[test]
    fn networks_are_read_and_matched_by_their_leading_bits() {
        let ten: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(ten.contains(ip("10.200.3.4")) && !ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.1.1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:5::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        for bad in ["10.0.0.0/33", "::1/129", "ten", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_rightmost_hop_it_does_not_trust() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let xff = ForwardedHeader::XForwardedFor;
        let proxy = ip("127.0.0.1");
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        // A client's own header lies left of what the proxies appended: never reached.
        let spoofed = ["198.51.100.1, 203.0.113.9, 10.1.2.3"];
        assert_eq!(
            client_addr(proxy, &trusted, xff, &spoofed),
            ip("203.0.113.9")
        );
        // Two header lines read as one list.
        let lines = ["198.51.100.1", "203.0.113.9"];
        assert_eq!(client_addr(proxy, &trusted, xff, &lines), ip("203.0.113.9"));
        // No header, or only proxies: the innermost address known.
        assert_eq!(client_addr(proxy, &trusted, xff, &[]), proxy);
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["10.9.9.9"]),
            ip("10.9.9.9")
        );
        // Not an address: the proxy that wrote it is as far as the walk goes.
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["unknown, 10.4.4.4"]),
            ip("10.4.4.4")
        );
        // Ports, as some proxies write them; a hop that is not text spoils only itself.
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["203.0.113.9:5123"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["[2001:db8::7]:80"]),
            ip("2001:db8::7")
        );
        let undecodable: &[u8] = b"\xff\xfe, 203.0.113.9";
        assert_eq!(
            super::client_addr(proxy, &trusted, xff, &[undecodable]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(proxy, &trusted, xff, &["张三, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        // From anyone else the header counts for nothing.
        let outsider = ip("198.51.100.77");
        assert_eq!(
            client_addr(outsider, &trusted, xff, &["203.0.113.9"]),
            outsider
        );
        assert_eq!(client_addr(proxy, &[], xff, &["203.0.113.9"]), proxy);
    }

    #[test]
    fn the_rfc_7239_header_names_nodes_with_ports_and_brackets() {
        let trusted = nets(&["127.0.0.1"]);
        let fwd = ForwardedHeader::Forwarded;
        let proxy = ip("127.0.0.1");
        let value = [r#"for=198.51.100.1;proto=https, for="[2001:db8::7]:4711";by=10.0.0.1"#];
        assert_eq!(client_addr(proxy, &trusted, fwd, &value), ip("2001:db8::7"));
        assert_eq!(
            client_addr(proxy, &trusted, fwd, &["For=192.0.2.60:443"]),
            ip("192.0.2.60")
        );
        assert_eq!(client_addr(proxy, &trusted, fwd, &["for=_hidden"]), proxy);
        // The other header is not read.
        assert_eq!(client_addr(proxy, &trusted, fwd, &["203.0.113.9"]), proxy);
    }

    proptest! {
        /// Whatever a client writes in the header, from outside the trusted networks, the
        /// address found is one a trusted proxy wrote, or the peer's: with every hop right of
        /// the client's own written by proxies, the client cannot choose another address.
        #[test]
        fn a_client_never_chooses_its_address(
            written in proptest::collection::vec(any::<[u8; 4]>(), 0..6),
            real in any::<[u8; 4]>(),
            through in 0usize..3,
        ) {
            let trusted = nets(&["10.0.0.0/8"]);
            let real = IpAddr::from(real);
            prop_assume!(!trusted[0].contains(real));
            // The client's own header, then what each proxy appended on the way in.
            let mut hops: Vec<String> = written.iter().map(|a| IpAddr::from(*a).to_string()).collect();
            hops.push(real.to_string());
            for n in 0..through {
                hops.push(format!("10.0.0.{n}"));
            }
            let value = hops.join(", ");
            let found = client_addr(ip("10.0.0.200"), &trusted, ForwardedHeader::XForwardedFor, &[&value]);
            prop_assert_eq!(found, real);
            // Sent straight to the server, the same header is ignored.
            let direct = client_addr(real, &trusted, ForwardedHeader::XForwardedFor, &[&value]);
            prop_assert_eq!(direct, real);
        }
    }
}
