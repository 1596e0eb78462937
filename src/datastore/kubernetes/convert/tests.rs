//! The direct conversion against the loader: every built-in kind converts
//! to exactly the resource the loader reads from the same object's JSON,
//! and invalid objects are reported with the same message, resource and
//! field path (without a line or column: the object has no text).

use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::model::load::load_str;

/// The resource and diagnostics the loader makes of `obj`'s JSON text.
fn loaded(obj: &Value, label: &Path) -> (Option<Resource>, Vec<Diagnostic>) {
    let r = load_str(&obj.to_string(), label);
    (
        r.resources.into_iter().next().map(|l| l.resource),
        r.diagnostics,
    )
}

/// Converts `obj` as the source does (decoded by k8s-openapi first).
fn direct<K: ToModel + serde::de::DeserializeOwned>(obj: &Value, label: &Path) -> Converted {
    let typed: K = serde_json::from_value(obj.clone()).expect("a valid Kubernetes object");
    typed.to_model(label)
}

/// (message, resource, field path, hint) of every diagnostic.
fn described(ds: &[Diagnostic]) -> Vec<(String, Option<String>, String, Option<String>)> {
    ds.iter()
        .map(|d| {
            let path = d.path.as_ref().map(|p| p.to_string()).unwrap_or_default();
            (d.message.clone(), d.resource.clone(), path, d.hint.clone())
        })
        .collect()
}

fn same_as_loader<K: ToModel + serde::de::DeserializeOwned>(obj: Value) {
    let label = Path::new("k8s:Test/ns/name");
    let (want, want_diags) = loaded(&obj, label);
    let got = direct::<K>(&obj, label);
    assert!(want.is_some(), "the loader reads it: {want_diags:?}");
    assert_eq!(got.resource, want, "{obj}");
    assert_eq!(described(&got.diagnostics), described(&want_diags), "{obj}");
}

#[test]
fn pods_convert_as_the_loader_reads_them() {
    same_as_loader::<pod::Pod>(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "x"}},
        "spec": {"nodeName": "node-7", "serviceAccountName": "web", "hostNetwork": false,
                 "containers": [
                     {"name": "app", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                               {"containerPort": 53, "protocol": "UDP"}]},
                     {"name": "side"}]},
        "status": {"podIP": "198.18.0.7", "podIPs": [{"ip": "198.18.0.7"}, {"ip": "fd74:6f72::7"}],
                   "phase": "Running"}
    }));
    // Host-network, not yet scheduled, no status.
    same_as_loader::<pod::Pod>(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {"hostNetwork": true, "containers": [{"name": "a"}]}
    }));
}

/// A Pod as an API server serves it, with everything tortie does not
/// read (which the slim decoding skips) around what it does, converts as
/// the loader reads only what it does read.
#[test]
fn a_served_pod_converts_as_the_loader_reads_it() {
    let label = Path::new("k8s:Pod/shop/web-1");
    let (want, want_diags) = loaded(
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop",
                         "labels": {"app": "web", "pod-template-hash": "7d9f"},
                         "annotations": {"cni.projectcalico.org/podIP": "198.18.0.7/32"}},
            "spec": {"nodeName": "node-7", "serviceAccountName": "web",
                     "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": "198.18.0.7", "podIPs": [{"ip": "198.18.0.7"}]}
        }),
        label,
    );
    assert!(want.is_some() && want_diags.is_empty(), "{want_diags:?}");
    let served = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-1", "namespace": "shop", "uid": "5c2d", "resourceVersion": "81",
            "generateName": "web-", "creationTimestamp": "2026-11-21T00:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "annotations": {"cni.projectcalico.org/podIP": "198.18.0.7/32"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                                 "uid": "9a", "controller": true, "blockOwnerDeletion": true}],
            "finalizers": ["example.com/keep"],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
        },
        "spec": {
            "nodeName": "node-7", "serviceAccountName": "web", "serviceAccount": "web",
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "containers": [{
                "name": "app", "image": "registry.example/web:1", "args": ["--port=8080"],
                "env": [{"name": "MODE", "value": "prod"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets"}]
            }],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler"
        },
        "status": {
            "phase": "Running", "hostIP": "198.18.1.1", "podIP": "198.18.0.7",
            "podIPs": [{"ip": "198.18.0.7"}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-21T00:00:05Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "registry.example/web:1",
                                   "imageID": "sha256:ab", "state": {"running": {"startedAt": "2026-11-21T00:00:03Z"}}}],
            "qosClass": "Burstable", "startTime": "2026-11-21T00:00:01Z"
        }
    });
    let got = direct::<pod::Pod>(&served, label);
    assert!(got.diagnostics.is_empty(), "{:?}", got.diagnostics);
    assert_eq!(got.resource, want);
    // Explicit nulls where a server may write them.
    same_as_loader::<pod::Pod>(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "shop", "labels": null, "annotations": null},
        "spec": {"nodeName": null, "containers": [{"name": "a", "ports": null}]},
        "status": {"podIP": null, "podIPs": null, "phase": "Pending"}
    }));
}

