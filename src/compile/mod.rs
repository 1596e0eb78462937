//! The compiler: a cluster snapshot and a node name in, the desired
//! `inet tortie` ruleset for that node out. Pure and deterministic.
//!
//! Shape (see docs/ruleset.md):
//! - base chains only jump to dispatch chains; dispatch is by interface
//!   name through verdict maps and fails closed for unknown workload
//!   interfaces;
//! - one chain per endpoint and direction walks the tiers in order;
//! - one chain per policy and direction, shared by every endpoint using it;
//! - addresses and named ports live in named sets, so the number of rules
//!   does not depend on the number of remote endpoints.

pub mod incremental;
pub mod interval;
pub mod ir;
pub mod members;
mod rules;
pub mod staged;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::calc::{
    Cluster, DenyAction, Endpoint, EndpointId, EndpointToHostAction, FailsafePort, Policy, Tier,
};
use crate::model::types::TierAction;
use ir::{Chain, Hook, Rank, Rule, Ruleset, VerdictMap};

pub use rules::{address_elements, limit_name};

/// Mark bit: a policy or profile allowed the packet.
pub const MARK_ACCEPT: u32 = 0x1_0000;
/// Mark bit: a policy passed the packet to the next tier.
pub const MARK_PASS: u32 = 0x2_0000;
const MARK_OURS: u32 = MARK_ACCEPT | MARK_PASS;

pub(crate) fn mark_set(bit: u32) -> String {
    format!("meta mark set meta mark | 0x{bit:x}")
}
pub(crate) fn mark_clear(bits: u32) -> String {
    format!("meta mark set meta mark & 0x{:08x}", !bits)
}
pub(crate) fn mark_is(bit: u32) -> String {
    format!("meta mark & 0x{bit:x} == 0x{bit:x}")
}
pub(crate) fn mark_not(bit: u32) -> String {
    format!("meta mark & 0x{bit:x} == 0")
}

/// The netfilter layers tortie uses, each a family of chains at one
/// priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// Before conntrack: doNotTrack policy.
    Raw,
    /// Before DNAT: preDNAT policy.
    Mangle,
    /// Normal policy.
    Filter,
}

impl Layer {
    pub fn prefix(self) -> &'static str {
        match self {
            Layer::Raw => "raw",
            Layer::Mangle => "mangle",
            Layer::Filter => "filter",
        }
    }
}

/// Ingress to or egress from an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

const PRIO_RAW: i32 = -300;
const PRIO_MANGLE: i32 = -150;
const PRIO_FILTER: i32 = 0;

/// How an endpoint chain ends and what it starts with.
#[derive(Debug, Clone, Copy)]
struct ChainStyle {
    conntrack: bool,
    failsafe: bool,
    /// Tiers never drop at their end (preDNAT, doNotTrack).
    force_pass: bool,
    /// Untracked allow: `notrack` on accept.
    notrack: bool,
    /// What happens after the tiers when no policy decided.
    tail: Tail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Walk the endpoint's profiles, then deny.
    Profiles,
    /// Nothing decided: fall through (allowed by this chain).
    FallThrough,
    /// Forwarded through a host endpoint: allowed when no policy decided.
    AcceptForward,
}

struct Compiler<'a> {
    cluster: &'a Cluster,
    out: Ruleset,
    rules: rules::RuleRenderer<'a>,
    /// Policy and profile chains are named and recorded in `leaves`, not
    /// rendered (parts, see [`render_part`]).
    lazy: bool,
    leaves: BTreeSet<Leaf>,
    /// The shadow walks' id of "no policy decided" (`staged`), once used.
    shadow_pass: Option<u32>,
    /// The ordered policies of host endpoints, when the caller keeps them
    /// (the incremental engine); else they are looked up.
    host_lists: HashMap<EndpointId, Vec<&'a Policy>>,
}

/// Compiles the ruleset for `node`.
pub fn compile(cluster: &Cluster, node: &str) -> Ruleset {
    let mut c = Compiler::new(cluster, false);
    c.build(node);
    c.finish().ruleset
}

/// A policy's or profile's chain in one layer and direction: rendered once,
/// shared by every endpoint that uses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leaf {
    pub layer: Layer,
    pub dir: Direction,
    pub of: LeafOf,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeafOf {
    Policy(crate::calc::PolicyId),
    Profile(String),
}

/// A piece of the ruleset that one object owns. The whole ruleset is the
/// union of the base part, every local workload's part and the leaves
/// they name (objects with one name have one content, so the union is
/// well defined); `incremental` re-renders only the parts a change touches.
pub enum Part<'a> {
    /// Host endpoints, every dispatch chain and map, the base chains; with
    /// the ordered policies of the host endpoints when the caller has them
    /// (else they are looked up).
    Base(HashMap<EndpointId, Vec<&'a Policy>>),
    /// One local workload's chains and its entries in the dispatch maps,
    /// with the policies that apply to it in order.
    Workload(&'a Endpoint, Vec<&'a Policy>),
    /// One policy or profile chain with its sets (left empty: their members
    /// are the caller's) and log entries; the policy when the caller has it
    /// at hand (else it is looked up).
    Leaf(&'a Leaf, Option<&'a Policy>),
    /// The staged-policy and connection-log chains and maps of every local
    /// workload and host endpoint stage (see `staged`); empty without
    /// staged policies or connection logs.
    Staged,
}

