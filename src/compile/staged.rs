//! Staged policies in the kernel. For each local workload (and direction)
//! and each host-endpoint stage whose ordered policies differ in the staged
//! view, the first packet of a connection (`ct state new`; in the untracked
//! stage, before conntrack, every packet up to a rate, see `hosts`) walks
//! two shadow copies of its policy before the enforced chains decide:
//!
//! 1. the **enforced** view, which records its verdict and the id of its
//!    deciding rule in the packet mark (bits 21–31, allow in bit 20);
//! 2. the **staged** view (enforced policies with staged ones set or
//!    deleted), whose deciding rule counts the packet and, when its verdict
//!    differs from the recorded one, logs "would deny" / "would allow" /
//!    "would pass" naming itself (log prefix) and the enforced rule (mark
//!    id → log index `E<id>`).
//!
//! Neither walk drops, accepts or touches the ACCEPT/PASS bits: the
//! enforced chains then decide exactly as without staged policies. Where a
//! stage can end undecided (preDNAT, untracked: "no policy decided"), the
//! enforced view records that as one shared id with the allow bit set (the
//! packet goes on), so a staged deny there is a "would deny".

mod hosts;
pub(super) use hosts::host_stage;

use super::*;
use crate::calc::PolicyId;
use crate::model::types::{Action, StagedAction};
use rules::HeldRule;

/// Mark bit: a shadow walk passed to the next tier.
pub const MARK_SHADOW_PASS: u32 = 0x4_0000;
/// Mark bit: the staged walk decided.
pub const MARK_STAGED_DONE: u32 = 0x8_0000;
/// Mark bit: the enforced shadow walk allowed.
pub const MARK_ENFORCED_ALLOW: u32 = 0x10_0000;
/// Mark bits holding the enforced deciding rule's id.
pub const MARK_ID: u32 = 0xffe0_0000;
const ID_SHIFT: u32 = 21;
/// The largest id; beyond it decisions share it (and are unattributed).
pub const MAX_ID: u32 = MARK_ID >> ID_SHIFT;
/// Every bit the staged walks use.
pub const MARK_STAGED_ALL: u32 = 0xfffc_0000;

/// The log index key of the enforced decision a packet mark carries.
pub fn mark_key(mark: u32) -> Option<String> {
    let id = (mark & MARK_ID) >> ID_SHIFT;
    (id != 0).then(|| format!("E{id}"))
}

/// The policies that apply to `ep` in the staged view, in evaluation
/// order: the enforced ones not replaced or deleted by a staged policy,
/// and the staged `Set` policies that select it.
pub fn staged_view<'a>(cluster: &'a Cluster, ep: &'a Endpoint) -> Vec<&'a Policy> {
    let staged: BTreeSet<PolicyId> = cluster
        .staged
        .iter()
        .map(|s| s.policy.id.enforced())
        .collect();
    let mut out: Vec<&Policy> = cluster
        .policies_for(ep)
        .filter(|p| !staged.contains(&p.id))
        .collect();
    out.extend(
        cluster
            .staged
            .iter()
            .filter(|s| s.action == StagedAction::Set && s.policy.applies_to.matches(&ep.labels))
            .map(|s| &s.policy),
    );
    out.sort_by_cached_key(|p| cluster.policy_rank(p));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Enforced,
    Staged,
}

impl View {
    fn word(self) -> &'static str {
        match self {
            View::Enforced => "shadow",
            View::Staged => "staged",
        }
    }

    /// Whether this walk has decided (after a jump into a policy).
    fn decided(self) -> String {
        match self {
            View::Enforced => format!("meta mark & 0x{MARK_ID:x} != 0"),
            View::Staged => mark_is(MARK_STAGED_DONE),
        }
    }
}

/// What a shadow walk decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allow,
    Deny,
    /// No policy decided and the stage lets the packet go on (preDNAT,
    /// untracked).
    Pass,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Allow => "Allow",
            Outcome::Deny => "Deny",
            Outcome::Pass => "Pass",
        }
    }

    fn would(self) -> &'static str {
        match self {
            Outcome::Allow => "would allow",
            Outcome::Deny => "would deny",
            Outcome::Pass => "would pass",
        }
    }
}

