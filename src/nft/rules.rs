//! The rule encoder: one IR `Rule` of a named chain as the NFT_MSG_NEWRULE
//! attributes nft 1.0.6 sends for the same text (the same expressions, the
//! same implicit `meta nfproto` / `meta l4proto` dependencies, the same
//! merging of adjacent header matches, the comment as a
//! NFTNL_UDATA_RULE_COMMENT TLV), so that `nft list` shows a rule tortie
//! added over netlink exactly as one nft added. Anonymous sets
//! (`{ a, b }`) become NEWSET + NEWSETELEM messages sent before the rule,
//! tied to its lookup by a batch-local set id.
//!
//! The rule text is read with the trace parser (`trace::nft`); anything
//! outside the subset encoded here is an `NftError::Unencodable`, and the
//! change then goes through nft: the encoder never guesses.
//!
//! Also here: `Op`, the verdict-changing step of a plan as objects, which
//! `netlink` sends as one batch.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::NftError;
use crate::compile::ir::{Rule, SetType};
use crate::trace::nft::{
    Field, Item, Values, Verdict, icmp_type_number, l4proto_number, parse_u32,
};

/// One step of a plan's change transaction, in the order it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A regular (non-base) chain declared empty.
    NewChain(String),
    /// Every rule of the chain removed.
    FlushChain(String),
    AddRule {
        chain: String,
        rule: Rule,
    },
    /// Every element of a set or map removed.
    FlushSet(String),
    /// Elements (IR text) added to or removed from an existing set.
    Elements {
        set: String,
        ty: SetType,
        elements: Vec<String>,
        add: bool,
    },
    /// `interface : verdict` elements added to an existing verdict map.
    MapElements {
        map: String,
        elements: Vec<(String, String)>,
    },
}

impl Op {
    /// How many netlink messages the op becomes (at least).
    pub fn messages(&self) -> usize {
        match self {
            Op::Elements { elements, .. } => elements.len(),
            _ => 1,
        }
    }
}

const NLA_F_NESTED: u16 = 0x8000;

/// A netlink attribute stream being written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let len = (4 + value.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize((self.0.len() + 3) & !3, 0);
        self
    }
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Attrs {
        self.put(kind, &super::netlink::cstr(s))
    }
    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Attrs {
        self.put(kind, &v.to_be_bytes())
    }
    pub fn u64(&mut self, kind: u16, v: u64) -> &mut Attrs {
        self.put(kind, &v.to_be_bytes())
    }
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Attrs {
        let mut inner = Attrs::default();
        f(&mut inner);
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
    /// `kind { NFTA_DATA_VALUE value }`.
    pub fn value(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        self.nest(kind, |d| {
            d.put(1, value);
        })
    }
    /// `kind { NFTA_DATA_VERDICT { code, chain } }`.
    pub fn verdict(&mut self, kind: u16, code: i32, chain: Option<&str>) -> &mut Attrs {
        self.nest(kind, |d| {
            d.nest(2, |v| {
                v.u32(1, code as u32);
                if let Some(c) = chain {
                    v.str(2, c);
                }
            });
        })
    }
}

// Expression constants (linux/netfilter/nf_tables.h).
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
pub(super) const NFT_JUMP: i32 = -3;
pub(super) const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;
/// NFT_REG_1: the 16-byte register every single load uses.
const REG1: u32 = 1;

/// Which set a lookup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SetRef {
    Named(String),
    /// The rule's n-th anonymous set.
    Anon(usize),
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Meta {
        key: u32,
        reg: u32,
    },
    MetaSet {
        key: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        reg: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Range {
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Lookup {
        set: SetRef,
        map: bool,
        inv: bool,
    },
    CtState,
    Counter,
    Log {
        prefix: String,
        level: Option<u32>,
        group: Option<u16>,
    },
    Limit {
        rate: u64,
        unit: u64,
        burst: u32,
    },
    Notrack,
    Reject,
    Immediate {
        code: i32,
        chain: Option<String>,
    },
}

/// An anonymous constant set a rule looks up, as nft declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    key_type: u32,
    key_len: u32,
    /// nft's `typeof` user data: payload protocol and field ids.
    typeof_desc: (u32, u32),
    keys: Vec<Vec<u8>>,
}