#[test]
fn a_slim_pod_keeps_what_the_watcher_needs() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "5c2d", "resourceVersion": "81",
                     "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
        "spec": {"containers": []}
    });
    let p: pod::Pod = serde_json::from_value(obj).expect("decodes");
    use kube::ResourceExt;
    assert_eq!(p.resource_version().as_deref(), Some("81"));
    assert_eq!(p.uid().as_deref(), Some("5c2d"));
    assert_eq!(
        (p.name_any(), p.namespace()),
        ("web-1".into(), Some("shop".into()))
    );
    assert!(p.managed_fields().is_empty(), "skipped, not kept");
}

#[test]
fn namespaces_and_service_accounts_convert_as_the_loader_reads_them() {
    same_as_loader::<core::Namespace>(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"team": "a"}}
    }));
    same_as_loader::<core::ServiceAccount>(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"role": "api"}}
    }));
}

#[test]
fn network_policies_convert_as_the_loader_reads_them() {
    same_as_loader::<networking::NetworkPolicy>(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "guard", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"},
                            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                                 {"key": "canary", "operator": "DoesNotExist"}]},
            "policyTypes": ["Egress", "Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                          {"namespaceSelector": {"matchLabels": {"team": "a"}},
                           "podSelector": {}},
                          {"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.18.1.0/24"]}}],
                 "ports": [{"port": 80}, {"port": "http", "protocol": "TCP"},
                           {"port": 9000, "endPort": 9010, "protocol": "UDP"}]},
                {}
            ],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "SCTP"}]}]
        }
    }));
    // No spec fields at all: selects every pod, ingress only.
    same_as_loader::<networking::NetworkPolicy>(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "shop"}, "spec": {}
    }));
}

#[test]
fn endpoint_slices_convert_as_the_loader_reads_them() {
    same_as_loader::<discovery::EndpointSlice>(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.0.7"], "conditions": {"ready": true, "serving": true}},
                      {"addresses": ["198.18.0.8"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]
    }));
}

#[test]
fn an_invalid_network_policy_is_reported_as_the_loader_reports_it() {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}
    });
    let label = Path::new("k8s:NetworkPolicy.networking.k8s.io/default/bad");
    let (_, want) = loaded(&obj, label);
    let got = direct::<networking::NetworkPolicy>(&obj, label);
    assert!(got.resource.is_none(), "an invalid policy is left out");
    assert_eq!(described(&got.diagnostics), described(&want));
    let line = got.diagnostics[0].one_line();
    assert!(line.contains("port 70000 is out of range"), "{line}");
    assert!(
        line.contains("[NetworkPolicy default/bad, field spec.ingress[0].ports[0].port]"),
        "{line}"
    );
    assert!(
        line.starts_with("k8s:NetworkPolicy.networking.k8s.io/default/bad: error:"),
        "{line}"
    );
}

