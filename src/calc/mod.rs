//! The calculation layer: turns valid resources into a cluster snapshot
//! (endpoints with their full label sets, policies in Calico form, tiers,
//! profiles, network sets, dataplane settings) and answers the questions
//! the compiler asks: which policies apply to an endpoint, and which
//! addresses a selector holds. A label index keeps selector evaluation
//! proportional to the endpoints a selector can match, not to the cluster.

mod build;
mod index;
pub mod labels;
pub mod peers;
mod pods;
mod services;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use sha1::Digest;

pub use index::LabelIndex;
pub use labels::{LabelMap, Sym};
pub use services::{ServiceKey, ServiceSlices, SliceMembers, missing_service_notes};
pub use settings::{
    DenyAction, EndpointToHostAction, FailsafePort, LogBackend, Settings, felix_env,
};

use crate::model::convert::{self, ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_LABEL};
use crate::model::types::*;
use crate::model::{LabelPairs, Resource, ResourceKey, validate};
pub use crate::selector::NAMESPACE_LABEL;
use crate::selector::{self, Selector};
use build::{PodIn, sort_endpoints};
pub use peers::RulePeers;
pub use pods::{KeyedPod, PodFacts, PodRecord};

/// The kind of a policy, as it appears in chain names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// Calico NetworkPolicy.
    Np,
    /// Calico GlobalNetworkPolicy.
    Gnp,
    /// Kubernetes NetworkPolicy (converted).
    Knp,
    /// ClusterNetworkPolicy (converted; Calico's short kind `kcnp`).
    Kcnp,
    /// StagedNetworkPolicy.
    StagedNp,
    /// StagedGlobalNetworkPolicy.
    StagedGnp,
    /// StagedKubernetesNetworkPolicy (converted).
    StagedKnp,
}

impl PolicyKind {
    pub fn short(self) -> &'static str {
        match self {
            PolicyKind::Np => "np",
            PolicyKind::Gnp => "gnp",
            PolicyKind::Knp => "knp",
            PolicyKind::Kcnp => "kcnp",
            PolicyKind::StagedNp => "snp",
            PolicyKind::StagedGnp => "sgnp",
            PolicyKind::StagedKnp => "sknp",
        }
    }

    /// The enforced kind a staged kind stages (itself for enforced kinds).
    pub fn enforced(self) -> PolicyKind {
        match self {
            PolicyKind::StagedNp => PolicyKind::Np,
            PolicyKind::StagedGnp => PolicyKind::Gnp,
            PolicyKind::StagedKnp => PolicyKind::Knp,
            k => k,
        }
    }

    pub fn is_staged(self) -> bool {
        self != self.enforced()
    }
}

/// Identifies a policy: `gnp/name`, `np/ns/name`, `knp/ns/name`, `kcnp/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    /// The id of a policy of `kind` named `name`: a namespaced kind's
    /// policy lives in `namespace` (`default` when it has none), a global
    /// one in none.
    pub fn new(kind: PolicyKind, namespace: Option<&str>, name: &str) -> PolicyId {
        let global = matches!(
            kind,
            PolicyKind::Gnp | PolicyKind::Kcnp | PolicyKind::StagedGnp
        );
        PolicyId {
            kind,
            namespace: (!global).then(|| namespace.unwrap_or("default").to_string()),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind.short(), ns, self.name),
            None => write!(f, "{}/{}", self.kind.short(), self.name),
        }
    }
}

impl PolicyId {
    /// The enforced policy a staged policy stages (itself when enforced).
    pub fn enforced(&self) -> PolicyId {
        PolicyId {
            kind: self.kind.enforced(),
            ..self.clone()
        }
    }
}

/// A staged policy: what it would do (`Set` or `Delete`) and the policy
/// itself (its id has a staged kind; `id.enforced()` names the enforced
/// policy it replaces or deletes).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedPolicy {
    pub action: StagedAction,
    pub policy: Policy,
}

/// A policy in Calico form with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: PolicyId,
    pub tier: String,
    pub order: Option<f64>,
    pub spec: PolicySpec,
    /// Parsed `selector` with namespace/serviceAccount scoping applied.
    pub applies_to: Selector,
    /// The rules' peers, parsed (parallel to `spec.ingress`/`spec.egress`).
    pub peers: RulePeers,
    pub ingress: bool,
    pub egress: bool,
}

impl Policy {
    /// Sort key inside a tier: order (unset last), then name.
    pub(crate) fn sort_key(&self) -> (OrderKey, String) {
        (
            OrderKey(self.order.unwrap_or(f64::INFINITY)),
            format!(
                "{}/{}/{}",
                self.id.name,
                self.id.namespace.as_deref().unwrap_or(""),
                self.id.kind.short()
            ),
        )
    }

    /// The policy's namespace for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.id.namespace.as_deref()
    }
}

/// An f64 with a total order, for sorting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderKey(pub f64);
impl Eq for OrderKey {}
impl PartialOrd for OrderKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrderKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub order: Option<f64>,
    pub default_action: TierAction,
    /// Log this tier's end-of-tier drops (tortie's per-tier `logDropped`).
    pub log_dropped: bool,
}

impl Tier {
    /// Calico's built-in tiers, which exist whether or not a Tier object
    /// names them (default; kube-admin and kube-baseline for
    /// ClusterNetworkPolicy).
    pub const BUILTIN: [&'static str; 3] = [
        "default",
        crate::model::cnp::ADMIN_TIER,
        crate::model::cnp::BASELINE_TIER,
    ];

