//! The ruleset IR: one `inet` table of named sets, verdict maps and chains
//! of rules, and its rendering as `nft -f` text. Every rule renders with a
//! `counter` and a comment carrying a hash of the chain name and rule text,
//! which drift detection compares against what the kernel holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::Digest;

/// tortie owns exactly one table.
pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "tortie";

/// From how many sets on [`Ruleset::render`] renders on two threads.
const PARALLEL_RENDER: usize = 256;

/// The element type of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    Ipv4,
    Ipv6,
    Port,
    NamedPortV4,
    NamedPortV6,
}

impl SetType {
    /// The `type …; flags …;` part of the set's declaration.
    pub fn declaration(self) -> &'static str {
        match self {
            SetType::Ipv4 => "type ipv4_addr; flags interval;",
            SetType::Ipv6 => "type ipv6_addr; flags interval;",
            SetType::Port => "type inet_service; flags interval;",
            SetType::NamedPortV4 => "type ipv4_addr . inet_proto . inet_service;",
            SetType::NamedPortV6 => "type ipv6_addr . inet_proto . inet_service;",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub ty: SetType,
    /// Rendered element text, e.g. `198.18.0.0/24` or `198.18.0.5 . 6 . 80`.
    pub elements: BTreeSet<String>,
    /// What the set stands for (a selector, a list of nets), for readers.
    pub comment: String,
}

/// An `ifname : verdict` map used for O(1) dispatch to endpoint chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    pub name: String,
    /// Interface name → verdict text (`goto <chain>`).
    pub elements: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub kind: &'static str,
    pub hook: &'static str,
    pub priority: i32,
}

/// One rule: matches, then statements and verdict, and a note for readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: String,
    pub action: String,
    pub note: String,
}

impl Rule {
    pub fn new(
        matches: impl Into<String>,
        action: impl Into<String>,
        note: impl Into<String>,
    ) -> Rule {
        Rule {
            matches: matches.into(),
            action: action.into(),
            note: note.into(),
        }
    }

    /// The rule's statements without counter or comment.
    pub fn body(&self) -> String {
        match (self.matches.is_empty(), self.action.is_empty()) {
            (true, _) => self.action.clone(),
            (false, true) => self.matches.clone(),
            (false, false) => format!("{} {}", self.matches, self.action),
        }
    }

    /// Hash identifying this rule in this chain (16 hex characters).
    pub fn hash(&self, chain: &str) -> String {
        let digest = sha2::Sha256::digest(format!("{chain}\n{}", self.body()).as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The full rule text as nft takes it.
    pub fn render(&self, chain: &str) -> String {
        let mut s = String::new();
        if !self.matches.is_empty() {
            s.push_str(&self.matches);
            s.push(' ');
        }
        s.push_str("counter");
        if !self.action.is_empty() {
            s.push(' ');
            s.push_str(&self.action);
        }
        let mut comment = self.hash(chain);
        if !self.note.is_empty() {
            comment.push(';');
            comment.push_str(&self.note);
        }
        let comment: String = comment
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .take(127)
            .collect();
        let _ = write!(s, " comment \"{comment}\"");
        s
    }
}

/// Where a chain sits in the render order: chains are declared before
/// anything that jumps to them, and base chains come last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    Leaf,
    /// Tier walks shared by endpoints with the same ordered policies.
    Tiers,
    Endpoint,
    Dispatch,
    Base,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rank: Rank,
    pub rules: Vec<Rule>,
}

/// What a logged packet means: which policy or implicit drop logged it.
/// With the NFLOG backend the packet carries only a short id; this is what
/// the id stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogEntry {
    /// `Log` for the Log action; `Drop` for a logged implicit drop.
    pub action: String,
    /// `gnp`, `np`, `knp`, or empty for implicit drops.
    pub kind: String,
    pub namespace: String,
    /// The policy, or empty for implicit drops.
    pub name: String,
    pub tier: String,
    /// `ingress#0`, or what dropped: `end of tier`, `no profile`, …
    pub rule: String,
    /// The endpoint whose chain dropped (implicit drops).
    pub endpoint: String,
    /// For an end of tier: the policies of that tier that selected the
    /// endpoint (comma-separated), as connection logs name them.
    pub selected: String,
}

