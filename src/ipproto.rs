//! IP protocol numbers and the names tortie reads and writes for them
//! (nft's `meta l4proto` names, `--proto` values, log records, traces).

/// Number and name of each protocol tortie names; `ipv6-icmp` (nft's
/// name) is read as `icmpv6` too.
const NAMES: [(u8, &str); 6] = [
    (1, "icmp"),
    (6, "tcp"),
    (17, "udp"),
    (58, "icmpv6"),
    (132, "sctp"),
    (136, "udplite"),
];

/// The name of protocol `n`, if it has one.
pub fn name(n: u8) -> Option<&'static str> {
    NAMES.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// The number of a protocol name (`ipv6-icmp` included).
pub fn number(name: &str) -> Option<u8> {
    let name = if name == "ipv6-icmp" { "icmpv6" } else { name };
    NAMES.iter().find(|(_, v)| *v == name).map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_numbers_round_trip() {
        for n in [1, 6, 17, 58, 132, 136] {
            assert_eq!(super::number(super::name(n).unwrap()), Some(n));
        }
        assert_eq!(super::number("ipv6-icmp"), Some(58));
        assert_eq!(super::name(47), None);
        assert_eq!(super::number("gre"), None);
    }
}
