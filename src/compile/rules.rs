//! Rendering one Calico rule into nft rules. Addresses, port lists and
//! named ports become named sets (shared by every rule that means the same
//! thing), so rules never carry per-rule anonymous sets and never grow with
//! the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::Digest;

use super::interval;
use super::ir::{LogEntry, Rule, Set, SetSource, SetType};
use super::{Direction, MARK_ACCEPT, MARK_PASS, mark_set};
use crate::calc::Cluster;
use crate::calc::peers::{Peers, Side};
use crate::model::types::{Action, EntityRule, IcmpFields, Port, Protocol, Rule as CalicoRule};
use crate::selector::Selector;

/// Longest chain or set name tortie emits; longer names get a hash suffix.
pub const MAX_NAME_LEN: usize = 96;

pub(crate) fn short_hash(text: &str) -> String {
    let d = sha2::Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Keeps a name within [`MAX_NAME_LEN`], replacing the tail with a hash of
/// the whole name when it is too long (so distinct names stay distinct).
pub fn limit_name(name: &str) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name.to_string();
    }
    let mut cut = MAX_NAME_LEN - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{}", &name[..cut], short_hash(name))
}

/// The nft keyword for a protocol (`meta l4proto <kw>`).
pub fn proto_keyword(p: Protocol) -> String {
    match p.normalised() {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::IcmpV6 => "ipv6-icmp".into(),
        Protocol::UdpLite => "udplite".into(),
        Protocol::Number(n) => n.to_string(),
    }
}

/// A field as Calico reads it: an empty string is the same as no field.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|t| !t.is_empty())
}

/// A rule with its peers as the calculation parsed them.
pub type HeldRule<'r> = (&'r CalicoRule, &'r Peers);

/// Renders rules and collects the named sets they use.
pub struct RuleRenderer<'a> {
    cluster: &'a Cluster,
    sets: BTreeMap<String, Set>,
    log_index: BTreeMap<String, LogEntry>,
    sources: BTreeMap<String, SetSource>,
    /// Whether selector and named-port sets get their members (parts leave
    /// them to the incremental engine).
    pub fill_sets: bool,
    /// Sets whose members are still to be found, by name.
    deferred: Vec<(String, Fill)>,
}

/// What the members of a set are (see [`RuleRenderer::add_deferred`]).
enum Fill {
    Selector {
        selector: Selector,
        v6: bool,
    },
    NamedPorts {
        selector: Selector,
        names: Vec<String>,
        protocol: Option<Protocol>,
        fam: Fam,
    },
}

impl Fill {
    fn elements(&self, cluster: &Cluster) -> BTreeSet<String> {
        match self {
            Fill::Selector { selector, v6 } => {
                address_elements(cluster.selector_nets(selector), *v6)
            }
            Fill::NamedPorts {
                selector,
                names,
                protocol,
                fam,
            } => {
                let v6 = match fam {
                    Fam::Any => None,
                    Fam::V4 => Some(false),
                    Fam::V6 => Some(true),
                };
                let mut out = Vec::new();
                for n in names {
                    let members = cluster.named_port_list(selector, n, *protocol, v6);
                    out.extend(
                        (members.into_iter())
                            .map(|(addr, p, port)| format!("{addr} . {p} . {port}")),
                    );
                }
                // Sorted first, the set is built in one go.
                out.sort_unstable();
                out.into_iter().collect()
            }
        }
    }
}

/// From how many sets on [`RuleRenderer::finish`] finds members on two
/// threads.
const PARALLEL_FILLS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    Any,
    V4,
    V6,
}

impl Fam {
    fn kw(self) -> &'static str {
        match self {
            Fam::V6 => "ip6",
            _ => "ip",
        }
    }
    fn digit(self) -> &'static str {
        match self {
            Fam::V6 => "6",
            _ => "4",
        }
    }
    fn holds(self, a: &IpAddr) -> bool {
        match self {
            Fam::Any => true,
            Fam::V4 => a.is_ipv4(),
            Fam::V6 => a.is_ipv6(),
        }
    }
}

/// The elements of an address set of one family (v6 or v4) holding `nets`.
pub fn address_elements(nets: impl IntoIterator<Item = IpNet>, v6: bool) -> BTreeSet<String> {
    interval::net_elements(nets, v6)
}