/// What a selector set holds, so its members can be updated in place when
/// an endpoint changes (see `compile::incremental`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetSource {
    /// Addresses of endpoints and network sets matching the selector.
    Selector {
        selector: crate::selector::Selector,
        v6: bool,
    },
    /// `address . protocol . port` of endpoints matching the selector that
    /// have one of the named ports.
    NamedPorts {
        selector: crate::selector::Selector,
        names: Vec<String>,
        protocol: Option<crate::model::types::Protocol>,
        v6: bool,
    },
    /// A Service's endpoint addresses (`ports: false`, a source match) or
    /// `address . protocol . port` of its endpoints and EndpointSlice ports
    /// (`ports: true`, a destination match).
    Service {
        service: crate::calc::ServiceKey,
        ports: bool,
        v6: bool,
    },
}

/// The whole desired table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: BTreeMap<String, Set>,
    pub maps: BTreeMap<String, VerdictMap>,
    pub chains: BTreeMap<String, Chain>,
    /// NFLOG prefix id → meaning (empty with the kernel log backend).
    pub log_index: BTreeMap<String, LogEntry>,
    /// What each selector and named-port set stands for.
    pub set_sources: BTreeMap<String, SetSource>,
}

fn render_elements(out: &mut String, elements: &BTreeSet<String>, quote: bool) {
    if elements.is_empty() {
        return;
    }
    out.push_str("\t\telements = { ");
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n\t\t\t     ");
        }
        if quote {
            let _ = write!(out, "\"{e}\"");
        } else {
            out.push_str(e);
        }
    }
    out.push_str(" }\n");
}

impl Ruleset {
    /// Chains in render order.
    pub fn ordered_chains(&self) -> Vec<&Chain> {
        let mut v: Vec<&Chain> = self.chains.values().collect();
        v.sort_by(|a, b| (a.rank, &a.name).cmp(&(b.rank, &b.name)));
        v
    }

    /// Number of rules across all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// Rules that jump or go to another chain: the edges of the jump graph
    /// the kernel re-validates on every commit that changes a verdict.
    /// Verdict-map elements count too (each is a `goto`).
    pub fn jump_count(&self) -> usize {
        let rules = self
            .chains
            .values()
            .flat_map(|c| c.rules.iter())
            .filter(|r| r.action.starts_with("jump ") || r.action.starts_with("goto "))
            .count();
        rules + self.maps.values().map(|m| m.elements.len()).sum::<usize>()
    }

    /// A set's comment as the kernel keeps it: no quotes, backslashes or
    /// control characters, at most 127 characters; `None` when empty.
    pub fn set_comment(set: &Set) -> Option<String> {
        let c: String = set
            .comment
            .chars()
            .map(|c| if c == '"' { '\'' } else { c })
            .filter(|c| *c != '\\' && !c.is_control())
            .take(127)
            .collect();
        (!c.is_empty()).then_some(c)
    }

    pub fn render_set(set: &Set) -> String {
        let mut out = format!("\tset {} {{\n\t\t{}\n", set.name, set.ty.declaration());
        if let Some(c) = Self::set_comment(set) {
            let _ = writeln!(out, "\t\tcomment \"{c}\"");
        }
        render_elements(&mut out, &set.elements, false);
        out.push_str("\t}\n");
        out
    }

