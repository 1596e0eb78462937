use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;
use crate::model::yaml::parse_documents;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_documents(&text)
        .into_iter()
        .map(|d| {
            node_to_json(
                &d.result
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display())),
            )
        })
        .collect()
}

/// Drops nulls and empty maps/lists, which typed round trips may add or omit.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalise(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => serde_json::json!(f as i64),
            _ => Value::Number(n.clone()),
        },
        other => other.clone(),
    }
}

/// Deserializes as `T` and back: anything `T` does not know (a misspelt
/// field) shows up as a difference.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        normalise(&back),
        normalise(doc),
        "{what}: fields the type does not know were dropped"
    );
    typed
}

#[test]
fn committed_crds_match_the_generator() {
    let committed = std::fs::read_to_string(root().join("manifests/crds.yaml")).unwrap();
    assert_eq!(
        committed,
        crds_yaml(),
        "run `tortie crds > manifests/crds.yaml`"
    );
}

#[test]
fn every_manifest_is_the_kubernetes_object_it_claims_to_be() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let mut seen = Vec::new();
    for file in [
        "crds.yaml",
        "rbac.yaml",
        "daemonset.yaml",
        "felixconfiguration.yaml",
    ] {
        let path = root().join("manifests").join(file);
        for doc in docs(&path) {
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let what = format!("{file}: {api} {kind}");
            match (api.as_str(), kind.as_str()) {
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    let crd: CustomResourceDefinition = round_trip(&doc, &what);
                    assert_eq!(crd.spec.group, "projectcalico.org");
                }
                ("v1", "ServiceAccount") => {
                    round_trip::<ServiceAccount>(&doc, &what);
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    let role: ClusterRole = round_trip(&doc, &what);
                    for rule in role.rules.unwrap_or_default() {
                        assert_eq!(rule.verbs, ["get", "list", "watch"], "read-only RBAC");
                    }
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    round_trip::<ClusterRoleBinding>(&doc, &what);
                }
                ("apps/v1", "DaemonSet") => {
                    let ds: DaemonSet = round_trip(&doc, &what);
                    let pod = ds.spec.unwrap().template.spec.unwrap();
                    assert_eq!(pod.host_network, Some(true));
                    let c = &pod.containers[0];
                    let sc = c.security_context.clone().unwrap();
                    assert_eq!(sc.privileged, Some(false));
                    let caps = sc.capabilities.unwrap();
                    assert_eq!(caps.add.unwrap(), ["NET_ADMIN", "NET_RAW"]);
                    assert_eq!(caps.drop.unwrap(), ["ALL"]);
                    let env = c.env.clone().unwrap();
                    let node = env.iter().find(|e| e.name == "NODENAME").unwrap();
                    assert_eq!(
                        node.value_from
                            .clone()
                            .unwrap()
                            .field_ref
                            .unwrap()
                            .field_path,
                        "spec.nodeName"
                    );
                    let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
                    let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
                    assert_eq!(
                        (live.path.as_deref(), ready.path.as_deref()),
                        (Some("/liveness"), Some("/readiness"))
                    );
                    assert!(c.resources.clone().unwrap().requests.is_some());
                    let args = c.args.clone().unwrap();
                    assert!(
                        args.iter().any(|a| a == "--metrics-addr=$(HOST_IP):9091"),
                        "metrics bound to the node IP: {args:?}"
                    );
                    assert!(env.iter().any(|e| e.name == "HOST_IP"));
                    let image = c.image.clone().unwrap();
                    assert!(image.contains('/'), "registry-qualified image: {image}");
                    let mounts = c.volume_mounts.clone().unwrap();
                    assert!(
                        mounts.iter().any(|m| m.mount_path == "/run/tortie"),
                        "lock dir"
                    );
                    assert!(pod.tolerations.is_some());
                }
                ("projectcalico.org/v3", _) => {
                    let r =
                        crate::model::load::load_str(&serde_json::to_string(&doc).unwrap(), &path);
                    assert!(!r.has_errors(), "{what}: {:?}", r.diagnostics);
                    assert_eq!(r.resources.len(), 1);
                }
                _ => panic!("{what}: unexpected manifest"),
            }
            seen.push(kind);
        }
    }
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "FelixConfiguration",
    ] {
        assert!(seen.iter().any(|k| k == kind), "no {kind} manifest");
    }
    assert_eq!(
        seen.iter()
            .filter(|k| *k == "CustomResourceDefinition")
            .count(),
        crate::datastore::kubernetes::CALICO_KINDS.len(),
        "one CRD per Calico kind watched"
    );
}

