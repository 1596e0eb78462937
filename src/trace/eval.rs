//! Runs one packet through the compiled ruleset: the base chains of each
//! hook on its path in priority order, jumps, gotos, verdict maps, the mark
//! register and notrack, exactly as the rule text says. It records every
//! rule that matched, which the attribution in `stages` reads.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::nft::{self, Field, Item, ParseError, Values, Verdict};
use crate::compile::ir::{Ruleset, SetType};

/// What made evaluation impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("rule {index} of chain {chain}: {problem}")]
    Rule {
        chain: String,
        index: usize,
        problem: String,
    },
    #[error("chain {0} is jumped to but not in the ruleset")]
    NoChain(String),
    #[error("evaluation went deeper than {0} chains or ran more than {1} rules: a jump loop?")]
    Runaway(usize, usize),
}

/// The packet as the hooks see it. Interfaces are `None` where the hook
/// has none (no input interface for locally sent packets, no output
/// interface for packets to the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp: Option<(u8, u8)>,
    /// A destination NAT done by the node outside tortie's table (a
    /// kube-proxy NodePort) between prerouting and routing.
    pub dnat: Option<Dnat>,
}

/// The destination after a foreign DNAT, and the interface it routes to
/// (`None`: the host itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub daddr: IpAddr,
    pub dport: Option<u16>,
    pub oif: Option<String>,
}

impl Packet {
    pub fn v6(&self) -> bool {
        self.saddr.is_ipv6()
    }
}

/// Every rule parsed once, per chain.
pub struct Parsed<'a> {
    pub ruleset: &'a Ruleset,
    pub chains: BTreeMap<&'a str, Vec<Vec<Item>>>,
}

impl<'a> Parsed<'a> {
    /// Parses every rule of every chain, as rendered for the kernel.
    pub fn new(ruleset: &'a Ruleset) -> Result<Parsed<'a>, ParseError> {
        let mut chains = BTreeMap::new();
        for (name, chain) in &ruleset.chains {
            let rules = chain
                .rules
                .iter()
                .map(|r| nft::parse_rule(&r.render(name)))
                .collect::<Result<Vec<_>, _>>()?;
            chains.insert(name.as_str(), rules);
        }
        Ok(Parsed { ruleset, chains })
    }
}

/// One rule that matched in full (its verdict, if any, was taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub chain: String,
    pub index: usize,
    /// The rule's note in the IR (policy, tier, rule index…).
    pub note: String,
    pub verdict: Option<Verdict>,
    /// The rule logged the packet.
    pub logged: bool,
    /// The mark register after the rule ran.
    pub mark: u32,
}

/// What happened at one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub hook: &'static str,
    /// The packet as this hook saw it (after a DNAT, for later hooks).
    pub packet: Packet,
    pub chain: String,
    pub accepted: bool,
    pub hits: Vec<Hit>,
}

/// Whether the packet got through, and the hits at every hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub allowed: bool,
    pub hooks: Vec<HookRun>,
    /// A `notrack` ran: conntrack never saw the packet.
    pub untracked: bool,
}

const MAX_DEPTH: usize = 64;
const MAX_STEPS: usize = 100_000;

enum Flow {
    Continue,
    Accept,
    Drop,
}

struct Machine<'p, 'a> {
    parsed: &'p Parsed<'a>,
    pkt: Packet,
    mark: u32,
    untracked: bool,
    /// The conntrack state of a tracked packet.
    ct: &'static str,
    steps: usize,
    hits: Vec<Hit>,
}

/// The hooks a packet crosses, in order, given its interfaces (and where
/// a DNAT sends it).
pub fn hooks_for(pkt: &Packet) -> Vec<&'static str> {
    let oif = match &pkt.dnat {
        Some(d) => &d.oif,
        None => &pkt.oif,
    };
    match (&pkt.iif, oif) {
        (Some(_), Some(_)) => vec!["prerouting", "forward"],
        (Some(_), None) => vec!["prerouting", "input"],
        (None, _) => vec!["output"],
    }
}