/// Alternatives: a rule matches if any alternative's fragments all match.
type Alternatives = Vec<Vec<String>>;

fn cross(a: Alternatives, b: Alternatives) -> Alternatives {
    let mut out = Vec::new();
    for x in &a {
        for y in &b {
            let mut v = x.clone();
            v.extend(y.iter().cloned());
            out.push(v);
        }
    }
    out
}

impl<'a> RuleRenderer<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        RuleRenderer {
            cluster,
            sets: BTreeMap::new(),
            log_index: BTreeMap::new(),
            sources: BTreeMap::new(),
            fill_sets: true,
            deferred: Vec::new(),
        }
    }

    pub fn finish(
        mut self,
    ) -> (
        BTreeMap<String, Set>,
        BTreeMap<String, LogEntry>,
        BTreeMap<String, SetSource>,
    ) {
        let cluster = self.cluster;
        let found = crate::par::map(&self.deferred, PARALLEL_FILLS, |(_, fill)| {
            fill.elements(cluster)
        });
        for ((name, _), elements) in self.deferred.iter().zip(found) {
            if let Some(set) = self.sets.get_mut(name) {
                set.elements = elements;
            }
        }
        (self.sets, self.log_index, self.sources)
    }

    /// The `log` statement for `entry`, per the configured backend. With
    /// the kernel backend the prefix is FelixConfiguration `logPrefix` with
    /// `%t` (tier), `%k` (kind), `%n` (name) and `%p` (namespace/name)
    /// replaced; with NFLOG it is a short id recorded in the log index.
    pub fn log_statement(&mut self, entry: LogEntry) -> String {
        match self.cluster.settings.log_backend {
            crate::calc::LogBackend::Kernel => {
                let p = if entry.namespace.is_empty() {
                    entry.name.clone()
                } else {
                    format!("{}/{}", entry.namespace, entry.name)
                };
                let prefix: String = self
                    .cluster
                    .settings
                    .log_prefix
                    .replace("%t", &entry.tier)
                    .replace("%k", &entry.kind)
                    .replace("%n", &entry.name)
                    .replace("%p", &p)
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\')
                    .take(120)
                    .collect();
                format!("log prefix \"{prefix}: \" level info")
            }
            crate::calc::LogBackend::Nflog { group } => {
                let id = format!("T{}", &short_hash(&format!("{entry:?}"))[..12]);
                self.log_index.insert(id.clone(), entry);
                format!("log prefix \"tortie:{id}\" group {group}")
            }
        }
    }

    fn add_set(
        &mut self,
        name: String,
        ty: SetType,
        comment: String,
        fill: impl FnOnce() -> BTreeSet<String>,
    ) -> String {
        if !self.sets.contains_key(&name) {
            let elements = fill();
            self.sets.insert(
                name.clone(),
                Set {
                    name: name.clone(),
                    ty,
                    elements,
                    comment,
                },
            );
        }
        name
    }

    /// As [`RuleRenderer::add_set`] for a set of members (`fill_sets`):
    /// they are found at [`RuleRenderer::finish`], all sets on two threads.
    fn add_deferred(
        &mut self,
        name: String,
        ty: SetType,
        comment: String,
        fill: impl FnOnce() -> Fill,
    ) -> String {
        if self.fill_sets && !self.sets.contains_key(&name) {
            self.deferred.push((name.clone(), fill()));
        }
        self.add_set(name, ty, comment, BTreeSet::new)
    }

    fn selector_set(&mut self, sel: &Selector, fam: Fam) -> String {
        let uid = sel.uid();
        let name = format!("s{}-{}", fam.digit(), &uid[2..]);
        self.sources.insert(
            name.clone(),
            SetSource::Selector {
                selector: sel.clone(),
                v6: fam == Fam::V6,
            },
        );
        let ty = if fam == Fam::V6 {
            SetType::Ipv6
        } else {
            SetType::Ipv4
        };
        self.add_deferred(name, ty, sel.canonical(), || Fill::Selector {
            selector: sel.clone(),
            v6: fam == Fam::V6,
        })
    }

    fn nets_set(&mut self, nets: &[IpNet], fam: Fam) -> String {
        let elements = address_elements(nets.iter().copied(), fam == Fam::V6);
        let text: Vec<String> = elements.iter().cloned().collect();
        let name = format!("n{}-{}", fam.digit(), short_hash(&text.join(",")));
        let ty = if fam == Fam::V6 {
            SetType::Ipv6
        } else {
            SetType::Ipv4
        };
        let comment = text.join(" ");
        self.add_set(name, ty, comment, || elements)
    }

    /// A named set of merged (non-overlapping) port ranges.
    fn ports_set(&mut self, merged: &[(u16, u16)]) -> String {
        let text: Vec<String> = merged.iter().copied().map(interval::port_text).collect();
        let elements: BTreeSet<String> = text.iter().cloned().collect();
        let name = format!("p-{}", short_hash(&text.join(",")));
        self.add_set(name, SetType::Port, text.join(" "), || elements)
    }

    fn named_port_set(
        &mut self,
        sel: &Selector,
        names: &[String],
        proto: Option<Protocol>,
        fam: Fam,
    ) -> String {
        let key = format!(
            "{}|{}|{:?}",
            sel.canonical(),
            names.join(","),
            proto.map(|p| p.number())
        );
        let name = format!("np{}-{}", fam.digit(), short_hash(&key));
        self.sources.insert(
            name.clone(),
            SetSource::NamedPorts {
                selector: sel.clone(),
                names: names.to_vec(),
                protocol: proto,
                v6: fam == Fam::V6,
            },
        );
        let ty = if fam == Fam::V6 {
            SetType::NamedPortV6
        } else {
            SetType::NamedPortV4
        };
        let comment = format!("ports {} of {}", names.join(","), sel.canonical());
        self.add_deferred(name, ty, comment, || Fill::NamedPorts {
            selector: sel.clone(),
            names: names.to_vec(),
            protocol: proto,
            fam,
        })
    }

    /// The set of a Service's endpoints: `address . protocol . port` for a
    /// destination (`ports`), addresses for a source.
    fn service_set(&mut self, svc: &crate::calc::ServiceKey, ports: bool, fam: Fam) -> String {
        let key = format!("{}/{}", svc.0, svc.1);
        let prefix = if ports { "svc" } else { "sva" };
        let name = format!("{prefix}{}-{}", fam.digit(), short_hash(&key));
        let v6 = fam == Fam::V6;
        self.sources.insert(
            name.clone(),
            SetSource::Service {
                service: svc.clone(),
                ports,
                v6,
            },
        );
        let (ty, comment) = match (ports, v6) {
            (true, false) => (SetType::NamedPortV4, format!("service {key} ports")),
            (true, true) => (SetType::NamedPortV6, format!("service {key} ports")),
            (false, false) => (SetType::Ipv4, format!("service {key}")),
            (false, true) => (SetType::Ipv6, format!("service {key}")),
        };
        let cluster = self.cluster;
        let fill = self.fill_sets;
        self.add_set(name, ty, comment, || {
            if !fill {
                return BTreeSet::new();
            }
            if !ports {
                return address_elements(cluster.service_addresses(svc), v6);
            }
            cluster
                .service_ports(svc)
                .into_iter()
                .filter(|(a, _, _)| fam.holds(a))
                .map(|(a, p, port)| format!("{a} . {p} . {port}"))
                .collect()
        })
    }

    /// Renders one Calico rule. `ns` is the policy's namespace (None for
    /// global policies and profiles).
    /// `log` describes the rule for its Log statement (policy, tier, rule).
    pub fn render(
        &mut self,
        (rule, peers): HeldRule<'_>,
        ns: Option<&str>,
        _dir: Direction,
        deny: &str,
        note: &str,
        log: LogEntry,
    ) -> Vec<Rule> {
        let action = match rule.action {
            Action::Allow => format!("{} return", mark_set(MARK_ACCEPT)),
            Action::Pass => format!("{} return", mark_set(MARK_PASS)),
            Action::Deny => deny.to_string(),
            Action::Log => self.log_statement(log),
        };
        let rate = match (&rule.action, &self.cluster.settings.log_rate) {
            (Action::Log, Some((n, unit))) => Some(format!(
                "limit rate {n}/{unit} burst {} packets",
                self.cluster.settings.log_burst
            )),
            _ => None,
        };
        let mut out = Vec::new();
        for fam in self.families(rule, peers) {
            let Some(alts) = self.matches((rule, peers), ns, fam) else {
                continue;
            };
            for mut alt in alts {
                if let Some(r) = &rate {
                    alt.push(r.clone());
                }
                out.push(Rule::new(alt.join(" "), action.clone(), note));
            }
        }
        out
    }

    /// The match text of each nft rule one Calico rule becomes (one per
    /// family and alternative, as [`RuleRenderer::render`] emits them), for
    /// callers that attach their own statements (staged policies).
    pub fn alternatives(&mut self, (rule, peers): HeldRule<'_>, ns: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for fam in self.families(rule, peers) {
            if let Some(alts) = self.matches((rule, peers), ns, fam) {
                out.extend(alts.into_iter().map(|a| a.join(" ")));
            }
        }
        out
    }

    /// The IP families a rule must be rendered for.
    fn families(&self, rule: &CalicoRule, peers: &Peers) -> Vec<Fam> {
        let from_proto = match rule.protocol.map(Protocol::normalised) {
            Some(Protocol::Icmp) => Some(Fam::V4),
            Some(Protocol::IcmpV6) => Some(Fam::V6),
            _ => None,
        };
        let from_version = match rule.ip_version {
            Some(4) => Some(Fam::V4),
            Some(6) => Some(Fam::V6),
            _ => None,
        };
        let from_nets = [&peers.source, &peers.destination]
            .iter()
            .flat_map(|side| side.nets.iter().chain(side.not_nets.iter()))
            .next()
            .map(|n| if n.addr().is_ipv4() { Fam::V4 } else { Fam::V6 });
        if let Some(f) = from_version.or(from_proto).or(from_nets) {
            return vec![f];
        }
        let uses_addresses = [&rule.source, &rule.destination].iter().any(|e| {
            e.selector.is_some()
                || e.not_selector.is_some()
                || e.namespace_selector.is_some()
                || e.service_accounts.is_some()
                || e.services.is_some()
                || e.ports
                    .iter()
                    .chain(e.not_ports.iter())
                    .any(|p| matches!(p, Port::Named(_)))
        });
        if uses_addresses {
            vec![Fam::V4, Fam::V6]
        } else {
            vec![Fam::Any]
        }
    }

    /// Match alternatives for one family; `None` if the rule cannot match
    /// in this family.
    fn matches(
        &mut self,
        (rule, peers): HeldRule<'_>,
        ns: Option<&str>,
        fam: Fam,
    ) -> Option<Alternatives> {
        let mut base = Vec::new();
        match (rule.ip_version, fam) {
            (Some(4), _) => base.push("meta nfproto ipv4".to_string()),
            (Some(6), _) => base.push("meta nfproto ipv6".to_string()),
            _ => {}
        }
        if let Some(p) = rule.protocol {
            base.push(format!("meta l4proto {}", proto_keyword(p)));
        }
        if let Some(p) = rule.not_protocol {
            base.push(format!("meta l4proto != {}", proto_keyword(p)));
        }
        let icmp_kw = if fam == Fam::V6 { "icmpv6" } else { "icmp" };
        if let Some(IcmpFields { icmp_type, code }) = &rule.icmp {
            if let Some(t) = icmp_type {
                base.push(format!("{icmp_kw} type {t}"));
            }
            if let Some(c) = code {
                base.push(format!("{icmp_kw} code {c}"));
            }
        }
        let mut alts: Alternatives = vec![base];
        if let Some(IcmpFields {
            icmp_type: Some(t),
            code,
        }) = &rule.not_icmp
        {
            // not (type and code) = (type differs) or (same type, code differs)
            let mut not = vec![vec![format!("{icmp_kw} type != {t}")]];
            if let Some(c) = code {
                not.push(vec![
                    format!("{icmp_kw} type {t}"),
                    format!("{icmp_kw} code != {c}"),
                ]);
            }
            alts = cross(alts, not);
        }
        let proto = rule.protocol;
        let sides = [
            (&rule.source, &peers.source, "s"),
            (&rule.destination, &peers.destination, "d"),
        ];
        for (entity, held, side) in sides {
            let e = self.entity((entity, held), ns, fam, proto, side)?;
            alts = cross(alts, e);
        }
        Some(alts)
    }

    fn entity(
        &mut self,
        (e, held): (&EntityRule, &Side),
        ns: Option<&str>,
        fam: Fam,
        proto: Option<Protocol>,
        side: &str,
    ) -> Option<Alternatives> {
        let addr = format!("{}addr", if side == "s" { "s" } else { "d" });
        let port_kw = format!("{}port", if side == "s" { "s" } else { "d" });
        let mut m = Vec::new();
        for (nets, op) in [(&held.nets, ""), (&held.not_nets, "!= ")] {
            if nets.is_empty() {
                continue;
            }
            let in_fam: Vec<IpNet> = nets
                .iter()
                .copied()
                .filter(|n| fam.holds(&n.addr()))
                .collect();
            if in_fam.is_empty() {
                if op.is_empty() {
                    return None; // positive nets of the other family: no match
                }
                continue;
            }
            let elements = address_elements(in_fam.iter().copied(), fam == Fam::V6);
            if elements.len() == 1 {
                m.push(format!(
                    "{} {addr} {op}{}",
                    fam.kw(),
                    elements.iter().next().expect("one")
                ));
            } else {
                let set = self.nets_set(&in_fam, fam);
                m.push(format!("{} {addr} {op}@{set}", fam.kw()));
            }
        }
        if let Some(svc) = &e.services {
            // A Service in the policy's namespace unless it names one.
            let namespace = given(&svc.namespace).or(ns).unwrap_or_default();
            let key = (namespace.to_string(), svc.name.clone());
            let dst = side == "d";
            let set = self.service_set(&key, dst, fam);
            if dst {
                m.push(format!(
                    "{} {addr} . meta l4proto . th {port_kw} @{set}",
                    fam.kw()
                ));
            } else {
                m.push(format!("{} {addr} @{set}", fam.kw()));
            }
        }
        let (positive, negative) = (&held.positive, &held.negative);
        if let Some(sel) = positive {
            let set = self.selector_set(sel, fam);
            m.push(format!("{} {addr} @{set}", fam.kw()));
        }
        if let Some(sel) = negative {
            let set = self.selector_set(sel, fam);
            m.push(format!("{} {addr} != @{set}", fam.kw()));
        }
        let l4 = proto.map(proto_keyword);
        let l4_for_ports = match proto.map(Protocol::normalised) {
            Some(Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::UdpLite) => l4.clone(),
            _ => Some("th".to_string()),
        };
        // Negated ports: all must differ.
        let (not_num, not_named) = split_ports(&e.not_ports);
        if !not_num.is_empty() {
            let kw = l4_for_ports.clone().unwrap_or_else(|| "th".into());
            m.push(port_match(self, &kw, &port_kw, "!= ", &not_num));
        }
        if !not_named.is_empty() {
            let sel = positive.clone().unwrap_or(Selector::All);
            let set = self.named_port_set(&sel, &not_named, proto, fam);
            m.push(format!(
                "{} {addr} . meta l4proto . th {port_kw} != @{set}",
                fam.kw()
            ));
        }
        // Positive ports: numeric ones OR named ones.
        let (num, named) = split_ports(&e.ports);
        let mut alts: Alternatives = Vec::new();
        if !num.is_empty() {
            let kw = l4_for_ports.clone().unwrap_or_else(|| "th".into());
            alts.push(vec![port_match(self, &kw, &port_kw, "", &num)]);
        }
        if !named.is_empty() {
            let sel = positive.clone().unwrap_or(Selector::All);
            let set = self.named_port_set(&sel, &named, proto, fam);
            alts.push(vec![format!(
                "{} {addr} . meta l4proto . th {port_kw} @{set}",
                fam.kw()
            )]);
        }
        if alts.is_empty() {
            alts.push(Vec::new());
        }
        Some(cross(vec![m], alts))
    }
}

fn split_ports(ports: &[Port]) -> (Vec<(u16, u16)>, Vec<String>) {
    let mut num = Vec::new();
    let mut named = Vec::new();
    for p in ports {
        match p {
            Port::Range(a, b) => num.push((*a, *b)),
            Port::Named(n) => named.push(n.clone()),
        }
    }
    named.sort();
    named.dedup();
    (num, named)
}

fn port_match(
    r: &mut RuleRenderer<'_>,
    kw: &str,
    port_kw: &str,
    op: &str,
    ports: &[(u16, u16)],
) -> String {
    let merged = interval::merge_ports(ports.iter().copied());
    if let [one] = merged[..] {
        format!("{kw} {port_kw} {op}{}", interval::port_text(one))
    } else {
        let set = r.ports_set(&merged);
        format!("{kw} {port_kw} {op}@{set}")
    }
}