#[test]
fn crd_schemas_accept_the_seed_and_golden_policies() {
    let schemas: std::collections::BTreeMap<&str, Value> =
        kinds().into_iter().map(|(k, _, _, s)| (k, s)).collect();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["fixtures/seeds", "rulesets"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in parse_documents(&text) {
            let Ok(node) = d.result else { continue };
            let doc = node_to_json(&node);
            if doc["apiVersion"] != "projectcalico.org/v3" {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap();
            let Some(schema) = schemas.get(kind) else {
                continue;
            };
            let mut errors = Vec::new();
            check_schema(
                doc.get("spec").unwrap_or(&Value::Null),
                schema,
                "spec",
                &mut errors,
            );
            let spec = doc.get("spec");
            if spec.is_none() {
                continue;
            }
            assert!(
                errors.is_empty(),
                "{}: {kind} rejected by its CRD schema: {errors:?}",
                f.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} Calico objects checked");
}

#[test]
fn crd_schemas_reject_what_the_api_server_would() {
    let schema = kinds()
        .into_iter()
        .find(|k| k.0 == "GlobalNetworkPolicy")
        .unwrap()
        .3;
    let bad = [
        (
            serde_json::json!({"Selector": "all()"}),
            "unknown field `Selector`",
        ),
        (
            serde_json::json!({"ingress": [{"action": "allow"}]}),
            "is not one of",
        ),
        (
            serde_json::json!({"ingress": [{}]}),
            "missing required field `action`",
        ),
        (
            serde_json::json!({"ingress": {"action": "Allow"}}),
            "expected a list",
        ),
        (
            serde_json::json!({"ingress": [{"action": "Allow", "icmp": {"type": 300}}]}),
            "above 254",
        ),
        (
            serde_json::json!({"ingress": [{"action": "Allow", "destination": {"ports": [true]}}]}),
            "integer or a string",
        ),
        (
            serde_json::json!({"preDNAT": "yes"}),
            "expected true or false",
        ),
    ];
    for (spec, want) in bad {
        let mut errors = Vec::new();
        check_schema(&spec, &schema, "spec", &mut errors);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{spec}: {errors:?}"
        );
    }
}

#[test]
fn the_cluster_role_grants_list_and_watch_on_every_watched_kind_and_endpoint_slices() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let path = root().join("manifests").join("rbac.yaml");
    let mut granted = std::collections::BTreeSet::new();
    for doc in docs(&path) {
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        let role: ClusterRole = round_trip(&doc, "rbac.yaml ClusterRole");
        for rule in role.rules.unwrap_or_default() {
            if !(rule.verbs.iter().any(|v| v == "list") && rule.verbs.iter().any(|v| v == "watch"))
            {
                continue;
            }
            for g in rule.api_groups.unwrap_or_default() {
                for r in rule.resources.clone().unwrap_or_default() {
                    granted.insert((g.clone(), r));
                }
            }
        }
    }
    let mut want: Vec<(String, String)> = crate::datastore::kubernetes::watched_resources(
        crate::datastore::kubernetes::CalicoApi::V3,
    )
    .into_iter()
    .map(|ar| (ar.group, ar.plural))
    .collect();
    want.push(("discovery.k8s.io".into(), "endpointslices".into()));
    for w in want {
        assert!(
            granted.contains(&w),
            "rbac.yaml does not grant list/watch on {w:?}"
        );
    }
}
