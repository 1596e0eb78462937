//! Changes that go as one nf_tables netlink batch (`ElementBatch`): sets
//! to create with their elements, which elements of which sets to remove
//! and add, and objects nothing refers to any more to delete; and how one element text of the
//! IR (`198.18.0.0/24`, `79-81`, `198.18.0.5 . 6 . 80`) becomes nf_tables
//! keys. Interval sets hold `[start]` plus `[end + 1, INTERVAL_END]` (no end
//! key when the interval reaches the top of the type); concatenations hold
//! one key whose fields are each padded to 4 bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::compile::ir::{Set, SetType};

/// The element changes of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElements {
    pub set: String,
    pub ty: SetType,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

/// Objects a cleanup deletes once nothing refers to them, in the order the
/// kernel accepts: the rules of removed chains first (they may jump to
/// chains, look up sets and maps), then maps, then chains, then sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removals {
    pub flushed: Vec<String>,
    pub maps: Vec<String>,
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

impl Removals {
    pub fn is_empty(&self) -> bool {
        self.flushed.is_empty()
            && self.maps.is_empty()
            && self.chains.is_empty()
            && self.sets.is_empty()
    }

    fn len(&self) -> usize {
        self.flushed.len() + self.maps.len() + self.chains.len() + self.sets.len()
    }
}

/// Elements of a new set per NEWSETELEM message: the element list is one
/// netlink attribute, whose length field has 16 bits; 512 of the largest
/// (an IPv6 interval, about 64 bytes as start and end) take 32 KiB.
pub const PACKED: usize = 512;

/// One transaction of set creations, element changes and deletions: sets
/// are created (and filled) first, then every element removal comes before
/// every addition (a CIDR that replaces the addresses it covers arrives as
/// "remove them, add it"), deletions last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementBatch {
    /// Whether the table itself is created first (the first load).
    pub table: bool,
    /// New sets and their elements (nothing refers to them yet).
    pub create: Vec<Set>,
    pub sets: Vec<SetElements>,
    pub remove: Removals,
}

impl ElementBatch {
    pub fn is_empty(&self) -> bool {
        !self.table
            && self.create.is_empty()
            && self.remove.is_empty()
            && self
                .sets
                .iter()
                .all(|s| s.removed.is_empty() && s.added.is_empty())
    }

    /// Number of messages: elements added plus removed (one message
    /// each, so that an error names the element), sets created with their
    /// elements (`PACKED` to a message), objects deleted.
    pub fn len(&self) -> usize {
        let created: usize = self
            .create
            .iter()
            .map(|s| 1 + s.elements.len().div_ceil(PACKED))
            .sum();
        usize::from(self.table)
            + created
            + self.remove.len()
            + self
                .sets
                .iter()
                .map(|s| s.removed.len() + s.added.len())
                .sum::<usize>()
    }
}

/// One element text as kernel keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub start: Vec<u8>,
    /// The first value after the interval (sent with INTERVAL_END); `None`
    /// for non-interval sets and for intervals that end at the maximum.
    pub end: Option<Vec<u8>>,
}

/// Whether sets of this type carry the interval flag.
pub fn is_interval(ty: SetType) -> bool {
    matches!(ty, SetType::Ipv4 | SetType::Ipv6 | SetType::Port)
}

/// The kernel keys of `text` in a set of type `ty`.
pub fn encode(ty: SetType, text: &str) -> Result<Keys, String> {
    match ty {
        SetType::Ipv4 => interval(text, 32, |s| {
            s.parse::<Ipv4Addr>().map(|a| u32::from(a) as u128).ok()
        }),
        SetType::Ipv6 => interval(text, 128, |s| s.parse::<Ipv6Addr>().map(u128::from).ok()),
        SetType::Port => interval(text, 16, |s| s.parse::<u16>().map(u128::from).ok()),
        SetType::NamedPortV4 | SetType::NamedPortV6 => concat(ty, text),
    }
}

/// `value` as `bits / 8` big-endian bytes.
fn bytes(value: u128, bits: u32) -> Vec<u8> {
    value.to_be_bytes()[16 - (bits / 8) as usize..].to_vec()
}

