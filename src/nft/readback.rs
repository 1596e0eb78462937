//! Reading tortie's table over netlink instead of `nft -j list table`:
//! chain names, each rule's hash (from its comment, in the rule's userdata),
//! and every set's and map's elements rendered as the IR writes them (the
//! same `TableState` the JSON listing gives, at a fraction of its cost).
//! Dumps are parsed from the raw attributes: nothing of a rule but its
//! chain and comment is decoded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::NftError;
use super::netlink::{NlSocket, cstr};
use super::rules::{NFT_GOTO, NFT_JUMP};
use super::state::{RuleCounter, TableState};
use crate::compile::ir::SetType;

const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_GETSET: u8 = 10;
const NFT_MSG_GETSETELEM: u8 = 13;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// Netlink attributes: `(type, value)` in order.
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn find<'a>(a: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    a.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn string(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
}

fn be32(v: Option<&[u8]>) -> u32 {
    v.and_then(|v| v.get(..4))
        .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")))
        .unwrap_or(0)
}

/// The comment of a rule from its userdata (libnftnl TLVs; comment = 0).
fn comment(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (kind, len) = (ud[0], ud[1] as usize);
        let value = ud.get(2..2 + len)?;
        if kind == 0 {
            return Some(string(value));
        }
        ud = &ud[2 + len..];
    }
    None
}

/// tortie's table in `target`, over a socket of its own (retried when a
/// commit interrupts a dump); `None` when the table does not exist.
pub fn read_target(
    target: &super::exec::Target,
    deadline: std::time::Duration,
) -> Result<Option<TableState>, NftError> {
    let mut sock = NlSocket::open(target)?;
    let mut last = None;
    for _ in 0..3 {
        match read(&mut sock, deadline) {
            Err(NftError::Netlink {
                what: "interrupted",
                reason,
            }) => last = Some(reason),
            r => return r,
        }
    }
    Err(NftError::Netlink {
        what: "interrupted",
        reason: last.unwrap_or_default(),
    })
}

/// tortie's table over netlink; `None` when it does not exist.
pub fn read(
    sock: &mut NlSocket,
    deadline: std::time::Duration,
) -> Result<Option<TableState>, NftError> {
    let table = [(1u16, cstr(crate::compile::ir::TABLE_NAME))];
    match sock.dump(NFT_MSG_GETTABLE, &table, false, deadline) {
        Err(NftError::Netlink { reason, .. }) if reason.contains("No such file") => {
            return Ok(None);
        }
        r => r?,
    };
    let mut st = TableState::default();
    for m in sock.dump(NFT_MSG_GETCHAIN, &table, true, deadline)? {
        let a = attrs(&m.payload);
        st.chains
            .entry(string(find(&a, 3).unwrap_or(&[])))
            .or_default();
    }
    for m in sock.dump(NFT_MSG_GETRULE, &table, true, deadline)? {
        let a = attrs(&m.payload);
        let chain = string(find(&a, 2).unwrap_or(&[]));
        let c = find(&a, 7).and_then(comment).unwrap_or_default();
        let hash = c.split(';').next().unwrap_or_default().to_string();
        st.chains.entry(chain).or_default().push(hash);
    }
    for m in sock.dump(NFT_MSG_GETSET, &table, true, deadline)? {
        let a = attrs(&m.payload);
        let name = string(find(&a, 2).unwrap_or(&[]));
        let flags = be32(find(&a, 3));
        if flags & NFT_SET_ANONYMOUS != 0 {
            continue;
        }
        let key_len = be32(find(&a, 5));
        let req = [
            (1u16, cstr(crate::compile::ir::TABLE_NAME)),
            (2u16, cstr(&name)),
        ];
        let elems = sock.dump(NFT_MSG_GETSETELEM, &req, true, deadline)?;
        let elems: Vec<Elem> = elems.iter().flat_map(|m| elements(&m.payload)).collect();
        if flags & NFT_SET_MAP != 0 {
            st.maps.insert(name, map_elements(&elems));
        } else {
            let ty = set_type(key_len, flags & NFT_SET_INTERVAL != 0);
            st.sets.insert(name, set_elements(ty, elems));
        }
    }
    Ok(Some(st))
}

/// Every rule's counter with its chain and note (the comment after the
/// hash), from one rule dump: what `state::rule_counters` reads from the
/// JSON listing, at the cost of the rules alone. Rules without a counter
/// or without one of tortie's comments are left out.
pub fn rule_counters(
    target: &super::exec::Target,
    deadline: std::time::Duration,
) -> Result<Vec<RuleCounter>, NftError> {
    let mut sock = NlSocket::open(target)?;
    let table = [(1u16, cstr(crate::compile::ir::TABLE_NAME))];
    let mut out = Vec::new();
    for m in sock.dump(NFT_MSG_GETRULE, &table, true, deadline)? {
        let a = attrs(&m.payload);
        let Some(c) = find(&a, 7).and_then(comment) else {
            continue;
        };
        let Some((_, note)) = c.split_once(';') else {
            continue;
        };
        let exprs = find(&a, 4);
        if let Some((packets, bytes)) = exprs.and_then(counter) {
            out.push(RuleCounter {
                chain: string(find(&a, 2).unwrap_or(&[])),
                note: note.to_string(),
                packets,
                bytes,
                jump: exprs.and_then(jump_target),
            });
        }
    }
    Ok(out)
}

