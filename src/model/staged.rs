//! Staged policies: which enforced policy each staged kind stands for, and
//! the cluster as it would be with every staged policy applied (its
//! `stagedAction` Set creating or replacing the enforced policy of the same
//! kind, namespace and name; Delete removing it). Pure.

use std::collections::BTreeMap;

use super::types::StagedAction;
use super::{Object, Resource, ResourceKey, ResourceKind};

/// The enforced kind a staged kind stages (`None` for other kinds).
pub fn enforced_kind(kind: ResourceKind) -> Option<ResourceKind> {
    match kind {
        ResourceKind::StagedNetworkPolicy => Some(ResourceKind::NetworkPolicy),
        ResourceKind::StagedGlobalNetworkPolicy => Some(ResourceKind::GlobalNetworkPolicy),
        ResourceKind::StagedKubernetesNetworkPolicy => Some(ResourceKind::K8sNetworkPolicy),
        _ => None,
    }
}

/// Whether `kind` is one of the staged policy kinds.
pub fn is_staged(kind: ResourceKind) -> bool {
    enforced_kind(kind).is_some()
}

/// A staged resource as the enforced resource it would become, with its
/// action; `None` for other kinds.
pub fn as_enforced(r: &Resource) -> Option<(StagedAction, Resource)> {
    Some(match r {
        Resource::StagedNetworkPolicy(o) => (
            o.spec.action(),
            Resource::NetworkPolicy(Box::new(Object {
                metadata: o.metadata.clone(),
                spec: o.spec.to_enforced(),
            })),
        ),
        Resource::StagedGlobalNetworkPolicy(o) => (
            o.spec.action(),
            Resource::GlobalNetworkPolicy(Box::new(Object {
                metadata: o.metadata.clone(),
                spec: o.spec.to_enforced(),
            })),
        ),
        Resource::StagedKubernetesNetworkPolicy(o) => (
            o.spec.action(),
            Resource::K8sNetworkPolicy(Box::new(Object {
                metadata: o.metadata.clone(),
                spec: o.spec.to_enforced(),
            })),
        ),
        _ => return None,
    })
}

/// The resources with every staged policy applied as if enforced: the
/// staged objects themselves are gone, a `Set` creates or replaces the
/// enforced policy of the same kind, namespace and name, a `Delete` removes
/// it. Order is kept; a replaced policy keeps its place. (`tortie trace
/// --staged` evaluates this view.)
pub fn apply_staged(resources: &[Resource]) -> Vec<Resource> {
    let mut staged: BTreeMap<ResourceKey, (StagedAction, Resource)> = BTreeMap::new();
    for r in resources {
        if let Some((action, enforced)) = as_enforced(r) {
            staged.insert(enforced.key(), (action, enforced));
        }
    }
    let mut out = Vec::with_capacity(resources.len());
    for r in resources {
        if is_staged(r.kind()) {
            continue;
        }
        match staged.remove(&r.key()) {
            Some((StagedAction::Set, replacement)) => out.push(replacement),
            Some((StagedAction::Delete, _)) => {}
            None => out.push(r.clone()),
        }
    }
    out.extend(
        staged
            .into_values()
            .filter(|(a, _)| *a == StagedAction::Set)
            .map(|(_, r)| r),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load::load_str;

    fn names(rs: &[Resource]) -> Vec<String> {
        rs.iter().map(|r| r.key().to_string()).collect()
    }

    #[test]
    fn set_replaces_creates_and_delete_removes() {
        let text = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: keep, namespace: a}
spec: {selector: all(), ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: swap, namespace: a}
spec: {selector: all(), ingress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: gone, namespace: a}
spec: {podSelector: {}, ingress: [{}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: swap, namespace: a}
spec: {selector: all(), ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: gone, namespace: a}
spec: {stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: new}
spec: {selector: all(), egress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: nothing-to-delete, namespace: a}
spec: {stagedAction: Delete}
"#;
        let loaded = load_str(text, std::path::Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let resources: Vec<Resource> = loaded.resources.into_iter().map(|l| l.resource).collect();
        assert_eq!(resources.len(), 7);
        let view = apply_staged(&resources);
        assert_eq!(
            names(&view),
            [
                "NetworkPolicy a/keep",
                "NetworkPolicy a/swap",
                "GlobalNetworkPolicy new"
            ]
        );
        let Resource::NetworkPolicy(swap) = &view[1] else {
            panic!("{:?}", view[1]);
        };
        assert_eq!(
            swap.spec.ingress[0].action,
            crate::model::types::Action::Deny
        );
    }

    #[test]
    fn staged_kinds_report_positioned_errors_and_warnings() {
        let text = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: x, namespace: a}
spec:
  stagedAction: Remove
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: y, namespace: a}
spec:
  doNotTrack: true
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: z, namespace: a}
spec:
  stagedAction: Delete
  ingress: [{}]
";
        let loaded = load_str(text, std::path::Path::new("s.yaml"));
        let lines: Vec<String> = loaded.diagnostics.iter().map(|d| d.one_line()).collect();
        let find = |needle: &str| {
            lines
                .iter()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {lines:#?}"))
                .clone()
        };
        let bad_action = find("Remove");
        assert!(
            bad_action.starts_with("s.yaml:5:17: error:"),
            "{bad_action}"
        );
        assert!(
            bad_action.contains("StagedNetworkPolicy a/x"),
            "{bad_action}"
        );
        let dnt = find("doNotTrack");
        assert!(dnt.starts_with("s.yaml:11:"), "{dnt}");
        assert!(dnt.contains("error"), "{dnt}");
        let ignored = find("are ignored");
        assert!(ignored.starts_with("s.yaml:18:17: warning:"), "{ignored}");
        assert!(ignored.contains("field spec.stagedAction"), "{ignored}");
        let kept: Vec<String> = loaded
            .resources
            .iter()
            .map(|l| l.resource.key().to_string())
            .collect();
        assert_eq!(
            kept,
            ["StagedKubernetesNetworkPolicy a/z"],
            "only the valid one loads"
        );
    }
}
