//! Reads an evaluation's hits back as Calico terms: a stage per endpoint
//! chain entered (its kind from the chain's name, its endpoint from the
//! interface), tiers from the tier chains' notes, policies and rule indexes
//! from the policy chains' notes, profiles, failsafes, and the implicit
//! decisions of the base and dispatch chains (their notes).

use std::collections::BTreeMap;

use super::eval::{Hit, Packet, Run};
use super::nft::Verdict;
use crate::calc::{Cluster, EndpointId};
use crate::compile::ir::{Rank, Ruleset};
use crate::compile::{MARK_ACCEPT, MARK_PASS};

/// A policy (or profile, or failsafe) on the path and the first rule of it
/// that decided, if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyTrace {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The policy's rule index (in its ingress or egress list).
    pub rule: Option<usize>,
    /// `allow`, `deny` or `pass`.
    pub action: Option<String>,
    /// Log rules that matched before (text output only).
    #[serde(skip)]
    pub logged: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TierTrace {
    pub tier: String,
    pub policies: Vec<PolicyTrace>,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    pub stage: String,
    pub endpoint: String,
    pub tiers: Vec<TierTrace>,
    /// `allow`, `deny` or `pass` (this stage did not decide).
    pub verdict: String,
    /// The chain the stage ran (text output only).
    #[serde(skip)]
    pub chain: String,
    /// The deciding rule's text when no note names it (text output only).
    #[serde(skip)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    /// `allow` or `deny`.
    pub verdict: String,
    pub stages: Vec<Stage>,
    #[serde(skip)]
    pub packet: Packet,
    /// When the request was untracked: its reply (not a conntrack reply),
    /// the reply's conntrack state, and where its stages start.
    #[serde(skip)]
    pub reply: Option<(Packet, &'static str, usize)>,
    /// The traced packet's conntrack state (`new` unless asked otherwise).
    #[serde(skip)]
    pub ct_state: &'static str,
}

/// Which endpoint each interface of the node stands for.
pub struct Endpoints {
    by_iface: BTreeMap<String, String>,
    wildcard: Option<String>,
}

impl Endpoints {
    pub fn of(cluster: &Cluster, node: &str) -> Endpoints {
        let mut by_iface = BTreeMap::new();
        for ep in cluster.local_endpoints(node) {
            if let (EndpointId::Workload { namespace, name }, Some(i)) = (&ep.id, &ep.iface) {
                by_iface.insert(i.clone(), format!("{namespace}/{name}"));
            }
        }
        let mut wildcard = None;
        for (iface, ep) in crate::compile::host_endpoint_bindings(cluster, node) {
            let EndpointId::Host { name } = &ep.id else {
                continue;
            };
            if iface == "*" {
                wildcard = Some(format!("hostendpoint/{name}"));
            } else {
                by_iface.insert(iface, format!("hostendpoint/{name}"));
            }
        }
        Endpoints { by_iface, wildcard }
    }

    fn label(&self, iface: &str, host_chain: bool) -> String {
        match (self.by_iface.get(iface), &self.wildcard) {
            (Some(l), _) if !host_chain || l.starts_with("hostendpoint/") => {
                format!("{l} ({iface})")
            }
            (_, Some(w)) if host_chain => format!("{w} ({iface}, all interfaces)"),
            _ => format!("({iface})"),
        }
    }
}

/// A stage's kind from its endpoint chain's name, and whether the
/// endpoint is on the input (true) or output interface.
fn stage_kind(chain: &str) -> (String, bool) {
    const KINDS: [(&str, &str, bool); 9] = [
        ("filter-tw-", "ingress", false),
        ("filter-fw-", "egress", true),
        ("filter-fhfw-", "forward", true),
        ("filter-thfw-", "forward", false),
        ("filter-fh-", "host-ingress", true),
        ("filter-th-", "host-egress", false),
        ("mangle-fh-", "prednat", true),
        ("raw-fh-", "untracked", true),
        ("raw-th-", "untracked", false),
    ];
    for (prefix, kind, input) in KINDS {
        if chain.starts_with(prefix) {
            return (kind.to_string(), input);
        }
    }
    (chain.split('-').take(2).collect::<Vec<_>>().join("-"), true)
}

/// `gnp/name`, `np/ns/name`, `knp/ns/name` (any kind word) as a policy.
fn policy_of(id: &str) -> PolicyTrace {
    let parts: Vec<&str> = id.splitn(3, '/').collect();
    let (kind, namespace, name) = match parts[..] {
        [k, ns, n] => (k, ns, n),
        [k, n] => (k, "", n),
        _ => ("", "", id),
    };
    PolicyTrace {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        rule: None,
        action: None,
        logged: Vec::new(),
    }
}

/// What a deciding rule did, from its verdict and the mark it left.
fn action_of(hit: &Hit) -> Option<&'static str> {
    match hit.verdict.as_ref()? {
        Verdict::Drop | Verdict::Reject => Some("deny"),
        Verdict::Accept => Some("allow"),
        Verdict::Return if hit.mark & MARK_ACCEPT != 0 => Some("allow"),
        Verdict::Return if hit.mark & MARK_PASS != 0 => Some("pass"),
        _ => None,
    }
}

