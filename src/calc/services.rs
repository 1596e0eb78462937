//! Kubernetes Services as `services` rule matches see them: each
//! EndpointSlice's addresses and ports, grouped by the Service named in its
//! `kubernetes.io/service-name` label (as Calico's service index does; see
//! docs/ruleset.md, "Services in rules").

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Cluster, Note};
use crate::model::Object;
use crate::model::types::{EndpointSliceSpec, SERVICE_NAME_LABEL};
use crate::model::validate::slice_members;

/// A Service: (namespace, name).
pub type ServiceKey = (String, String);

/// What one EndpointSlice contributes: addresses and `(protocol, port)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceMembers {
    pub addrs: Vec<IpAddr>,
    pub ports: Vec<(u8, u16)>,
}

impl SliceMembers {
    /// The slice's Service and members; `None` for a slice with no
    /// service label (it belongs to no Service).
    pub fn of(o: &Object<EndpointSliceSpec>) -> Option<(ServiceKey, SliceMembers)> {
        let svc = o.metadata.labels.get(SERVICE_NAME_LABEL)?;
        let ns = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let (addrs, ports) = slice_members(&o.spec);
        Some(((ns, svc.clone()), SliceMembers { addrs, ports }))
    }

    /// `(address, protocol, port)` for every address and port.
    pub fn address_ports(&self) -> impl Iterator<Item = (IpAddr, u8, u16)> + '_ {
        self.addrs
            .iter()
            .flat_map(|a| self.ports.iter().map(move |(p, n)| (*a, *p, *n)))
    }
}

impl Cluster {
    pub(super) fn add_endpoint_slice(&mut self, o: &Object<EndpointSliceSpec>) {
        if let Some((svc, m)) = SliceMembers::of(o) {
            let name = o.metadata.name.clone().unwrap_or_default();
            self.services.entry(svc).or_default().insert(name, m);
        }
    }

    /// The endpoint addresses of a Service (a source `services` match).
    pub fn service_addresses(&self, svc: &ServiceKey) -> BTreeSet<IpNet> {
        self.services
            .get(svc)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(|m| m.addrs.iter().map(|a| IpNet::from(*a)))
            .collect()
    }

    /// `(address, protocol, port)` of a Service's endpoints (a destination
    /// `services` match).
    pub fn service_ports(&self, svc: &ServiceKey) -> BTreeSet<(IpAddr, u8, u16)> {
        self.services
            .get(svc)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(SliceMembers::address_ports)
            .collect()
    }
}

/// Slices by Service, then by slice name.
pub type ServiceSlices = BTreeMap<ServiceKey, BTreeMap<String, SliceMembers>>;

/// Notes for `services` matches that name a Service with no EndpointSlice
/// in the input (a typo, or slices not exported): such a rule matches
/// nothing until one appears.
pub fn missing_service_notes(c: &Cluster) -> Vec<Note> {
    let mut out = Vec::new();
    for p in &c.policies {
        let mut missing = BTreeSet::new();
        for rule in p.spec.ingress.iter().chain(&p.spec.egress) {
            for side in [&rule.source, &rule.destination] {
                let Some(svc) = &side.services else { continue };
                let ns = svc.namespace.as_deref().filter(|n| !n.is_empty());
                let ns = ns.or(p.namespace()).unwrap_or_default();
                let key = (ns.to_string(), svc.name.clone());
                if !c.services.contains_key(&key) {
                    missing.insert(format!("{}/{}", key.0, key.1));
                }
            }
        }
        for svc in missing {
            out.push(Note {
                subject: p.id.to_string(),
                message: format!(
                    "`services` names Service {svc}, which has no EndpointSlice in the input: \
                     the rule matches nothing until one appears (slices carry the label \
                     `{SERVICE_NAME_LABEL}: <name>`)"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_without_slices_is_noted_and_one_with_slices_is_not() {
        let y = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: all()\n  types: [Egress]\n  egress:\n  - {action: Allow, destination: {services: {name: api}}}\n  - {action: Allow, destination: {services: {name: web, namespace: other}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}\naddressType: IPv4\nendpoints: [{addresses: [198.18.3.10]}]\nports: [{port: 80}]\n";
        let r = crate::model::load::load_str(y, std::path::Path::new("n.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        let res: Vec<_> = r.resources.into_iter().map(|l| l.resource).collect();
        let c = Cluster::build(&res, "n1");
        assert_eq!(
            c.service_ports(&("shop".into(), "api".into())),
            [("198.18.3.10".parse().unwrap(), 6, 80)].into()
        );
        let notes = missing_service_notes(&c);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].subject, "np/shop/p");
        assert!(notes[0].message.contains("Service other/web"), "{notes:?}");
    }
}