impl AnonSet {
    /// NEWSET attributes for batch-local set `id`.
    pub fn set_attributes(&self, table: &str, id: u32) -> Attrs {
        let mut ud = vec![0u8, 4];
        ud.extend_from_slice(&2u32.to_ne_bytes()); // key byte order: big endian
        let mut inner = vec![0u8, 4];
        inner.extend_from_slice(&7u32.to_ne_bytes()); // a payload expression
        inner.extend_from_slice(&[1, 12, 0, 4]);
        inner.extend_from_slice(&self.typeof_desc.0.to_ne_bytes());
        inner.extend_from_slice(&[1, 4]);
        inner.extend_from_slice(&self.typeof_desc.1.to_ne_bytes());
        ud.push(3);
        ud.push(inner.len() as u8);
        ud.extend_from_slice(&inner);
        let mut a = Attrs::default();
        a.str(1, table).str(2, "__set%d").u32(3, 0x3); // anonymous | constant
        a.u32(4, self.key_type).u32(5, self.key_len).u32(10, id);
        a.nest(9, |d| {
            d.u32(1, self.keys.len() as u32);
        });
        a.put(13, &ud);
        a
    }

    /// NEWSETELEM attributes filling batch-local set `id`.
    pub fn element_attributes(&self, table: &str, id: u32) -> Attrs {
        let mut a = Attrs::default();
        a.str(1, table).str(2, "__set%d").u32(4, id);
        a.nest(3, |list| {
            for k in &self.keys {
                list.nest(1, |e| {
                    e.value(1, k);
                });
            }
        });
        a
    }
}

/// A rule ready to send: its expressions, comment and anonymous sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRule {
    exprs: Vec<Expr>,
    comment: Option<String>,
    pub anon: Vec<AnonSet>,
}

impl EncodedRule {
    /// NEWRULE attributes appending the rule to `chain`; the anonymous sets
    /// have batch-local ids `first_id`, `first_id + 1`, …
    pub fn attributes(&self, table: &str, chain: &str, first_id: u32) -> Attrs {
        let mut a = Attrs::default();
        a.str(1, table).str(2, chain);
        a.nest(4, |list| {
            for e in &self.exprs {
                put_expr(list, e, first_id);
            }
        });
        if let Some(c) = &self.comment {
            let mut ud = vec![0u8, (c.len() + 1) as u8];
            ud.extend_from_slice(c.as_bytes());
            ud.push(0);
            a.put(7, &ud);
        }
        a
    }
}

fn put_expr(list: &mut Attrs, e: &Expr, first_id: u32) {
    let name = match e {
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Range { .. } => "range",
        Expr::Lookup { .. } => "lookup",
        Expr::CtState => "ct",
        Expr::Counter => "counter",
        Expr::Log { .. } => "log",
        Expr::Limit { .. } => "limit",
        Expr::Notrack => "notrack",
        Expr::Reject => "reject",
        Expr::Immediate { .. } => "immediate",
    };
    list.nest(1, |el| {
        el.str(1, name);
        if *e != Expr::Notrack {
            el.nest(2, |d| expr_data(d, e, first_id));
        }
    });
}

fn expr_data(d: &mut Attrs, e: &Expr, first_id: u32) {
    match e {
        Expr::Meta { key, reg } => {
            d.u32(1, *reg).u32(2, *key);
        }
        Expr::MetaSet { key } => {
            d.u32(2, *key).u32(3, REG1);
        }
        Expr::Payload {
            base,
            offset,
            len,
            reg,
        } => {
            d.u32(1, *reg).u32(2, *base).u32(3, *offset).u32(4, *len);
        }
        Expr::Cmp { op, data } => {
            d.u32(1, REG1).u32(2, *op).value(3, data);
        }
        Expr::Bitwise { mask, xor } => {
            d.u32(1, REG1).u32(2, REG1).u32(3, mask.len() as u32);
            d.value(4, mask).value(5, xor).u32(6, 0);
        }
        Expr::Range { op, from, to } => {
            d.u32(1, REG1).u32(2, *op).value(3, from).value(4, to);
        }
        Expr::Lookup { set, map, inv } => {
            match set {
                SetRef::Named(n) => d.str(1, n),
                SetRef::Anon(i) => d.str(1, "__set%d").u32(4, first_id + *i as u32),
            };
            d.u32(2, REG1);
            if *map {
                d.u32(3, 0);
            }
            if *inv {
                d.u32(5, 1);
            }
        }
        Expr::CtState => {
            d.u32(1, REG1).u32(2, 0);
        }
        Expr::Counter => {
            d.u64(1, 0).u64(2, 0);
        }
        Expr::Log {
            prefix,
            level,
            group,
        } => {
            d.str(2, prefix);
            if let Some(g) = group {
                d.put(1, &g.to_be_bytes());
            }
            if let Some(l) = level {
                d.u32(5, *l);
            }
        }
        Expr::Limit { rate, unit, burst } => {
            d.u64(1, *rate)
                .u64(2, *unit)
                .u32(3, *burst)
                .u32(4, 0)
                .u32(5, 0);
        }
        Expr::Notrack => {}
        Expr::Reject => {
            // In the inet family a bare `reject` is icmpx port-unreachable.
            d.u32(1, 2).put(2, &[1]);
        }
        Expr::Immediate { code, chain } => {
            d.u32(1, 0).verdict(2, *code, chain.as_deref());
        }
    }
}