    /// A Tier object; a built-in tier's unset fields take its defaults.
    pub fn of(meta: &ObjectMeta, spec: &TierSpec) -> Tier {
        let name = meta.name.clone().unwrap_or_default();
        let builtin = validate::builtin_tier(&name);
        Tier {
            order: spec.order.or(builtin.map(|b| b.0)),
            default_action: spec
                .default_action
                .or(builtin.map(|b| b.1))
                .unwrap_or(TierAction::Deny),
            log_dropped: spec.log_dropped.unwrap_or(false),
            name,
        }
    }

    /// A built-in tier as it is when no Tier object names it.
    pub fn builtin(name: &str) -> Option<Tier> {
        let (order, default_action) = validate::builtin_tier(name)?;
        Some(Tier {
            name: name.into(),
            order: Some(order),
            default_action,
            log_dropped: false,
        })
    }
}

/// Whether an endpoint is a pod (workload) or a host interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointId {
    Workload { namespace: String, name: String },
    Host { name: String },
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointId::Workload { namespace, name } => write!(f, "workload {namespace}/{name}"),
            EndpointId::Host { name } => write!(f, "host endpoint {name}"),
        }
    }
}

/// A named port an endpoint exposes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: Sym,
    pub protocol: Protocol,
    pub port: u16,
}

/// An endpoint: a pod's interface or a host interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub node: Sym,
    /// Host-side interface (`cali…` for pods; `*` for an all-interfaces HEP).
    pub iface: Option<String>,
    pub addrs: Vec<IpAddr>,
    /// Own labels plus implicit labels over labels applied by profiles
    /// (those held by reference, shared by every endpoint of the profiles).
    pub labels: LabelMap,
    /// Shared by every endpoint with the same profiles.
    pub profiles: std::sync::Arc<[String]>,
    pub ports: Vec<NamedPort>,
}

/// A (global) network set: labelled CIDRs usable in rule selectors.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSet {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: LabelMap,
    pub nets: Vec<IpNet>,
}

/// A note about a resource that is valid but cannot take effect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub subject: String,
    pub message: String,
}

/// One of the node's interfaces with its addresses, as given on the command
/// line: `NAME=IP[,IP…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

impl HostInterface {
    /// The interface map the compiler uses (a name given twice merges).
    pub fn map(list: &[HostInterface]) -> BTreeMap<String, Vec<IpAddr>> {
        let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for i in list {
            out.entry(i.name.clone()).or_default().extend(&i.addrs);
        }
        out
    }
}

impl std::str::FromStr for HostInterface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, ips) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=IP[,IP…], e.g. eth0=198.18.0.1"))?;
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(format!(
                "`{name}` is not an interface name (1-15 characters, no `/`)"
            ));
        }
        let addrs = ips
            .split(',')
            .map(|ip| {
                ip.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("`{ip}` is not an IP address (in `{s}`)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostInterface {
            name: name.to_string(),
            addrs,
        })
    }
}

/// A profile: its spec, and its rules' peers parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub spec: ProfileSpec,
    pub peers: RulePeers,
}

impl Profile {
    /// The profile of `spec`; the first field that does not parse, if any.
    pub fn of(spec: ProfileSpec) -> Result<Profile, String> {
        let peers = RulePeers::of(&spec.ingress, &spec.egress, None)?;
        Ok(Profile { spec, peers })
    }
}

/// Everything the compiler needs, for the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub endpoints: Vec<Endpoint>,
    pub network_sets: Vec<NetworkSet>,
    /// Sorted by tier order, tier name, then policy order and name.
    pub policies: Vec<std::sync::Arc<Policy>>,
    pub tiers: BTreeMap<String, Tier>,
    pub profiles: BTreeMap<String, Profile>,
    pub settings: Settings,
    /// The node's interfaces and their addresses, when known (`tortie run`
    /// reads them by netlink; `compile`/`apply` take `--host-interface`):
    /// host endpoints with only `expectedIPs` bind to the interfaces that
    /// hold those addresses.
    pub host_interfaces: BTreeMap<String, Vec<IpAddr>>,
    pub notes: Vec<Note>,
    /// EndpointSlice members by Service (for `services` rule matches).
    pub services: ServiceSlices,
    /// Staged policies, sorted as `policies` are; they never change a verdict.
    pub staged: Vec<StagedPolicy>,
    /// Namespaces annotated [`CONNECTION_LOGS_ANNOTATION`]` = "true"`: their
    /// workloads' connections are logged.
    pub connection_log_namespaces: BTreeSet<String>,
    pub index: LabelIndex,
    /// The node this cluster was built for: only its pods get an
    /// interface name (empty: every pod does).
    pub node: String,
    /// Policies (positions in `policies`) by a `key == value` their
    /// selector requires; the rest are checked against every endpoint.
    policy_by_pair: labels::SymMap<(Sym, Sym), Vec<u32>>,
    policy_unindexed: Vec<u32>,
    /// How many policies the two lists above were built for (when
    /// `policies` has another length, [`Cluster::policies_for`] scans).
    /// Only [`Cluster::build_from`] fills them; a cluster whose policies
    /// are edited afterwards must come from [`Cluster::local_view`].
    policy_indexed: usize,
    /// Each policy's `applies_to` on interned labels, by position.
    policy_matchers: Vec<labels::SymSelector>,
}

/// One object a cluster is built from: a model resource, or a pod as the
/// incremental engine keeps it (a record, under its key).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Resource(&'a Resource),
    Pod(&'a ResourceKey, &'a PodRecord),
}

/// The Namespace annotation that turns connection logs on for the
/// namespace's workloads (whatever policy, Kubernetes or Calico, decides).
pub const CONNECTION_LOGS_ANNOTATION: &str = "tortie.io/connection-logs";

