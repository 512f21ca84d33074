//! Outbound HTTP calls the server makes on its own (webhooks): URLs parsed strictly,
//! destinations checked against a network policy after resolution, bounded in time and
//! in what is read back.
//!
//! - A URL is `http://HOST[:PORT][/PATH][?QUERY]`: a DNS name, an IPv4 address or a
//!   bracketed IPv6 address; no user info, no fragment; the path and query in printable
//!   ASCII without spaces (percent-encode the rest). A control character can therefore
//!   never reach the request line (a CRLF in a path used to inject headers and smuggle a
//!   second request).
//! - Every address the host resolves to is checked when the subscription is made and
//!   again before each connection, and the connection goes to the address checked (a
//!   name cannot resolve to a public address at creation and to the metadata service
//!   later). Loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
//!   multicast and reserved networks are denied unless `[webhooks] allow_networks` lists
//!   them; `deny_networks` denies more.
//! - Connecting may take [`CONNECT_TIMEOUT`], the whole exchange [`CALL_TIMEOUT`]; at most
//!   [`MAX_RESPONSE`] bytes of the answer are read (its status line is all that is used).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take in all.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer read.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// A host as written in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower-cased.
    Name(String),
    /// An address literal.
    Ip(IpAddr),
}

/// Where an `http://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The port (80 when absent).
    pub port: u16,
    /// The path and query, from `/`.
    pub path: String,
}

impl Target {
    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        match &self.host {
            Host::Name(n) => format!("{n}:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => format!("{ip}:{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
        }
    }
}

/// Reads an outbound URL; the error says what is wrong with it.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if url.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{c:?} is not allowed: printable ASCII only, without spaces (percent-encode the rest)"
        ));
    }
    if url.starts_with("https://") {
        return Err("https:// is not supported yet: point the webhook at an http:// relay that terminates TLS".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http://")?;
    if rest.contains('#') {
        return Err("a fragment (#...) is never sent: remove it".into());
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("user info (user@host) is not allowed".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("text after the IPv6 address")?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let host = match host.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) => Host::Name(dns_name(host)?),
            };
            (host, port)
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("'{p}' is not a port (1 to 65535)"))?,
    };
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(Target { host, port, path })
}

/// A DNS name: labels of letters, digits and `-` (not at either end), 1 to 63 each, 253
/// in all.
fn dns_name(host: &str) -> Result<String, String> {
    let bad = || format!("'{host}' is not a host name or an address");
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// An IP network, `ADDRESS/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    bits: u8,
}

impl Network {
    /// Reads `10.0.0.0/8`, `::1/128`, or an address alone (one host).
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("'{text}' is not a network such as 10.0.0.0/8"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("'{text}': the prefix length is 0 to {max}"))?,
        };
        Ok(Network { address, bits })
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8) -> Network {
        Network {
            address: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            bits,
        }
    }

    const fn v6(segments: [u16; 8], bits: u8) -> Network {
        let [a, b, c, d, e, f, g, h] = segments;
        Network {
            address: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            bits,
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The networks no outbound call goes to unless allowed, with what they are.
const SPECIAL: [(Network, &str); 18] = [
    (Network::v4(0, 0, 0, 0, 8), "this network"),
    (Network::v4(10, 0, 0, 0, 8), "private"),
    (Network::v4(100, 64, 0, 0, 10), "shared address space"),
    (Network::v4(127, 0, 0, 0, 8), "loopback"),
    (
        Network::v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata)",
    ),
    (Network::v4(172, 16, 0, 0, 12), "private"),
    (Network::v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (Network::v4(192, 168, 0, 0, 16), "private"),
    (Network::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Network::v4(224, 0, 0, 0, 4), "multicast"),
    (Network::v4(240, 0, 0, 0, 4), "reserved"),
    (Network::v6([0; 8], 128), "unspecified"),
    (Network::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (Network::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "NAT64"),
    (
        Network::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local",
    ),
    (Network::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Network::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
    (
        Network::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
];

/// Which destinations outbound calls may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    allow: Vec<Network>,
    deny: Vec<Network>,
}

impl NetworkPolicy {
    /// From `[webhooks]`: networks allowed although special, and more denied.
    pub fn new(allow: &[String], deny: &[String]) -> Result<NetworkPolicy, String> {
        let read = |list: &[String]| -> Result<Vec<Network>, String> {
            list.iter().map(|n| Network::parse(n)).collect()
        };
        Ok(NetworkPolicy {
            allow: read(allow)?,
            deny: read(deny)?,
        })
    }

    /// Whether a call may go to `ip`; the error says which network denies it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if let Some(n) = self.deny.iter().find(|n| n.contains(ip)) {
            return Err(format!(
                "{ip} is in {}/{}, denied by [webhooks] deny_networks",
                n.address, n.bits
            ));
        }
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match SPECIAL.iter().find(|(n, _)| n.contains(ip)) {
            Some((_, what)) => Err(format!(
                "{ip} is a {what} address: denied unless [webhooks] allow_networks lists it"
            )),
            None => Ok(()),
        }
    }

    /// The address a call to `target` connects to: the first the host resolves to, when
    /// every one of them is permitted (a name that also points somewhere denied is
    /// refused whole).
    pub async fn resolve(&self, target: &Target) -> Result<SocketAddr, String> {
        let addresses: Vec<SocketAddr> = match &target.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
            Host::Name(name) => {
                let found = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), target.port)),
                )
                .await
                .map_err(|_| format!("resolving {name} took over {} s", CONNECT_TIMEOUT.as_secs()))?
                .map_err(|e| format!("cannot resolve {name}: {e}"))?;
                found.collect()
            }
        };
        for a in &addresses {
            self.check(a.ip())?;
        }
        addresses
            .first()
            .copied()
            .ok_or_else(|| "the host resolves to no address".to_string())
    }
}