/// `a`, `a/len` or `a-b` of a `bits`-wide type.
fn interval(text: &str, bits: u32, parse: impl Fn(&str) -> Option<u128>) -> Result<Keys, String> {
    let bad = || format!("`{text}` is not an address, prefix or range of this set's type");
    let max = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let (first, last) = if let Some((a, len)) = text.split_once('/') {
        let a = parse(a.trim()).ok_or_else(bad)?;
        let len: u32 = len.trim().parse().map_err(|_| bad())?;
        if len > bits || bits == 16 {
            return Err(bad());
        }
        let host = if len == 0 { max } else { max >> len };
        (a & !host & max, (a & !host & max) | host)
    } else if let Some((a, b)) = text.split_once('-') {
        let (a, b) = (
            parse(a.trim()).ok_or_else(bad)?,
            parse(b.trim()).ok_or_else(bad)?,
        );
        if a > b {
            return Err(format!("range `{text}` ends before it starts"));
        }
        (a, b)
    } else {
        let a = parse(text.trim()).ok_or_else(bad)?;
        (a, a)
    };
    Ok(Keys {
        start: bytes(first, bits),
        end: (last < max).then(|| bytes(last + 1, bits)),
    })
}

/// `address . protocol . port`, each field padded to 4 bytes.
fn concat(ty: SetType, text: &str) -> Result<Keys, String> {
    let bad = || format!("`{text}` is not `address . protocol . port`");
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    let [addr, proto, port] = parts[..] else {
        return Err(bad());
    };
    let mut key = match ty {
        SetType::NamedPortV4 => addr
            .parse::<Ipv4Addr>()
            .map_err(|_| bad())?
            .octets()
            .to_vec(),
        _ => addr
            .parse::<Ipv6Addr>()
            .map_err(|_| bad())?
            .octets()
            .to_vec(),
    };
    let proto: u8 = proto.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    key.extend_from_slice(&[proto, 0, 0, 0]);
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    Ok(Keys {
        start: key,
        end: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ty: SetType, t: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        let k = encode(ty, t).unwrap();
        (k.start, k.end)
    }

    #[test]
    fn addresses_prefixes_and_ranges_become_start_and_end_plus_one() {
        assert_eq!(
            keys(SetType::Ipv4, "198.18.0.5"),
            (vec![198, 18, 0, 5], Some(vec![198, 18, 0, 6]))
        );
        assert_eq!(
            keys(SetType::Ipv4, "198.18.0.0/24"),
            (vec![198, 18, 0, 0], Some(vec![198, 18, 1, 0]))
        );
        assert_eq!(
            keys(SetType::Ipv4, "198.18.0.255-198.18.1.2"),
            (vec![198, 18, 0, 255], Some(vec![198, 18, 1, 3]))
        );
        // Host bits of a prefix are masked.
        assert_eq!(keys(SetType::Ipv4, "198.18.0.9/24").0, vec![198, 18, 0, 0]);
        assert_eq!(keys(SetType::Ipv4, "0.0.0.0/0"), (vec![0; 4], None));
        assert_eq!(keys(SetType::Ipv4, "255.255.255.255").1, None);
        assert_eq!(keys(SetType::Port, "80"), (vec![0, 80], Some(vec![0, 81])));
        assert_eq!(
            keys(SetType::Port, "79-81"),
            (vec![0, 79], Some(vec![0, 82]))
        );
        assert_eq!(keys(SetType::Port, "65535").1, None);
        let (s, e) = keys(SetType::Ipv6, "fd74:6f72::/32");
        assert_eq!(&s[..4], &[0xfd, 0x74, 0x6f, 0x72]);
        assert_eq!(s[4..], [0; 12]);
        assert_eq!(e.unwrap()[..4], [0xfd, 0x74, 0x6f, 0x73]);
        let (s, e) = keys(SetType::Ipv6, "fd74:6f72::ffff");
        assert_eq!(s.len(), 16);
        assert_eq!(e.unwrap()[12..], [0, 1, 0, 0]);
    }

    #[test]
    fn concatenations_pad_every_field_to_four_bytes() {
        assert_eq!(
            keys(SetType::NamedPortV4, "198.18.0.5 . 6 . 8080"),
            (vec![198, 18, 0, 5, 6, 0, 0, 0, 0x1f, 0x90, 0, 0], None)
        );
        let (k, e) = keys(SetType::NamedPortV6, "fd74:6f72::1 . 17 . 53");
        assert_eq!(k.len(), 24);
        assert_eq!(k[16..], [17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(e, None);
    }

    #[test]
    fn malformed_elements_are_refused_with_the_text() {
        for (ty, t) in [
            (SetType::Ipv4, "fd74::1"),
            (SetType::Ipv4, "198.18.0.0/33"),
            (SetType::Ipv4, "198.18.0.9-198.18.0.1"),
            (SetType::Port, "80/2"),
            (SetType::Port, "70000"),
            (SetType::NamedPortV4, "198.18.0.5 . tcp . 80"),
            (SetType::NamedPortV6, "198.18.0.5 . 6 . 80"),
        ] {
            let e = encode(ty, t).unwrap_err();
            assert!(e.contains(t.split(" . ").next().unwrap()), "{e}");
        }
    }
}