/// Whether a layer's stages can end with no policy deciding (a pass).
fn passes(layer: Layer) -> bool {
    layer != Layer::Filter
}

fn in_direction(p: &Policy, dir: Direction) -> bool {
    let normal = !p.spec.pre_dnat && !p.spec.do_not_track;
    normal && has_direction(p, dir)
}

/// Whether the policy has rules for direction `dir` (its types).
fn has_direction(p: &Policy, dir: Direction) -> bool {
    if dir == Direction::Ingress {
        p.ingress
    } else {
        p.egress
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a} {b}"),
    }
}

fn rule_name(dir: Direction, idx: usize) -> String {
    let d = if dir == Direction::Ingress {
        "ingress"
    } else {
        "egress"
    };
    format!("{d}#{idx}")
}

/// The walk a workload's stage runs (its enforced chain's style).
const WORKLOAD_STYLE: ChainStyle = ChainStyle {
    conntrack: true,
    failsafe: false,
    force_pass: false,
    notrack: false,
    tail: Tail::Profiles,
};

/// One stage's shadow walks: where they live and what they walk.
struct Shadow<'p, 'a> {
    /// The entry chain and its rank: a workload's is `{stem}-{tag}`
    /// (Endpoint, jumped to from the dispatch); a host endpoint stage's is
    /// `{stem}x-{tag}` (Tiers, jumped to from the stage's Endpoint chain,
    /// after its views in render order, so that every jump goes to a chain
    /// declared before it).
    entry: (String, Rank),
    /// Views `{stem}e-{tag}`, `{stem}s-{tag}`.
    stem: String,
    tag: String,
    layer: Layer,
    dir: Direction,
    /// The enforced chain's style: failsafes first, end-of-tier drops, tail.
    style: ChainStyle,
    /// The connection record's name for the stage (`ingress`, `prednat`, …).
    stage: &'static str,
    enforced: &'p [&'a Policy],
    /// The staged view, when it differs.
    staged: Option<&'p [&'a Policy]>,
    logged: bool,
    /// Whether the stage walks the endpoint's profiles (after the tiers).
    profiles: bool,
    ep: &'a Endpoint,
}

