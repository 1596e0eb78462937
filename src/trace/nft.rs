//! The subset of nft rule syntax tortie renders, parsed into items the
//! evaluator runs in order. Anything outside that subset is an error, never
//! a silent match or miss.

use std::net::IpAddr;

use ipnet::IpNet;

/// A rule that could not be parsed: its text and what was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot evaluate nft rule `{rule}`: {problem}")]
pub struct ParseError {
    pub rule: String,
    pub problem: String,
}

/// One value of a match: a literal, an anonymous set or a named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    List(Vec<String>),
    Named(String),
}

/// A packet field a match or lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Iifname,
    Oifname,
    NfProto,
    L4Proto,
    /// `ip saddr` / `ip6 daddr`: address of family (v6), side (src).
    Addr {
        v6: bool,
        src: bool,
    },
    /// `tcp dport`, `th sport`: the protocol the header must be, if any.
    Port {
        proto: Option<u8>,
        src: bool,
    },
    IcmpType {
        v6: bool,
    },
    IcmpCode {
        v6: bool,
    },
    CtState,
    /// `ip daddr . meta l4proto . th dport`.
    NamedPort {
        v6: bool,
        src: bool,
    },
}

/// One item of a rule, in the order nft runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `FIELD [!=] VALUES`.
    Match {
        field: Field,
        negate: bool,
        values: Values,
    },
    /// `meta mark & MASK == VALUE` (`!=` when `negate`).
    Mark {
        mask: u32,
        value: u32,
        negate: bool,
    },
    /// `iifname vmap @map` / `oifname vmap @map`.
    Vmap {
        field: Field,
        map: String,
    },
    /// `limit rate …`: assumed under the limit (it never decides a verdict
    /// in tortie's rules: only log rules carry it).
    Limit(String),
    Counter,
    /// `meta mark set meta mark | BITS`.
    MarkOr(u32),
    /// `meta mark set meta mark & BITS`.
    MarkAnd(u32),
    /// `log prefix "…" [level L] [group G]`.
    Log {
        prefix: String,
        level: Option<String>,
        group: Option<String>,
    },
    Notrack,
    Comment(String),
    Verdict(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// Parses `goto CHAIN` etc. (the verdict text of a map element too).
    pub fn parse(text: &str) -> Option<Verdict> {
        let mut w = text.split_whitespace();
        let v = match (w.next()?, w.next()) {
            ("accept", None) => Verdict::Accept,
            ("drop", None) => Verdict::Drop,
            ("reject", None) => Verdict::Reject,
            ("return", None) => Verdict::Return,
            ("jump", Some(c)) => Verdict::Jump(c.to_string()),
            ("goto", Some(c)) => Verdict::Goto(c.to_string()),
            _ => return None,
        };
        w.next().is_none().then_some(v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                flush(&mut word, &mut out);
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(Tok::Str(s));
            }
            '{' | '}' | ',' => {
                flush(&mut word, &mut out);
                out.push(match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    _ => Tok::Comma,
                });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn word(&mut self) -> Result<String, String> {
        match self.toks.get(self.at) {
            Some(Tok::Word(w)) => {
                self.at += 1;
                Ok(w.clone())
            }
            other => Err(format!("expected a word, found {other:?}")),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        match self.toks.get(self.at) {
            Some(Tok::Str(s)) => {
                self.at += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected a quoted string, found {other:?}")),
        }
    }
    fn expect(&mut self, w: &str) -> Result<(), String> {
        let got = self.word()?;
        if got == w {
            Ok(())
        } else {
            Err(format!("expected `{w}`, found `{got}`"))
        }
    }
    fn eat(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(x)) if x == w) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// `[!=] VALUE`, `[!=] @set`, `[!=] { a, b }`, or a bare comma list.
    fn values(&mut self) -> Result<(bool, Values), String> {
        let negate = self.eat("!=");
        if self.peek() == Some(&Tok::Open) {
            self.at += 1;
            let mut list = Vec::new();
            loop {
                match self.toks.get(self.at) {
                    Some(Tok::Close) => {
                        self.at += 1;
                        break;
                    }
                    Some(Tok::Comma) => self.at += 1,
                    Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                        list.push(w.clone());
                        self.at += 1;
                    }
                    other => return Err(format!("unexpected {other:?} in a set")),
                }
            }
            return Ok((negate, Values::List(list)));
        }
        let first = match self.toks.get(self.at) {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => w.clone(),
            other => return Err(format!("expected a value, found {other:?}")),
        };
        self.at += 1;
        if let Some(set) = first.strip_prefix('@') {
            return Ok((negate, Values::Named(set.to_string())));
        }
        let mut list = vec![first];
        while self.peek() == Some(&Tok::Comma) {
            self.at += 1;
            list.push(self.word()?);
        }
        Ok((negate, Values::List(list)))
    }

    fn field_match(&mut self, field: Field) -> Result<Item, String> {
        let (negate, values) = self.values()?;
        Ok(Item::Match {
            field,
            negate,
            values,
        })
    }

    fn hex(&mut self) -> Result<u32, String> {
        let w = self.word()?;
        parse_u32(&w).ok_or_else(|| format!("`{w}` is not a number"))
    }

    /// Everything starting with `meta`.
    fn meta(&mut self) -> Result<Item, String> {
        match self.word()?.as_str() {
            "nfproto" => self.field_match(Field::NfProto),
            "l4proto" => self.field_match(Field::L4Proto),
            "mark" => {
                if self.eat("set") {
                    self.expect("meta")?;
                    self.expect("mark")?;
                    let op = self.word()?;
                    let bits = self.hex()?;
                    return match op.as_str() {
                        "|" => Ok(Item::MarkOr(bits)),
                        "&" => Ok(Item::MarkAnd(bits)),
                        _ => Err(format!("unknown mark operator `{op}`")),
                    };
                }
                self.expect("&")?;
                let mask = self.hex()?;
                let negate = match self.word()?.as_str() {
                    "==" => false,
                    "!=" => true,
                    op => return Err(format!("expected `==` or `!=`, found `{op}`")),
                };
                let value = self.hex()?;
                Ok(Item::Mark {
                    mask,
                    value,
                    negate,
                })
            }
            other => Err(format!("unknown meta key `{other}`")),
        }
    }

    /// `ip saddr …`, or `ip daddr . meta l4proto . th dport …`.
    fn addr(&mut self, v6: bool) -> Result<Item, String> {
        let side = self.word()?;
        let src = match side.as_str() {
            "saddr" => true,
            "daddr" => false,
            other => return Err(format!("unknown address field `{other}`")),
        };
        if self.eat(".") {
            self.expect("meta")?;
            self.expect("l4proto")?;
            self.expect(".")?;
            self.expect("th")?;
            let port = self.word()?;
            let psrc = match port.as_str() {
                "sport" => true,
                "dport" => false,
                other => return Err(format!("unknown port field `{other}`")),
            };
            if psrc != src {
                return Err("address and port of different sides".into());
            }
            return self.field_match(Field::NamedPort { v6, src });
        }
        self.field_match(Field::Addr { v6, src })
    }

    fn port(&mut self, proto: Option<u8>) -> Result<Item, String> {
        let src = match self.word()?.as_str() {
            "sport" => true,
            "dport" => false,
            other => return Err(format!("unknown port field `{other}`")),
        };
        self.field_match(Field::Port { proto, src })
    }

    fn icmp(&mut self, v6: bool) -> Result<Item, String> {
        match self.word()?.as_str() {
            "type" => self.field_match(Field::IcmpType { v6 }),
            "code" => self.field_match(Field::IcmpCode { v6 }),
            other => Err(format!("unknown icmp field `{other}`")),
        }
    }

    fn ifname(&mut self, field: Field) -> Result<Item, String> {
        if self.eat("vmap") {
            let m = self.word()?;
            let map = m
                .strip_prefix('@')
                .ok_or_else(|| format!("vmap of `{m}`: only named maps are rendered"))?;
            return Ok(Item::Vmap {
                field,
                map: map.to_string(),
            });
        }
        self.field_match(field)
    }

    fn limit(&mut self) -> Result<Item, String> {
        self.expect("rate")?;
        let mut text = vec![self.word()?];
        if self.eat("burst") {
            text.push(format!("burst {}", self.word()?));
            self.expect("packets")?;
        }
        Ok(Item::Limit(text.join(" ")))
    }

    fn log(&mut self) -> Result<Item, String> {
        self.expect("prefix")?;
        let prefix = self.string()?;
        let level = if self.eat("level") {
            Some(self.word()?)
        } else {
            None
        };
        let group = if self.eat("group") {
            Some(self.word()?)
        } else {
            None
        };
        Ok(Item::Log {
            prefix,
            level,
            group,
        })
    }

    fn item(&mut self) -> Result<Item, String> {
        let w = self.word()?;
        let proto = |p: &str| match p {
            "tcp" => Some(6),
            "udp" => Some(17),
            "sctp" => Some(132),
            "udplite" => Some(136),
            _ => None,
        };
        match w.as_str() {
            "meta" => self.meta(),
            "ip" => self.addr(false),
            "ip6" => self.addr(true),
            "th" => self.port(None),
            p if proto(p).is_some() => self.port(proto(p)),
            "icmp" => self.icmp(false),
            "icmpv6" => self.icmp(true),
            "iifname" => self.ifname(Field::Iifname),
            "oifname" => self.ifname(Field::Oifname),
            "ct" => {
                self.expect("state")?;
                self.field_match(Field::CtState)
            }
            "limit" => self.limit(),
            "counter" => Ok(Item::Counter),
            "log" => self.log(),
            "notrack" => Ok(Item::Notrack),
            "comment" => Ok(Item::Comment(self.string()?)),
            "accept" => Ok(Item::Verdict(Verdict::Accept)),
            "drop" => Ok(Item::Verdict(Verdict::Drop)),
            "reject" => Ok(Item::Verdict(Verdict::Reject)),
            "return" => Ok(Item::Verdict(Verdict::Return)),
            "jump" => Ok(Item::Verdict(Verdict::Jump(self.word()?))),
            "goto" => Ok(Item::Verdict(Verdict::Goto(self.word()?))),
            other => Err(format!("unknown expression or statement `{other}`")),
        }
    }
}

/// Parses one rule as rendered (`Rule::render`): matches, statements and
/// at most one verdict, which must come last.
pub fn parse_rule(text: &str) -> Result<Vec<Item>, ParseError> {
    let err = |problem: String| ParseError {
        rule: text.to_string(),
        problem,
    };
    let toks = tokenize(text).map_err(err)?;
    let mut p = Parser { toks, at: 0 };
    let mut items = Vec::new();
    while p.peek().is_some() {
        let item = p.item().map_err(err)?;
        let verdict_before = items
            .iter()
            .any(|i| matches!(i, Item::Verdict(_) | Item::Vmap { .. }));
        if verdict_before && !matches!(item, Item::Comment(_) | Item::Counter) {
            return Err(err("an item after the verdict".into()));
        }
        items.push(item);
    }
    Ok(items)
}

pub fn parse_u32(w: &str) -> Option<u32> {
    match w.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => w.parse().ok(),
    }
}