/// Runs `pkt` (conntrack state NEW) through every hook on its path.
pub fn run(parsed: &Parsed<'_>, pkt: &Packet) -> Result<Run, EvalError> {
    run_in_state(parsed, pkt, "new")
}

/// As [`run`], the packet in conntrack state `ct` (`new`, `invalid`…)
/// unless a `notrack` untracks it.
pub fn run_in_state(parsed: &Parsed<'_>, pkt: &Packet, ct: &'static str) -> Result<Run, EvalError> {
    let mut m = Machine {
        parsed,
        pkt: pkt.clone(),
        mark: 0,
        untracked: false,
        ct,
        steps: 0,
        hits: Vec::new(),
    };
    let mut hooks = Vec::new();
    for hook in hooks_for(pkt) {
        if hook != "prerouting"
            && let Some(d) = m.pkt.dnat.take()
        {
            m.pkt.daddr = d.daddr;
            m.pkt.dport = d.dport.or(m.pkt.dport);
            m.pkt.oif = d.oif;
        }
        let mut bases: Vec<_> = parsed
            .ruleset
            .chains
            .values()
            .filter(|c| c.hook.is_some_and(|h| h.hook == hook))
            .collect();
        bases.sort_by_key(|c| c.hook.map(|h| h.priority));
        for base in bases {
            let flow = m.chain(&base.name, 0)?;
            let accepted = !matches!(flow, Flow::Drop);
            hooks.push(HookRun {
                hook,
                packet: m.pkt.clone(),
                chain: base.name.clone(),
                accepted,
                hits: std::mem::take(&mut m.hits),
            });
            if !accepted {
                return Ok(Run {
                    allowed: false,
                    hooks,
                    untracked: m.untracked,
                });
            }
        }
    }
    Ok(Run {
        allowed: true,
        hooks,
        untracked: m.untracked,
    })
}