/// Encodes `rule` of `chain` (what `Rule::render` gives, as nft would).
pub fn encode(rule: &Rule, chain: &str) -> Result<EncodedRule, NftError> {
    let text = rule.render(chain);
    let fail = |reason: String| NftError::Unencodable {
        chain: chain.to_string(),
        rule: text.clone(),
        reason,
    };
    let items = crate::trace::nft::parse_rule(&text).map_err(|e| fail(e.problem))?;
    let mut enc = Encoder::default();
    for item in &items {
        enc.item(item).map_err(fail)?;
    }
    merge_adjacent(&mut enc.exprs);
    Ok(EncodedRule {
        exprs: enc.exprs,
        comment: enc.comment,
        anon: enc.anon,
    })
}

/// What the rule so far has established, as nft's protocol context.
#[derive(Default)]
struct Encoder {
    exprs: Vec<Expr>,
    anon: Vec<AnonSet>,
    comment: Option<String>,
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

/// A literal of a header field: exact, prefix, or inclusive range.
enum Literal {
    Exact(Vec<u8>),
    Prefix(Vec<u8>, u32),
    Range(Vec<u8>, Vec<u8>),
}

/// A header field: where it is, how nft types it (key type, `typeof` ids).
struct Header {
    base: u32,
    offset: u32,
    len: u32,
    key_type: Option<u32>,
    typeof_desc: (u32, u32),
}

fn header(field: Field) -> Option<Header> {
    let h = |base, offset, len, key_type, typeof_desc| Header {
        base,
        offset,
        len,
        key_type,
        typeof_desc,
    };
    Some(match field {
        Field::Addr { v6: false, src } => h(
            BASE_NETWORK,
            if src { 12 } else { 16 },
            4,
            Some(7),
            (12, if src { 11 } else { 12 }),
        ),
        Field::Addr { v6: true, src } => h(
            BASE_NETWORK,
            if src { 8 } else { 24 },
            16,
            Some(8),
            (13, if src { 8 } else { 9 }),
        ),
        Field::Port { proto, src } => {
            let desc = match proto {
                Some(6) => 8,
                Some(17) => 6,
                Some(136) => 7,
                Some(132) => 10,
                None => 11,
                Some(_) => return None,
            };
            h(
                BASE_TRANSPORT,
                if src { 0 } else { 2 },
                2,
                Some(13),
                (desc, if src { 1 } else { 2 }),
            )
        }
        Field::IcmpType { v6 } => h(
            BASE_TRANSPORT,
            0,
            1,
            Some(if v6 { 29 } else { 14 }),
            (if v6 { 14 } else { 4 }, 1),
        ),
        Field::IcmpCode { v6 } => h(BASE_TRANSPORT, 1, 1, None, (if v6 { 14 } else { 4 }, 2)),
        _ => return None,
    })
}

/// `text` as a literal of `field`.
fn literal(field: Field, text: &str) -> Result<Literal, String> {
    let bad = || format!("`{text}` is not a value of this field");
    match field {
        Field::Addr { v6, .. } => {
            let addr = |s: &str| -> Result<Vec<u8>, String> {
                if v6 {
                    s.parse::<Ipv6Addr>().map(|a| a.octets().to_vec())
                } else {
                    s.parse::<Ipv4Addr>().map(|a| a.octets().to_vec())
                }
                .map_err(|_| bad())
            };
            if let Some((a, len)) = text.split_once('/') {
                let len: u32 = len.parse().map_err(|_| bad())?;
                return Ok(Literal::Prefix(addr(a)?, len));
            }
            if let Some((a, b)) = text.split_once('-') {
                return Ok(Literal::Range(addr(a)?, addr(b)?));
            }
            Ok(Literal::Exact(addr(text)?))
        }
        Field::Port { .. } => {
            let port = |s: &str| s.parse::<u16>().map(|p| p.to_be_bytes().to_vec());
            if let Some((a, b)) = text.split_once('-') {
                return Ok(Literal::Range(
                    port(a).map_err(|_| bad())?,
                    port(b).map_err(|_| bad())?,
                ));
            }
            Ok(Literal::Exact(port(text).map_err(|_| bad())?))
        }
        Field::IcmpType { .. } => Ok(Literal::Exact(vec![
            icmp_type_number(text).ok_or_else(bad)?,
        ])),
        Field::IcmpCode { .. } => {
            let c = parse_u32(text).and_then(|c| u8::try_from(c).ok());
            Ok(Literal::Exact(vec![c.ok_or_else(bad)?]))
        }
        _ => Err(bad()),
    }
}

fn op(negate: bool) -> u32 {
    if negate { CMP_NEQ } else { CMP_EQ }
}

fn single(values: &Values) -> Result<&str, String> {
    match values {
        Values::List(v) if v.len() == 1 => Ok(&v[0]),
        _ => Err("only one literal value is encoded for this field".into()),
    }
}

/// A 16-byte interface name, or the prefix of a `name*` wildcard.
fn ifname(text: &str) -> Result<Vec<u8>, String> {
    if let Some(prefix) = text.strip_suffix('*') {
        if prefix.is_empty() || prefix.len() > 15 {
            return Err(format!("interface wildcard `{text}`"));
        }
        return Ok(prefix.as_bytes().to_vec());
    }
    if text.is_empty() || text.len() > 15 {
        return Err(format!("interface name `{text}`"));
    }
    let mut v = text.as_bytes().to_vec();
    v.resize(16, 0);
    Ok(v)
}

fn ct_state_bits(names: &[String]) -> Result<u32, String> {
    names.iter().try_fold(0u32, |acc, n| {
        Ok(acc
            | match n.as_str() {
                "invalid" => 1,
                "established" => 2,
                "related" => 4,
                "new" => 8,
                "untracked" => 64,
                other => return Err(format!("unknown ct state `{other}`")),
            })
    })
}

impl Encoder {
    fn push(&mut self, e: Expr) {
        self.exprs.push(e);
    }

