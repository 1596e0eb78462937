//! Kubernetes objects → tortie's model, without rendering text: the
//! built-in kinds (Pod, Namespace, ServiceAccount, NetworkPolicy,
//! EndpointSlice) from their typed values (k8s-openapi's; Pods slim, as
//! [`super::pod`] decodes them), moved field by
//! field; the custom kinds (Calico, ClusterNetworkPolicy) by turning their
//! JSON value into the loader's document tree and loading that, so they
//! are decoded and validated exactly as a file's document is. Every
//! problem names the object (`k8s:<Kind>/<namespace>/<name>`), the
//! resource, the field path and what to do; there is no line or column
//! (the object has no text).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr;
use kube::api::{DynamicObject, TypeMeta};

use crate::diag::{Diagnostic, Severity, Stage};
use crate::intern::Sym;
use crate::model::LabelPairs;
use crate::model::types::{self as model, ObjectMeta};
use crate::model::yaml::{FieldPath, Node, Pos, Value};
use crate::model::{Object, Resource, ResourceKind, de, load, validate};

use super::pod;

/// Collects into a new allocation of the exact size. A plain `collect` of
/// `vec.into_iter().map(..)` reuses the source's allocation in place, so a
/// small model value would keep the room of the large Kubernetes one (a
/// Pod's containers: over 1 KB each) for as long as the resource lives.
trait Fresh: Iterator + Sized {
    fn fresh(self) -> Vec<Self::Item> {
        let mut v = Vec::with_capacity(self.size_hint().0);
        v.extend(self);
        v
    }
}

impl<I: Iterator> Fresh for I {}

/// What one object became: its resource when it is valid, and every
/// problem it has.
#[derive(Debug, Default)]
pub struct Converted {
    pub resource: Option<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

/// A Kubernetes object tortie reads as one resource.
pub trait ToModel: Sized {
    /// Converts the object (labelled `label` in diagnostics).
    fn to_model(self, label: &Path) -> Converted;
}

/// Object metadata: what tortie keeps (name, namespace, labels,
/// annotations); namespaced kinds without a namespace go to `default`, as
/// the loader puts them.
fn metadata(m: meta::ObjectMeta, namespaced: bool) -> ObjectMeta {
    let namespace = match m.namespace.filter(|ns| !ns.is_empty()) {
        None if namespaced => Some("default".to_string()),
        ns => ns,
    };
    ObjectMeta {
        name: m.name,
        namespace,
        labels: m.labels.map(LabelPairs::from).unwrap_or_default(),
        annotations: m.annotations.unwrap_or_default(),
        ..ObjectMeta::default()
    }
}

/// `Pod default/web`: the resource as the loader names it in diagnostics.
fn resource_label(kind: ResourceKind, meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    match (kind.namespaced(), meta.namespace.as_deref()) {
        (true, Some(ns)) => format!("{} {ns}/{name}", kind.kind_name()),
        (true, None) => format!("{} default/{name}", kind.kind_name()),
        _ => format!("{} {name}", kind.kind_name()),
    }
}

fn diagnostic(
    label: &Path,
    severity: Severity,
    stage: Stage,
    resource: &str,
    path: FieldPath,
    message: String,
    hint: Option<String>,
) -> Diagnostic {
    Diagnostic {
        severity,
        stage,
        file: Some(label.to_path_buf()),
        pos: None,
        resource: Some(resource.to_string()),
        path: Some(path),
        message,
        hint,
        source: None,
        source_line: 1,
    }
}

/// Validates a converted resource as the loader does (`decode` holds the
/// problems found while converting): the resource is kept only without
/// errors.
fn checked(label: &Path, resource: Resource, decode: Vec<de::DecodeError>) -> Converted {
    let what = resource_label(resource.kind(), resource.meta());
    let mut diagnostics: Vec<Diagnostic> = decode
        .into_iter()
        .map(|e| {
            let (severity, stage) = (Severity::Error, Stage::Decode);
            diagnostic(label, severity, stage, &what, e.path, e.message, e.hint)
        })
        .collect();
    let mut valid = diagnostics.is_empty();
    for f in validate::validate(&resource) {
        valid &= f.warning;
        let severity = if f.warning {
            Severity::Warning
        } else {
            Severity::Error
        };
        let d = diagnostic(
            label,
            severity,
            Stage::Validation,
            &what,
            f.path,
            f.message,
            f.hint,
        );
        diagnostics.push(d);
    }
    Converted {
        resource: valid.then_some(resource),
        diagnostics,
    }
}

impl ToModel for pod::Pod {
    fn to_model(self, label: &Path) -> Converted {
        let spec = self.spec.map(pod_spec).unwrap_or_default();
        let status = self.status.map(pod_status).unwrap_or_default();
        let pod = crate::model::Pod {
            metadata: metadata(self.metadata, true),
            spec,
            status,
        };
        checked(label, Resource::Pod(pod), Vec::new())
    }
}

fn pod_spec(s: pod::PodSpec) -> model::PodSpec {
    let container = |c: pod::Container| model::Container {
        ports: c
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| model::ContainerPort {
                name: p.name.map(Sym::from),
                container_port: i64::from(p.container_port),
                protocol: p.protocol.map(Sym::from),
            })
            .fresh(),
    };
    model::PodSpec {
        node_name: s.node_name.map(Sym::from),
        service_account_name: s.service_account_name.map(Sym::from),
        host_network: s.host_network.unwrap_or(false),
        containers: s
            .containers
            .unwrap_or_default()
            .into_iter()
            .map(container)
            .fresh(),
    }
}