fn be64(v: Option<&[u8]>) -> u64 {
    v.and_then(|v| v.get(..8))
        .map(|v| u64::from_be_bytes(v.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// `(packets, bytes)` of the first `counter` expression of a rule.
fn counter(exprs: &[u8]) -> Option<(u64, u64)> {
    attrs(exprs).into_iter().find_map(|(_, e)| {
        let e = attrs(e);
        if string(find(&e, 1)?) != "counter" {
            return None;
        }
        let data = attrs(find(&e, 2)?);
        Some((be64(find(&data, 2)), be64(find(&data, 1))))
    })
}

/// The chain of a rule's `jump` or `goto` verdict (an `immediate`
/// expression whose data is a verdict naming a chain).
fn jump_target(exprs: &[u8]) -> Option<String> {
    attrs(exprs).into_iter().find_map(|(_, e)| {
        let e = attrs(e);
        if string(find(&e, 1)?) != "immediate" {
            return None;
        }
        let data = attrs(find(&e, 2)?);
        let verdict = attrs(find(&attrs(find(&data, 2)?), 2)?);
        let code = be32(find(&verdict, 1)) as i32;
        (code == NFT_JUMP || code == NFT_GOTO).then(|| string(find(&verdict, 2).unwrap_or(&[])))
    })
}

fn set_type(key_len: u32, interval: bool) -> Option<SetType> {
    Some(match (key_len, interval) {
        (4, true) => SetType::Ipv4,
        (16, true) => SetType::Ipv6,
        (2, true) => SetType::Port,
        (12, false) => SetType::NamedPortV4,
        (24, false) => SetType::NamedPortV6,
        _ => return None,
    })
}

/// One kernel element: key, interval-end flag, verdict data.
struct Elem {
    key: Vec<u8>,
    end: bool,
    verdict: Option<(i32, String)>,
}

fn elements(payload: &[u8]) -> Vec<Elem> {
    let a = attrs(payload);
    let Some(list) = find(&a, 3) else {
        return Vec::new();
    };
    attrs(list)
        .into_iter()
        .map(|(_, e)| {
            let e = attrs(e);
            let key = find(&e, 1)
                .map(attrs)
                .and_then(|k| find(&k, 1).map(<[u8]>::to_vec));
            let verdict = find(&e, 2)
                .map(attrs)
                .and_then(|d| find(&d, 2).map(attrs))
                .map(|v| (be32(find(&v, 1)) as i32, string(find(&v, 2).unwrap_or(&[]))));
            Elem {
                key: key.unwrap_or_default(),
                end: be32(find(&e, 3)) & NFT_SET_ELEM_INTERVAL_END != 0,
                verdict,
            }
        })
        .collect()
}

fn map_elements(elems: &[Elem]) -> BTreeMap<String, String> {
    elems
        .iter()
        .map(|e| {
            let key = string(&e.key);
            match &e.verdict {
                Some((NFT_GOTO, c)) => (key, format!("goto {c}")),
                Some((NFT_JUMP, c)) => (key, format!("jump {c}")),
                _ => (format!("<unreadable {key}>"), String::new()),
            }
        })
        .collect()
}

fn uint(key: &[u8]) -> u128 {
    key.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128)
}

fn set_elements(ty: Option<SetType>, mut elems: Vec<Elem>) -> BTreeSet<String> {
    let Some(ty) = ty else {
        return [format!("<unreadable set of {} elements>", elems.len())].into();
    };
    if matches!(ty, SetType::NamedPortV4 | SetType::NamedPortV6) {
        return elems.iter().map(|e| concat_text(ty, &e.key)).collect();
    }
    let bits = match ty {
        SetType::Ipv4 => 32,
        SetType::Ipv6 => 128,
        _ => 16,
    };
    // Ascending; at one key an interval's end comes before the next start.
    elems.sort_by_key(|e| (uint(&e.key), !e.end));
    let max = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let mut out = BTreeSet::new();
    let mut open: Option<u128> = None;
    for e in &elems {
        let k = uint(&e.key);
        match (open, e.end) {
            (Some(s), true) if k > s => {
                out.insert(interval_text(ty, bits, s, k - 1));
                open = None;
            }
            (None, false) => open = Some(k),
            (None, true) => {} // a leading end marker
            _ => {
                out.insert(format!("<unreadable interval at {k:x}>"));
                open = if e.end { None } else { Some(k) };
            }
        }
    }
    if let Some(s) = open {
        out.insert(interval_text(ty, bits, s, max));
    }
    out
}

fn value_text(ty: SetType, v: u128) -> String {
    match ty {
        SetType::Ipv4 => Ipv4Addr::from(v as u32).to_string(),
        SetType::Ipv6 => Ipv6Addr::from(v).to_string(),
        _ => v.to_string(),
    }
}

/// `a`, `a/len` (an aligned block of addresses) or `a-b`.
fn interval_text(ty: SetType, bits: u32, a: u128, b: u128) -> String {
    if a == b {
        return value_text(ty, a);
    }
    let size = b.wrapping_sub(a).wrapping_add(1);
    let host = if size == 0 {
        bits
    } else {
        size.trailing_zeros()
    };
    let aligned = size == 0 || (size.is_power_of_two() && a.trailing_zeros() >= host);
    if ty != SetType::Port && aligned {
        return format!("{}/{}", value_text(ty, a), bits - host);
    }
    format!("{}-{}", value_text(ty, a), value_text(ty, b))
}

fn concat_text(ty: SetType, key: &[u8]) -> String {
    let n = if ty == SetType::NamedPortV4 { 4 } else { 16 };
    if key.len() != n + 8 {
        return format!("<unreadable concatenation of {} bytes>", key.len());
    }
    let addr = if n == 4 {
        Ipv4Addr::from(uint(&key[..4]) as u32).to_string()
    } else {
        Ipv6Addr::from(uint(&key[..16])).to_string()
    };
    let port = u16::from_be_bytes([key[n + 4], key[n + 5]]);
    format!("{addr} . {} . {port}", key[n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(key: &[u8], end: bool) -> Elem {
        Elem {
            key: key.to_vec(),
            end,
            verdict: None,
        }
    }

    fn texts(ty: SetType, elems: Vec<Elem>) -> Vec<String> {
        set_elements(Some(ty), elems).into_iter().collect()
    }

    #[test]
    fn interval_elements_become_the_irs_texts() {
        // Out of order (as rbtree dumps come), adjacent intervals sharing a
        // key, a leading end marker, and an interval open to the top.
        let got = texts(
            SetType::Ipv4,
            vec![
                el(&[255, 255, 255, 255], false),
                el(&[198, 18, 0, 7], true),
                el(&[198, 18, 0, 6], false),
                el(&[198, 18, 0, 6], true),
                el(&[198, 18, 0, 5], false),
                el(&[198, 18, 1, 0], false),
                el(&[198, 18, 2, 0], true),
                el(&[198, 18, 3, 1], false),
                el(&[198, 18, 3, 10], true),
                el(&[0, 0, 0, 0], true),
            ],
        );
        assert_eq!(
            got,
            [
                "198.18.0.5",
                "198.18.0.6",
                "198.18.1.0/24",
                "198.18.3.1-198.18.3.9",
                "255.255.255.255"
            ]
        );
        let ports = texts(
            SetType::Port,
            vec![
                el(&[0, 79], false),
                el(&[0, 82], true),
                el(&[0, 0], false),
                el(&[0, 2], true),
            ],
        );
        assert_eq!(ports, ["0-1", "79-81"], "ports never read as prefixes");
        let all = texts(SetType::Ipv6, vec![el(&[0; 16], false)]);
        assert_eq!(all, ["::/0"]);
    }

    #[test]
    fn a_broken_interval_reads_as_unreadable_so_the_set_is_rewritten() {
        let got = texts(
            SetType::Ipv4,
            vec![
                el(&[198, 18, 0, 1], false),
                el(&[198, 18, 0, 9], false),
                el(&[198, 18, 0, 10], true),
            ],
        );
        assert!(got.iter().any(|t| t.starts_with("<unreadable")), "{got:?}");
        assert!(super::super::plan::has_unreadable(
            &got.iter().cloned().collect()
        ));
    }

    #[test]
    fn concatenations_maps_and_comments_decode() {
        let k = [198, 18, 0, 5, 6, 0, 0, 0, 0x1f, 0x90, 0, 0];
        assert_eq!(
            concat_text(SetType::NamedPortV4, &k),
            "198.18.0.5 . 6 . 8080"
        );
        let mut ifname = b"cali1234".to_vec();
        ifname.resize(16, 0);
        let m = map_elements(&[Elem {
            key: ifname,
            end: false,
            verdict: Some((NFT_GOTO, "filter-tw-cali1234".into())),
        }]);
        assert_eq!(m["cali1234"], "goto filter-tw-cali1234");
        let ud = [0u8, 6, b'a', b'b', b';', b'n', b'o', 0];
        assert_eq!(comment(&ud).as_deref(), Some("ab;no"));
        assert_eq!(comment(&[1, 1, 9]), None);
    }
}