    fn meta_cmp(&mut self, key: u32, negate: bool, data: Vec<u8>) {
        self.push(Expr::Meta { key, reg: REG1 });
        self.push(Expr::Cmp {
            op: op(negate),
            data,
        });
    }

    /// nft's implicit `meta nfproto` before the first address match.
    fn need_nfproto(&mut self, v6: bool) {
        let want = if v6 { 10 } else { 2 };
        if self.nfproto != Some(want) {
            self.meta_cmp(META_NFPROTO, false, vec![want]);
            self.nfproto = Some(want);
        }
    }

    /// nft's implicit `meta l4proto` before the first port match.
    fn need_l4proto(&mut self, field: Field) -> Result<(), String> {
        match field {
            Field::Port { proto: Some(p), .. } => {
                if self.l4proto != Some(p) {
                    self.meta_cmp(META_L4PROTO, false, vec![p]);
                    self.l4proto = Some(p);
                }
                Ok(())
            }
            Field::Port { proto: None, .. } => {
                Err("`th` ports outside a named-port lookup are not encoded".into())
            }
            Field::IcmpType { v6 } | Field::IcmpCode { v6 } => {
                let want = if v6 { 58 } else { 1 };
                if self.l4proto == Some(want) {
                    Ok(())
                } else {
                    Err("icmp fields without an explicit `meta l4proto` are not encoded".into())
                }
            }
            _ => Ok(()),
        }
    }

