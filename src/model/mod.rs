//! The policy model: typed resources, how they are decoded from YAML/JSON
//! documents, validated, and converted (Kubernetes NetworkPolicy → Calico).
//! Pure: no I/O except reading the files the loader is given.

pub mod cnp;
pub mod convert;
pub mod de;
pub mod emit;
pub mod labels;
pub mod lint;
pub mod load;
pub mod staged;
pub mod types;
pub mod validate;
pub mod yaml;

use std::fmt;

pub use labels::LabelPairs;
use types::*;

/// A resource with its metadata and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<S> {
    pub metadata: ObjectMeta,
    pub spec: S,
}

/// A Pod: only what policy needs (labels, node, IPs, named ports, account).
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

/// Every kind tortie understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    NetworkPolicy(Box<Object<PolicySpec>>),
    GlobalNetworkPolicy(Box<Object<PolicySpec>>),
    HostEndpoint(Box<Object<HostEndpointSpec>>),
    WorkloadEndpoint(Box<Object<WorkloadEndpointSpec>>),
    NetworkSet(Object<NetworkSetSpec>),
    GlobalNetworkSet(Object<NetworkSetSpec>),
    Profile(Object<ProfileSpec>),
    Tier(Object<TierSpec>),
    FelixConfiguration(Box<Object<FelixConfigurationSpec>>),
    StagedNetworkPolicy(Box<Object<StagedPolicySpec>>),
    StagedGlobalNetworkPolicy(Box<Object<StagedPolicySpec>>),
    StagedKubernetesNetworkPolicy(Box<Object<StagedK8sNetworkPolicySpec>>),
    K8sNetworkPolicy(Box<Object<K8sNetworkPolicySpec>>),
    Namespace(Object<()>),
    ServiceAccount(Object<()>),
    Pod(Pod),
    ClusterNetworkPolicy(Box<Object<cnp::ClusterNetworkPolicySpec>>),
    /// discovery.k8s.io/v1 EndpointSlice (the body is its `spec` here).
    EndpointSlice(Object<EndpointSliceSpec>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
    HostEndpoint,
    WorkloadEndpoint,
    NetworkSet,
    GlobalNetworkSet,
    Profile,
    Tier,
    FelixConfiguration,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    K8sNetworkPolicy,
    Namespace,
    ServiceAccount,
    Pod,
    ClusterNetworkPolicy,
    EndpointSlice,
}

pub const CALICO_API: &str = "projectcalico.org/v3";
pub const CALICO_CRD_API: &str = "crd.projectcalico.org/v1";
/// The API of ClusterNetworkPolicy (kubernetes-sigs/network-policy-api v0.2.0).
pub const CNP_API: &str = "policy.networking.k8s.io/v1alpha2";
pub const DISCOVERY_API: &str = "discovery.k8s.io/v1";

impl ResourceKind {
    /// Calico kinds first, then the Kubernetes NetworkPolicy, then the core
    /// v1 kinds, then ClusterNetworkPolicy and the discovery.k8s.io kinds
    /// (`resolve` relies on this order).
    pub const ALL: [ResourceKind; 18] = [
        ResourceKind::NetworkPolicy,
        ResourceKind::GlobalNetworkPolicy,
        ResourceKind::HostEndpoint,
        ResourceKind::WorkloadEndpoint,
        ResourceKind::NetworkSet,
        ResourceKind::GlobalNetworkSet,
        ResourceKind::Profile,
        ResourceKind::Tier,
        ResourceKind::FelixConfiguration,
        ResourceKind::StagedNetworkPolicy,
        ResourceKind::StagedGlobalNetworkPolicy,
        ResourceKind::StagedKubernetesNetworkPolicy,
        ResourceKind::K8sNetworkPolicy,
        ResourceKind::Namespace,
        ResourceKind::ServiceAccount,
        ResourceKind::Pod,
        ResourceKind::ClusterNetworkPolicy,
        ResourceKind::EndpointSlice,
    ];