/// Whether a Namespace's metadata asks for connection logs.
pub fn connection_logs_annotated(meta: &ObjectMeta) -> bool {
    meta.annotations
        .get(CONNECTION_LOGS_ANNOTATION)
        .is_some_and(|v| v == "true")
}

impl Cluster {
    /// Whether `ep`'s new connections are logged.
    pub fn connection_logged(&self, ep: &Endpoint) -> bool {
        self.settings.connection_logs
            || matches!(&ep.id, EndpointId::Workload { namespace, .. }
                if self.connection_log_namespaces.contains(namespace))
    }

    /// Whether the workload dispatch consults the shadow maps (staged
    /// policies or connection logs may be in use).
    pub fn shadow_walks(&self) -> bool {
        !self.staged.is_empty()
            || self.settings.connection_logs
            || !self.connection_log_namespaces.is_empty()
    }
}

/// The name Calico gives a pod's host-side veth: `cali` + 11 hex chars of
/// sha1("<namespace>.<pod>").
pub fn pod_interface_name(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = sha1::Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let mut out = String::with_capacity(prefix.len() + 11);
    out.push_str(prefix);
    for b in digest.iter().take(6) {
        let _ = write!(out, "{b:02x}");
    }
    out.truncate(prefix.len() + 11);
    out
}

fn default_types(spec: &PolicySpec) -> (bool, bool) {
    if spec.types.is_empty() {
        match (spec.ingress.is_empty(), spec.egress.is_empty()) {
            (_, true) => (true, false),
            (true, false) => (false, true),
            (false, false) => (true, true),
        }
    } else {
        (
            spec.types.contains(&PolicyType::Ingress),
            spec.types.contains(&PolicyType::Egress),
        )
    }
}

/// Prefixes every label key in `sel` (for namespace and service-account
/// selectors, which match `pcns.*` / `pcsa.*` labels on endpoints).
pub fn prefix_labels(sel: &Selector, prefix: &str) -> Selector {
    let p = |k: &String| format!("{prefix}{k}");
    match sel {
        Selector::All | Selector::Global => sel.clone(),
        Selector::Has(k) => Selector::Has(p(k)),
        Selector::Equal(k, v) => Selector::Equal(p(k), v.clone()),
        Selector::NotEqual(k, v) => Selector::NotEqual(p(k), v.clone()),
        Selector::In(k, v) => Selector::In(p(k), v.clone()),
        Selector::NotIn(k, v) => Selector::NotIn(p(k), v.clone()),
        Selector::Contains(k, v) => Selector::Contains(p(k), v.clone()),
        Selector::StartsWith(k, v) => Selector::StartsWith(p(k), v.clone()),
        Selector::EndsWith(k, v) => Selector::EndsWith(p(k), v.clone()),
        Selector::Not(s) => Selector::Not(Box::new(prefix_labels(s, prefix))),
        Selector::And(v) => Selector::And(v.iter().map(|s| prefix_labels(s, prefix)).collect()),
        Selector::Or(v) => Selector::Or(v.iter().map(|s| prefix_labels(s, prefix)).collect()),
    }
}

/// The selector a rule's `namespaceSelector` stands for on endpoint labels.
pub fn namespace_selector(text: &str) -> Result<Selector, selector::SelectorError> {
    Ok(match selector::parse(text)? {
        Selector::Global => Selector::Not(Box::new(Selector::Has(NAMESPACE_LABEL.into()))),
        Selector::All => Selector::Has(NAMESPACE_LABEL.into()),
        other => prefix_labels(&other, convert::NAMESPACE_LABEL_PREFIX),
    })
}

fn namespace_equals(ns: &str) -> Selector {
    Selector::Equal(NAMESPACE_LABEL.into(), ns.into())
}

/// A policy-level selector field; `all()` when it is not given.
fn policy_selector(text: Option<&str>, field: &str) -> Result<Selector, String> {
    match text {
        None => Ok(Selector::All),
        Some(t) => selector::parse(t).map_err(|e| format!("{field}: {e}")),
    }
}

impl Cluster {
    /// Builds the snapshot from valid resources. `node` selects which
    /// node-specific FelixConfiguration applies.
    pub fn build(resources: &[Resource], node: &str) -> Cluster {
        Cluster::build_with_env(resources, node, None)
    }

    /// As [`Cluster::build`], with FelixConfiguration parameters from the
    /// environment taking precedence (see [`settings::felix_env`]).
    pub fn build_with_env(
        resources: &[Resource],
        node: &str,
        env: Option<&FelixConfigurationSpec>,
    ) -> Cluster {
        Cluster::build_from(resources.iter().map(Input::Resource), node, env)
    }

