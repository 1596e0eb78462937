//! A small YAML writer for the documents tortie prints (`tortie convert`):
//! block style, keys in the order given, strings quoted only when needed.

use serde_json::Value;

/// Renders a JSON value as one YAML document (without the `---`).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn needs_quotes(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
    ) {
        return true;
    }
    if s.parse::<f64>().is_ok() || s.starts_with(|c: char| c.is_ascii_digit()) && s.contains(':') {
        return true;
    }
    let first = s.chars().next().expect("not empty");
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() {
        return true;
    }
    s.ends_with(char::is_whitespace)
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.contains(['\n', '\t', '"', '\\'])
}

fn scalar(s: &str) -> String {
    if !needs_quotes(s) {
        return s.to_string();
    }
    if !s.contains(['\'', '\n', '\t', '\\']) {
        return format!("'{s}'");
    }
    serde_json::to_string(s).expect("string")
}

fn write_value(out: &mut String, v: &Value, indent: usize, in_list: bool) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (i, (k, val)) in map.iter().enumerate() {
                if !(in_list && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str(&scalar(k));
                out.push(':');
                write_child(out, val, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(m) if !m.is_empty() => write_value(out, item, indent + 2, true),
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        write_value(out, item, indent + 2, false)
                    }
                    _ => {
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn write_child(out: &mut String, val: &Value, indent: usize) {
    match val {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_value(out, val, indent + 2, false);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_value(out, val, indent, false);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(val));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A whole cluster as one multi-document YAML file in the shape of an API
/// dump (`apiVersion`, `kind`, then `metadata` and `spec` as one-line JSON
/// maps): the input of the loader's size and speed tests. Kinds without a
/// serializable spec here (endpoints, profiles…) are left out.
pub fn cluster_dump(resources: &[crate::model::Resource]) -> String {
    use crate::model::Resource;
    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("serializable")
    }
    let mut out = String::new();
    for r in resources {
        let (api, kind, meta, spec) = match r {
            Resource::Namespace(o) => ("v1", "Namespace", json(&o.metadata), None),
            Resource::ServiceAccount(o) => ("v1", "ServiceAccount", json(&o.metadata), None),
            Resource::Pod(p) => {
                let ports: Vec<Value> = p
                    .spec
                    .containers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let ports: Vec<Value> = c
                            .ports
                            .iter()
                            .map(|p| serde_json::json!({"name": p.name, "containerPort": p.container_port}))
                            .collect();
                        // The model keeps no container names; Kubernetes
                        // requires one, unique in the pod.
                        serde_json::json!({"name": format!("c{i}"), "ports": ports})
                    })
                    .collect();
                let spec = serde_json::json!({"nodeName": p.spec.node_name, "containers": ports});
                let status = serde_json::json!({"podIP": p.status.pod_ip});
                out.push_str(&format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {spec}\nstatus: {status}\n---\n",
                    json(&p.metadata)
                ));
                continue;
            }
            Resource::K8sNetworkPolicy(o) => (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::GlobalNetworkPolicy(o) => (
                crate::model::CALICO_API,
                "GlobalNetworkPolicy",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::NetworkPolicy(o) => (
                crate::model::CALICO_API,
                "NetworkPolicy",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::GlobalNetworkSet(o) => (
                crate::model::CALICO_API,
                "GlobalNetworkSet",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::NetworkSet(o) => (
                crate::model::CALICO_API,
                "NetworkSet",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::Tier(o) => (
                crate::model::CALICO_API,
                "Tier",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            _ => continue,
        };
        out.push_str(&format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata: {meta}\n"
        ));
        if let Some(spec) = spec {
            out.push_str(&format!("spec: {spec}\n"));
        }
        out.push_str("---\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_block_yaml_that_reads_back() {
        let v = serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "spec": {
                "order": 1000.0,
                "selector": "projectcalico.org/orchestrator == 'k8s' && run == 'nginx'",
                "ingress": [{"action": "Allow", "destination": {"ports": [80, "30000:32767"]}, "source": {}}],
                "types": ["Ingress"],
                "empty": "",
                "yes": "yes"
            }
        });
        let text = to_yaml(&v);
        assert!(
            text.contains(
                "  selector: \"projectcalico.org/orchestrator == 'k8s' && run == 'nginx'\"\n"
            ) || text.contains(
                "  selector: projectcalico.org/orchestrator == 'k8s' && run == 'nginx'\n"
            ),
            "{text}"
        );
        assert!(text.contains("  - action: Allow\n"), "{text}");
        assert!(text.contains("- '30000:32767'\n"), "{text}");
        let node = crate::model::yaml::parse_one(&text, 1).unwrap();
        let spec = node.get("spec").unwrap();
        assert_eq!(spec.get("empty").unwrap().as_str(), Some(""));
        assert_eq!(spec.get("yes").unwrap().as_str(), Some("yes"));
        assert_eq!(
            spec.get("selector").unwrap().as_str(),
            Some("projectcalico.org/orchestrator == 'k8s' && run == 'nginx'")
        );
    }
}