impl<'a> Compiler<'a> {
    /// The staged chains and the `filter-shadow-{to,from}-wl` maps the
    /// workload dispatch consults, and the host endpoints' shadow chains
    /// their stages jump to (nothing without staged policies or
    /// connection logs).
    pub(super) fn staged_chains(
        &mut self,
        workloads: &[&'a Endpoint],
        hosts: &[(String, &'a Endpoint)],
    ) {
        if !self.cluster.shadow_walks() {
            return;
        }
        let mut eps = workloads.to_vec();
        eps.sort_by(|a, b| a.id.cmp(&b.id));
        let mut maps = [BTreeMap::new(), BTreeMap::new()];
        for ep in eps {
            let Some(iface) = ep.iface.clone() else {
                continue;
            };
            let enforced: Vec<&'a Policy> = self.cluster.policies_for(ep).collect();
            let staged = staged_view(self.cluster, ep);
            for (i, dir) in [Direction::Ingress, Direction::Egress]
                .into_iter()
                .enumerate()
            {
                let e: Vec<&'a Policy> = enforced
                    .iter()
                    .copied()
                    .filter(|p| in_direction(p, dir))
                    .collect();
                let s: Vec<&'a Policy> = staged
                    .iter()
                    .copied()
                    .filter(|p| in_direction(p, dir))
                    .collect();
                let differs = !e.iter().map(|p| &p.id).eq(s.iter().map(|p| &p.id));
                let logged = self.cluster.connection_logged(ep);
                if !differs && !logged {
                    continue;
                }
                let (tag, stage) = if dir == Direction::Ingress {
                    ("stw", "ingress")
                } else {
                    ("sfw", "egress")
                };
                let chain = self.staged_endpoint(&Shadow {
                    entry: (limit_name(&format!("filter-{tag}-{iface}")), Rank::Endpoint),
                    stem: format!("filter-{tag}"),
                    tag: iface.clone(),
                    layer: Layer::Filter,
                    dir,
                    style: WORKLOAD_STYLE,
                    stage,
                    enforced: &e,
                    staged: differs.then_some(s.as_slice()),
                    logged,
                    profiles: true,
                    ep,
                });
                maps[i].insert(iface.clone(), format!("jump {chain}"));
            }
        }
        let [to, from] = maps;
        for (name, elements) in [("filter-shadow-to-wl", to), ("filter-shadow-from-wl", from)] {
            self.out.maps.insert(
                name.into(),
                VerdictMap {
                    name: name.into(),
                    elements,
                },
            );
        }
        self.host_shadow_chains(hosts);
    }

    /// One stage's shadow entry chain: clear the staged bits, walk the
    /// enforced view, walk the staged view (when it differs), log the
    /// connection (when logged), clear the bits again.
    fn staged_endpoint(&mut self, sh: &Shadow<'_, 'a>) -> String {
        let (name, rank) = sh.entry.clone();
        let mut rules = vec![Rule::new("", mark_clear(MARK_STAGED_ALL), "")];
        let mut views = vec![(View::Enforced, sh.enforced, "e")];
        views.extend(sh.staged.map(|s| (View::Staged, s, "s")));
        for (view, list, suffix) in views {
            let walk = self.shadow_walk(view, sh, list);
            let chain = limit_name(&format!("{}{suffix}-{}", sh.stem, sh.tag));
            self.add_chain(chain.clone(), Rank::Tiers, None, walk);
            let note = format!("{} view of {}", view.word(), sh.ep.id);
            rules.push(Rule::new("", format!("jump {chain}"), note));
        }
        if sh.logged {
            let entry = ir::LogEntry {
                action: "Connection".into(),
                rule: sh.stage.into(),
                endpoint: sh.ep.id.to_string(),
                ..ir::LogEntry::default()
            };
            let stmt = self.shadow_log(entry);
            let note = format!("connection log of {}", sh.ep.id);
            rules.push(Rule::new("", stmt, note));
        }
        rules.push(Rule::new("", mark_clear(MARK_STAGED_ALL), ""));
        self.add_chain(name.clone(), rank, None, rules);
        name
    }

    /// The walk of one view, as the stage's enforced chain runs: failsafe
    /// ports (host endpoints), the tiers, then the tail (the endpoint's
    /// profiles and "no profile allowed"; a forward stage's allow; a
    /// preDNAT or untracked stage's pass). Every path decides.
    fn shadow_walk(
        &mut self,
        view: View,
        sh: &Shadow<'_, 'a>,
        policies: &[&'a Policy],
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        if sh.style.failsafe {
            let chain = self.shadow_failsafe_chain(view, sh.layer, sh.dir);
            rules.push(Rule::new("", format!("jump {chain}"), "failsafe ports"));
            rules.push(Rule::new(view.decided(), "return", ""));
        }
        self.shadow_tiers(view, sh, policies, &mut rules);
        let ep = sh.ep;
        let outcome = match sh.style.tail {
            Tail::Profiles => {
                for prof in ep.profiles.iter().filter(|_| sh.profiles) {
                    if !self.cluster.profiles.contains_key(prof) {
                        continue;
                    }
                    let chain = self.shadow_profile_chain(view, sh.dir, prof);
                    let jump = format!("jump {chain}");
                    rules.push(Rule::new("", jump, format!("profile {prof}")));
                    rules.push(Rule::new(view.decided(), "return", ""));
                }
                (Outcome::Deny, "no profile allowed")
            }
            Tail::AcceptForward => (Outcome::Allow, "forwarded: no policy decided"),
            Tail::FallThrough => (Outcome::Pass, "no policy decided"),
        };
        let entry = ir::LogEntry {
            rule: outcome.1.into(),
            endpoint: ep.id.to_string(),
            ..ir::LogEntry::default()
        };
        let note = format!("{}: {}: {}", view.word(), ep.id, outcome.1);
        rules.extend(self.decide(view, sh.layer, outcome.0, entry, "", &note));
        rules
    }

    /// The tiers of one view: per tier its policies, then (unless the
    /// stage never drops at a tier's end) the end-of-tier drop.
    fn shadow_tiers(
        &mut self,
        view: View,
        sh: &Shadow<'_, 'a>,
        policies: &[&'a Policy],
        rules: &mut Vec<Rule>,
    ) {
        let mut i = 0;
        while i < policies.len() {
            let tier_name = policies[i].tier.clone();
            let default_action = self.cluster.tiers[&tier_name].default_action;
            rules.push(Rule::new(
                "",
                mark_clear(MARK_SHADOW_PASS),
                format!("{}: start of tier {tier_name}", view.word()),
            ));
            let start = i;
            while i < policies.len() && policies[i].tier == tier_name {
                let p = policies[i];
                let chain = self.shadow_policy_chain(view, sh.layer, sh.dir, p);
                let jump = format!("jump {chain}");
                rules.push(Rule::new(
                    mark_not(MARK_SHADOW_PASS),
                    jump,
                    p.id.to_string(),
                ));
                rules.push(Rule::new(view.decided(), "return", ""));
                i += 1;
            }
            if !sh.style.force_pass && default_action == TierAction::Deny {
                let selected: Vec<String> = policies[start..i]
                    .iter()
                    .map(|p| p.id.to_string())
                    .collect();
                let entry = ir::LogEntry {
                    selected: selected.join(","),
                    tier: tier_name.clone(),
                    rule: "end of tier".into(),
                    endpoint: sh.ep.id.to_string(),
                    ..ir::LogEntry::default()
                };
                let note = format!("{}: end of tier {tier_name}", view.word());
                let m = mark_not(MARK_SHADOW_PASS);
                rules.extend(self.decide(view, sh.layer, Outcome::Deny, entry, &m, &note));
            }
        }
    }

    /// The failsafe ports of a layer and direction in one view: each
    /// allows (as the enforced failsafe chain accepts). The staged view has
    /// the same failsafes first, so it never differs there and never logs.
    fn shadow_failsafe_chain(&mut self, view: View, layer: Layer, dir: Direction) -> String {
        let tag = if view == View::Enforced {
            "sefs"
        } else {
            "ssfs"
        };
        let d = if dir == Direction::Ingress {
            "in"
        } else {
            "out"
        };
        let name = format!("{}-{tag}-{d}", layer.prefix());
        if self.out.chains.contains_key(&name) {
            return name;
        }
        let enforced = self.failsafe_chain(layer, dir);
        let failsafes = self.out.chains[&enforced].rules.clone();
        let mut rules = Vec::new();
        for fs in failsafes {
            let note = format!("{}: {}", view.word(), fs.note);
            let action = match view {
                View::Enforced => {
                    let entry = ir::LogEntry {
                        rule: fs.note.clone(),
                        ..ir::LogEntry::default()
                    };
                    self.decision(view, layer, Outcome::Allow, entry).action
                }
                View::Staged => format!("{} return", mark_set(MARK_STAGED_DONE)),
            };
            rules.push(Rule::new(fs.matches, action, note));
        }
        self.add_chain(name.clone(), Rank::Leaf, None, rules);
        name
    }

    /// A policy's rules in one view and layer, shared by every endpoint
    /// using it.
    fn shadow_policy_chain(
        &mut self,
        view: View,
        layer: Layer,
        dir: Direction,
        p: &'a Policy,
    ) -> String {
        let tag = match (view, dir) {
            (View::Enforced, Direction::Ingress) => "sei",
            (View::Enforced, Direction::Egress) => "seo",
            (View::Staged, Direction::Ingress) => "ssi",
            (View::Staged, Direction::Egress) => "sso",
        };
        let name = limit_name(&format!("{}-{tag}-{}", layer.prefix(), p.id));
        if self.out.chains.contains_key(&name) {
            return name;
        }
        let (list, peers) = if dir == Direction::Ingress {
            (&p.spec.ingress, &p.peers.ingress)
        } else {
            (&p.spec.egress, &p.peers.egress)
        };
        let mut rules = Vec::new();
        for (idx, (r, peers)) in list.iter().zip(peers).enumerate() {
            let entry = ir::LogEntry {
                kind: p.id.kind.short().into(),
                namespace: p.namespace().unwrap_or_default().into(),
                name: p.id.name.clone(),
                tier: p.tier.clone(),
                rule: rule_name(dir, idx),
                ..ir::LogEntry::default()
            };
            let note = format!("{}: {} {} {:?}", view.word(), p.id, entry.rule, r.action);
            rules.extend(self.shadow_rule(view, layer, (r, peers), p.namespace(), entry, &note));
        }
        self.add_chain(name.clone(), Rank::Leaf, None, rules);
        name
    }

    fn shadow_profile_chain(&mut self, view: View, dir: Direction, prof: &str) -> String {
        let tag = match (view, dir) {
            (View::Enforced, Direction::Ingress) => "seri",
            (View::Enforced, Direction::Egress) => "sero",
            (View::Staged, Direction::Ingress) => "ssri",
            (View::Staged, Direction::Egress) => "ssro",
        };
        let name = limit_name(&format!("filter-{tag}-{prof}"));
        if self.out.chains.contains_key(&name) {
            return name;
        }
        let profile = &self.cluster.profiles[prof];
        let (list, peers) = if dir == Direction::Ingress {
            (&profile.spec.ingress, &profile.peers.ingress)
        } else {
            (&profile.spec.egress, &profile.peers.egress)
        };
        let mut rules = Vec::new();
        for (idx, (r, peers)) in list.iter().zip(peers).enumerate() {
            let entry = ir::LogEntry {
                kind: "profile".into(),
                name: prof.to_string(),
                rule: rule_name(dir, idx),
                ..ir::LogEntry::default()
            };
            let note = format!(
                "{}: profile {prof} {} {:?}",
                view.word(),
                entry.rule,
                r.action
            );
            rules.extend(self.shadow_rule(view, Layer::Filter, (r, peers), None, entry, &note));
        }
        self.add_chain(name.clone(), Rank::Leaf, None, rules);
        name
    }

    /// One Calico rule in a shadow chain: Allow and Deny decide, Pass skips
    /// the rest of the tier, Log is left out (the enforced chain logs).
    fn shadow_rule(
        &mut self,
        view: View,
        layer: Layer,
        (r, peers): HeldRule<'_>,
        ns: Option<&str>,
        entry: ir::LogEntry,
        note: &str,
    ) -> Vec<Rule> {
        let alts = self.rules.alternatives((r, peers), ns);
        let mut out = Vec::new();
        match r.action {
            Action::Allow | Action::Deny => {
                let outcome = if r.action == Action::Allow {
                    Outcome::Allow
                } else {
                    Outcome::Deny
                };
                let decide = self.decision(view, layer, outcome, entry);
                for alt in alts {
                    out.extend(decide.rules(&alt, note));
                }
            }
            Action::Pass => {
                let pass = format!("{} return", mark_set(MARK_SHADOW_PASS));
                out.extend(alts.into_iter().map(|a| Rule::new(a, pass.clone(), note)));
            }
            Action::Log => {}
        }
        out
    }

    /// An implicit decision (end of tier, no profile, …) under `matches`.
    fn decide(
        &mut self,
        view: View,
        layer: Layer,
        outcome: Outcome,
        entry: ir::LogEntry,
        matches: &str,
        note: &str,
    ) -> Vec<Rule> {
        self.decision(view, layer, outcome, entry)
            .rules(matches, note)
    }

    /// What deciding `outcome` means in `view`: in the enforced view,
    /// record the verdict and a fresh id for `entry` (a pass: the shared
    /// pass id, allow bit set); in the staged view, log when the recorded
    /// verdict differs, then mark the staged walk done.
    fn decision(
        &mut self,
        view: View,
        layer: Layer,
        outcome: Outcome,
        mut entry: ir::LogEntry,
    ) -> Decision {
        match view {
            View::Enforced => {
                entry.action = outcome.word().into();
                let id = match outcome {
                    Outcome::Pass => self.pass_id(),
                    _ => self.enforced_id(entry),
                };
                let allow = if outcome == Outcome::Deny {
                    0
                } else {
                    MARK_ENFORCED_ALLOW
                };
                Decision {
                    differs: Vec::new(),
                    log: None,
                    action: format!("{} return", mark_set((id << ID_SHIFT) | allow)),
                }
            }
            View::Staged => {
                entry.action = outcome.would().into();
                let differs = self.differs(layer, outcome);
                let stmt = self.shadow_log(entry);
                Decision {
                    differs,
                    log: Some(stmt),
                    action: format!("{} return", mark_set(MARK_STAGED_DONE)),
                }
            }
        }
    }

    /// The conditions (any of them) under which the enforced verdict the
    /// mark carries differs from a staged `outcome`.
    fn differs(&mut self, layer: Layer, outcome: Outcome) -> Vec<String> {
        let pass = passes(layer).then(|| {
            let bits = self.pass_id() << ID_SHIFT;
            (
                format!("meta mark & 0x{MARK_ID:x} == 0x{bits:x}"),
                format!("meta mark & 0x{MARK_ID:x} != 0x{bits:x}"),
            )
        });
        match (outcome, pass) {
            (Outcome::Allow, None) => vec![mark_not(MARK_ENFORCED_ALLOW)],
            (Outcome::Allow, Some((is_pass, _))) => vec![mark_not(MARK_ENFORCED_ALLOW), is_pass],
            (Outcome::Deny, _) => vec![mark_is(MARK_ENFORCED_ALLOW)],
            (Outcome::Pass, pass) => {
                let (_, not_pass) = pass.unwrap_or_default();
                vec![
                    mark_not(MARK_ENFORCED_ALLOW),
                    join(&mark_is(MARK_ENFORCED_ALLOW), &not_pass),
                ]
            }
        }
    }

    /// The one id of "no policy decided" in stages that can pass.
    fn pass_id(&mut self) -> u32 {
        if let Some(id) = self.shadow_pass {
            return id;
        }
        let entry = ir::LogEntry {
            action: "Pass".into(),
            rule: "no policy decided".into(),
            ..ir::LogEntry::default()
        };
        let id = self.enforced_id(entry);
        self.shadow_pass = Some(id);
        id
    }

    /// A new id for an enforced decision, recorded in the log index as
    /// `E<id>`; past [`MAX_ID`] decisions share the last id.
    fn enforced_id(&mut self, entry: ir::LogEntry) -> u32 {
        let id = (self
            .out
            .log_index
            .keys()
            .filter(|k| k.starts_with('E'))
            .count() as u32
            + 1)
        .min(MAX_ID);
        let entry = if id == MAX_ID {
            ir::LogEntry {
                action: entry.action,
                rule: "unattributed (too many shadowed rules)".into(),
                ..ir::LogEntry::default()
            }
        } else {
            entry
        };
        self.out.log_index.insert(format!("E{id}"), entry);
        id
    }

    /// The log statement of a staged "would …" record or a connection
    /// record: NFLOG with the entry's id, or a kernel log prefix naming it.
    pub(super) fn shadow_log(&mut self, entry: ir::LogEntry) -> String {
        match self.cluster.settings.log_backend {
            crate::calc::LogBackend::Nflog { .. } => self.rules.log_statement(entry),
            crate::calc::LogBackend::Kernel => {
                let who = [entry.kind.as_str(), &entry.namespace, &entry.name]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                let tier = if entry.tier.is_empty() {
                    String::new()
                } else {
                    format!("tier {}", entry.tier)
                };
                let text = [
                    "tortie",
                    &entry.action,
                    &who,
                    &entry.endpoint,
                    &tier,
                    &entry.rule,
                ]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
                let text: String = text
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\')
                    .take(120)
                    .collect();
                format!("log prefix \"{text}: \" level info")
            }
        }
    }
}

/// The statements of one decision (see [`Compiler::decision`]).
struct Decision {
    /// The conditions under which the verdict differs (a log rule each).
    differs: Vec<String>,
    /// The log statement.
    log: Option<String>,
    action: String,
}

impl Decision {
    fn rules(&self, matches: &str, note: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        if let Some(stmt) = &self.log {
            for differs in &self.differs {
                out.push(Rule::new(
                    join(matches, differs),
                    stmt.clone(),
                    format!("log: {note}"),
                ));
            }
        }
        out.push(Rule::new(matches, self.action.clone(), note));
        out
    }
}