fn pod_status(s: pod::PodStatus) -> model::PodStatus {
    model::PodStatus {
        pod_ip: s.pod_ip,
        pod_ips: s
            .pod_ips
            .unwrap_or_default()
            .into_iter()
            .map(|p| model::PodIp { ip: p.ip })
            .fresh(),
        phase: s.phase.map(Sym::from),
    }
}

impl ToModel for core::Namespace {
    fn to_model(self, label: &Path) -> Converted {
        let mut metadata = metadata(self.metadata, false);
        // A namespace carries its own name as this label (the loader adds it too).
        if let Some(name) = metadata.name.clone() {
            (metadata.labels).insert_if_absent("kubernetes.io/metadata.name", &name);
        }
        let ns = Resource::Namespace(Object { metadata, spec: () });
        checked(label, ns, Vec::new())
    }
}

impl ToModel for core::ServiceAccount {
    fn to_model(self, label: &Path) -> Converted {
        let metadata = metadata(self.metadata, true);
        let sa = Resource::ServiceAccount(Object { metadata, spec: () });
        checked(label, sa, Vec::new())
    }
}

impl ToModel for networking::NetworkPolicy {
    fn to_model(self, label: &Path) -> Converted {
        let metadata = metadata(self.metadata, true);
        let spec = self.spec.unwrap_or_default();
        let mut errors = Vec::new();
        let spec = model::K8sNetworkPolicySpec {
            pod_selector: spec.pod_selector.map(label_selector).unwrap_or_default(),
            ingress: spec
                .ingress
                .unwrap_or_default()
                .into_iter()
                .map(|r| model::NetworkPolicyIngressRule {
                    from: peers(r.from),
                    ports: ports(r.ports),
                })
                .fresh(),
            egress: spec
                .egress
                .unwrap_or_default()
                .into_iter()
                .map(|r| model::NetworkPolicyEgressRule {
                    to: peers(r.to),
                    ports: ports(r.ports),
                })
                .fresh(),
            policy_types: policy_types(spec.policy_types.unwrap_or_default(), &mut errors),
        };
        let np = Resource::K8sNetworkPolicy(Box::new(Object { metadata, spec }));
        checked(label, np, errors)
    }
}

/// `spec.policyTypes`, each decoded by the model's own decoder (so an
/// unknown type is reported as a file's would be, with a suggestion).
fn policy_types(types: Vec<String>, errors: &mut Vec<de::DecodeError>) -> Vec<model::PolicyType> {
    let base = FieldPath::root().key("spec").key("policyTypes");
    let mut out = Vec::with_capacity(types.len());
    for (i, t) in types.into_iter().enumerate() {
        let node = at(Value::Str(t));
        match de::from_node_all(&node, &base.index(i)) {
            Ok(t) => out.push(t),
            Err(e) => errors.extend(e.into_iter().map(|mut e| {
                e.pos = None;
                e
            })),
        }
    }
    out
}

fn label_selector(s: meta::LabelSelector) -> model::LabelSelector {
    model::LabelSelector {
        match_labels: s.match_labels.unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .map(|r| model::LabelSelectorRequirement {
                key: r.key,
                operator: r.operator,
                values: r.values.unwrap_or_default(),
            })
            .fresh(),
    }
}