impl Machine<'_, '_> {
    fn chain(&mut self, name: &str, depth: usize) -> Result<Flow, EvalError> {
        if depth > MAX_DEPTH {
            return Err(EvalError::Runaway(MAX_DEPTH, MAX_STEPS));
        }
        let rules = self
            .parsed
            .chains
            .get(name)
            .ok_or_else(|| EvalError::NoChain(name.to_string()))?;
        for (index, items) in rules.iter().enumerate() {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(EvalError::Runaway(MAX_DEPTH, MAX_STEPS));
            }
            let at = |problem: String| EvalError::Rule {
                chain: name.to_string(),
                index,
                problem,
            };
            let Some(verdict) = self.rule(items).map_err(at)? else {
                continue;
            };
            let note = self.parsed.ruleset.chains[name].rules[index].note.clone();
            let logged = items.iter().any(|i| matches!(i, Item::Log { .. }));
            self.hits.push(Hit {
                chain: name.to_string(),
                index,
                note,
                verdict: verdict.clone(),
                logged,
                mark: self.mark,
            });
            match verdict {
                None => {}
                Some(Verdict::Accept) => return Ok(Flow::Accept),
                Some(Verdict::Drop | Verdict::Reject) => return Ok(Flow::Drop),
                Some(Verdict::Return) => return Ok(Flow::Continue),
                Some(Verdict::Jump(c)) => match self.chain(&c, depth + 1)? {
                    Flow::Continue => {}
                    other => return Ok(other),
                },
                Some(Verdict::Goto(c)) => return self.chain(&c, depth + 1),
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs one rule's items: `None` when a match failed (or a verdict map
    /// had no entry), else the verdict it ends with (`Some(None)`: none).
    fn rule(&mut self, items: &[Item]) -> Result<Option<Option<Verdict>>, String> {
        for item in items {
            match item {
                Item::Match {
                    field,
                    negate,
                    values,
                } => {
                    if !self.matches(*field, *negate, values)? {
                        return Ok(None);
                    }
                }
                Item::Mark {
                    mask,
                    value,
                    negate,
                } => {
                    if (self.mark & mask == *value) == *negate {
                        return Ok(None);
                    }
                }
                Item::Vmap { field, map } => {
                    let key = self.ifname(*field);
                    let m = self
                        .parsed
                        .ruleset
                        .maps
                        .get(map)
                        .ok_or_else(|| format!("verdict map {map} is not in the ruleset"))?;
                    let Some(v) = key.and_then(|k| m.elements.get(k)) else {
                        return Ok(None);
                    };
                    let v = Verdict::parse(v)
                        .ok_or_else(|| format!("map {map}: cannot evaluate verdict `{v}`"))?;
                    return Ok(Some(Some(v)));
                }
                Item::MarkOr(b) => self.mark |= b,
                Item::MarkAnd(b) => self.mark &= b,
                Item::Notrack => self.untracked = true,
                Item::Limit(_) | Item::Counter | Item::Log { .. } | Item::Comment(_) => {}
                Item::Verdict(v) => return Ok(Some(Some(v.clone()))),
            }
        }
        Ok(Some(None))
    }

    fn ifname(&self, field: Field) -> Option<&str> {
        match field {
            Field::Iifname => self.pkt.iif.as_deref(),
            _ => self.pkt.oif.as_deref(),
        }
    }

    /// One `FIELD [!=] VALUES` match. A field the packet does not have
    /// (a port of an ICMP packet, an IPv4 address of an IPv6 packet) fails
    /// the match whether negated or not, as nft's implicit dependencies do.
    fn matches(&self, field: Field, negate: bool, values: &Values) -> Result<bool, String> {
        let p = &self.pkt;
        let found = match field {
            Field::Iifname | Field::Oifname => {
                let Some(name) = self.ifname(field) else {
                    return Ok(false);
                };
                self.any(values, |e| Ok(ifname_matches(e, name)))?
            }
            Field::NfProto => {
                let want = if p.v6() { "ipv6" } else { "ipv4" };
                self.any(values, |e| match e {
                    "ipv4" | "ipv6" => Ok(e == want),
                    _ => Err(format!("unknown nfproto `{e}`")),
                })?
            }
            Field::L4Proto => self.any(values, |e| {
                nft::l4proto_number(e)
                    .map(|n| n == p.proto)
                    .ok_or_else(|| format!("unknown protocol `{e}`"))
            })?,
            Field::Addr { v6, src } => {
                if v6 != p.v6() {
                    return Ok(false);
                }
                let a = if src { p.saddr } else { p.daddr };
                self.any(values, |e| nft::addr_in(e, a))?
            }
            Field::Port { proto, src } => {
                let has_ports = matches!(p.proto, 6 | 17 | 132 | 136);
                if !has_ports || proto.is_some_and(|n| n != p.proto) {
                    return Ok(false);
                }
                let port = if src { p.sport } else { p.dport };
                let Some(port) = port else { return Ok(false) };
                self.any(values, |e| nft::num_in(e, u32::from(port)))?
            }
            Field::IcmpType { v6 } | Field::IcmpCode { v6 } => {
                match self.icmp_found(field, v6, values)? {
                    Some(f) => f,
                    None => return Ok(false),
                }
            }
            Field::CtState => {
                let state = if self.untracked { "untracked" } else { self.ct };
                self.any(values, |e| match e {
                    "new" | "established" | "related" | "invalid" | "untracked" => Ok(e == state),
                    _ => Err(format!("unknown ct state `{e}`")),
                })?
            }
            Field::NamedPort { v6, src } => match self.named_port_found(v6, src, values)? {
                Some(f) => f,
                None => return Ok(false),
            },
        };
        Ok(found != negate)
    }

    /// An ICMP type or code match; `None` when the packet is not ICMP of
    /// that family.
    fn icmp_found(&self, field: Field, v6: bool, values: &Values) -> Result<Option<bool>, String> {
        let p = &self.pkt;
        let Some((ty, code)) = p.icmp.filter(|_| p.proto == if v6 { 58 } else { 1 }) else {
            return Ok(None);
        };
        let is_type = matches!(field, Field::IcmpType { .. });
        let got = if is_type { ty } else { code };
        self.any(values, |e| {
            let n = if is_type {
                nft::icmp_type_number(e)
            } else {
                e.parse().ok()
            };
            n.map(|n| n == got)
                .ok_or_else(|| format!("unknown icmp value `{e}`"))
        })
        .map(Some)
    }

    /// An `addr . l4proto . port` lookup; `None` when the packet has no
    /// port or is of the other family.
    fn named_port_found(
        &self,
        v6: bool,
        src: bool,
        values: &Values,
    ) -> Result<Option<bool>, String> {
        let p = &self.pkt;
        let (a, port) = if src {
            (p.saddr, p.sport)
        } else {
            (p.daddr, p.dport)
        };
        let Some(port) = port.filter(|_| v6 == p.v6()) else {
            return Ok(None);
        };
        let want = format!("{a} . {} . {port}", p.proto);
        self.any(values, |e| Ok(e == want)).map(Some)
    }

    /// Whether any element of `values` satisfies `f`; a named set is looked
    /// up in the ruleset (and must exist).
    fn any(
        &self,
        values: &Values,
        f: impl Fn(&str) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let list: Vec<&str> = match values {
            Values::List(l) => l.iter().map(String::as_str).collect(),
            Values::Named(n) => {
                let set = self
                    .parsed
                    .ruleset
                    .sets
                    .get(n)
                    .ok_or_else(|| format!("set {n} is not in the ruleset"))?;
                if matches!(set.ty, SetType::NamedPortV4 | SetType::NamedPortV6) {
                    // Elements are rendered `addr . proto . port`; compare
                    // them normalised.
                    return Ok(set
                        .elements
                        .iter()
                        .map(|e| normalise_concat(e))
                        .any(|e| f(&e).unwrap_or(false)));
                }
                set.elements.iter().map(String::as_str).collect()
            }
        };
        for e in list {
            if f(e)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `198.18.0.5 . tcp . 80` or `198.18.0.5 . 6 . 80` as `198.18.0.5 . 6 . 80`.
fn normalise_concat(e: &str) -> String {
    let parts: Vec<&str> = e.split(" . ").map(str::trim).collect();
    if let [a, p, port] = parts[..] {
        let p = nft::l4proto_number(p).map_or_else(|| p.to_string(), |n| n.to_string());
        format!("{a} . {p} . {port}")
    } else {
        e.to_string()
    }
}

/// nft string matching: a trailing `*` matches any suffix.
fn ifname_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ir::{Chain, Hook, Rank, Rule, VerdictMap};

    fn chain(name: &str, hook: Option<&'static str>, rules: &[(&str, &str, &str)]) -> Chain {
        Chain {
            name: name.into(),
            hook: hook.map(|h| Hook {
                kind: "filter",
                hook: h,
                priority: 0,
            }),
            rank: if hook.is_some() {
                Rank::Base
            } else {
                Rank::Leaf
            },
            rules: rules
                .iter()
                .map(|(m, a, n)| Rule::new(*m, *a, *n))
                .collect(),
        }
    }

    fn pkt(dport: u16) -> Packet {
        Packet {
            iif: Some("cali1".into()),
            oif: Some("cali2".into()),
            saddr: "198.18.0.1".parse().unwrap(),
            daddr: "198.18.0.2".parse().unwrap(),
            proto: 6,
            sport: Some(40000),
            dport: Some(dport),
            icmp: None,
            dnat: None,
        }
    }

    fn table() -> Ruleset {
        let mut rs = Ruleset::default();
        for c in [
            chain(
                "filter-FORWARD",
                Some("forward"),
                &[
                    ("", "meta mark set meta mark & 0xfffcffff", ""),
                    ("oifname vmap @to", "", ""),
                    ("", "drop", "unknown"),
                ],
            ),
            chain(
                "tw",
                None,
                &[
                    ("", "jump pol", "tiers"),
                    ("meta mark & 0x10000 == 0x10000", "return", "allowed"),
                    ("", "drop", "end"),
                ],
            ),
            chain(
                "pol",
                None,
                &[
                    ("tcp dport 81", "drop", "deny 81"),
                    (
                        "meta l4proto tcp tcp dport 79-81",
                        "meta mark set meta mark | 0x10000 return",
                        "allow",
                    ),
                ],
            ),
        ] {
            rs.chains.insert(c.name.clone(), c);
        }
        rs.maps.insert(
            "to".into(),
            VerdictMap {
                name: "to".into(),
                elements: [("cali2".to_string(), "goto tw".to_string())].into(),
            },
        );
        rs
    }

    #[test]
    fn jumps_marks_and_maps_decide_like_the_kernel() {
        let rs = table();
        let parsed = Parsed::new(&rs).unwrap();
        let allowed = run(&parsed, &pkt(80)).unwrap();
        assert!(allowed.allowed);
        let notes: Vec<&str> = allowed.hooks[0]
            .hits
            .iter()
            .map(|h| h.note.as_str())
            .collect();
        assert_eq!(notes, ["", "", "tiers", "allow", "allowed"]);
        assert!(!run(&parsed, &pkt(81)).unwrap().allowed);
        assert!(!run(&parsed, &pkt(82)).unwrap().allowed);
        let mut other = pkt(80);
        other.oif = Some("cali9".into());
        let r = run(&parsed, &other).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.hooks[0].hits.last().unwrap().note, "unknown");
    }

    #[test]
    fn a_return_after_goto_resumes_the_chain_that_jumped() {
        let mut rs = Ruleset::default();
        for c in [
            chain(
                "filter-FORWARD",
                Some("forward"),
                &[
                    ("", "jump a", "to a"),
                    ("meta mark & 0x1 == 0x1", "drop", "marked"),
                ],
            ),
            chain("a", None, &[("", "goto b", ""), ("", "accept", "never")]),
            chain(
                "b",
                None,
                &[
                    ("", "meta mark set meta mark | 0x1", "mark"),
                    ("", "return", ""),
                ],
            ),
        ] {
            rs.chains.insert(c.name.clone(), c);
        }
        let parsed = Parsed::new(&rs).unwrap();
        let r = run(&parsed, &pkt(80)).unwrap();
        assert!(!r.allowed);
        let notes: Vec<&str> = r.hooks[0].hits.iter().map(|h| h.note.as_str()).collect();
        assert_eq!(notes, ["to a", "", "mark", "", "marked"]);
    }

    #[test]
    fn missing_chains_and_sets_are_errors() {
        let mut rs = table();
        rs.chains.get_mut("pol").unwrap().rules[0] = Rule::new("ip saddr @nope", "drop", "");
        let parsed = Parsed::new(&rs).unwrap();
        let e = run(&parsed, &pkt(80)).unwrap_err();
        assert!(e.to_string().contains("set nope"), "{e}");
        rs.chains.get_mut("tw").unwrap().rules[0] = Rule::new("", "jump gone", "");
        let parsed = Parsed::new(&rs).unwrap();
        assert_eq!(
            run(&parsed, &pkt(80)).unwrap_err(),
            EvalError::NoChain("gone".into())
        );
    }

    #[test]
    fn icmp_packets_fail_port_matches_even_negated() {
        let mut rs = table();
        rs.chains.get_mut("pol").unwrap().rules = vec![Rule::new(
            "th dport != 80",
            "meta mark set meta mark | 0x10000 return",
            "",
        )];
        let parsed = Parsed::new(&rs).unwrap();
        let mut p = pkt(0);
        p.proto = 1;
        p.dport = None;
        p.sport = None;
        p.icmp = Some((8, 0));
        assert!(!run(&parsed, &p).unwrap().allowed);
    }
}
