//! Deployment artifacts that are generated, not hand-copied: the
//! CustomResourceDefinitions for the `projectcalico.org/v3` kinds, with
//! OpenAPI schemas written here once, and a small structural-schema checker
//! used to prove that the seed policies pass those schemas.

use serde_json::{Map, Value, json};

use crate::model::emit::to_yaml;
use crate::model::yaml::{Node, Value as Y};

fn obj(props: Value, required: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("properties".into(), props);
    if !required.is_empty() {
        m.insert("required".into(), json!(required));
    }
    Value::Object(m)
}

fn string() -> Value {
    json!({"type": "string"})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn int_or_string() -> Value {
    json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn icmp() -> Value {
    obj(
        json!({"type": {"type": "integer", "minimum": 0, "maximum": 254}, "code": {"type": "integer", "minimum": 0, "maximum": 255}}),
        &[],
    )
}

fn entity_rule() -> Value {
    obj(
        json!({
            "nets": strings(), "notNets": strings(),
            "selector": string(), "notSelector": string(), "namespaceSelector": string(),
            "ports": {"type": "array", "items": int_or_string()},
            "notPorts": {"type": "array", "items": int_or_string()},
            "serviceAccounts": obj(json!({"names": strings(), "selector": string()}), &[]),
            "services": obj(json!({"name": string(), "namespace": string()}), &[]),
        }),
        &[],
    )
}

fn rule() -> Value {
    obj(
        json!({
            "action": {"type": "string", "enum": ["Allow", "Deny", "Log", "Pass"]},
            "ipVersion": {"type": "integer", "enum": [4, 6]},
            "protocol": int_or_string(), "notProtocol": int_or_string(),
            "icmp": icmp(), "notICMP": icmp(),
            "source": entity_rule(), "destination": entity_rule(),
            "http": obj(json!({"methods": strings(), "paths": {"type": "array", "items": obj(json!({"exact": string(), "prefix": string()}), &[])}}), &[]),
            "metadata": obj(json!({"annotations": string_map()}), &[]),
        }),
        &["action"],
    )
}

fn rules() -> Value {
    json!({"type": "array", "maxItems": 1024, "items": rule()})
}

fn policy_spec(global: bool) -> Value {
    let mut props = json!({
        "tier": string(), "order": {"type": "number"}, "selector": {"type": "string", "maxLength": 1024},
        "types": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]}},
        "ingress": rules(), "egress": rules(),
        "serviceAccountSelector": string(), "performanceHints": strings(),
    });
    if global {
        let p = props.as_object_mut().expect("object");
        p.insert("namespaceSelector".into(), string());
        p.insert("doNotTrack".into(), json!({"type": "boolean"}));
        p.insert("preDNAT".into(), json!({"type": "boolean"}));
        p.insert("applyOnForward".into(), json!({"type": "boolean"}));
    }
    obj(props, &[])
}

/// `spec.stagedAction` of the staged kinds.
fn staged_action() -> Value {
    json!({"type": "string", "enum": ["Set", "Delete"]})
}

/// A staged Calico policy: the enforced kind's spec plus `stagedAction`.
fn staged_policy_spec(global: bool) -> Value {
    let mut spec = policy_spec(global);
    spec["properties"]
        .as_object_mut()
        .expect("properties")
        .insert("stagedAction".into(), staged_action());
    spec
}

/// A StagedKubernetesNetworkPolicy: a Kubernetes NetworkPolicy spec (its
/// peers and ports kept as given; tortie validates them when it loads the
/// object) plus `stagedAction`.
fn staged_k8s_policy_spec() -> Value {
    let open = || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let open_list = || json!({"type": "array", "items": open()});
    obj(
        json!({
            "stagedAction": staged_action(),
            "podSelector": open(),
            "ingress": open_list(), "egress": open_list(),
            "policyTypes": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]}},
        }),
        &[],
    )
}

fn endpoint_ports() -> Value {
    json!({"type": "array", "items": obj(json!({"name": string(), "protocol": int_or_string(), "port": {"type": "integer", "minimum": 1, "maximum": 65535}}), &["name", "port"])})
}

fn proto_ports() -> Value {
    json!({"type": "array", "items": obj(json!({"protocol": string(), "port": {"type": "integer", "minimum": 0, "maximum": 65535}, "net": string()}), &["port"])})
}

