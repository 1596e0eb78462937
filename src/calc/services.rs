//! Kubernetes Services as `services` rule matches see them: each
//! EndpointSlice's addresses and ports, grouped by the Service named in its
//! `kubernetes.io/service-name` label (as Calico's service index does; see
//! docs/ruleset.md, "Services in rules").

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::Cluster;
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
