//! Lints across resources: input that is valid but probably does not do
//! what its author meant. They are warnings only and never change what is
//! compiled.
//!
//! - A selector names a label key that no object carries, while objects do
//!   carry the same key in another case (`Tier` vs `tier`: keys are
//!   case-sensitive, so the selector matches nothing).
//! - A host endpoint that only preDNAT policies select: its normal traffic
//!   then falls to the host-endpoint default, deny (failsafe ports aside).

use std::collections::{BTreeMap, BTreeSet};

use super::load::Loaded;
use super::types::LabelSelector;
use super::{Resource, yaml};
use crate::diag::{Diagnostic, Severity};
use crate::selector;

/// Every lint finding for `loaded`, in input order.
pub fn lint(loaded: &[Loaded]) -> Vec<Diagnostic> {
    let mut out = case_mismatched_keys(loaded);
    out.extend(pre_dnat_only_host_endpoints(loaded));
    out
}

fn warning(l: &Loaded, path: &str, message: String, hint: &str) -> Diagnostic {
    let path = yaml::FieldPath(
        path.split('.')
            .map(|k| yaml::Seg::Key(k.to_string()))
            .collect(),
    );
    l.diagnostic(Severity::Warning, Some(path), message, hint)
}

/// Label keys carried by labelled objects.
fn object_label_keys(loaded: &[Loaded]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for l in loaded {
        let labels = match &l.resource {
            Resource::Pod(o) => &o.metadata.labels,
            Resource::Namespace(o) => &o.metadata.labels,
            Resource::ServiceAccount(o) => &o.metadata.labels,
            Resource::HostEndpoint(o) => &o.metadata.labels,
            Resource::WorkloadEndpoint(o) => &o.metadata.labels,
            Resource::NetworkSet(o) => &o.metadata.labels,
            Resource::GlobalNetworkSet(o) => &o.metadata.labels,
            _ => continue,
        };
        keys.extend(labels.keys().cloned());
    }
    keys
}

fn label_selector_keys(s: &LabelSelector, out: &mut BTreeSet<String>) {
    out.extend(s.match_labels.keys().cloned());
    out.extend(s.match_expressions.iter().map(|e| e.key.clone()));
}

/// The label keys a policy's selectors mention (policy and rule peers).
fn selector_keys(r: &Resource) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut calico = |text: &Option<String>| {
        if let Some(sel) = text.as_deref().and_then(|t| selector::parse(t).ok()) {
            out.extend(sel.label_keys().into_iter().map(str::to_string));
        }
    };
    let spec = match r {
        Resource::NetworkPolicy(o) | Resource::GlobalNetworkPolicy(o) => Some(&o.spec),
        _ => None,
    };
    if let Some(spec) = spec {
        calico(&spec.selector);
        for rule in spec.ingress.iter().chain(&spec.egress) {
            for e in [&rule.source, &rule.destination] {
                calico(&e.selector);
                calico(&e.not_selector);
                calico(&e.namespace_selector);
            }
        }
    }
    if let Resource::K8sNetworkPolicy(o) = r {
        label_selector_keys(&o.spec.pod_selector, &mut out);
        let peers = o
            .spec
            .ingress
            .iter()
            .flat_map(|i| &i.from)
            .chain(o.spec.egress.iter().flat_map(|e| &e.to));
        for p in peers {
            for s in [&p.pod_selector, &p.namespace_selector]
                .into_iter()
                .flatten()
            {
                label_selector_keys(s, &mut out);
            }
        }
    }
    out
}

fn case_mismatched_keys(loaded: &[Loaded]) -> Vec<Diagnostic> {
    let present = object_label_keys(loaded);
    let mut by_folded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for k in &present {
        by_folded.entry(k.to_lowercase()).or_default().push(k);
    }
    let mut out = Vec::new();
    for l in loaded {
        for key in selector_keys(&l.resource) {
            if present.contains(&key) || key.starts_with("projectcalico.org/") {
                continue;
            }
            let Some(variants) = by_folded.get(&key.to_lowercase()) else {
                continue;
            };
            let list: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
            out.push(warning(
                l,
                "spec",
                format!(
                    "a selector uses the label key `{key}`, which no object carries; objects carry {}",
                    list.join(", ")
                ),
                "label keys are case-sensitive: use the same spelling in the selector and on the objects",
            ));
        }
    }
    out
}

fn pre_dnat_only_host_endpoints(loaded: &[Loaded]) -> Vec<Diagnostic> {
    let gnps: Vec<(selector::Selector, bool)> = loaded
        .iter()
        .filter_map(|l| match &l.resource {
            Resource::GlobalNetworkPolicy(o) => {
                let text = o.spec.selector.as_deref().unwrap_or("all()");
                let sel = selector::parse(text).ok()?;
                Some((sel, o.spec.pre_dnat))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for l in loaded {
        let Resource::HostEndpoint(h) = &l.resource else {
            continue;
        };
        let picked: Vec<bool> = gnps
            .iter()
            .filter(|(sel, _)| sel.matches(&h.metadata.labels))
            .map(|(_, pre)| *pre)
            .collect();
        if !picked.is_empty() && picked.iter().all(|pre| *pre) && h.spec.profiles.is_empty() {
            out.push(warning(
                l,
                "metadata.labels",
                "only preDNAT policies select this host endpoint: all its other traffic \
                 is denied by the host-endpoint default (failsafe ports aside)"
                    .to_string(),
                "add a normal (non-preDNAT) policy that allows what the host needs, or a profile",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::load::load_str;

    fn lints(yaml: &str) -> Vec<String> {
        let r = load_str(yaml, Path::new("l.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        lint(&r.resources)
            .into_iter()
            .map(|d| d.one_line())
            .collect()
    }

    #[test]
    fn a_selector_key_in_the_wrong_case_is_named() {
        let found = lints(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: d, labels: {tier: frontend}}\nspec: {nodeName: n1}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: d}\nspec:\n  podSelector: {matchLabels: {Tier: frontend}}\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("`Tier`") && found[0].contains("`tier`"),
            "{}",
            found[0]
        );
        assert!(found[0].starts_with("l.yaml:6:1: warning"), "{}", found[0]);
        // Spelled the same: nothing to say.
        let quiet = lints(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: d, labels: {tier: frontend}}\nspec: {nodeName: n1}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: tier == 'frontend'}\n",
        );
        assert!(quiet.is_empty(), "{quiet:?}");
    }

    #[test]
    fn a_host_endpoint_with_only_pre_dnat_policies_is_named() {
        let hep = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h, labels: {role: node}}\nspec: {node: n1, interfaceName: eth0}\n";
        let pre = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: pre}\nspec: {selector: role == 'node', preDNAT: true, applyOnForward: true, ingress: [{action: Deny, protocol: TCP, destination: {ports: [30080]}}]}\n";
        let normal = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: normal}\nspec: {selector: role == 'node', ingress: [{action: Allow}]}\n";
        let found = lints(&format!("{hep}---\n{pre}"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("only preDNAT policies"), "{}", found[0]);
        assert!(lints(&format!("{hep}---\n{pre}---\n{normal}")).is_empty());
        assert!(lints(hep).is_empty());
    }
}