#[test]
fn an_unknown_policy_type_is_a_decode_error_at_its_index() {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "typo", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egres"]}
    });
    let label = Path::new("k8s:np/shop/typo");
    let (_, want) = loaded(&obj, label);
    let got = direct::<networking::NetworkPolicy>(&obj, label);
    assert!(got.resource.is_none());
    assert_eq!(described(&got.diagnostics), described(&want));
    let d = &got.diagnostics[0];
    assert_eq!(d.stage, Stage::Decode);
    assert_eq!(d.path.as_ref().unwrap().to_string(), "spec.policyTypes[1]");
    assert_eq!(d.pos, None);
}

fn calico_np(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "shop", "resourceVersion": "9", "uid": "u-1",
                     "labels": {"owner": "me"}},
        "spec": spec
    }))
    .unwrap()
}

fn calico_types() -> TypeMeta {
    TypeMeta {
        api_version: "projectcalico.org/v3".into(),
        kind: "NetworkPolicy".into(),
    }
}

#[test]
fn a_custom_kind_is_loaded_from_its_json_value_as_from_text() {
    let spec = json!({"selector": "app == 'web'", "order": 10.5, "types": ["Ingress"],
                      "ingress": [{"action": "Allow", "protocol": "TCP",
                                   "destination": {"ports": [80, "8000:8080"]}}]});
    let label = Path::new("k8s:NetworkPolicy.projectcalico.org/shop/p");
    let got = dynamic(calico_np(spec.clone()), &calico_types(), label);
    let text = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                      "metadata": {"name": "p", "namespace": "shop", "labels": {"owner": "me"}},
                      "spec": spec});
    let (want, want_diags) = loaded(&text, label);
    assert!(want.is_some(), "{want_diags:?}");
    assert_eq!(got.resource, want);
    assert!(got.diagnostics.is_empty(), "{:?}", got.diagnostics);
}

#[test]
fn an_invalid_custom_object_names_its_field_and_the_fix_without_a_position() {
    let spec = json!({"selector": "app == 'web'", "ingres": [{"action": "Allow"}],
                      "egress": [{"action": "Alow"}]});
    let label = Path::new("k8s:NetworkPolicy.projectcalico.org/shop/p");
    let got = dynamic(calico_np(spec), &calico_types(), label);
    assert!(got.resource.is_none());
    let lines: Vec<String> = got.diagnostics.iter().map(Diagnostic::one_line).collect();
    assert!(
        lines.iter().any(|l| l.contains("`ingres`")
            && l.contains("did you mean `ingress`")
            && l.contains("[NetworkPolicy shop/p")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Alow") && l.contains("field spec.egress[0].action")),
        "{lines:#?}"
    );
    assert!(
        got.diagnostics
            .iter()
            .all(|d| d.pos.is_none() && d.source.is_none())
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{}: ", label.display()))),
        "{lines:#?}"
    );
}

#[test]
fn a_converted_pod_keeps_no_room_of_the_kubernetes_object() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8080},
                                      {"name": "metrics", "containerPort": 9090}]},
            {"name": "side"}]},
        "status": {"podIPs": [{"ip": "198.18.0.7"}]}
    });
    let got = direct::<pod::Pod>(&obj, Path::new("k8s:Pod/shop/web-1"));
    let Some(Resource::Pod(pod)) = got.resource else {
        panic!("{:?}", got.diagnostics)
    };
    // A Kubernetes Container is many times the size of the model's: had
    // its allocation been reused, the capacity would be far above the length.
    assert_eq!(pod.spec.containers.capacity(), 2);
    assert_eq!(pod.spec.containers[0].ports.capacity(), 2);
    assert_eq!(pod.status.pod_ips.capacity(), 1);
}