    /// As [`Cluster::build_with_env`], from resources held elsewhere (read
    /// three times), pods possibly as compact records.
    pub fn build_from<'a, I>(
        resources: I,
        node: &str,
        env: Option<&FelixConfigurationSpec>,
    ) -> Cluster
    where
        I: Iterator<Item = Input<'a>> + Clone,
    {
        let mut c = Cluster {
            node: node.to_string(),
            ..Cluster::default()
        };
        // One allocation for the endpoints, not a doubling series.
        let endpoints = (resources.clone())
            .filter(|r| match r {
                Input::Resource(r) => is_endpoint(r),
                Input::Pod(..) => true,
            })
            .count();
        c.endpoints.reserve_exact(endpoints);
        let mut felix_default = None;
        let mut felix_node = None;
        let mut namespaces: BTreeMap<String, LabelPairs> = BTreeMap::new();
        let mut service_accounts: BTreeMap<(String, String), LabelPairs> = BTreeMap::new();
        for r in resources.clone() {
            let Input::Resource(r) = r else { continue };
            match r {
                Resource::Namespace(o) => {
                    if connection_logs_annotated(&o.metadata) {
                        c.connection_log_namespaces
                            .insert(o.metadata.name.clone().unwrap_or_default());
                    }
                    namespaces.insert(
                        o.metadata.name.clone().unwrap_or_default(),
                        o.metadata.labels.clone(),
                    );
                }
                Resource::ServiceAccount(o) => {
                    service_accounts.insert(
                        (
                            o.metadata.namespace.clone().unwrap_or_default(),
                            o.metadata.name.clone().unwrap_or_default(),
                        ),
                        o.metadata.labels.clone(),
                    );
                }
                Resource::FelixConfiguration(o) => match o.metadata.name.as_deref() {
                    Some("default") => felix_default = Some(o.spec.clone()),
                    Some(n) if n == format!("node.{node}") => felix_node = Some(o.spec.clone()),
                    _ => {}
                },
                Resource::Tier(o) => {
                    let t = Tier::of(&o.metadata, &o.spec);
                    c.tiers.insert(t.name.clone(), t);
                }
                Resource::Profile(o) => {
                    c.add_profile(o.metadata.name.clone().unwrap_or_default(), o.spec.clone())
                }
                _ => {}
            }
        }
        c.settings = Settings::from_config(felix_default.as_ref(), felix_node.as_ref(), env);
        // Calico's built-in tiers exist whether or not a Tier object names
        // them (default; kube-admin and kube-baseline for ClusterNetworkPolicy).
        for name in Tier::BUILTIN {
            c.tiers
                .entry(name.into())
                .or_insert_with(|| Tier::builtin(name).expect("a built-in tier"));
        }
        // Namespaces and service accounts become profiles carrying their labels.
        for (ns, labels) in &namespaces {
            let p = convert::namespace_profile(ns, labels);
            c.add_profile(p.metadata.name.unwrap_or_default(), p.spec);
        }
        for ((ns, sa), labels) in &service_accounts {
            let p = convert::service_account_profile(ns, sa, labels);
            c.add_profile(p.metadata.name.unwrap_or_default(), p.spec);
        }
        let mut pods = build::PodEndpoints::new(resources.clone().filter_map(PodIn::of).collect());
        for r in resources {
            let r = match r {
                Input::Pod(key, pod) => {
                    let ep = pods.next(&c);
                    c.add_pod(&KeyedPod(key, pod), ep, &namespaces);
                    continue;
                }
                Input::Resource(r) => r,
            };
            match r {
                Resource::NetworkPolicy(o) => c.add_policy(PolicyKind::Np, &o.metadata, &o.spec),
                Resource::GlobalNetworkPolicy(o) => {
                    c.add_policy(PolicyKind::Gnp, &o.metadata, &o.spec)
                }
                Resource::K8sNetworkPolicy(o) => {
                    let conv = convert::convert_k8s_policy(o);
                    c.add_policy(PolicyKind::Knp, &conv.metadata, &conv.spec)
                }
                Resource::ClusterNetworkPolicy(o) => {
                    let conv = crate::model::cnp::convert_cnp(o);
                    c.add_policy(PolicyKind::Kcnp, &conv.metadata, &conv.spec)
                }
                Resource::Pod(p) => {
                    let ep = pods.next(&c);
                    c.add_pod(p, ep, &namespaces)
                }
                Resource::WorkloadEndpoint(o) => c.add_workload_endpoint(o),
                Resource::HostEndpoint(o) => c.add_host_endpoint(o),
                Resource::NetworkSet(o) => c.add_network_set(Some(o), &o.metadata, &o.spec),
                Resource::GlobalNetworkSet(o) => c.add_network_set(None, &o.metadata, &o.spec),
                Resource::EndpointSlice(o) => c.add_endpoint_slice(o),
                r => match c.staged_of(r) {
                    Some(Ok(sp)) => c.staged.push(sp),
                    Some(Err(note)) => c.notes.push(note),
                    None => {}
                },
            }
        }
        let mut staged = std::mem::take(&mut c.staged);
        staged.sort_by_cached_key(|s| c.policy_rank(&s.policy));
        c.staged = staged;
        let mut policies = std::mem::take(&mut c.policies);
        policies.sort_by_cached_key(|p| c.policy_rank(p));
        c.policies = policies;
        sort_endpoints(&mut c.endpoints);
        c.network_sets
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        c.index = LabelIndex::build(&c.endpoints, &c.network_sets);
        for (i, p) in c.policies.iter().enumerate() {
            let i = i as u32;
            match index::required_pair(&p.applies_to, &c.index) {
                Some((k, v)) => {
                    let pair = (Sym::new(&k), Sym::new(&v));
                    c.policy_by_pair.entry(pair).or_default().push(i);
                }
                None => c.policy_unindexed.push(i),
            }
        }
        c.policy_indexed = c.policies.len();
        c.policy_matchers = (c.policies.iter())
            .map(|p| labels::SymSelector::new(&p.applies_to))
            .collect();
        c.notes.sort();
        c
    }

    fn note(&mut self, subject: String, message: impl Into<String>) {
        self.notes.push(Note {
            subject,
            message: message.into(),
        });
    }

    fn add_profile(&mut self, name: String, spec: ProfileSpec) {
        match Profile::of(spec) {
            Ok(p) => {
                self.profiles.insert(name, p);
            }
            Err(message) => self.note(
                format!("profile {name}"),
                format!("{message}; the profile has no effect until it is corrected"),
            ),
        }
    }

    fn add_policy(&mut self, kind: PolicyKind, meta: &ObjectMeta, spec: &PolicySpec) {
        match self.make_policy(kind, meta, spec) {
            Ok(p) => self.policies.push(std::sync::Arc::new(p)),
            Err(note) => self.notes.push(note),
        }
    }

    /// The policy a resource stands for; a note when it cannot take effect
    /// (its tier does not exist). `None` for other kinds.
    pub fn policy_of(&self, r: &Resource) -> Option<Result<Policy, Note>> {
        Some(match r {
            Resource::NetworkPolicy(o) => self.make_policy(PolicyKind::Np, &o.metadata, &o.spec),
            Resource::GlobalNetworkPolicy(o) => {
                self.make_policy(PolicyKind::Gnp, &o.metadata, &o.spec)
            }
            Resource::K8sNetworkPolicy(o) => {
                let conv = convert::convert_k8s_policy(o);
                self.make_policy(PolicyKind::Knp, &conv.metadata, &conv.spec)
            }
            Resource::ClusterNetworkPolicy(o) => {
                let conv = crate::model::cnp::convert_cnp(o);
                self.make_policy(PolicyKind::Kcnp, &conv.metadata, &conv.spec)
            }
            _ => return None,
        })
    }

    /// The staged policy a staged resource stands for (a note when a `Set`
    /// names a tier that does not exist); `None` for other kinds.
    pub fn staged_of(&self, r: &Resource) -> Option<Result<StagedPolicy, Note>> {
        let (action, enforced) = crate::model::staged::as_enforced(r)?;
        let (kind, meta, mut spec) = match enforced {
            Resource::NetworkPolicy(o) => (PolicyKind::StagedNp, o.metadata, o.spec),
            Resource::GlobalNetworkPolicy(o) => (PolicyKind::StagedGnp, o.metadata, o.spec),
            Resource::K8sNetworkPolicy(o) => {
                let conv = convert::convert_k8s_policy(&o);
                (PolicyKind::StagedKnp, conv.metadata, conv.spec)
            }
            _ => return None,
        };
        if action == StagedAction::Delete {
            // Only the name matters: what it deletes is found by name.
            spec.tier = None;
        }
        Some(
            self.make_policy(kind, &meta, &spec)
                .map(|policy| StagedPolicy { action, policy }),
        )
    }

    /// Where `p` sits in evaluation order: tier order, tier name, then the
    /// policy's order and name.
    pub fn policy_rank(&self, p: &Policy) -> (OrderKey, String, (OrderKey, String)) {
        let t = &self.tiers[&p.tier];
        (
            OrderKey(t.order.unwrap_or(f64::INFINITY)),
            t.name.clone(),
            p.sort_key(),
        )
    }

    fn make_policy(
        &self,
        kind: PolicyKind,
        meta: &ObjectMeta,
        spec: &PolicySpec,
    ) -> Result<Policy, Note> {
        let name = meta.name.as_deref().unwrap_or_default();
        let id = PolicyId::new(kind, meta.namespace.as_deref(), name);
        let namespace = id.namespace.clone();
        let tier = spec.tier.clone().unwrap_or_else(|| "default".into());
        if !self.tiers.contains_key(&tier) {
            return Err(Note {
                subject: id.to_string(),
                message: format!(
                    "tier `{tier}` does not exist; the policy has no effect until it is created"
                ),
            });
        }
        let unreadable = |message: String| Note {
            subject: id.to_string(),
            message: format!("{message}; the policy has no effect until it is corrected"),
        };
        let mut applies_to =
            policy_selector(spec.selector.as_deref(), "selector").map_err(unreadable)?;
        if let Some(ns) = &namespace {
            applies_to = applies_to.and(namespace_equals(ns));
        }
        if let Some(ns_sel) = spec.namespace_selector.as_deref() {
            let sel = namespace_selector(ns_sel)
                .map_err(|e| unreadable(format!("namespaceSelector: {e}")))?;
            applies_to = applies_to.and(sel);
        }
        if let Some(sa) = spec.service_account_selector.as_deref() {
            let sel = policy_selector(Some(sa), "serviceAccountSelector").map_err(unreadable)?;
            applies_to = applies_to.and(prefix_labels(&sel, convert::SERVICE_ACCOUNT_LABEL_PREFIX));
        }
        let peers =
            RulePeers::of(&spec.ingress, &spec.egress, namespace.as_deref()).map_err(unreadable)?;
        let (ingress, egress) = default_types(spec);
        Ok(Policy {
            id,
            tier,
            order: spec.order,
            spec: spec.clone(),
            applies_to,
            peers,
            ingress,
            egress,
        })
    }

    /// Labels applied by the given profiles (earlier profiles win), to go
    /// under an endpoint's own labels; one shared copy per distinct list.
    /// As [`Cluster::profile_labels`], remembered per list of profiles
    /// (valid while `self.profiles` does not change, as during a build).
    /// The labels `profiles` apply, and one shared copy of the list.
    fn profile_labels_in(&self, profiles: &[String], memo: &mut Inherited) -> Found {
        if let Some(hit) = memo.by_list.get(profiles) {
            return hit.clone();
        }
        let found = (profiles.into(), self.profile_labels(profiles));
        memo.by_list.insert(profiles.into(), found.clone());
        found
    }

    fn profile_labels(&self, profiles: &[String]) -> Option<SharedPairs> {
        let applied = profiles
            .iter()
            .filter_map(|p| self.profiles.get(p))
            .flat_map(|p| p.spec.labels_to_apply.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let pairs = labels::pairs_of(applied);
        (!pairs.is_empty()).then(|| labels::shared(pairs))
    }

    /// Adds `pod`'s endpoint `ep` (made by [`build::PodEndpoints`]).
    fn add_pod(
        &mut self,
        pod: &impl PodFacts,
        ep: Option<Endpoint>,
        namespaces: &BTreeMap<String, LabelPairs>,
    ) {
        let ns = pod.namespace().unwrap_or("default");
        if let Some(ep) = ep {
            if !namespaces.contains_key(ns) {
                self.note(
                    format!("pod {ns}/{}", pod.name()),
                    format!("namespace `{ns}` is unknown; its labels are not applied"),
                );
            }
            self.endpoints.push(ep);
        }
    }

    /// The endpoint a pod stands for: its labels plus the implicit ones and
    /// those its namespace and service account apply. `None` for pods with
    /// no address yet, host-network pods and finished pods.
    pub fn pod_endpoint(&self, pod: &impl PodFacts) -> Option<Endpoint> {
        self.pod_endpoint_in(pod, &mut Inherited::default())
    }

    fn pod_endpoint_in(&self, pod: &impl PodFacts, memo: &mut Inherited) -> Option<Endpoint> {
        if pod.skipped() {
            return None;
        }
        let mut addrs = pod.addrs();
        if addrs.is_empty() {
            return None;
        }
        // Held for the endpoint's life: no spare capacity (most pods have one
        // address and one named port).
        addrs.shrink_to_fit();
        let ns = pod.namespace().unwrap_or("default").to_string();
        let name = pod.name().to_string();
        let sa = pod.service_account().unwrap_or("default");
        let implicit = [
            (NAMESPACE_LABEL, ns.as_str()),
            (ORCHESTRATOR_LABEL, "k8s"),
            (SERVICE_ACCOUNT_LABEL, sa),
        ];
        let implicit = implicit.map(|(k, v)| (Sym::new(k), Sym::new(v)));
        let (profiles, inherited) =
            self.pod_profiles(&ns, sa, (implicit[0].1, implicit[2].1), memo);
        let own = labels::pairs_of_syms(implicit.into_iter().chain(pod.own_labels()));
        let labels = LabelMap::layered(own, inherited);
        let mut ports = pod.named_ports();
        ports.shrink_to_fit();
        let node = pod.node().unwrap_or_default();
        // Only this node's pods have an interface here.
        let iface = (self.node.is_empty() || self.node == node)
            .then(|| pod_interface_name(&self.settings.interface_prefixes[0], &ns, &name));
        Some(Endpoint {
            id: EndpointId::Workload {
                namespace: ns,
                name,
            },
            node: node.into(),
            iface,
            addrs,
            labels,
            profiles,
            ports,
        })
    }

    /// A pod's implicit profiles (its namespace's, and its service
    /// account's when that exists) and the labels they apply; `syms` is
    /// (namespace, service account) interned, the memo's key.
    fn pod_profiles(&self, ns: &str, sa: &str, syms: (Sym, Sym), memo: &mut Inherited) -> Found {
        if let Some(hit) = memo.by_pod.get(&syms) {
            return hit.clone();
        }
        let mut profiles = vec![format!("kns.{ns}")];
        let sa_profile = format!("ksa.{ns}.{sa}");
        if self.profiles.contains_key(&sa_profile) {
            profiles.push(sa_profile);
        }
        let found = self.profile_labels_in(&profiles, memo);
        memo.by_pod.insert(syms, found.clone());
        found
    }

    fn add_workload_endpoint(&mut self, o: &crate::model::Object<WorkloadEndpointSpec>) {
        let ep = self.workload_endpoint(o);
        self.endpoints.push(ep);
    }

    /// The endpoint a WorkloadEndpoint stands for (labels inherited).
    pub fn workload_endpoint(&self, o: &crate::model::Object<WorkloadEndpointSpec>) -> Endpoint {
        let ns = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let mut over = vec![(NAMESPACE_LABEL, ns.as_str())];
        if let Some(sa) = &o.spec.service_account_name {
            over.push((SERVICE_ACCOUNT_LABEL, sa));
        }
        let under: Vec<(&str, &str)> = o
            .spec
            .orchestrator
            .iter()
            .map(|orch| (ORCHESTRATOR_LABEL, orch.as_str()))
            .collect();
        let own = own_labels(&over, &o.metadata.labels, &under);
        let mut profiles = o.spec.profiles.clone();
        let kns = format!("kns.{ns}");
        if self.profiles.contains_key(&kns) && !profiles.contains(&kns) {
            profiles.insert(0, kns);
        }
        let labels = LabelMap::layered(own, self.profile_labels(&profiles));
        let addrs = o
            .spec
            .ip_networks
            .iter()
            .filter_map(|n| validate::parse_net(n))
            .map(|n| n.addr())
            .collect();
        Endpoint {
            id: EndpointId::Workload {
                namespace: ns,
                name: o.metadata.name.clone().unwrap_or_default(),
            },
            node: o.spec.node.as_str().into(),
            iface: Some(o.spec.interface_name.clone()),
            addrs,
            labels,
            profiles: profiles.into(),
            ports: endpoint_ports(&o.spec.ports),
        }
    }

    fn add_host_endpoint(&mut self, o: &crate::model::Object<HostEndpointSpec>) {
        let ep = self.host_endpoint(o);
        if o.spec.interface_name.is_none() {
            self.note(
                format!("host endpoint {}", ep.id),
                "has no interfaceName: it polices the node's interfaces that hold one of its expectedIPs (tortie run reads them from the node; for compile and apply, pass --host-interface NAME=IP)",
            );
        }
        self.endpoints.push(ep);
    }

    /// The endpoint a HostEndpoint stands for (labels inherited).
    pub fn host_endpoint(&self, o: &crate::model::Object<HostEndpointSpec>) -> Endpoint {
        let name = o.metadata.name.clone().unwrap_or_default();
        let labels = LabelMap::layered(
            own_labels(&[], &o.metadata.labels, &[]),
            self.profile_labels(&o.spec.profiles),
        );
        Endpoint {
            id: EndpointId::Host { name },
            node: o.spec.node.as_str().into(),
            iface: o.spec.interface_name.clone(),
            addrs: o
                .spec
                .expected_ips
                .iter()
                .filter_map(|i| i.parse().ok())
                .collect(),
            labels,
            profiles: o.spec.profiles.as_slice().into(),
            ports: endpoint_ports(&o.spec.ports),
        }
    }

    /// Everything but the endpoints and network sets: the part of the
    /// cluster that `node`'s endpoints are compiled against, with them.
    pub fn local_view(&self, node: &str) -> Cluster {
        Cluster {
            endpoints: self.local_endpoints(node).cloned().collect(),
            network_sets: Vec::new(),
            policies: self.policies.clone(),
            tiers: self.tiers.clone(),
            profiles: self.profiles.clone(),
            settings: self.settings.clone(),
            host_interfaces: self.host_interfaces.clone(),
            notes: self.notes.clone(),
            services: ServiceSlices::new(),
            staged: self.staged.clone(),
            connection_log_namespaces: self.connection_log_namespaces.clone(),
            index: LabelIndex::default(),
            node: node.to_string(),
            // The view's policies are edited in place (the incremental
            // engine inserts and removes them), so it scans them.
            policy_by_pair: Default::default(),
            policy_unindexed: Vec::new(),
            policy_indexed: 0,
            policy_matchers: Vec::new(),
        }
    }

    /// As [`Cluster::endpoint_of`], for an input that may be a pod record.
    pub fn endpoint_of_input(&self, input: Input<'_>) -> Option<Endpoint> {
        match input {
            Input::Resource(r) => self.endpoint_of(r),
            Input::Pod(key, pod) => self.pod_endpoint(&KeyedPod(key, pod)),
        }
    }

    /// The endpoint a Pod, WorkloadEndpoint or HostEndpoint stands for.
    pub fn endpoint_of(&self, r: &Resource) -> Option<Endpoint> {
        match r {
            Resource::Pod(p) => self.pod_endpoint(p),
            Resource::WorkloadEndpoint(o) => Some(self.workload_endpoint(o)),
            Resource::HostEndpoint(o) => Some(self.host_endpoint(o)),
            _ => None,
        }
    }

    fn add_network_set(
        &mut self,
        namespaced: Option<&crate::model::Object<NetworkSetSpec>>,
        meta: &ObjectMeta,
        spec: &NetworkSetSpec,
    ) {
        let set = self.network_set_of(namespaced.is_some(), meta, spec);
        self.network_sets.push(set);
    }

    /// A (global) network set with its labels (plus namespace labels for a
    /// namespaced one).
    pub fn network_set_of(
        &self,
        namespaced: bool,
        meta: &ObjectMeta,
        spec: &NetworkSetSpec,
    ) -> NetworkSet {
        let namespace =
            namespaced.then(|| meta.namespace.clone().unwrap_or_else(|| "default".into()));
        let labels = match &namespace {
            Some(ns) => LabelMap::layered(
                own_labels(&[(NAMESPACE_LABEL, ns)], &meta.labels, &[]),
                self.profile_labels(&[format!("kns.{ns}")]),
            ),
            None => LabelMap::layered(own_labels(&[], &meta.labels, &[]), None),
        };
        NetworkSet {
            namespace,
            name: meta.name.clone().unwrap_or_default(),
            labels,
            nets: spec
                .nets
                .iter()
                .filter_map(|n| validate::parse_net(n))
                .collect(),
        }
    }

    /// Endpoints on `node`: workloads and host endpoints.
    pub fn local_endpoints<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        let node = node.to_string();
        self.endpoints.iter().filter(move |e| e.node == node)
    }

    /// Policies that apply to `ep`, in evaluation order.
    pub fn policies_for<'a>(&'a self, ep: &'a Endpoint) -> impl Iterator<Item = &'a Policy> + 'a {
        let indexed = self.policy_indexed == self.policies.len();
        let candidates: Vec<u32> = if indexed {
            let mut found = self.policy_unindexed.clone();
            for pair in ep.labels.syms() {
                found.extend(self.policy_by_pair.get(&pair).into_iter().flatten());
            }
            found.sort_unstable();
            found.dedup();
            found
        } else {
            (0..self.policies.len() as u32).collect()
        };
        candidates.into_iter().filter_map(move |i| {
            let p = &self.policies[i as usize];
            let hit = if indexed {
                self.policy_matchers[i as usize].matches(&ep.labels)
            } else {
                p.applies_to.matches(&ep.labels)
            };
            hit.then_some(&**p)
        })
    }

    /// The addresses (as CIDRs) a selector holds: matching endpoints'
    /// addresses and matching network sets' nets.
    pub fn selector_members(&self, sel: &Selector) -> BTreeSet<IpNet> {
        self.selector_nets(sel).into_iter().collect()
    }

    /// As [`Cluster::selector_members`], unsorted and possibly repeated
    /// (for callers that merge the nets anyway).
    pub fn selector_nets(&self, sel: &Selector) -> Vec<IpNet> {
        let m = labels::SymSelector::new(sel);
        let mut out = Vec::new();
        for i in self.index.candidate_endpoints(sel) {
            let ep = &self.endpoints[i];
            if m.matches(&ep.labels) {
                out.extend(ep.addrs.iter().map(|a| IpNet::from(*a)));
            }
        }
        for i in self.index.candidate_sets(sel) {
            let ns = &self.network_sets[i];
            if m.matches(&ns.labels) {
                out.extend(ns.nets.iter().copied());
            }
        }
        out
    }

    /// `(address, protocol, port)` for every endpoint matching `sel` that
    /// has a port named `name` (optionally of one protocol).
    pub fn named_port_members(
        &self,
        sel: &Selector,
        name: &str,
        protocol: Option<Protocol>,
    ) -> BTreeSet<(IpAddr, u8, u16)> {
        self.named_port_list(sel, name, protocol, None)
            .into_iter()
            .collect()
    }

    /// As [`Cluster::named_port_members`], sorted in a list, of one address
    /// family only when `v6` says which.
    pub fn named_port_list(
        &self,
        sel: &Selector,
        name: &str,
        protocol: Option<Protocol>,
        v6: Option<bool>,
    ) -> Vec<(IpAddr, u8, u16)> {
        let m = labels::SymSelector::new(sel);
        let want = protocol.map(Protocol::normalised);
        let mut out = Vec::new();
        for i in self.index.candidate_endpoints(sel) {
            let ep = &self.endpoints[i];
            if !ep.ports.iter().any(|p| p.name == name) || !m.matches(&ep.labels) {
                continue;
            }
            for p in ep.ports.iter().filter(|p| p.name == name) {
                if want.is_some_and(|w| w != p.protocol.normalised()) {
                    continue;
                }
                let addrs = ep
                    .addrs
                    .iter()
                    .filter(|a| v6.is_none_or(|v6| a.is_ipv6() == v6));
                out.extend(addrs.map(|a| (*a, p.protocol.number(), p.port)));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

type SharedPairs = std::sync::Arc<labels::Pairs>;

/// Inherited label lists already made during one build, by profile list.
type SharedProfiles = std::sync::Arc<[String]>;

/// A profile list with the labels it applies, shared.
type Found = (SharedProfiles, Option<SharedPairs>);

/// Per build: the shared profile list and inherited labels of each list of
/// profile names, and of each pod's (namespace, service account).
#[derive(Default)]
struct Inherited {
    by_list: std::collections::HashMap<Box<[String]>, Found>,
    by_pod: labels::SymMap<(Sym, Sym), Found>,
}

fn is_endpoint(r: &Resource) -> bool {
    matches!(
        r,
        Resource::Pod(_) | Resource::WorkloadEndpoint(_) | Resource::HostEndpoint(_)
    )
}

/// An object's own label layer: `over` replaces its labels, `under` fills
/// in keys it does not have.
fn own_labels(over: &[(&str, &str)], own: &LabelPairs, under: &[(&str, &str)]) -> Vec<(Sym, Sym)> {
    if over.is_empty() && under.is_empty() {
        // Already interned, sorted and unique.
        return own.pairs().to_vec();
    }
    let own = own.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    labels::pairs_of(over.iter().copied().chain(own).chain(under.iter().copied()))
}

fn endpoint_ports(ports: &[EndpointPort]) -> Vec<NamedPort> {
    ports
        .iter()
        .filter_map(|p| {
            Some(NamedPort {
                name: Sym::new(&p.name),
                protocol: p.protocol,
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

/// What an operator should hear about a node's view of the input: no
/// endpoint on the node (with the node names that do have endpoints and
/// look like the one given), or policies that select nothing on it.
pub fn node_notes(c: &Cluster, node: &str) -> Vec<Note> {
    let mut out = Vec::new();
    let local: Vec<&Endpoint> = c.local_endpoints(node).collect();
    if local.is_empty() {
        let nodes: BTreeSet<&str> = c.endpoints.iter().map(|e| e.node.as_str()).collect();
        let message = if nodes.is_empty() {
            "the input has no endpoints (Pods, WorkloadEndpoints or HostEndpoints), so no \
             policy applies: include the pods, or WorkloadEndpoints for this node"
                .to_string()
        } else {
            let like = closest_names(node, &nodes);
            format!(
                "no endpoint is on this node, but {} node(s) have endpoints{}; node names \
                 are case-sensitive (pods' spec.nodeName, endpoints' `node`)",
                nodes.len(),
                if like.is_empty() {
                    String::new()
                } else {
                    format!(", e.g. {}", like.join(", "))
                }
            )
        };
        out.push(Note {
            subject: format!("node {node}"),
            message,
        });
        return out;
    }
    let unused: Vec<String> = c
        .policies
        .iter()
        .filter(|p| !local.iter().any(|ep| p.applies_to.matches(&ep.labels)))
        .map(|p| p.id.to_string())
        .collect();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(10).map(String::as_str).collect();
        let more = unused.len().saturating_sub(shown.len());
        out.push(Note {
            subject: format!("node {node}"),
            message: format!(
                "{} {} no endpoint on this node: {}{}",
                unused.len(),
                if unused.len() == 1 {
                    "policy selects"
                } else {
                    "policies select"
                },
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        });
    }
    out.extend(missing_service_notes(c));
    out
}

/// Up to three of `names` that look like `want`: equal but for case, or
/// within two edits; otherwise none.
fn closest_names<'a>(want: &str, names: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .map(|n| {
            let d = if n.eq_ignore_ascii_case(want) {
                0
            } else {
                edit_distance(&n.to_lowercase(), &want.to_lowercase())
            };
            (d, *n)
        })
        .filter(|(d, _)| *d <= 2)
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