fn peers(peers: Option<Vec<networking::NetworkPolicyPeer>>) -> Vec<model::NetworkPolicyPeer> {
    let peer = |p: networking::NetworkPolicyPeer| model::NetworkPolicyPeer {
        pod_selector: p.pod_selector.map(label_selector),
        namespace_selector: p.namespace_selector.map(label_selector),
        ip_block: p.ip_block.map(|b| model::IpBlock {
            cidr: b.cidr,
            except: b.except.unwrap_or_default(),
        }),
    };
    peers.unwrap_or_default().into_iter().map(peer).fresh()
}

fn ports(ports: Option<Vec<networking::NetworkPolicyPort>>) -> Vec<model::NetworkPolicyPort> {
    let port = |p: networking::NetworkPolicyPort| model::NetworkPolicyPort {
        protocol: p.protocol,
        port: p.port.map(|p| match p {
            intstr::IntOrString::Int(n) => model::IntOrString::Int(i64::from(n)),
            intstr::IntOrString::String(s) => model::IntOrString::Str(s),
        }),
        end_port: p.end_port.map(i64::from),
    };
    ports.unwrap_or_default().into_iter().map(port).fresh()
}

impl ToModel for discovery::EndpointSlice {
    fn to_model(self, label: &Path) -> Converted {
        let metadata = metadata(self.metadata, true);
        let endpoint = |e: discovery::Endpoint| model::SliceEndpoint {
            addresses: e.addresses,
            conditions: e.conditions.map(|c| model::SliceConditions {
                ready: c.ready,
                serving: c.serving,
                terminating: c.terminating,
            }),
        };
        let port = |p: discovery::EndpointPort| model::SlicePort {
            name: p.name,
            port: p.port.map(i64::from),
            protocol: p.protocol,
        };
        let spec = model::EndpointSliceSpec {
            address_type: Some(self.address_type),
            endpoints: self.endpoints.into_iter().map(endpoint).fresh(),
            ports: self.ports.map(|ps| ps.into_iter().map(port).fresh()),
        };
        checked(
            label,
            Resource::EndpointSlice(Object { metadata, spec }),
            Vec::new(),
        )
    }
}

/// A custom kind's object (a Calico kind, ClusterNetworkPolicy) loaded as a
/// document: `types` fills in apiVersion and kind (list items may come
/// without them).
pub fn dynamic(o: DynamicObject, types: &TypeMeta, label: &Path) -> Converted {
    let str_node = |s: &str| at(Value::Str(s.to_string()));
    let mut top = vec![
        (str_node("apiVersion"), str_node(&types.api_version)),
        (str_node("kind"), str_node(&types.kind)),
        (str_node("metadata"), metadata_node(o.metadata)),
    ];
    match o.data {
        serde_json::Value::Object(fields) => {
            top.extend(
                fields
                    .into_iter()
                    .map(|(k, v)| (at(Value::Str(k)), node(v))),
            );
        }
        serde_json::Value::Null => {}
        other => top.push((str_node("spec"), node(other))),
    }
    let loaded = load::load_node(&at(Value::Map(top)), label);
    Converted {
        resource: loaded.resources.into_iter().next().map(|l| l.resource),
        diagnostics: loaded.diagnostics,
    }
}

/// A node without a place (the object has no text).
fn at(value: Value) -> Node {
    Node {
        value,
        pos: Pos::default(),
    }
}

/// A JSON value as a document tree.
fn node(v: serde_json::Value) -> Node {
    use serde_json::Value as J;
    at(match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Str(s),
        J::Array(items) => Value::Seq(items.into_iter().map(node).collect()),
        J::Object(fields) => Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (at(Value::Str(k)), node(v)))
                .collect(),
        ),
    })
}

/// The metadata tortie reads (name, namespace, labels, annotations) as a
/// document map; the server's own fields are ignored by the loader anyway.
fn metadata_node(m: meta::ObjectMeta) -> Node {
    let str_map = |m: BTreeMap<String, String>| {
        let entries = m
            .into_iter()
            .map(|(k, v)| (at(Value::Str(k)), at(Value::Str(v))));
        at(Value::Map(entries.collect()))
    };
    let mut fields = Vec::new();
    let mut put = |k: &str, v: Node| fields.push((at(Value::Str(k.to_string())), v));
    if let Some(name) = m.name {
        put("name", at(Value::Str(name)));
    }
    if let Some(ns) = m.namespace {
        put("namespace", at(Value::Str(ns)));
    }
    if let Some(labels) = m.labels {
        put("labels", str_map(labels));
    }
    if let Some(annotations) = m.annotations {
        put("annotations", str_map(annotations));
    }
    at(Value::Map(fields))
}

#[cfg(test)]
mod tests;