/// What [`render_part`] produced.
pub struct Rendered {
    pub ruleset: Ruleset,
    /// The leaves the part's chains jump to.
    pub leaves: BTreeSet<Leaf>,
}

/// Renders one part of `node`'s ruleset (see [`Part`]).
pub fn render_part(cluster: &Cluster, node: &str, part: Part<'_>) -> Rendered {
    let mut c = Compiler::new(cluster, true);
    c.rules.fill_sets = false;
    match part {
        Part::Base(lists) => {
            c.host_lists = lists;
            c.workload_dispatch(BTreeMap::new(), BTreeMap::new());
            let hosts: Vec<&Endpoint> = cluster
                .local_endpoints(node)
                .filter(|e| matches!(e.id, EndpointId::Host { .. }))
                .collect();
            let hosts = host_bindings(&hosts, &cluster.host_interfaces);
            let heps = c.host_endpoint_chains(&hosts);
            c.static_chains(&heps);
        }
        Part::Workload(ep, policies) => {
            let (iface, tw, fw) = c.workload(ep, policies);
            for (map, chain) in [("filter-to-wl", tw), ("filter-from-wl", fw)] {
                c.out.maps.insert(
                    map.into(),
                    VerdictMap {
                        name: map.into(),
                        elements: [(iface.clone(), format!("goto {chain}"))].into(),
                    },
                );
            }
        }
        Part::Staged => {
            c.lazy = false;
            let workloads: Vec<&Endpoint> = cluster
                .local_endpoints(node)
                .filter(|e| matches!(e.id, EndpointId::Workload { .. }) && e.iface.is_some())
                .collect();
            let hosts: Vec<&Endpoint> = cluster
                .local_endpoints(node)
                .filter(|e| matches!(e.id, EndpointId::Host { .. }))
                .collect();
            let hosts = host_bindings(&hosts, &cluster.host_interfaces);
            c.staged_chains(&workloads, &hosts);
        }
        Part::Leaf(leaf, policy) => {
            c.lazy = false;
            match &leaf.of {
                LeafOf::Policy(id) => {
                    let found = policy
                        .or_else(|| cluster.policies.iter().find(|p| &p.id == id).map(|p| &**p));
                    if let Some(p) = found {
                        c.policy_chain(leaf.layer, leaf.dir, p);
                    }
                }
                LeafOf::Profile(name) => {
                    if cluster.profiles.contains_key(name) {
                        c.profile_chain(leaf.layer, leaf.dir, name);
                    }
                }
            }
        }
    }
    c.finish()
}

impl<'a> Compiler<'a> {
    fn new(cluster: &'a Cluster, lazy: bool) -> Self {
        Compiler {
            cluster,
            out: Ruleset::default(),
            rules: rules::RuleRenderer::new(cluster),
            lazy,
            leaves: BTreeSet::new(),
            shadow_pass: None,
            host_lists: HashMap::new(),
        }
    }

    /// The policies that apply to `ep`, in evaluation order.
    fn applying(&self, ep: &'a Endpoint) -> Vec<&'a Policy> {
        match self.host_lists.get(&ep.id) {
            Some(list) => list.clone(),
            None => self.cluster.policies_for(ep).collect(),
        }
    }

    fn finish(mut self) -> Rendered {
        let (sets, log_index, set_sources) = self.rules.finish();
        self.out.sets = sets;
        self.out.log_index.extend(log_index);
        self.out.set_sources = set_sources;
        Rendered {
            ruleset: self.out,
            leaves: self.leaves,
        }
    }

    fn deny(&self) -> &'static str {
        match self.cluster.settings.deny {
            DenyAction::Drop => "drop",
            DenyAction::Reject => "reject",
        }
    }