/// An address element: `198.18.0.5`, `198.18.0.0/24` or `a-b`.
pub fn addr_in(element: &str, a: IpAddr) -> Result<bool, String> {
    if let Some((lo, hi)) = element.split_once('-') {
        let lo: IpAddr = lo.parse().map_err(|_| format!("bad address `{lo}`"))?;
        let hi: IpAddr = hi.parse().map_err(|_| format!("bad address `{hi}`"))?;
        return Ok(lo <= a && a <= hi && lo.is_ipv4() == a.is_ipv4());
    }
    if element.contains('/') {
        let n: IpNet = element
            .parse()
            .map_err(|_| format!("bad network `{element}`"))?;
        return Ok(n.contains(&a));
    }
    let e: IpAddr = element
        .parse()
        .map_err(|_| format!("bad address `{element}`"))?;
    Ok(e == a)
}

/// A number or range element: `80` or `30000-32767`.
pub fn num_in(element: &str, v: u32) -> Result<bool, String> {
    let parse = |s: &str| parse_u32(s).ok_or_else(|| format!("bad number `{s}`"));
    match element.split_once('-') {
        Some((lo, hi)) => Ok(parse(lo)? <= v && v <= parse(hi)?),
        None => Ok(parse(element)? == v),
    }
}

/// The number of a protocol name nft accepts after `meta l4proto`.
pub fn l4proto_number(w: &str) -> Option<u8> {
    crate::ipproto::number(w).or_else(|| w.parse().ok())
}