    fn item(&mut self, item: &Item) -> Result<(), String> {
        match item {
            Item::Match {
                field,
                negate,
                values,
            } => self.field(*field, *negate, values),
            Item::Mark {
                mask,
                value,
                negate,
            } => self.mark_match(*mask, *value, *negate),
            Item::MarkOr(bits) => {
                self.mark_set(!bits, *bits);
                Ok(())
            }
            Item::MarkAnd(bits) => {
                self.mark_set(*bits, 0);
                Ok(())
            }
            Item::Vmap { field, map } => {
                let key = match field {
                    Field::Iifname => META_IIFNAME,
                    Field::Oifname => META_OIFNAME,
                    _ => return Err("a vmap on a field other than an interface name".into()),
                };
                self.push(Expr::Meta { key, reg: REG1 });
                self.push(Expr::Lookup {
                    set: SetRef::Named(map.clone()),
                    map: true,
                    inv: false,
                });
                Ok(())
            }
            Item::Limit(text) => self.limit(text),
            Item::Counter => {
                self.push(Expr::Counter);
                Ok(())
            }
            Item::Log {
                prefix,
                level,
                group,
            } => self.log(prefix, level.as_deref(), group.as_deref()),
            Item::Notrack => {
                self.push(Expr::Notrack);
                Ok(())
            }
            Item::Comment(c) => {
                if c.len() > 127 {
                    // The kernel's user data holds at most 128 bytes with the NUL.
                    return Err(format!("a comment of {} bytes", c.len()));
                }
                self.comment = Some(c.clone());
                Ok(())
            }
            Item::Verdict(v) => self.verdict(v),
        }
    }

    /// `meta mark & MASK [!=|==] VALUE`.
    fn mark_match(&mut self, mask: u32, value: u32, negate: bool) -> Result<(), String> {
        if mask == u32::MAX {
            return Err("a mark match without a mask".into());
        }
        self.push(Expr::Meta {
            key: META_MARK,
            reg: REG1,
        });
        self.push(Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.push(Expr::Cmp {
            op: op(negate),
            data: value.to_ne_bytes().to_vec(),
        });
        Ok(())
    }

    fn mark_set(&mut self, mask: u32, xor: u32) {
        self.push(Expr::Meta {
            key: META_MARK,
            reg: REG1,
        });
        self.push(Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: xor.to_ne_bytes().to_vec(),
        });
        self.push(Expr::MetaSet { key: META_MARK });
    }