/// One `POST` of `body` with `headers` to `target` at `address` (from
/// [`NetworkPolicy::resolve`]); the answer's status.
pub async fn post(
    target: &Target,
    address: SocketAddr,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<u16, String> {
    let call = async {
        let mut stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
                .await
                .map_err(|_| {
                    format!(
                        "connect {address}: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("connect {address}: {e}"))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: microseg\r\nConnection: close\r\n",
            target.path,
            target.authority(),
            body.len()
        );
        for (name, value) in headers {
            // Our own header values; a control character would end the header.
            if value.chars().any(|c| c.is_control()) {
                return Err(format!("header {name}: a control character"));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        // The status line is all that is used: read until it is complete, at most
        // MAX_RESPONSE bytes, however much the receiver sends.
        let mut reply = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        while !reply.contains(&b'\n') && reply.len() < MAX_RESPONSE {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n.min(MAX_RESPONSE - reply.len())]);
        }
        let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line)
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no HTTP status in the answer".to_string())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_strictly() {
        let t = parse_url("http://127.0.0.1:9000/hooks/a?x=1").unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            (Host::Ip("127.0.0.1".parse().unwrap()), 9000, "/hooks/a?x=1")
        );
        let t = parse_url("http://Example.COM").unwrap();
        assert_eq!(
            (t.authority(), t.path.as_str()),
            ("example.com:80".into(), "/")
        );
        assert_eq!(
            parse_url("http://[::1]:81/x").unwrap().authority(),
            "[::1]:81"
        );
        assert_eq!(parse_url("http://h?q").unwrap().path, "/?q");
        let refused = [
            ("http://h/a\r\nX-Injected: 1", "'\\r' is not allowed"),
            ("http://h/a b", "' ' is not allowed"),
            ("http://h/caf\u{e9}", "not allowed"),
            ("http://h/\u{0}", "not allowed"),
            ("https://h/", "relay"),
            ("ftp://h/", "http://"),
            ("http:///x", "not a host"),
            ("http://user:pw@h/", "user info"),
            ("http://h:0/", "not a port"),
            ("http://h:65536/", "not a port"),
            ("http://h:x/", "not a port"),
            ("http://-h-/", "not a host"),
            ("http://a..b/", "not a host"),
            ("http://h_1/", "not a host"),
            ("http://[::1/", "closing ]"),
            ("http://[::1]x/", "after the IPv6"),
            ("http://h/#frag", "fragment"),
        ];
        for (url, why) in refused {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(why), "{url:?}: {e}");
        }
        assert!(parse_url(&format!("http://h/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn special_networks_are_denied_unless_allowed() {
        let policy = NetworkPolicy::default();
        let denied = [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
        ];
        for ip in denied {
            assert!(policy.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(policy.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        let why = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(why.contains("cloud metadata"), "{why}");
        let policy = NetworkPolicy::new(&["127.0.0.0/8".into()], &["8.8.8.0/24".into()]).unwrap();
        assert_eq!(policy.check("127.0.0.5".parse().unwrap()), Ok(()));
        assert!(
            policy.check("::1".parse().unwrap()).is_err(),
            "only what is listed"
        );
        assert!(policy
            .check("8.8.8.8".parse().unwrap())
            .unwrap_err()
            .contains("deny_networks"));
        assert!(NetworkPolicy::new(&["10.0.0.0/33".into()], &[]).is_err());
        assert!(NetworkPolicy::new(&["ten".into()], &[]).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_by_every_address_they_resolve_to() {
        let policy = NetworkPolicy::default();
        let local = parse_url("http://localhost:9/").unwrap();
        assert!(policy
            .resolve(&local)
            .await
            .unwrap_err()
            .contains("loopback"));
        // A decimal address is a name to the parser and an address to the resolver.
        let decimal = parse_url("http://2130706433:9/").unwrap();
        assert!(policy
            .resolve(&decimal)
            .await
            .unwrap_err()
            .contains("127.0.0.1"));
        let allowed = NetworkPolicy::new(&["127.0.0.0/8".into(), "::1".into()], &[]).unwrap();
        assert_eq!(allowed.resolve(&local).await.unwrap().port(), 9);
    }
}