/// ICMP and ICMPv6 type names tortie renders (numbers pass through).
pub fn icmp_type_number(w: &str) -> Option<u8> {
    Some(match w {
        "echo-reply" => 0,
        "destination-unreachable" => 3,
        "echo-request" => 8,
        "mld-listener-query" => 130,
        "mld-listener-report" => 131,
        "mld-listener-done" => 132,
        "nd-router-solicit" => 133,
        "nd-router-advert" => 134,
        "nd-neighbor-solicit" => 135,
        "nd-neighbor-advert" => 136,
        n => return n.parse().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_policy_rule_in_order() {
        let items = parse_rule(
            "meta l4proto tcp ip saddr @s4-x tcp dport { 80, 443 } counter meta mark set meta mark | 0x10000 return comment \"ab;gnp/x ingress#0 Allow\"",
        )
        .unwrap();
        assert_eq!(items.len(), 7);
        assert_eq!(
            items[1],
            Item::Match {
                field: Field::Addr {
                    v6: false,
                    src: true
                },
                negate: false,
                values: Values::Named("s4-x".into())
            }
        );
        assert_eq!(
            items[2],
            Item::Match {
                field: Field::Port {
                    proto: Some(6),
                    src: false
                },
                negate: false,
                values: Values::List(vec!["80".into(), "443".into()])
            }
        );
        assert_eq!(items[4], Item::MarkOr(0x10000));
        assert_eq!(items[5], Item::Verdict(Verdict::Return));
    }

    #[test]
    fn parses_marks_ct_state_vmaps_and_named_ports() {
        let items = parse_rule("meta mark & 0x20000 == 0 counter jump filter-pi-gnp/a").unwrap();
        assert_eq!(
            items[0],
            Item::Mark {
                mask: 0x20000,
                value: 0,
                negate: false
            }
        );
        let ne = parse_rule("meta mark & 0xffe00000 != 0 counter return").unwrap();
        assert_eq!(
            ne[0],
            Item::Mark {
                mask: 0xffe00000,
                value: 0,
                negate: true
            }
        );
        let ct = parse_rule("ct state established,related counter accept").unwrap();
        assert_eq!(
            ct[0],
            Item::Match {
                field: Field::CtState,
                negate: false,
                values: Values::List(vec!["established".into(), "related".into()])
            }
        );
        let v = parse_rule("iifname vmap @filter-from-wl counter").unwrap();
        assert!(matches!(&v[0], Item::Vmap { map, .. } if map == "filter-from-wl"));
        let np = parse_rule("ip6 daddr . meta l4proto . th dport != @np6-x counter drop").unwrap();
        assert!(matches!(
            np[0],
            Item::Match {
                field: Field::NamedPort {
                    v6: true,
                    src: false
                },
                negate: true,
                ..
            }
        ));
    }

    #[test]
    fn unknown_syntax_is_an_error() {
        for bad in [
            "ip dscp 4 counter accept",
            "meta skuid 0 counter accept",
            "counter accept drop",
            "tcp flags syn counter accept",
            "log prefix \"unterminated counter",
            "counter queue num 3",
        ] {
            let e = parse_rule(bad).expect_err(bad);
            assert_eq!(e.rule, bad);
        }
    }

    #[test]
    fn elements_match_addresses_and_ranges() {
        let a: IpAddr = "198.18.0.5".parse().unwrap();
        assert!(addr_in("198.18.0.0/24", a).unwrap());
        assert!(addr_in("198.18.0.1-198.18.0.9", a).unwrap());
        assert!(!addr_in("198.18.0.6", a).unwrap());
        assert!(!addr_in("fd74:6f72::/32", a).unwrap());
        assert!(num_in("30000-32767", 30080).unwrap());
        assert!(!num_in("80", 81).unwrap());
        assert!(addr_in("bogus", a).is_err());
    }
}