    pub fn render_map(map: &VerdictMap) -> String {
        let mut out = format!("\tmap {} {{\n\t\ttype ifname : verdict;\n", map.name);
        if !map.elements.is_empty() {
            out.push_str("\t\telements = { ");
            for (i, (k, v)) in map.elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n\t\t\t     ");
                }
                let _ = write!(out, "\"{k}\" : {v}");
            }
            out.push_str(" }\n");
        }
        out.push_str("\t}\n");
        out
    }

    pub fn render_chain(chain: &Chain) -> String {
        let mut out = format!("\tchain {} {{\n", chain.name);
        if let Some(h) = chain.hook {
            let _ = writeln!(
                out,
                "\t\ttype {} hook {} priority {}; policy accept;",
                h.kind, h.hook, h.priority
            );
        }
        for r in &chain.rules {
            let _ = writeln!(out, "\t\t{}", r.render(&chain.name));
        }
        out.push_str("\t}\n");
        out
    }

    /// The table as one `table inet tortie { … }` block.
    pub fn render(&self) -> String {
        let sets = || {
            let mut out = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n");
            for set in self.sets.values() {
                out.push_str(&Self::render_set(set));
            }
            out
        };
        let rest = || {
            let mut rest = String::new();
            self.render_rest(&mut rest);
            rest
        };
        // At scale the sets (most of the text) and the rest on two threads.
        let (rest, mut out) = if self.sets.len() < PARALLEL_RENDER {
            (rest(), sets())
        } else {
            crate::par::join(rest, sets)
        };
        out.push_str(&rest);
        out
    }

    /// Only the sets, as one `table inet tortie { … }` block.
    pub fn render_sets(&self) -> String {
        let mut out = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n");
        for set in self.sets.values() {
            out.push_str(&Self::render_set(set));
        }
        out.push_str("}\n");
        out
    }

    /// Everything but the sets (chains, maps, rules) as one block, for a
    /// table whose sets are in place.
    pub fn render_without_sets(&self) -> String {
        let mut out = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n");
        self.render_rest(&mut out);
        out
    }

    /// Chains and maps in their order, and the block's closing brace.
    fn render_rest(&self, out: &mut String) {
        // Leaf and endpoint chains, then maps (which jump to them), then the rest.
        let chains = self.ordered_chains();
        for c in chains.iter().filter(|c| c.rank <= Rank::Endpoint) {
            out.push_str(&Self::render_chain(c));
        }
        for map in self.maps.values() {
            out.push_str(&Self::render_map(map));
        }
        for c in chains.iter().filter(|c| c.rank > Rank::Endpoint) {
            out.push_str(&Self::render_chain(c));
        }
        out.push_str("}\n");
    }
}

/// Elements added to and removed from one set that exists before and after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementDelta {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
}

impl ElementDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Records `e` as added (cancelling an earlier removal).
    pub fn add(&mut self, e: String) {
        if !self.removed.remove(&e) {
            self.added.insert(e);
        }
    }

    /// Records `e` as removed (cancelling an earlier addition).
    pub fn remove(&mut self, e: String) {
        if !self.added.remove(&e) {
            self.removed.insert(e);
        }
    }
}

/// What changed in a ruleset since the kernel side last took it, per
/// object, so that planning costs in proportion to the change. Names refer
/// to the desired ruleset: an object named here and absent from it was
/// removed. `full` means "anything may have changed: compare everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub full: bool,
    /// Chains added, changed or removed.
    pub chains: BTreeSet<String>,
    /// Sets added, removed, or changed in a way elements cannot express.
    pub sets: BTreeSet<String>,
    /// Element changes of sets that exist before and after (and are not in
    /// `sets`).
    pub elements: BTreeMap<String, ElementDelta>,
    /// Verdict maps added, changed or removed (they are small: compare whole).
    pub maps: BTreeSet<String>,
}

impl Change {
    /// "Compare everything".
    pub fn everything() -> Change {
        Change {
            full: true,
            ..Change::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full
            && self.chains.is_empty()
            && self.sets.is_empty()
            && self.maps.is_empty()
            && self.elements.values().all(ElementDelta::is_empty)
    }

    /// Element changes only (no chain, set or map is added, removed or redefined).
    pub fn elements_only(&self) -> bool {
        !self.full && self.chains.is_empty() && self.sets.is_empty() && self.maps.is_empty()
    }

    /// The element delta of `set` (created empty).
    pub fn elements_of(&mut self, set: &str) -> &mut ElementDelta {
        self.elements.entry(set.to_string()).or_default()
    }

    /// Folds a later change into this one.
    pub fn merge(&mut self, later: Change) {
        self.full |= later.full;
        self.chains.extend(later.chains);
        self.maps.extend(later.maps);
        for s in later.sets {
            self.elements.remove(&s);
            self.sets.insert(s);
        }
        for (set, d) in later.elements {
            if self.sets.contains(&set) {
                continue;
            }
            let mine = self.elements_of(&set);
            for e in d.removed {
                mine.remove(e);
            }
            for e in d.added {
                mine.add(e);
            }
        }
        self.elements.retain(|_, d| !d.is_empty());
    }
}
