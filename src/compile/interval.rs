//! Interval normalisation, in one place: every list of ports, port ranges
//! and networks that tortie renders (named sets, anonymous matches, set
//! deltas) goes through here first, so nothing rendered can overlap.
//!
//! nft refuses overlapping elements in an interval set ("conflicting
//! intervals specified") and fails the whole transaction; the kernel, when
//! sent elements directly, silently keeps an enclosing interval. Calico
//! accepts overlapping input (`ports: [79:80, 80]`, `10.0.0.0/8` with
//! `10.1.0.0/16`) and means their union, so the union is what we render:
//! sorted, with overlapping and adjacent intervals merged. A negated match
//! (`notPorts`, `notNets`) is the negation of that union, which is what
//! Calico means by "matches none of them".

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Port ranges `(first, last)`, sorted, with overlapping and adjacent ranges
/// merged. A reversed range is read as its two ends.
pub fn merge_ports(ports: impl IntoIterator<Item = (u16, u16)>) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ports
        .into_iter()
        .map(|(a, b)| (a.min(b), a.max(b)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            // Overlapping, or adjacent (`last + 1 == a`).
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// How one merged port range is written in nft: `80` or `79-81`.
pub fn port_text((a, b): (u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The smallest list of CIDRs of one family covering exactly the union of
/// `nets` (host bits ignored), sorted.
fn merge_v4(nets: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut v = Ipv4Net::aggregate(&nets.iter().map(Ipv4Net::trunc).collect());
    v.sort_unstable();
    v
}

/// See [`merge_v4`].
fn merge_v6(nets: &[Ipv6Net]) -> Vec<Ipv6Net> {
    let mut v = Ipv6Net::aggregate(&nets.iter().map(Ipv6Net::trunc).collect());
    v.sort_unstable();
    v
}

/// The nft elements of an address set of one family holding the union of
/// `nets` (those of the other family are left out): merged CIDRs, a single
/// address written bare, and a `/0` split into two halves, which an
/// interval set cannot hold whole.
pub fn net_elements(nets: impl IntoIterator<Item = IpNet>, v6: bool) -> BTreeSet<String> {
    let mut v4 = Vec::new();
    let mut v6s = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6s.push(n),
        }
    }
    let merged: Vec<IpNet> = if v6 {
        merge_v6(&v6s).into_iter().map(IpNet::V6).collect()
    } else {
        merge_v4(&v4).into_iter().map(IpNet::V4).collect()
    };
    let mut out = Vec::with_capacity(merged.len() + 1);
    for n in merged {
        if n.prefix_len() == 0 {
            // An interval set cannot hold a /0: its two halves instead.
            let halves = n.subnets(1).expect("a /0 has halves");
            out.extend(halves.map(|h| h.to_string()));
        } else if n.prefix_len() == n.max_prefix_len() {
            out.push(n.addr().to_string());
        } else {
            out.push(n.to_string());
        }
    }
    // Built in one go from a sorted list: much cheaper than one insert each.
    out.sort_unstable();
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    /// Whether `addr` lies in one of the rendered `elements` (as produced by
    /// [`net_elements`]).
    fn elements_contain(elements: &BTreeSet<String>, addr: IpAddr) -> bool {
        elements.iter().any(|e| {
            let net = e
                .parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from));
            net.is_ok_and(|n| n.contains(&addr))
        })
    }

    #[test]
    fn ports_from_the_issue_merge() {
        assert_eq!(merge_ports([(79, 80), (80, 80), (81, 81)]), vec![(79, 81)]);
        assert_eq!(merge_ports([(81, 81), (81, 90)]), vec![(81, 90)]);
        assert_eq!(merge_ports([(10, 20), (22, 30)]), vec![(10, 20), (22, 30)]);
        assert_eq!(merge_ports([(10, 20), (21, 30)]), vec![(10, 30)]);
        assert_eq!(merge_ports([(65535, 65535), (1, 65534)]), vec![(1, 65535)]);
        assert_eq!(merge_ports([(9, 3)]), vec![(3, 9)]);
        assert!(merge_ports([]).is_empty());
    }

    #[test]
    fn nets_from_the_issue_merge() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let e = net_elements([n("10.0.0.0/8"), n("10.1.0.0/16")], false);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec!["10.0.0.0/8"]);
        let e = net_elements([n("198.18.0.0/24"), n("198.18.0.5/32")], false);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec!["198.18.0.0/24"]);
        // Host bits are ignored, as Calico masks them.
        let e = net_elements([n("198.18.7.9/16"), n("198.19.0.0/16")], false);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec!["198.18.0.0/15"]);
        let e = net_elements([n("0.0.0.0/0"), n("198.18.0.1/32")], false);
        assert_eq!(e.len(), 2);
        let e = net_elements(
            [n("fd74:6f72::/32"), n("fd74:6f72::1/128"), n("10.0.0.0/8")],
            true,
        );
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec!["fd74:6f72::/32"]);
    }

    fn port_range() -> impl Strategy<Value = (u16, u16)> {
        // Small values make overlaps and adjacency common.
        prop_oneof![
            (0u16..64, 0u16..8).prop_map(|(a, w)| (a, a.saturating_add(w))),
            (1u16..=65535, 1u16..=65535),
        ]
    }

    fn v4_net() -> impl Strategy<Value = IpNet> {
        // Inside 198.18.0.0/15 mostly, so nets nest and touch.
        (0u32..512, 15u8..=32).prop_map(|(host, len)| {
            let addr = std::net::Ipv4Addr::from(0xC612_0000u32 + host * 4);
            IpNet::V4(Ipv4Net::new(addr, len).unwrap())
        })
    }

    proptest! {
        #[test]
        fn merged_ports_are_exactly_the_union(
            ports in prop::collection::vec(port_range(), 0..12),
            probes in prop::collection::vec(0u16..=65535, 64),
        ) {
            let merged = merge_ports(ports.iter().copied());
            for w in merged.windows(2) {
                // Sorted, disjoint and not even adjacent.
                prop_assert!(u32::from(w[0].1) + 1 < u32::from(w[1].0));
            }
            let lo_hi = |(a, b): (u16, u16)| (a.min(b), a.max(b));
            let extra: Vec<u16> = ports.iter().flat_map(|&(a, b)| [a, b, a.wrapping_sub(1), b.wrapping_add(1)]).collect();
            for p in probes.iter().chain(extra.iter()) {
                let want = ports.iter().any(|&r| { let (a, b) = lo_hi(r); a <= *p && *p <= b });
                let got = merged.iter().any(|&(a, b)| a <= *p && *p <= b);
                prop_assert_eq!(want, got, "port {}", p);
            }
        }

        #[test]
        fn merged_nets_are_exactly_the_union(
            nets in prop::collection::vec(v4_net(), 0..10),
            probes in prop::collection::vec(0u32..2048, 64),
        ) {
            let elements = net_elements(nets.iter().copied(), false);
            let parsed: Vec<IpNet> = elements.iter().map(|e| e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from)).unwrap()).collect();
            for (i, a) in parsed.iter().enumerate() {
                for b in &parsed[i + 1..] {
                    prop_assert!(!a.contains(b) && !b.contains(a), "{} overlaps {}", a, b);
                }
            }
            for p in probes {
                let addr = IpAddr::V4(std::net::Ipv4Addr::from(0xC612_0000u32 + p));
                let want = nets.iter().any(|n| n.trunc().contains(&addr));
                prop_assert_eq!(want, elements_contain(&elements, addr), "{}", addr);
            }
        }
    }
}