    fn verdict(&mut self, v: &Verdict) -> Result<(), String> {
        let (code, chain) = match v {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c.clone())),
            Verdict::Goto(c) => (NFT_GOTO, Some(c.clone())),
            Verdict::Reject => {
                if self.nfproto.is_some() {
                    // nft then picks an ICMP or ICMPv6 code instead.
                    return Err("`reject` after an address match is not encoded".into());
                }
                self.push(Expr::Reject);
                return Ok(());
            }
        };
        self.push(Expr::Immediate { code, chain });
        Ok(())
    }

    fn limit(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("limit `{text}`");
        let (rate, rest) = text.split_once(' ').unwrap_or((text, ""));
        let (n, unit) = rate.split_once('/').ok_or_else(bad)?;
        let burst = rest
            .strip_prefix("burst ")
            .and_then(|b| b.parse().ok())
            .ok_or_else(bad)?;
        let unit = match unit {
            "second" => 1,
            "minute" => 60,
            "hour" => 3600,
            "day" => 86400,
            "week" => 604800,
            _ => return Err(bad()),
        };
        self.push(Expr::Limit {
            rate: n.parse().map_err(|_| bad())?,
            unit,
            burst,
        });
        Ok(())
    }

    fn log(
        &mut self,
        prefix: &str,
        level: Option<&str>,
        group: Option<&str>,
    ) -> Result<(), String> {
        let level = match level {
            None => None,
            Some(l) => Some(
                [
                    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit",
                ]
                .iter()
                .position(|n| *n == l)
                .ok_or_else(|| format!("log level `{l}`"))? as u32,
            ),
        };
        let group = match group {
            None => None,
            Some(g) => Some(g.parse().map_err(|_| format!("log group `{g}`"))?),
        };
        if level.is_some() && group.is_some() {
            return Err("a log with both level and group".into());
        }
        self.push(Expr::Log {
            prefix: prefix.to_string(),
            level,
            group,
        });
        Ok(())
    }

    fn field(&mut self, field: Field, negate: bool, values: &Values) -> Result<(), String> {
        match field {
            Field::NfProto => {
                let v = match single(values)? {
                    "ipv4" => 2,
                    "ipv6" => 10,
                    other => return Err(format!("meta nfproto `{other}`")),
                };
                self.meta_cmp(META_NFPROTO, negate, vec![v]);
                if !negate {
                    self.nfproto = Some(v);
                }
                Ok(())
            }
            Field::L4Proto => {
                let w = single(values)?;
                let v = l4proto_number(w).ok_or_else(|| format!("meta l4proto `{w}`"))?;
                self.meta_cmp(META_L4PROTO, negate, vec![v]);
                if !negate {
                    self.l4proto = Some(v);
                }
                Ok(())
            }
            Field::Iifname | Field::Oifname => {
                let key = if field == Field::Iifname {
                    META_IIFNAME
                } else {
                    META_OIFNAME
                };
                let data = ifname(single(values)?)?;
                self.meta_cmp(key, negate, data);
                Ok(())
            }
            Field::CtState => {
                let Values::List(names) = values else {
                    return Err("ct state against a set".into());
                };
                if negate {
                    return Err("a negated ct state".into());
                }
                self.push(Expr::CtState);
                self.push(Expr::Bitwise {
                    mask: ct_state_bits(names)?.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                self.push(Expr::Cmp {
                    op: CMP_NEQ,
                    data: vec![0; 4],
                });
                Ok(())
            }
            Field::NamedPort { v6, src } => self.named_port(v6, src, negate, values),
            Field::Addr { v6, .. } => {
                self.need_nfproto(v6);
                self.header_match(field, negate, values)
            }
            Field::Port { .. } | Field::IcmpType { .. } | Field::IcmpCode { .. } => {
                self.need_l4proto(field)?;
                self.header_match(field, negate, values)
            }
        }
    }

    /// `ip daddr . meta l4proto . th dport @set`.
    fn named_port(
        &mut self,
        v6: bool,
        src: bool,
        negate: bool,
        values: &Values,
    ) -> Result<(), String> {
        let Values::Named(set) = values else {
            return Err("a named-port match against literals".into());
        };
        self.need_nfproto(v6);
        let addr = header(Field::Addr { v6, src }).expect("an address header");
        // 4-byte register slots: the address, then protocol and port.
        let (proto_reg, port_reg) = if v6 { (2, 13) } else { (9, 10) };
        self.push(Expr::Payload {
            base: addr.base,
            offset: addr.offset,
            len: addr.len,
            reg: REG1,
        });
        self.push(Expr::Meta {
            key: META_L4PROTO,
            reg: proto_reg,
        });
        self.push(Expr::Payload {
            base: BASE_TRANSPORT,
            offset: if src { 0 } else { 2 },
            len: 2,
            reg: port_reg,
        });
        self.push(Expr::Lookup {
            set: SetRef::Named(set.clone()),
            map: false,
            inv: negate,
        });
        Ok(())
    }

    fn header_match(&mut self, field: Field, negate: bool, values: &Values) -> Result<(), String> {
        let h = header(field).ok_or("a field without a header position")?;
        let load = |len| Expr::Payload {
            base: h.base,
            offset: h.offset,
            len,
            reg: REG1,
        };
        let list = match values {
            Values::Named(set) => {
                self.push(load(h.len));
                self.push(Expr::Lookup {
                    set: SetRef::Named(set.clone()),
                    map: false,
                    inv: negate,
                });
                return Ok(());
            }
            Values::List(list) => list,
        };
        if list.len() > 1 {
            return self.anon_lookup(field, &h, negate, list);
        }
        let text = single(values)?;
        match literal(field, text)? {
            Literal::Exact(data) => {
                self.push(load(h.len));
                self.push(Expr::Cmp {
                    op: op(negate),
                    data,
                });
            }
            Literal::Range(from, to) => {
                self.push(load(h.len));
                if negate {
                    self.push(Expr::Range {
                        op: CMP_NEQ,
                        from,
                        to,
                    });
                } else {
                    self.push(Expr::Cmp {
                        op: CMP_GTE,
                        data: from,
                    });
                    self.push(Expr::Cmp {
                        op: CMP_LTE,
                        data: to,
                    });
                }
            }
            Literal::Prefix(net, plen) => self.prefix(&h, negate, net, plen, text)?,
        }
        Ok(())
    }

    /// `FIELD [!=] { a, b, … }`: a lookup in an anonymous constant set.
    fn anon_lookup(
        &mut self,
        field: Field,
        h: &Header,
        negate: bool,
        list: &[String],
    ) -> Result<(), String> {
        let keys = list
            .iter()
            .map(|t| match literal(field, t)? {
                Literal::Exact(k) => Ok(k),
                _ => Err(format!("`{t}`: anonymous interval sets are not encoded")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let key_type = h.key_type.ok_or("an anonymous set of this field")?;
        self.anon.push(AnonSet {
            key_type,
            key_len: h.len,
            typeof_desc: h.typeof_desc,
            keys,
        });
        self.push(Expr::Payload {
            base: h.base,
            offset: h.offset,
            len: h.len,
            reg: REG1,
        });
        self.push(Expr::Lookup {
            set: SetRef::Anon(self.anon.len() - 1),
            map: false,
            inv: negate,
        });
        Ok(())
    }

    /// A prefix: a shorter load when it ends on a byte, else a mask.
    fn prefix(
        &mut self,
        h: &Header,
        negate: bool,
        mut net: Vec<u8>,
        plen: u32,
        text: &str,
    ) -> Result<(), String> {
        let bits = h.len * 8;
        if plen == 0 || plen > bits {
            return Err(format!("prefix `{text}`"));
        }
        let mask: Vec<u8> = (0..h.len)
            .map(|i| {
                let from = i * 8;
                let ones = plen.saturating_sub(from).min(8);
                (0xffu16 << (8 - ones)) as u8
            })
            .collect();
        net.iter_mut().zip(&mask).for_each(|(b, m)| *b &= m);
        let load = |len| Expr::Payload {
            base: h.base,
            offset: h.offset,
            len,
            reg: REG1,
        };
        if plen.is_multiple_of(8) {
            let len = plen / 8;
            self.push(load(len));
            net.truncate(len as usize);
        } else {
            self.push(load(h.len));
            self.push(Expr::Bitwise {
                mask,
                xor: vec![0; h.len as usize],
            });
        }
        self.push(Expr::Cmp {
            op: op(negate),
            data: net,
        });
        Ok(())
    }
}

/// nft merges two equality matches of adjacent header bytes into one load
/// when they fit in four bytes (`udp sport 1 udp dport 2`, `icmpv6 type
/// 128 icmpv6 code 0`).
fn merge_adjacent(exprs: &mut Vec<Expr>) {
    let mut i = 0;
    while i + 3 < exprs.len() {
        let merged = match &exprs[i..i + 4] {
            [
                Expr::Payload {
                    base: b1,
                    offset: o1,
                    len: l1,
                    reg: REG1,
                },
                Expr::Cmp {
                    op: CMP_EQ,
                    data: d1,
                },
                Expr::Payload {
                    base: b2,
                    offset: o2,
                    len: l2,
                    reg: REG1,
                },
                Expr::Cmp {
                    op: CMP_EQ,
                    data: d2,
                },
            ] if b1 == b2
                && o1 + l1 == *o2
                && l1 + l2 <= 4
                && d1.len() == *l1 as usize
                && d2.len() == *l2 as usize =>
            {
                Some((
                    Expr::Payload {
                        base: *b1,
                        offset: *o1,
                        len: l1 + l2,
                        reg: REG1,
                    },
                    Expr::Cmp {
                        op: CMP_EQ,
                        data: [d1.as_slice(), d2.as_slice()].concat(),
                    },
                ))
            }
            _ => None,
        };
        match merged {
            Some((load, cmp)) => {
                exprs.splice(i..i + 4, [load, cmp]);
            }
            None => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exprs(matches: &str, action: &str) -> Vec<Expr> {
        encode(&Rule::new(matches, action, "t"), "c").unwrap().exprs
    }

    fn payload(base: u32, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            reg: REG1,
        }
    }

    fn cmp(op: u32, data: &[u8]) -> Expr {
        Expr::Cmp {
            op,
            data: data.to_vec(),
        }
    }

    fn meta(key: u32) -> Expr {
        Expr::Meta { key, reg: REG1 }
    }

    #[test]
    fn implicit_dependencies_come_once_before_the_first_match_that_needs_them() {
        let e = exprs("tcp dport 6443 ip saddr 198.18.0.0/16", "accept");
        assert_eq!(
            e,
            vec![
                meta(META_L4PROTO),
                cmp(CMP_EQ, &[6]),
                payload(BASE_TRANSPORT, 2, 2),
                cmp(CMP_EQ, &[0x19, 0x2b]),
                meta(META_NFPROTO),
                cmp(CMP_EQ, &[2]),
                payload(BASE_NETWORK, 12, 2),
                cmp(CMP_EQ, &[198, 18]),
                Expr::Counter,
                Expr::Immediate {
                    code: NF_ACCEPT,
                    chain: None
                },
            ]
        );
        // An explicit protocol stands in for the implicit one.
        let e = exprs(
            "meta nfproto ipv6 meta l4proto tcp ip6 saddr @s tcp dport 80",
            "drop",
        );
        assert_eq!(e.iter().filter(|x| **x == meta(META_NFPROTO)).count(), 1);
        assert_eq!(e.iter().filter(|x| **x == meta(META_L4PROTO)).count(), 1);
    }

    #[test]
    fn prefixes_ranges_and_negations_encode_as_nft_does() {
        // A prefix off a byte boundary is masked; a negated range is one expression.
        let e = exprs("ip saddr != 198.18.0.0/15", "drop");
        assert_eq!(
            e[2..5],
            [
                payload(BASE_NETWORK, 12, 4),
                Expr::Bitwise {
                    mask: vec![255, 254, 0, 0],
                    xor: vec![0; 4]
                },
                cmp(CMP_NEQ, &[198, 18, 0, 0]),
            ]
        );
        let e = exprs("meta l4proto udp udp dport != 50-61", "drop");
        assert_eq!(
            e[3],
            Expr::Range {
                op: CMP_NEQ,
                from: vec![0, 50],
                to: vec![0, 61]
            }
        );
        let e = exprs("meta l4proto tcp tcp dport 79-81", "drop");
        assert_eq!(e[3..5], [cmp(CMP_GTE, &[0, 79]), cmp(CMP_LTE, &[0, 81])]);
    }

    #[test]
    fn adjacent_equalities_merge_into_one_load() {
        let e = exprs(
            "meta l4proto ipv6-icmp icmpv6 type 128 icmpv6 code 0",
            "accept",
        );
        assert_eq!(
            e[2..4],
            [payload(BASE_TRANSPORT, 0, 2), cmp(CMP_EQ, &[128, 0])]
        );
        let e = exprs("meta l4proto icmp icmp type 3 icmp code != 4", "drop");
        assert_eq!(e[2..6].len(), 4, "a negation is not merged: {e:?}");
        assert_eq!(e[4], payload(BASE_TRANSPORT, 1, 1));
    }

    #[test]
    fn marks_ct_state_vmaps_interfaces_and_anonymous_sets() {
        let e = exprs("ct state established,related", "accept");
        assert_eq!(
            e[1],
            Expr::Bitwise {
                mask: 6u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4]
            }
        );
        let e = exprs("", "meta mark set meta mark | 0x10000 return");
        assert_eq!(
            e[2],
            Expr::Bitwise {
                mask: (!0x10000u32).to_ne_bytes().to_vec(),
                xor: 0x10000u32.to_ne_bytes().to_vec()
            }
        );
        assert_eq!(e[3], Expr::MetaSet { key: META_MARK });
        let e = exprs("oifname \"cali*\"", "return");
        assert_eq!(e[1], cmp(CMP_EQ, b"cali"));
        let e = exprs("iifname \"lo\"", "return");
        assert_eq!(e[1], cmp(CMP_EQ, b"lo\0\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        let r = encode(
            &Rule::new(
                "meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, 135 }",
                "accept",
                "",
            ),
            "c",
        )
        .unwrap();
        assert_eq!(r.anon.len(), 1);
        assert_eq!(r.anon[0].keys, vec![vec![133], vec![135]]);
        assert_eq!(r.anon[0].key_type, 29);
    }

    #[test]
    fn the_comment_is_a_udata_tlv_and_the_rule_names_its_chain() {
        let rule = Rule::new("", "drop", "note");
        let r = encode(&rule, "c").unwrap();
        let a = r.attributes("tortie", "c", 1).0;
        let comment = format!("{};note", rule.hash("c"));
        let mut tlv = vec![0u8, comment.len() as u8 + 1];
        tlv.extend_from_slice(comment.as_bytes());
        tlv.push(0);
        assert!(
            a.windows(tlv.len()).any(|w| w == tlv),
            "comment TLV in {a:?}"
        );
        assert!(a.windows(2).any(|w| w == b"c\0"));
    }

    #[test]
    fn what_nft_would_read_differently_is_refused_by_name() {
        for (m, a) in [
            ("ip saddr 198.18.0.1", "reject"),
            ("th dport 80", "accept"),
            ("icmp type 8", "accept"),
            ("tcp dport { 80, 8000-8080 }", "accept"),
            ("ip saddr 0.0.0.0/0", "accept"),
            ("tcp flags syn", "accept"),
        ] {
            let err = encode(&Rule::new(m, a, ""), "chain-x").unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, NftError::Unencodable { .. }), "{text}");
            assert!(text.contains("chain-x") && text.contains(m), "{text}");
        }
        // 127 characters of a note can be more bytes than the kernel keeps.
        let long = Rule::new("", "accept", "é".repeat(100));
        let err = encode(&long, "chain-x").unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
        assert!(encode(&Rule::new("", "accept", "e".repeat(200)), "c").is_ok());
    }
}