/// (kind, plural, namespaced, spec schema)
pub fn kinds() -> Vec<(&'static str, &'static str, bool, Value)> {
    let felix = {
        let mut f = obj(
            json!({
                "defaultEndpointToHostAction": string(),
                "failsafeInboundHostPorts": proto_ports(), "failsafeOutboundHostPorts": proto_ports(),
                "logPrefix": string(), "logActionRateLimit": string(), "logActionRateLimitBurst": {"type": "integer"},
                "logDropped": {"type": "boolean"}, "interfacePrefix": string(),
                "nftablesMode": string(), "nftablesRefreshInterval": string(),
                "nftablesFilterAllowAction": string(), "nftablesMangleAllowAction": string(), "nftablesFilterDenyAction": string(),
                "iptablesFilterAllowAction": string(), "iptablesMangleAllowAction": string(), "iptablesFilterDenyAction": string(),
                "disableConntrackInvalidCheck": {"type": "boolean"}, "serviceLoopPrevention": string(),
            }),
            &[],
        );
        // Felix has many more fields; tortie accepts and ignores them.
        f.as_object_mut()
            .expect("object")
            .insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        f
    };
    vec![
        (
            "GlobalNetworkPolicy",
            "globalnetworkpolicies",
            false,
            policy_spec(true),
        ),
        ("NetworkPolicy", "networkpolicies", true, policy_spec(false)),
        (
            "HostEndpoint",
            "hostendpoints",
            false,
            obj(
                json!({"node": string(), "interfaceName": string(), "expectedIPs": strings(), "profiles": strings(), "ports": endpoint_ports()}),
                &["node"],
            ),
        ),
        (
            "GlobalNetworkSet",
            "globalnetworksets",
            false,
            obj(json!({"nets": strings()}), &[]),
        ),
        (
            "NetworkSet",
            "networksets",
            true,
            obj(json!({"nets": strings()}), &[]),
        ),
        (
            "Tier",
            "tiers",
            false,
            obj(
                json!({"order": {"type": "number"}, "defaultAction": {"type": "string", "enum": ["Deny", "Pass"]}}),
                &[],
            ),
        ),
        (
            "Profile",
            "profiles",
            false,
            obj(
                json!({"ingress": rules(), "egress": rules(), "labelsToApply": string_map()}),
                &[],
            ),
        ),
        ("FelixConfiguration", "felixconfigurations", false, felix),
        (
            "StagedGlobalNetworkPolicy",
            "stagedglobalnetworkpolicies",
            false,
            staged_policy_spec(true),
        ),
        (
            "StagedNetworkPolicy",
            "stagednetworkpolicies",
            true,
            staged_policy_spec(false),
        ),
        (
            "StagedKubernetesNetworkPolicy",
            "stagedkubernetesnetworkpolicies",
            true,
            staged_k8s_policy_spec(),
        ),
    ]
}

/// The short names Calico's own CRDs declare for a kind (so `kubectl get
/// gnp` works as it does with Calico installed).
pub fn short_names(kind: &str) -> &'static [&'static str] {
    match kind {
        "GlobalNetworkPolicy" => &["gnp", "cgnp"],
        "GlobalNetworkSet" => &["gns"],
        "HostEndpoint" => &["hep", "heps"],
        "NetworkPolicy" => &["cnp", "caliconetworkpolicy"],
        _ => &[],
    }
}

/// One CRD document.
pub fn crd(kind: &str, plural: &str, namespaced: bool, spec: &Value) -> Value {
    let mut names = json!({"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_ascii_lowercase()});
    if !short_names(kind).is_empty() {
        names["shortNames"] = json!(short_names(kind));
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.projectcalico.org")},
        "spec": {
            "group": "projectcalico.org",
            "names": names,
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "versions": [{
                "name": "v3", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": format!("Calico {kind}, read by tortie."),
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                        "spec": spec,
                    },
                }},
            }],
        },
    })
}

/// `manifests/crds.yaml`.
pub fn crds_yaml() -> String {
    let mut out = String::from("# Generated by `tortie crds`; do not edit by hand.\n");
    for (kind, plural, namespaced, spec) in kinds() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd(kind, plural, namespaced, &spec)));
    }
    out
}

/// The JSON value of a YAML node.
pub fn node_to_json(node: &Node) -> Value {
    match &node.value {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Int(i) => json!(i),
        Y::Float(f) => json!(f),
        Y::Str(s) => json!(s),
        Y::Seq(items) => Value::Array(items.iter().map(node_to_json).collect()),
        Y::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map(str::to_string).unwrap_or_default(),
                        node_to_json(v),
                    )
                })
                .collect(),
        ),
    }
}

/// Checks `value` against a structural schema (the subset CRDs use):
/// types, properties (unknown fields are errors unless preserved),
/// required, items, enum, minimum/maximum, maxItems/maxLength, maps and
/// int-or-string. Returns one message per problem, with its path.
pub fn check_schema(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string").is_some() {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {options:?}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(map) = value.as_object() else {
                out.push(format!("{path}: expected an object"));
                return;
            };
            if let Some(extra) = schema.get("additionalProperties") {
                for (k, v) in map {
                    check_schema(v, extra, &format!("{path}.{k}"), out);
                }
                return;
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields").is_some();
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check_schema(v, s, &format!("{path}.{k}"), out),
                    None if preserve || props.is_none() => {}
                    None => out.push(format!("{path}: unknown field `{k}`")),
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str()
                    && !map.contains_key(r)
                {
                    out.push(format!("{path}: missing required field `{r}`"));
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: expected a list"));
                return;
            };
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.push(format!("{path}: more than {max} items"));
            }
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_schema(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        Some("string") => match value.as_str() {
            None => out.push(format!("{path}: expected a string")),
            Some(s) => {
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && s.len() as u64 > max
                {
                    out.push(format!("{path}: longer than {max}"));
                }
            }
        },
        Some("integer") | Some("number") => {
            let Some(n) = value.as_f64() else {
                out.push(format!("{path}: expected a number"));
                return;
            };
            if schema.get("type").and_then(Value::as_str) == Some("integer")
                && !(value.is_i64() || value.is_u64())
            {
                out.push(format!("{path}: expected an integer"));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                out.push(format!("{path}: below {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                out.push(format!("{path}: above {max}"));
            }
        }
        Some("boolean") if !value.is_boolean() => {
            out.push(format!("{path}: expected true or false"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