    /// The `kind:` text.
    pub fn kind_name(self) -> &'static str {
        match self {
            ResourceKind::NetworkPolicy | ResourceKind::K8sNetworkPolicy => "NetworkPolicy",
            ResourceKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            ResourceKind::HostEndpoint => "HostEndpoint",
            ResourceKind::WorkloadEndpoint => "WorkloadEndpoint",
            ResourceKind::NetworkSet => "NetworkSet",
            ResourceKind::GlobalNetworkSet => "GlobalNetworkSet",
            ResourceKind::Profile => "Profile",
            ResourceKind::Tier => "Tier",
            ResourceKind::FelixConfiguration => "FelixConfiguration",
            ResourceKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            ResourceKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            ResourceKind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
            ResourceKind::Namespace => "Namespace",
            ResourceKind::ServiceAccount => "ServiceAccount",
            ResourceKind::Pod => "Pod",
            ResourceKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            ResourceKind::EndpointSlice => "EndpointSlice",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::NetworkPolicy
                | ResourceKind::K8sNetworkPolicy
                | ResourceKind::StagedNetworkPolicy
                | ResourceKind::StagedKubernetesNetworkPolicy
                | ResourceKind::NetworkSet
                | ResourceKind::WorkloadEndpoint
                | ResourceKind::ServiceAccount
                | ResourceKind::Pod
                | ResourceKind::EndpointSlice
        )
    }

    /// Resolves `apiVersion` + `kind`. `Err` carries a message and a hint.
    pub fn resolve(api_version: &str, kind: &str) -> Result<ResourceKind, (String, String)> {
        // The first twelve kinds are Calico's; then three core v1 kinds.
        let calico = &Self::ALL[..12];
        let core = &Self::ALL[13..16];
        let found = match api_version {
            CALICO_API | CALICO_CRD_API => calico.iter().find(|k| k.kind_name() == kind).copied(),
            "networking.k8s.io/v1" | "extensions/v1beta1" | "networking.k8s.io/v1beta1" => {
                (kind == "NetworkPolicy").then_some(ResourceKind::K8sNetworkPolicy)
            }
            "v1" => core.iter().find(|k| k.kind_name() == kind).copied(),
            CNP_API => {
                (kind == "ClusterNetworkPolicy").then_some(ResourceKind::ClusterNetworkPolicy)
            }
            DISCOVERY_API => (kind == "EndpointSlice").then_some(ResourceKind::EndpointSlice),
            _ => None,
        };
        if let Some(k) = found {
            return Ok(k);
        }
        // Say where the kind does live, or what the kind might be.
        let all_names: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.kind_name()).collect();
        if calico.iter().any(|k| k.kind_name() == kind) {
            return Err((
                format!("kind `{kind}` does not exist in apiVersion `{api_version}`"),
                format!("{kind} is a Calico kind: use `apiVersion: {CALICO_API}`"),
            ));
        }
        if kind == "AdminNetworkPolicy" || kind == "BaselineAdminNetworkPolicy" {
            let tier = if kind == "AdminNetworkPolicy" {
                "Admin"
            } else {
                "Baseline"
            };
            return Err((
                format!(
                    "{kind} ({api_version}) is not supported: network-policy-api v0.2.0 and Calico 3.32 replaced it with ClusterNetworkPolicy"
                ),
                format!(
                    "rewrite it as `apiVersion: {CNP_API}`, `kind: ClusterNetworkPolicy` with `spec.tier: {tier}` (the priority, subject and rules carry over; actions Allow becomes Accept)"
                ),
            ));
        }
        if kind == "ClusterNetworkPolicy" {
            return Err((
                format!("kind `{kind}` does not exist in apiVersion `{api_version}`"),
                format!(
                    "ClusterNetworkPolicy is the network-policy-api kind: use `apiVersion: {CNP_API}`"
                ),
            ));
        }
        if kind == "EndpointSlice" {
            return Err((
                format!("kind `{kind}` does not exist in apiVersion `{api_version}`"),
                format!("{kind} is a Kubernetes discovery kind: use `apiVersion: {DISCOVERY_API}`"),
            ));
        }
        if core.iter().any(|k| k.kind_name() == kind) {
            return Err((
                format!("kind `{kind}` does not exist in apiVersion `{api_version}`"),
                format!("{kind} is a core Kubernetes kind: use `apiVersion: v1`"),
            ));
        }
        let hint = match de::suggest(kind, &all_names) {
            Some(s) => format!("did you mean `{s}`? kinds are case-sensitive"),
            None => format!("tortie reads: {}", {
                let mut names = all_names.clone();
                names.dedup();
                names.join(", ")
            }),
        };
        Err((
            format!("unknown kind `{kind}` (apiVersion `{api_version}`)"),
            hint,
        ))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKind::K8sNetworkPolicy => f.write_str("NetworkPolicy (networking.k8s.io/v1)"),
            k => f.write_str(k.kind_name()),
        }
    }
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::NetworkPolicy(_) => ResourceKind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => ResourceKind::GlobalNetworkPolicy,
            Resource::HostEndpoint(_) => ResourceKind::HostEndpoint,
            Resource::WorkloadEndpoint(_) => ResourceKind::WorkloadEndpoint,
            Resource::NetworkSet(_) => ResourceKind::NetworkSet,
            Resource::GlobalNetworkSet(_) => ResourceKind::GlobalNetworkSet,
            Resource::Profile(_) => ResourceKind::Profile,
            Resource::Tier(_) => ResourceKind::Tier,
            Resource::FelixConfiguration(_) => ResourceKind::FelixConfiguration,
            Resource::StagedNetworkPolicy(_) => ResourceKind::StagedNetworkPolicy,
            Resource::StagedGlobalNetworkPolicy(_) => ResourceKind::StagedGlobalNetworkPolicy,
            Resource::StagedKubernetesNetworkPolicy(_) => {
                ResourceKind::StagedKubernetesNetworkPolicy
            }
            Resource::K8sNetworkPolicy(_) => ResourceKind::K8sNetworkPolicy,
            Resource::Namespace(_) => ResourceKind::Namespace,
            Resource::ServiceAccount(_) => ResourceKind::ServiceAccount,
            Resource::Pod(_) => ResourceKind::Pod,
            Resource::ClusterNetworkPolicy(_) => ResourceKind::ClusterNetworkPolicy,
            Resource::EndpointSlice(_) => ResourceKind::EndpointSlice,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::NetworkPolicy(o) | Resource::GlobalNetworkPolicy(o) => &o.metadata,
            Resource::HostEndpoint(o) => &o.metadata,
            Resource::WorkloadEndpoint(o) => &o.metadata,
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => &o.metadata,
            Resource::Profile(o) => &o.metadata,
            Resource::Tier(o) => &o.metadata,
            Resource::FelixConfiguration(o) => &o.metadata,
            Resource::StagedNetworkPolicy(o) | Resource::StagedGlobalNetworkPolicy(o) => {
                &o.metadata
            }
            Resource::StagedKubernetesNetworkPolicy(o) => &o.metadata,
            Resource::K8sNetworkPolicy(o) => &o.metadata,
            Resource::Namespace(o) | Resource::ServiceAccount(o) => &o.metadata,
            Resource::Pod(p) => &p.metadata,
            Resource::ClusterNetworkPolicy(o) => &o.metadata,
            Resource::EndpointSlice(o) => &o.metadata,
        }
    }

    /// The identity of the resource: kind, namespace, name.
    pub fn key(&self) -> ResourceKey {
        let meta = self.meta();
        ResourceKey {
            kind: self.kind(),
            namespace: if self.kind().namespaced() {
                meta.namespace.clone()
            } else {
                None
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// One change from a datastore: the object under `key` is now `value`, or
/// gone (`None`). Sources emit these per object; the engine consumes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub key: ResourceKey,
    pub value: Option<Resource>,
}

impl Update {
    /// The object is (now) `r`.
    pub fn put(r: Resource) -> Update {
        Update {
            key: r.key(),
            value: Some(r),
        }
    }

    /// The object under `key` is gone.
    pub fn delete(key: ResourceKey) -> Update {
        Update { key, value: None }
    }
}

/// Identifies a resource: kind, namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Decodes one document node into a resource (not yet validated), with
/// every problem of every field (metadata, spec and status together).
/// Namespaced kinds without a namespace are put in `default`, as
/// `calicoctl` and `kubectl` do.
pub fn decode_resource(
    node: &yaml::Node,
    kind: ResourceKind,
    base: &yaml::FieldPath,
) -> Result<Resource, Vec<de::DecodeError>> {
    let mut errors = Vec::new();
    let metadata: ObjectMeta = match node.get("metadata") {
        Some(m) => keep(de::from_node_all(m, &base.key("metadata")), &mut errors),
        None => None,
    }
    .unwrap_or_default();
    let res = decode_body(node, kind, base, metadata, &mut errors);
    match res {
        Some(r) if errors.is_empty() => Ok(r),
        _ => {
            errors.sort_by_key(|e| e.pos);
            Err(errors)
        }
    }
}

/// The value, or `None` with its errors added to `errors`.
fn keep<T>(r: Result<T, Vec<de::DecodeError>>, errors: &mut Vec<de::DecodeError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}

fn decode_body(
    node: &yaml::Node,
    kind: ResourceKind,
    base: &yaml::FieldPath,
    mut metadata: ObjectMeta,
    errors: &mut Vec<de::DecodeError>,
) -> Option<Resource> {
    use serde::de::IgnoredAny;
    if kind.namespaced() && metadata.namespace.as_deref().unwrap_or("").is_empty() {
        metadata.namespace = Some("default".into());
    }
    let spec_path = base.key("spec");
    let null = yaml::Node {
        value: yaml::Value::Null,
        pos: node.pos,
    };
    let spec_node = node.get("spec").unwrap_or(&null);
    macro_rules! spec {
        () => {
            keep(de::from_node_all(spec_node, &spec_path), errors)
        };
    }
    macro_rules! obj {
        ($variant:ident) => {
            Resource::$variant(Object {
                metadata,
                spec: spec!()?,
            })
        };
        (boxed $variant:ident) => {
            Resource::$variant(Box::new(Object {
                metadata,
                spec: spec!()?,
            }))
        };
    }
    let mut res = match kind {
        ResourceKind::NetworkPolicy => obj!(boxed NetworkPolicy),
        ResourceKind::GlobalNetworkPolicy => obj!(boxed GlobalNetworkPolicy),
        ResourceKind::HostEndpoint => obj!(boxed HostEndpoint),
        ResourceKind::WorkloadEndpoint => obj!(boxed WorkloadEndpoint),
        ResourceKind::NetworkSet => obj!(NetworkSet),
        ResourceKind::GlobalNetworkSet => obj!(GlobalNetworkSet),
        ResourceKind::Profile => obj!(Profile),
        ResourceKind::Tier => obj!(Tier),
        ResourceKind::FelixConfiguration => obj!(boxed FelixConfiguration),
        ResourceKind::K8sNetworkPolicy => obj!(boxed K8sNetworkPolicy),
        ResourceKind::ClusterNetworkPolicy => obj!(boxed ClusterNetworkPolicy),
        ResourceKind::StagedNetworkPolicy => obj!(boxed StagedNetworkPolicy),
        ResourceKind::StagedGlobalNetworkPolicy => obj!(boxed StagedGlobalNetworkPolicy),
        ResourceKind::StagedKubernetesNetworkPolicy => obj!(boxed StagedKubernetesNetworkPolicy),
        ResourceKind::Namespace | ResourceKind::ServiceAccount => {
            let _: Option<IgnoredAny> = spec!()?;
            let o = Object { metadata, spec: () };
            if kind == ResourceKind::Namespace {
                Resource::Namespace(o)
            } else {
                Resource::ServiceAccount(o)
            }
        }
        ResourceKind::EndpointSlice => Resource::EndpointSlice(Object {
            metadata,
            spec: keep(de::from_node_all(node, base), errors)?,
        }),
        ResourceKind::Pod => {
            let spec = spec!();
            let status = match node.get("status") {
                Some(s) => keep(de::from_node_all(s, &base.key("status")), errors),
                None => Some(PodStatus::default()),
            };
            Resource::Pod(Pod {
                metadata,
                spec: spec?,
                status: status?,
            })
        }
    };
    // Namespace objects carry their own name as the `kubernetes.io/metadata.name` label.
    if let Resource::Namespace(o) = &mut res
        && let Some(name) = o.metadata.name.clone()
    {
        (o.metadata.labels).insert_if_absent("kubernetes.io/metadata.name", &name);
    }
    Some(res)
}

/// Parses a Go-style duration (`90s`, `5m`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("90").is_none());
        assert!(parse_duration("s").is_none());
        assert!(parse_duration("").is_none());
    }

    #[test]
    fn kinds_resolve_with_hints() {
        assert_eq!(
            ResourceKind::resolve("projectcalico.org/v3", "GlobalNetworkPolicy"),
            Ok(ResourceKind::GlobalNetworkPolicy)
        );
        assert_eq!(
            ResourceKind::resolve("networking.k8s.io/v1", "NetworkPolicy"),
            Ok(ResourceKind::K8sNetworkPolicy)
        );
        let (_, hint) =
            ResourceKind::resolve("networking.k8s.io/v1", "GlobalNetworkPolicy").unwrap_err();
        assert!(hint.contains("projectcalico.org/v3"));
        assert_eq!(
            ResourceKind::resolve(CNP_API, "ClusterNetworkPolicy"),
            Ok(ResourceKind::ClusterNetworkPolicy)
        );
        let (msg, hint) = ResourceKind::resolve("v1", "ClusterNetworkPolicy").unwrap_err();
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(hint.contains(CNP_API), "{hint}");
        let (msg, hint) =
            ResourceKind::resolve("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy")
                .unwrap_err();
        assert!(
            msg.contains("replaced it with ClusterNetworkPolicy"),
            "{msg}"
        );
        assert!(hint.contains("spec.tier: Admin"), "{hint}");
        let (msg, hint) =
            ResourceKind::resolve("projectcalico.org/v3", "GlobalNetworkpolicy").unwrap_err();
        assert!(msg.contains("unknown kind"));
        assert!(hint.contains("did you mean `GlobalNetworkPolicy`"));
    }
}