/// The rule index in a policy or profile rule's note: `… ingress#3 Allow`
/// or `profile NAME #3`.
fn rule_index(note: &str) -> Option<usize> {
    let (_, tail) = note.rsplit_once('#')?;
    tail.split_whitespace().next()?.parse().ok()
}

struct Builder<'a> {
    ruleset: &'a Ruleset,
    stage: Stage,
    force_pass: bool,
    last: Option<&'a Hit>,
}

impl<'a> Builder<'a> {
    fn new(ruleset: &'a Ruleset, chain: &str, endpoints: &Endpoints, pkt: &Packet) -> Self {
        let (kind, input) = stage_kind(chain);
        let iface = if input { &pkt.iif } else { &pkt.oif };
        let host = !matches!(kind.as_str(), "ingress" | "egress");
        Builder {
            ruleset,
            force_pass: matches!(kind.as_str(), "prednat" | "untracked"),
            stage: Stage {
                stage: kind,
                endpoint: endpoints.label(iface.as_deref().unwrap_or("-"), host),
                tiers: Vec::new(),
                verdict: String::new(),
                chain: chain.to_string(),
                reason: None,
            },
            last: None,
        }
    }

    fn tier(&mut self, name: &str, outcome: &str) -> &mut TierTrace {
        if self.stage.tiers.last().is_none_or(|t| t.tier != name) {
            self.close_tier();
            self.stage.tiers.push(TierTrace {
                tier: name.into(),
                policies: Vec::new(),
                outcome: outcome.into(),
            });
        }
        self.stage.tiers.last_mut().expect("just pushed")
    }

    /// Settles an open tier's outcome: a policy passed, or nothing decided.
    fn close_tier(&mut self) {
        let force_pass = self.force_pass;
        if let Some(t) = self.stage.tiers.last_mut().filter(|t| t.outcome.is_empty()) {
            let passed = t
                .policies
                .iter()
                .any(|p| p.action.as_deref() == Some("pass"));
            t.outcome = if passed {
                "pass"
            } else if force_pass {
                "no policy decided"
            } else {
                "defaultAction Pass"
            }
            .into();
        }
    }

    fn add(&mut self, hit: &'a Hit) {
        self.last = Some(hit);
        let rank = self.ruleset.chains.get(&hit.chain).map(|c| c.rank);
        let note = hit.note.as_str();
        if note.starts_with("log: ") {
            return;
        }
        match rank {
            Some(Rank::Tiers) => self.tiers_hit(hit),
            Some(Rank::Leaf) if hit.chain.contains("-failsafe-") => {
                let Some(action) = action_of(hit) else { return };
                let name = note.rsplit(' ').next().unwrap_or(note);
                let t = self.tier("failsafe", "");
                t.policies.push(PolicyTrace {
                    kind: "failsafe".into(),
                    name: name.into(),
                    rule: Some(hit.index),
                    action: Some(action.into()),
                    ..policy_of("")
                });
                t.outcome = action.into();
            }
            Some(Rank::Leaf) => self.leaf_hit(hit),
            _ => self.endpoint_hit(hit),
        }
    }

    fn endpoint_hit(&mut self, hit: &Hit) {
        let note = hit.note.as_str();
        if note == "failsafe ports" {
            self.tier("failsafe", "no failsafe matched");
        } else if let Some(p) = note.strip_prefix("profile ") {
            if let Some(p) = p.strip_suffix(" allowed") {
                let _ = p;
                self.tier("profiles", "").outcome = "allow".into();
            } else {
                self.tier("profiles", "").policies.push(PolicyTrace {
                    kind: "profile".into(),
                    ..policy_of(p)
                });
            }
        } else if note.ends_with("no profile allowed") {
            self.close_tier();
            self.tier("profiles", "").outcome = "no profile allowed: drop".into();
        }
    }

    fn tiers_hit(&mut self, hit: &Hit) {
        let note = hit.note.as_str();
        if let Some(t) = note.strip_prefix("start of tier ") {
            self.tier(t, "");
        } else if note.starts_with("end of tier ") {
            if let Some(t) = self.stage.tiers.last_mut() {
                t.outcome = "end-of-tier drop".into();
            }
        } else if note.ends_with(" allowed") {
            if let Some(t) = self.stage.tiers.last_mut() {
                t.outcome = "allow".into();
            }
        } else if matches!(hit.verdict, Some(Verdict::Jump(_)))
            && let Some(t) = self.stage.tiers.last_mut()
        {
            t.policies.push(policy_of(note));
        }
    }