    fn deny_in(&self, layer: Layer) -> &'static str {
        // reject is only possible where a reply can be routed: the filter layer.
        if layer == Layer::Filter {
            self.deny()
        } else {
            "drop"
        }
    }

    /// An implicit drop, preceded (when drops are logged) by a rate-limited
    /// log rule. The log rule is not terminal, so the limit can never turn a
    /// drop into an accept.
    fn implicit_drop(
        &mut self,
        matches: String,
        action: &str,
        note: String,
        logged: Option<ir::LogEntry>,
    ) -> Vec<Rule> {
        let mut out = Vec::new();
        if let Some(entry) = logged {
            let (n, unit) = self
                .cluster
                .settings
                .log_rate
                .clone()
                .unwrap_or((10, "second".into()));
            let limit = format!(
                "limit rate {n}/{unit} burst {} packets",
                self.cluster.settings.log_burst
            );
            let m = if matches.is_empty() {
                limit
            } else {
                format!("{matches} {limit}")
            };
            let stmt = self.rules.log_statement(entry);
            out.push(Rule::new(m, stmt, format!("log: {note}")));
        }
        out.push(Rule::new(matches, action, note));
        out
    }

    fn add_chain(&mut self, name: String, rank: Rank, hook: Option<Hook>, rules: Vec<Rule>) {
        self.out.chains.insert(
            name.clone(),
            Chain {
                name,
                hook,
                rank,
                rules,
            },
        );
    }

    fn prefixes(&self) -> Vec<String> {
        self.cluster.settings.interface_prefixes.clone()
    }

    fn build(&mut self, node: &str) {
        let locals: Vec<&'a Endpoint> = self.cluster.local_endpoints(node).collect();
        let workloads: Vec<&'a Endpoint> = locals
            .iter()
            .copied()
            .filter(|e| matches!(e.id, EndpointId::Workload { .. }) && e.iface.is_some())
            .collect();
        let hosts: Vec<&'a Endpoint> = locals
            .iter()
            .copied()
            .filter(|e| matches!(e.id, EndpointId::Host { .. }))
            .collect();
        let hosts = host_bindings(&hosts, &self.cluster.host_interfaces);

        self.workload_chains(&workloads);
        self.staged_chains(&workloads, &hosts);
        let heps = self.host_endpoint_chains(&hosts);
        self.static_chains(&heps);
    }

    // ------------------------------------------------------------------
    // Workloads

    fn workload_chains(&mut self, workloads: &[&'a Endpoint]) {
        let mut to_map = BTreeMap::new();
        let mut from_map = BTreeMap::new();
        for ep in workloads {
            let policies = self.cluster.policies_for(ep).collect();
            let (iface, tw, fw) = self.workload(ep, policies);
            to_map.insert(iface.clone(), format!("goto {tw}"));
            from_map.insert(iface, format!("goto {fw}"));
        }
        self.workload_dispatch(to_map, from_map);
    }

    /// One workload's ingress and egress chains, given the policies that
    /// apply to it in order: `(interface, to-chain, from-chain)`.
    fn workload(
        &mut self,
        ep: &'a Endpoint,
        policies: Vec<&'a Policy>,
    ) -> (String, String, String) {
        let style = ChainStyle {
            conntrack: true,
            failsafe: false,
            force_pass: false,
            notrack: false,
            tail: Tail::Profiles,
        };
        let iface = ep.iface.clone().expect("workload interface");
        let policies: Vec<&'a Policy> = policies
            .into_iter()
            .filter(|p| !p.spec.pre_dnat && !p.spec.do_not_track)
            .collect();
        let tw = limit_name(&format!("filter-tw-{iface}"));
        let fw = limit_name(&format!("filter-fw-{iface}"));
        let ingress: Vec<&Policy> = policies.iter().copied().filter(|p| p.ingress).collect();
        let egress: Vec<&Policy> = policies.iter().copied().filter(|p| p.egress).collect();
        let rules = self.endpoint_rules(
            Layer::Filter,
            Direction::Ingress,
            &ingress,
            Some(&ep.profiles),
            style,
            &ep.id,
        );
        self.add_chain(tw.clone(), Rank::Endpoint, None, rules);
        let rules = self.endpoint_rules(
            Layer::Filter,
            Direction::Egress,
            &egress,
            Some(&ep.profiles),
            style,
            &ep.id,
        );
        self.add_chain(fw.clone(), Rank::Endpoint, None, rules);
        (iface, tw, fw)
    }

    /// The workload dispatch maps (holding `to_map` / `from_map`) and the
    /// chains that use them.
    fn workload_dispatch(
        &mut self,
        to_map: BTreeMap<String, String>,
        from_map: BTreeMap<String, String>,
    ) {
        self.out.maps.insert(
            "filter-to-wl".into(),
            VerdictMap {
                name: "filter-to-wl".into(),
                elements: to_map,
            },
        );
        self.out.maps.insert(
            "filter-from-wl".into(),
            VerdictMap {
                name: "filter-from-wl".into(),
                elements: from_map,
            },
        );
        let deny = self.deny();
        let unknown_log = self.cluster.settings.log_dropped.then(|| ir::LogEntry {
            action: "Drop".into(),
            rule: "unknown workload interface".into(),
            ..ir::LogEntry::default()
        });
        for (chain, key, map, note) in [
            (
                "filter-to-wl-dispatch",
                "oifname",
                "filter-to-wl",
                "dispatch to workload ingress chains",
            ),
            (
                "filter-from-wl-dispatch",
                "iifname",
                "filter-from-wl",
                "dispatch to workload egress chains",
            ),
        ] {
            let mut rules = Vec::new();
            if self.cluster.shadow_walks() {
                // New connections first walk the shadow views (staged
                // policies, connection logs): never a verdict.
                rules.push(Rule::new(
                    format!("ct state new {key} vmap @filter-shadow-{}", &map[7..]),
                    "",
                    "staged policies and connection logs",
                ));
            }
            rules.push(Rule::new(format!("{key} vmap @{map}"), "", note));
            if self.cluster.settings.connection_logs {
                let entry = ir::LogEntry {
                    action: "Connection".into(),
                    rule: "unknown workload interface".into(),
                    ..ir::LogEntry::default()
                };
                let stmt = self.shadow_log(entry);
                rules.push(Rule::new(
                    "ct state new",
                    stmt,
                    "connection log: unknown workload interface",
                ));
            }
            rules.extend(self.implicit_drop(
                String::new(),
                deny,
                "unknown workload interface".into(),
                unknown_log.clone(),
            ));
            self.add_chain(chain.into(), Rank::Dispatch, None, rules);
        }
    }

    // ------------------------------------------------------------------
    // Host endpoints

    /// Builds every host-endpoint chain and map; returns which dispatch
    /// chains exist (so base chains only jump to those).
    fn host_endpoint_chains(&mut self, hosts: &[(String, &'a Endpoint)]) -> HepDispatch {
        let mut d = HepDispatch::default();
        // (layer, direction, forward) → iface → chain
        let mut maps: BTreeMap<(Layer, Direction, bool), BTreeMap<String, String>> =
            BTreeMap::new();
        let mut wildcard: BTreeMap<(Layer, Direction, bool), String> = BTreeMap::new();
        for (iface, ep) in hosts {
            let (iface, ep) = (iface.clone(), *ep);
            let tag = if iface == "*" {
                "all".to_string()
            } else {
                iface.clone()
            };
            let applying = self.applying(ep);
            for kind in &HOST_CHAINS {
                // As in Felix: untracked policy is not applied to the
                // all-interfaces endpoint (there is no default in the raw
                // dispatch); untracking there would turn replies to
                // workloads into invalid packets.
                let Some((policies, staged)) =
                    staged::host_stage(self.cluster, ep, &applying, &iface, kind)
                else {
                    continue;
                };
                let name = limit_name(&format!("{}-{}-{tag}", kind.layer.prefix(), kind.stem));
                let profiles = kind.profiles.then_some(&ep.profiles[..]);
                let mut rules = self.endpoint_rules(
                    kind.layer, kind.dir, &policies, profiles, kind.style, &ep.id,
                );
                if let Some(jump) = self.host_shadow_jump(ep, &tag, kind, &policies, &staged) {
                    // New connections first walk the shadow views (after
                    // conntrack's own verdicts): never a verdict.
                    let at = rules
                        .iter()
                        .take_while(|r| r.matches.starts_with("ct state"))
                        .count();
                    rules.insert(at, jump);
                }
                self.add_chain(name.clone(), Rank::Endpoint, None, rules);
                self.register(
                    &mut maps,
                    &mut wildcard,
                    (kind.layer, kind.dir, kind.forward),
                    &iface,
                    name,
                );
            }
        }
        let keys: Vec<_> = maps
            .keys()
            .chain(wildcard.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for key in keys {
            let (layer, dir, forward) = key;
            let stem = match (dir, forward) {
                (Direction::Ingress, false) => "from-hep",
                (Direction::Egress, false) => "to-hep",
                (Direction::Ingress, true) => "from-hep-fwd",
                (Direction::Egress, true) => "to-hep-fwd",
            };
            let map_name = format!("{}-{stem}", layer.prefix());
            let dispatch = format!("{}-{stem}-dispatch", layer.prefix());
            let key_expr = if dir == Direction::Ingress {
                "iifname"
            } else {
                "oifname"
            };
            let mut rules = Vec::new();
            let elements = maps.remove(&key).unwrap_or_default();
            if !elements.is_empty() {
                self.out.maps.insert(
                    map_name.clone(),
                    VerdictMap {
                        name: map_name.clone(),
                        elements,
                    },
                );
                rules.push(Rule::new(
                    format!("{key_expr} vmap @{map_name}"),
                    "",
                    "dispatch to host endpoint chains",
                ));
            }
            if let Some(chain) = wildcard.get(&key) {
                // The all-interfaces endpoint catches every other interface:
                // in the forward and preDNAT dispatch that includes workload
                // interfaces, as in Felix (the filter INPUT/OUTPUT dispatch
                // never sees them). Loopback is never policed.
                rules.push(Rule::new(
                    format!("{key_expr} \"lo\""),
                    "return",
                    "loopback is not policed",
                ));
                rules.push(Rule::new(
                    "",
                    format!("goto {chain}"),
                    "all-interfaces host endpoint",
                ));
            }
            self.add_chain(dispatch.clone(), Rank::Dispatch, None, rules);
            d.present.insert(key, dispatch);
        }
        d
    }

    fn register(
        &self,
        maps: &mut BTreeMap<(Layer, Direction, bool), BTreeMap<String, String>>,
        wildcard: &mut BTreeMap<(Layer, Direction, bool), String>,
        key: (Layer, Direction, bool),
        iface: &str,
        chain: String,
    ) {
        if iface == "*" {
            wildcard.insert(key, chain);
        } else {
            maps.entry(key)
                .or_default()
                .insert(iface.to_string(), format!("goto {chain}"));
        }
    }

    // ------------------------------------------------------------------
    // Endpoint chains

    #[allow(clippy::too_many_arguments)]
    fn endpoint_rules(
        &mut self,
        layer: Layer,
        dir: Direction,
        policies: &[&'a Policy],
        profiles: Option<&[String]>,
        style: ChainStyle,
        ep: &EndpointId,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        if style.conntrack {
            rules.push(Rule::new("ct state established,related", "accept", ""));
            if self.cluster.settings.conntrack_invalid_drop {
                rules.push(Rule::new("ct state invalid", "drop", ""));
            }
        }
        rules.push(Rule::new("", mark_clear(MARK_OURS), ""));
        if style.failsafe {
            let fs = self.failsafe_chain(layer, dir);
            rules.push(Rule::new("", format!("jump {fs}"), "failsafe ports"));
        }
        let walk = self.tier_walk(layer, dir, policies, style, ep);
        if !walk.is_empty() {
            // Endpoints whose ordered policies (and so whole walk) are the
            // same share one chain: the jump graph grows with distinct policy
            // lists, not with endpoints × policies.
            let chain = self.shared_walk(layer, walk);
            rules.push(Rule::new("", format!("jump {chain}"), "tiers"));
            rules.push(Rule::new(
                mark_is(MARK_ACCEPT),
                "return",
                "allowed by policy",
            ));
        }
        match style.tail {
            Tail::Profiles => {
                for p in profiles.unwrap_or_default() {
                    if !self.cluster.profiles.contains_key(p) {
                        continue;
                    }
                    let chain = self.profile_chain(layer, dir, p);
                    rules.push(Rule::new(
                        "",
                        format!("jump {chain}"),
                        format!("profile {p}"),
                    ));
                    rules.push(Rule::new(
                        mark_is(MARK_ACCEPT),
                        "return",
                        format!("profile {p} allowed"),
                    ));
                }
                let logged = self.cluster.settings.log_dropped.then(|| ir::LogEntry {
                    action: "Drop".into(),
                    rule: "no profile allowed".into(),
                    endpoint: ep.to_string(),
                    ..ir::LogEntry::default()
                });
                let deny = self.deny_in(layer);
                rules.extend(self.implicit_drop(
                    String::new(),
                    deny,
                    format!("{ep}: no profile allowed"),
                    logged,
                ));
            }
            Tail::AcceptForward => {
                rules.push(Rule::new(
                    "",
                    format!("{} return", mark_set(MARK_ACCEPT)),
                    "forwarded: no policy decided",
                ));
            }
            Tail::FallThrough => {}
        }
        rules
    }

    /// The tiers an endpoint walks in one direction: per tier, its
    /// policies in order, then the end-of-tier drop. Allow returns with the
    /// ACCEPT mark; Pass skips to the next tier; falling off the end means
    /// "no tier decided" (profiles come next, in the endpoint chain).
    fn tier_walk(
        &mut self,
        layer: Layer,
        dir: Direction,
        policies: &[&'a Policy],
        style: ChainStyle,
        ep: &EndpointId,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        let allowed_action = if style.notrack {
            "notrack return"
        } else {
            "return"
        };
        let mut i = 0;
        while i < policies.len() {
            let tier_name = policies[i].tier.clone();
            let tier: &Tier = &self.cluster.tiers[&tier_name];
            rules.push(Rule::new(
                "",
                mark_clear(MARK_PASS),
                format!("start of tier {tier_name}"),
            ));
            while i < policies.len() && policies[i].tier == tier_name {
                let p = policies[i];
                let chain = self.policy_chain(layer, dir, p);
                rules.push(Rule::new(
                    mark_not(MARK_PASS),
                    format!("jump {chain}"),
                    p.id.to_string(),
                ));
                rules.push(Rule::new(
                    mark_is(MARK_ACCEPT),
                    allowed_action,
                    format!("{} allowed", p.id),
                ));
                i += 1;
            }
            if !style.force_pass && tier.default_action == TierAction::Deny {
                let logged =
                    (tier.log_dropped || self.cluster.settings.log_dropped).then(|| ir::LogEntry {
                        action: "Drop".into(),
                        tier: tier_name.clone(),
                        rule: "end of tier".into(),
                        endpoint: ep.to_string(),
                        ..ir::LogEntry::default()
                    });
                let deny = self.deny_in(layer);
                rules.extend(self.implicit_drop(
                    mark_not(MARK_PASS),
                    deny,
                    format!("end of tier {tier_name}: no policy allowed or passed"),
                    logged,
                ));
            }
        }
        rules
    }

    /// The chain holding `walk`, named by its content, created once.
    fn shared_walk(&mut self, layer: Layer, walk: Vec<Rule>) -> String {
        let mut key = String::new();
        for r in &walk {
            key.push_str(&r.matches);
            key.push('\u{1}');
            key.push_str(&r.action);
            key.push('\u{1}');
            key.push_str(&r.note);
            key.push('\u{2}');
        }
        let name = format!("{}-tiers-{}", layer.prefix(), rules::short_hash(&key));
        if !self.out.chains.contains_key(&name) {
            self.add_chain(name.clone(), Rank::Tiers, None, walk);
        }
        name
    }

    fn policy_chain(&mut self, layer: Layer, dir: Direction, p: &'a Policy) -> String {
        let tag = if dir == Direction::Ingress {
            "pi"
        } else {
            "po"
        };
        let name = limit_name(&format!("{}-{tag}-{}", layer.prefix(), p.id));
        if self.lazy {
            self.leaves.insert(Leaf {
                layer,
                dir,
                of: LeafOf::Policy(p.id.clone()),
            });
            return name;
        }
        if !self.out.chains.contains_key(&name) {
            let (rule_list, peers) = if dir == Direction::Ingress {
                (&p.spec.ingress, &p.peers.ingress)
            } else {
                (&p.spec.egress, &p.peers.egress)
            };
            let mut rules = Vec::new();
            for (idx, (r, peers)) in rule_list.iter().zip(peers).enumerate() {
                let note = format!(
                    "{} {}#{idx} {:?}",
                    p.id,
                    if dir == Direction::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    },
                    r.action
                );
                let deny = self.deny_in(layer);
                let log = ir::LogEntry {
                    action: "Log".into(),
                    kind: p.id.kind.short().into(),
                    namespace: p.namespace().unwrap_or_default().into(),
                    name: p.id.name.clone(),
                    tier: p.tier.clone(),
                    rule: format!(
                        "{}#{idx}",
                        if dir == Direction::Ingress {
                            "ingress"
                        } else {
                            "egress"
                        }
                    ),
                    endpoint: String::new(),
                    selected: String::new(),
                };
                rules.extend(
                    self.rules
                        .render((r, peers), p.namespace(), dir, deny, &note, log),
                );
            }
            self.add_chain(name.clone(), Rank::Leaf, None, rules);
        }
        name
    }

    fn profile_chain(&mut self, layer: Layer, dir: Direction, profile: &str) -> String {
        let tag = if dir == Direction::Ingress {
            "pri"
        } else {
            "pro"
        };
        let name = limit_name(&format!("{}-{tag}-{profile}", layer.prefix()));
        if self.lazy {
            self.leaves.insert(Leaf {
                layer,
                dir,
                of: LeafOf::Profile(profile.to_string()),
            });
            return name;
        }
        if !self.out.chains.contains_key(&name) {
            let held = &self.cluster.profiles[profile];
            let (rule_list, peers) = if dir == Direction::Ingress {
                (&held.spec.ingress, &held.peers.ingress)
            } else {
                (&held.spec.egress, &held.peers.egress)
            };
            let mut rules = Vec::new();
            for (idx, (r, peers)) in rule_list.iter().zip(peers).enumerate() {
                let note = format!("profile {profile} #{idx}");
                let deny = self.deny_in(layer);
                let log = ir::LogEntry {
                    action: "Log".into(),
                    kind: "profile".into(),
                    name: profile.to_string(),
                    rule: format!(
                        "{}#{idx}",
                        if dir == Direction::Ingress {
                            "ingress"
                        } else {
                            "egress"
                        }
                    ),
                    ..ir::LogEntry::default()
                };
                rules.extend(self.rules.render((r, peers), None, dir, deny, &note, log));
            }
            self.add_chain(name.clone(), Rank::Leaf, None, rules);
        }
        name
    }

    fn failsafe_chain(&mut self, layer: Layer, dir: Direction) -> String {
        let name = format!(
            "{}-failsafe-{}",
            layer.prefix(),
            if dir == Direction::Ingress {
                "in"
            } else {
                "out"
            }
        );
        if !self.out.chains.contains_key(&name) {
            let (own, other) = if dir == Direction::Ingress {
                (
                    &self.cluster.settings.failsafe_in,
                    &self.cluster.settings.failsafe_out,
                )
            } else {
                (
                    &self.cluster.settings.failsafe_out,
                    &self.cluster.settings.failsafe_in,
                )
            };
            let mut rules: Vec<Rule> = own.iter().map(|fp| failsafe_rule(fp, dir, false)).collect();
            if layer == Layer::Raw {
                // Before conntrack, replies must pass too, or a doNotTrack
                // policy would untrack (or drop) half of a failsafe
                // connection: inbound, the replies to the node's OUTBOUND
                // failsafe connections; outbound, the replies to INBOUND ones.
                rules.extend(other.iter().map(|fp| failsafe_rule(fp, dir, true)));
            }
            self.add_chain(name.clone(), Rank::Leaf, None, rules);
        }
        name
    }

    // ------------------------------------------------------------------
    // Static chains

    fn static_chains(&mut self, heps: &HepDispatch) {
        let prefixes = self.prefixes();
        let wl_in = |p: &str| format!("iifname \"{p}*\"");
        let wl_out = |p: &str| format!("oifname \"{p}*\"");
        let hook = |hook: &'static str, priority: i32| {
            Some(Hook {
                kind: "filter",
                hook,
                priority,
            })
        };

        // raw: untracked policy for host endpoints; workload traffic is not
        // untracked-policed.
        for (chain, hook_name, dir, wl) in [
            (
                "raw-PREROUTING",
                "prerouting",
                Direction::Ingress,
                &wl_in as &dyn Fn(&str) -> String,
            ),
            ("raw-OUTPUT", "output", Direction::Egress, &wl_out),
        ] {
            let mut rules = vec![Rule::new("", mark_clear(MARK_OURS), "")];
            if let Some(d) = heps.get(Layer::Raw, dir, false) {
                for p in &prefixes {
                    let note = if dir == Direction::Ingress {
                        "workload traffic is not untracked-policed"
                    } else {
                        ""
                    };
                    rules.push(Rule::new(wl(p), "return", note));
                }
                rules.push(Rule::new("", format!("jump {d}"), ""));
                rules.push(Rule::new(
                    mark_is(MARK_ACCEPT),
                    "accept",
                    "allowed untracked",
                ));
            }
            self.add_chain(chain.into(), Rank::Base, hook(hook_name, PRIO_RAW), rules);
        }

        // mangle: preDNAT policy, before any DNAT.
        if let Some(d) = heps.get(Layer::Mangle, Direction::Ingress, false) {
            let mut rules = vec![Rule::new(
                mark_is(MARK_ACCEPT),
                "accept",
                "allowed untracked",
            )];
            rules.push(Rule::new("ct state established,related", "accept", ""));
            // Every packet is dispatched, workload traffic included: the
            // all-interfaces endpoint's preDNAT policy applies to it too.
            rules.push(Rule::new("", format!("jump {d}"), ""));
            rules.push(Rule::new(
                mark_is(MARK_ACCEPT),
                "accept",
                "allowed before DNAT",
            ));
            self.add_chain(
                "mangle-PREROUTING".into(),
                Rank::Base,
                hook("prerouting", PRIO_MANGLE),
                rules,
            );
        }

        // filter INPUT: workload-to-host, then host endpoints.
        let mut wl_to_host = vec![Rule::new(
            "meta l4proto ipv6-icmp icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }",
            "accept",
            "IPv6 neighbour discovery",
        )];
        wl_to_host.push(Rule::new(
            "",
            "jump filter-from-wl-dispatch",
            "workload egress policy",
        ));
        let (action, note) = match self.cluster.settings.endpoint_to_host {
            EndpointToHostAction::Drop => (self.deny(), "DefaultEndpointToHostAction: Drop"),
            EndpointToHostAction::Accept => ("accept", "DefaultEndpointToHostAction: Accept"),
            EndpointToHostAction::Return => ("return", "DefaultEndpointToHostAction: Return"),
        };
        let logged = (self.cluster.settings.log_dropped
            && self.cluster.settings.endpoint_to_host == EndpointToHostAction::Drop)
            .then(|| ir::LogEntry {
                action: "Drop".into(),
                rule: "DefaultEndpointToHostAction".into(),
                ..ir::LogEntry::default()
            });
        wl_to_host.extend(self.implicit_drop(String::new(), action, note.to_string(), logged));
        self.add_chain("filter-wl-to-host".into(), Rank::Dispatch, None, wl_to_host);

        let mut input = Vec::new();
        for p in &prefixes {
            input.push(Rule::new(
                wl_in(p),
                "goto filter-wl-to-host",
                "from a workload to the host",
            ));
        }
        if let Some(d) = heps.get(Layer::Filter, Direction::Ingress, false) {
            input.extend(host_endpoint_entry(
                d,
                "allowed before conntrack or DNAT",
                "host endpoint ingress policy",
            ));
        }
        self.add_chain(
            "filter-INPUT".into(),
            Rank::Base,
            hook("input", PRIO_FILTER),
            input,
        );

        // filter FORWARD: host endpoint forward, workload egress, workload ingress.
        let mut fwd = vec![Rule::new("", mark_clear(MARK_PASS), "")];
        if let Some(d) = heps.get(Layer::Filter, Direction::Ingress, true) {
            fwd.push(Rule::new(
                mark_not(MARK_ACCEPT),
                format!("jump {d}"),
                "applyOnForward ingress",
            ));
        }
        for p in &prefixes {
            fwd.push(Rule::new(
                wl_in(p),
                "jump filter-from-wl-dispatch",
                "workload egress policy",
            ));
        }
        for p in &prefixes {
            fwd.push(Rule::new(
                wl_out(p),
                "jump filter-to-wl-dispatch",
                "workload ingress policy",
            ));
        }
        if let Some(d) = heps.get(Layer::Filter, Direction::Egress, true) {
            fwd.push(Rule::new("", format!("jump {d}"), "applyOnForward egress"));
        }
        self.add_chain(
            "filter-FORWARD".into(),
            Rank::Base,
            hook("forward", PRIO_FILTER),
            fwd,
        );

        // filter OUTPUT: host to workload is not policed.
        let mut output = Vec::new();
        for p in &prefixes {
            output.push(Rule::new(
                wl_out(p),
                "return",
                "host to workload is not policed",
            ));
        }
        if let Some(d) = heps.get(Layer::Filter, Direction::Egress, false) {
            output.extend(host_endpoint_entry(
                d,
                "allowed untracked",
                "host endpoint egress policy",
            ));
        }
        self.add_chain(
            "filter-OUTPUT".into(),
            Rank::Base,
            hook("output", PRIO_FILTER),
            output,
        );
    }
}

/// Entering host-endpoint policy from a filter base chain: a packet already
/// allowed in raw or mangle is accepted; otherwise marks are cleared and the
/// dispatch chain runs.
fn host_endpoint_entry(dispatch: &str, accepted_note: &str, note: &str) -> [Rule; 3] {
    [
        Rule::new(mark_is(MARK_ACCEPT), "accept", accepted_note),
        Rule::new("", mark_clear(MARK_OURS), ""),
        Rule::new("", format!("jump {dispatch}"), note),
    ]
}

/// One failsafe rule for traffic in direction `dir` of a host endpoint:
/// a connection to the failsafe port (`reply == false`) or a reply from it.
/// The optional net is the remote side: the source inbound, the destination
/// outbound.
fn failsafe_rule(fp: &FailsafePort, dir: Direction, reply: bool) -> Rule {
    let proto = rules::proto_keyword(fp.protocol);
    let port = if reply { "sport" } else { "dport" };
    let peer = fp.net.map(|n| {
        let fam = if n.addr().is_ipv4() { "ip" } else { "ip6" };
        let side = if dir == Direction::Ingress {
            "saddr"
        } else {
            "daddr"
        };
        format!(" {fam} {side} {n}")
    });
    let what = if reply { "failsafe reply" } else { "failsafe" };
    Rule::new(
        format!("{proto} {port} {}{}", fp.port, peer.unwrap_or_default()),
        "accept",
        format!("{what} {proto}:{}", fp.port),
    )
}

/// The interface each of `node`'s host endpoints polices (`*` for the
/// all-interfaces endpoint), as the compiler binds them: for `trace`.
pub fn host_endpoint_bindings<'c>(cluster: &'c Cluster, node: &str) -> Vec<(String, &'c Endpoint)> {
    let hosts: Vec<&Endpoint> = cluster
        .local_endpoints(node)
        .filter(|e| matches!(e.id, EndpointId::Host { .. }))
        .collect();
    host_bindings(&hosts, &cluster.host_interfaces)
}

/// Which host endpoint polices each interface, as Felix resolves it: for
/// every interface, the host endpoints that name it, or that name no
/// interface and expect one of its addresses (`host_interfaces`), compete,
/// and the alphabetically first wins; the first all-interfaces (`*`)
/// endpoint becomes the default for every other interface.
fn host_bindings<'e>(
    hosts: &[&'e Endpoint],
    host_interfaces: &BTreeMap<String, Vec<std::net::IpAddr>>,
) -> Vec<(String, &'e Endpoint)> {
    let mut bound: BTreeMap<String, &'e Endpoint> = BTreeMap::new();
    let mut offer = |iface: &str, ep: &'e Endpoint| {
        let slot = bound.entry(iface.to_string()).or_insert(ep);
        if ep.id < slot.id {
            *slot = ep;
        }
    };
    for ep in hosts {
        match ep.iface.as_deref() {
            Some(name) => offer(name, ep),
            None => {
                for (name, addrs) in host_interfaces {
                    if addrs.iter().any(|a| ep.addrs.contains(a)) {
                        offer(name, ep);
                    }
                }
            }
        }
    }
    bound.into_iter().collect()
}

/// One kind of host-endpoint chain: where it runs, which policies it holds
/// and how it behaves.
struct HostChain {
    layer: Layer,
    dir: Direction,
    /// Forwarded traffic (applyOnForward) rather than host traffic.
    forward: bool,
    stem: &'static str,
    select: fn(&Policy) -> bool,
    /// Built even with no policy (host endpoints default to deny).
    always: bool,
    profiles: bool,
    style: ChainStyle,
}

fn normal_policy(p: &Policy) -> bool {
    !p.spec.pre_dnat && !p.spec.do_not_track
}

const HOST_STYLE: ChainStyle = ChainStyle {
    conntrack: true,
    failsafe: true,
    force_pass: false,
    notrack: false,
    tail: Tail::Profiles,
};
const FORWARD_STYLE: ChainStyle = ChainStyle {
    conntrack: true,
    failsafe: false,
    force_pass: false,
    notrack: false,
    tail: Tail::AcceptForward,
};
const PRE_DNAT_STYLE: ChainStyle = ChainStyle {
    conntrack: true,
    failsafe: true,
    force_pass: true,
    notrack: false,
    tail: Tail::FallThrough,
};
const UNTRACKED_STYLE: ChainStyle = ChainStyle {
    conntrack: false,
    failsafe: true,
    force_pass: true,
    notrack: true,
    tail: Tail::FallThrough,
};

/// Normal policy for host traffic; applyOnForward policy for forwarded
/// traffic; preDNAT (ingress only) in mangle; doNotTrack in raw.
const HOST_CHAINS: [HostChain; 7] = [
    HostChain {
        layer: Layer::Filter,
        dir: Direction::Ingress,
        forward: false,
        stem: "fh",
        select: normal_policy,
        always: true,
        profiles: true,
        style: HOST_STYLE,
    },
    HostChain {
        layer: Layer::Filter,
        dir: Direction::Egress,
        forward: false,
        stem: "th",
        select: normal_policy,
        always: true,
        profiles: true,
        style: HOST_STYLE,
    },
    HostChain {
        layer: Layer::Filter,
        dir: Direction::Ingress,
        forward: true,
        stem: "fhfw",
        select: |p| normal_policy(p) && p.spec.apply_on_forward,
        always: true,
        profiles: false,
        style: FORWARD_STYLE,
    },
    HostChain {
        layer: Layer::Filter,
        dir: Direction::Egress,
        forward: true,
        stem: "thfw",
        select: |p| normal_policy(p) && p.spec.apply_on_forward,
        always: true,
        profiles: false,
        style: FORWARD_STYLE,
    },
    HostChain {
        layer: Layer::Mangle,
        dir: Direction::Ingress,
        forward: false,
        stem: "fh",
        select: |p| p.spec.pre_dnat,
        always: false,
        profiles: false,
        style: PRE_DNAT_STYLE,
    },
    HostChain {
        layer: Layer::Raw,
        dir: Direction::Ingress,
        forward: false,
        stem: "fh",
        select: |p| p.spec.do_not_track,
        always: false,
        profiles: false,
        style: UNTRACKED_STYLE,
    },
    HostChain {
        layer: Layer::Raw,
        dir: Direction::Egress,
        forward: false,
        stem: "th",
        select: |p| p.spec.do_not_track,
        always: false,
        profiles: false,
        style: UNTRACKED_STYLE,
    },
];

#[derive(Default)]
struct HepDispatch {
    present: BTreeMap<(Layer, Direction, bool), String>,
}

impl HepDispatch {
    fn get(&self, layer: Layer, dir: Direction, forward: bool) -> Option<&String> {
        self.present.get(&(layer, dir, forward))
    }
}

#[cfg(test)]
mod peers_tests;
#[cfg(test)]
mod tests;
