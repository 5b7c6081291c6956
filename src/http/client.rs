//! Who is calling: the client address every limit, log line and the webhook
//! log use ([`client_addr`], or the [`ClientAddr`] extractor).
//!
//! Guarantees:
//! - `X-Forwarded-For` is read only when the TCP peer is in
//!   `server.trusted_proxies`; from anyone else it is ignored, so a client
//!   cannot choose the address it is throttled under;
//! - the address taken is the right-most entry that is not itself a trusted
//!   proxy: each trusted proxy appends the address it received from, so
//!   entries to the left of the first untrusted one were written by the
//!   client and are never believed;
//! - a malformed entry stops the walk at the last hop known to be trusted
//!   (that hop's address is used), so garbage cannot move a client into
//!   someone else's bucket or into a fresh one;
//! - at most [`MAX_HOPS`] entries are looked at.
//!
//! Only `X-Forwarded-For` is read (not `Forwarded` or `X-Real-IP`): it is what
//! nginx, Caddy, Traefik, HAProxy and the cloud load balancers all append.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use poem::{FromRequest, Request, RequestBody};

use super::AppState;
use crate::config::TrustedProxies;

/// Forwarded entries examined, right to left, before giving up: more
/// proxies than this in a row is a misconfiguration or an attack.
pub const MAX_HOPS: usize = 16;

/// Stands in for a peer that has no IP address (only in unit tests, which
/// build requests without a socket): such requests share one bucket.
const NO_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The client address of `req` under `state`'s `server.trusted_proxies`.
/// This is the function every handler calls (the landing page too).
pub fn client_addr(req: &Request, state: &AppState) -> IpAddr {
    resolve(
        req.remote_addr().as_socket_addr().map(SocketAddr::ip),
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{0}")),
        &state.trusted_proxies,
    )
}

/// The rule itself: `peer` is the TCP peer, `forwarded` the values of the
/// `X-Forwarded-For` headers in the order they arrived.
pub fn resolve<'a>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let Some(peer) = peer.map(|p| p.to_canonical()) else {
        return NO_ADDRESS;
    };
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_HOPS) {
        let Some(hop) = parse_entry(entry) else {
            // Unreadable: nothing left of it can be believed.
            return client;
        };
        client = hop;
        if !trusted.contains(hop) {
            return hop;
        }
    }
    // Every entry looked at was a trusted proxy: the left-most of them is
    // as close to the client as anything believable.
    client
}

/// One entry: an address, optionally with a port (`192.0.2.1:5000`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client address as an extractor: `ClientAddr(ip)`.
pub struct ClientAddr(pub IpAddr);

impl<'a> FromRequest<'a> for ClientAddr {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let ip = match req.data::<std::sync::Arc<AppState>>() {
            Some(state) => client_addr(req, state),
            // No state: believe no header.
            None => resolve(
                req.remote_addr().as_socket_addr().map(SocketAddr::ip),
                std::iter::empty(),
                &TrustedProxies::default(),
            ),
        };
        Ok(ClientAddr(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn client(peer: &str, headers: &[&str], list: &str) -> IpAddr {
        resolve(Some(ip(peer)), headers.iter().copied(), &trusted(list))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client("203.0.113.9", &["198.51.100.1"], ""),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("203.0.113.9", &["198.51.100.1"], "10.0.0.0/8"),
            ip("203.0.113.9")
        );
        assert_eq!(client("10.0.0.2", &[], "10.0.0.0/8"), ip("10.0.0.2"));
        assert_eq!(
            resolve(None, ["1.2.3.4"].into_iter(), &trusted("")),
            NO_ADDRESS
        );
    }

    #[test]
    fn the_right_most_untrusted_entry_wins_over_several_hops() {
        // client -> CDN (10.1.1.1) -> nginx (10.0.0.2) -> fulfilld
        let list = "10.0.0.0/8";
        assert_eq!(
            client("10.0.0.2", &["198.51.100.7, 10.1.1.1"], list),
            ip("198.51.100.7")
        );
        // The same, as two header lines.
        assert_eq!(
            client("10.0.0.2", &["198.51.100.7", "10.1.1.1"], list),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn spoofed_entries_on_the_left_are_never_believed() {
        // The client sent "X-Forwarded-For: 192.0.2.1, 10.0.0.5"; the proxy appended its peer.
        assert_eq!(
            client(
                "10.0.0.2",
                &["192.0.2.1, 10.0.0.5, 203.0.113.50"],
                "10.0.0.0/8"
            ),
            ip("203.0.113.50")
        );
        // Claiming to be a trusted proxy does not help either.
        assert_eq!(
            client(
                "127.0.0.1",
                &["10.0.0.9, 203.0.113.50"],
                "127.0.0.1, 10.0.0.0/8"
            ),
            ip("203.0.113.50")
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        assert_eq!(
            client("::1", &["2001:db8::1, [2001:db8::2]:443"], "::1"),
            ip("2001:db8::2")
        );
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        assert_eq!(
            client("::ffff:127.0.0.1", &["198.51.100.3"], "127.0.0.1"),
            ip("198.51.100.3")
        );
        assert_eq!(
            client("fd00::5", &["::ffff:198.51.100.4"], "fd00::/8"),
            ip("198.51.100.4")
        );
        assert_eq!(client("::ffff:203.0.113.1", &[], ""), ip("203.0.113.1"));
        assert_eq!(
            client("10.0.0.1", &["198.51.100.1:5000"], "10.0.0.0/8"),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn malformed_entries_stop_at_the_last_trusted_hop() {
        let list = "10.0.0.0/8";
        for bad in [
            "unknown",
            "",
            "198.51.100.1 junk",
            "_hidden",
            "\u{0}",
            "300.1.1.1",
        ] {
            assert_eq!(client("10.0.0.2", &[bad], list), ip("10.0.0.2"), "{bad:?}");
            assert_eq!(
                client(
                    "10.0.0.2",
                    &[&format!("203.0.113.1, {bad}, 10.0.0.3")],
                    list
                ),
                ip("10.0.0.3"),
                "{bad:?}"
            );
        }
        // Garbage left of the client's entry does not matter.
        assert_eq!(
            client("10.0.0.2", &["garbage, 203.0.113.1"], list),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn only_trusted_hops_means_the_left_most_and_the_walk_is_bounded() {
        assert_eq!(
            client("10.0.0.2", &["10.0.0.7, 10.0.0.8"], "10.0.0.0/8"),
            ip("10.0.0.7")
        );
        let many = vec!["10.0.0.9"; MAX_HOPS + 5].join(",");
        let header = format!("203.0.113.1, {many}");
        assert_eq!(client("10.0.0.2", &[&header], "10.0.0.0/8"), ip("10.0.0.9"));
    }
}