    /// A rule of a policy or profile chain.
    fn leaf_hit(&mut self, hit: &Hit) {
        let Some(tier) = self.stage.tiers.last_mut() else {
            return;
        };
        let Some(p) = tier.policies.last_mut() else {
            return;
        };
        let index = rule_index(&hit.note);
        if hit.logged {
            p.logged.extend(index);
        }
        if let Some(action) = action_of(hit) {
            p.rule = index;
            p.action = Some(action.into());
            if action != "allow" && tier.tier != "profiles" {
                tier.outcome = action.into();
            }
        }
    }

    fn finish(mut self) -> Stage {
        self.close_tier();
        let verdict = match self.last {
            Some(h) => match (&h.verdict, action_of(h)) {
                (Some(Verdict::Drop | Verdict::Reject), _) => "deny",
                (Some(Verdict::Accept), _) => "allow",
                _ if h.mark & MARK_ACCEPT != 0 => "allow",
                _ => "pass",
            },
            None => "pass",
        };
        self.stage.verdict = verdict.into();
        if let Some(h) = self.last.filter(|h| h.verdict.is_some()) {
            let rule = &self.ruleset.chains[&h.chain].rules[h.index];
            self.stage.reason = if h.note.is_empty() {
                Some(format!("by rule `{}` of {}", rule.body(), h.chain))
            } else if self.stage.tiers.is_empty() {
                Some(h.note.clone())
            } else {
                None
            };
        }
        self.stage
    }
}

/// The stage a decision outside any endpoint chain belongs to.
fn implicit_stage(hook: &str, chain: &str, hit: &Hit) -> Option<Stage> {
    let verdict = match hit.verdict.as_ref()? {
        Verdict::Drop | Verdict::Reject => "deny",
        Verdict::Accept if !hit.note.starts_with("allowed ") => "allow",
        Verdict::Return => "pass",
        _ => return None,
    };
    if hit.note.is_empty() {
        return None;
    }
    let stage = if hit.chain.contains("-to-wl-") {
        "ingress"
    } else if hit.chain.contains("-from-wl-") {
        "egress"
    } else {
        match hook {
            "prerouting" if chain.starts_with("raw-") => "untracked",
            "prerouting" => "prednat",
            "input" => "host-ingress",
            "output" if chain.starts_with("raw-") => "untracked",
            "output" => "host-egress",
            _ => "forward",
        }
    };
    Some(Stage {
        stage: stage.into(),
        endpoint: hit.note.clone(),
        tiers: Vec::new(),
        verdict: verdict.into(),
        chain: hit.chain.clone(),
        reason: None,
    })
}

/// Whether `chain` belongs to a staged shadow walk (`compile::staged`):
/// the workload entry chains `filter-stw-…` / `filter-sfw-…`, the host
/// endpoint stages' `{filter,mangle,raw}-sfh…x-` / `-sth…x-`, and their
/// views.
fn is_shadow(chain: &str) -> bool {
    let rest = chain.split_once('-').map_or("", |(_, r)| r);
    ["stw", "sfw", "sfh", "sth"]
        .iter()
        .any(|stem| rest.starts_with(stem))
}

/// The stages of `run`, in packet order.
pub fn attribute(ruleset: &Ruleset, pkt: &Packet, run: &Run, endpoints: &Endpoints) -> Trace {
    let mut stages = Vec::new();
    for hook in &run.hooks {
        let mut current: Option<Builder<'_>> = None;
        let mut in_shadow = false;
        for hit in &hook.hits {
            let rank = ruleset.chains.get(&hit.chain).map(|c| c.rank);
            let inside = matches!(rank, Some(Rank::Endpoint | Rank::Tiers | Rank::Leaf));
            // A staged shadow walk never decides: it is not a stage.
            let shadow_chain = is_shadow(&hit.chain);
            if inside && shadow_chain {
                // Entered from the workload dispatch (no stage open) or from
                // a host endpoint stage's chain, which goes on after it.
                in_shadow = true;
            }
            if in_shadow {
                if inside && (rank != Some(Rank::Endpoint) || shadow_chain) {
                    continue;
                }
                in_shadow = false;
            }
            let enters = rank == Some(Rank::Endpoint)
                && current.as_ref().is_none_or(|b| b.stage.chain != hit.chain);
            if !inside || enters {
                stages.extend(current.take().map(Builder::finish));
            }
            if enters {
                current = Some(Builder::new(ruleset, &hit.chain, endpoints, &hook.packet));
            }
            match current.as_mut() {
                Some(b) if inside => b.add(hit),
                _ => stages.extend(implicit_stage(hook.hook, &hook.chain, hit)),
            }
        }
        stages.extend(current.take().map(Builder::finish));
    }
    Trace {
        verdict: if run.allowed { "allow" } else { "deny" }.into(),
        stages,
        packet: pkt.clone(),
        reply: None,
        ct_state: "new",
    }
}
