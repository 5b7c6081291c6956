//! `server.trusted_proxies`: addresses and CIDR blocks (`10.0.0.0/8`, `::1`).
//!
//! Parsed here rather than with a crate: the whole need is "is this address
//! inside one of a few blocks", about forty lines with their tests.
//!
//! Guarantees:
//! - IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket
//!   reports for an IPv4 peer) match the IPv4 blocks, and IPv4 entries match them;
//! - a block with bits set beyond its prefix (`10.0.0.1/8`) is refused, not
//!   silently widened: it is almost always a typo for a narrower block.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address or block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address, IPv4-mapped addresses folded to IPv4.
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(self.prefix) & u32::from(ip) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(self.prefix) & u128::from(ip) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (ip, prefix) = match raw.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (raw, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{raw}` is not an IP address or CIDR block"))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{raw}`: the prefix length must be 0 to {max}"))?,
        };
        let net = IpNet { addr: ip, prefix };
        let exact = match ip {
            IpAddr::V4(v4) => u32::from(v4) & !mask32(prefix) == 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask128(prefix) == 0,
        };
        if !exact {
            return Err(format!(
                "`{raw}` has address bits beyond its /{prefix} prefix (write the network address)"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;
    /// A comma-separated list (the environment variable's form).
    fn from_str(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    /// An array of strings, or one comma-separated string.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<String>),
            One(String),
        }
        let joined = match OneOrMany::deserialize(d)? {
            OneOrMany::Many(v) => {
                if let Some(bad) = v.iter().find(|s| s.contains(',') || s.trim().is_empty()) {
                    return Err(serde::de::Error::custom(format!(
                        "`{bad}` is not an IP address or CIDR block"
                    )));
                }
                v.join(",")
            }
            OneOrMany::One(s) => s,
        };
        joined.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers");
        assert!(!net.contains(ip("::1")));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        let mapped: IpNet = "::ffff:192.0.2.1".parse().unwrap();
        assert!(mapped.contains(ip("192.0.2.1")));
        assert_eq!(mapped.to_string(), "192.0.2.1");
        assert_eq!(v6.to_string(), "fd00::/8");
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0/8",
            "proxy.local",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "",
        ] {
            let e = bad.parse::<IpNet>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated() {
        let list: TrustedProxies = "10.0.0.0/8, ::1".parse().unwrap();
        assert!(list.contains(ip("10.9.9.9")) && list.contains(ip("::1")));
        assert!(!list.contains(ip("192.0.2.1")));
        let json: TrustedProxies = serde_json::from_str(r#"["127.0.0.1", "fd00::/8"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"["127.0.0.1","fd00::/8"]"#
        );
        assert!(serde_json::from_str::<TrustedProxies>(r#"["10.0.0.1/8"]"#).is_err());
        assert!(serde_json::from_str::<TrustedProxies>(r#"["a,b"]"#).is_err());
        assert!(TrustedProxies::default().is_empty());
    }
}
