//! Service sets in the engine: an EndpointSlice coming, going or changing
//! moves the counts of the sets of its Service only (old and new Service
//! when its label moves it), as element deltas; no part is re-rendered.

use super::*;
use crate::calc::{ServiceKey, SliceMembers};
use ipnet::IpNet;

/// An EndpointSlice's Service and members (`None` for other kinds and for
/// slices of no Service).
pub(super) fn slice_of(r: &Resource) -> Option<(ServiceKey, SliceMembers)> {
    match r {
        Resource::EndpointSlice(o) => SliceMembers::of(o),
        _ => None,
    }
}

type Slice = Option<(ServiceKey, SliceMembers)>;

impl Incremental {
    /// Files (or unfiles) a Service set under its Service.
    pub(super) fn index_service_set(&mut self, name: &str, source: &SetSource, add: bool) {
        let SetSource::Service { service, .. } = source else {
            return;
        };
        if add {
            self.sets_by_service
                .entry(service.clone())
                .or_default()
                .insert(name.to_string());
        } else if let Some(names) = self.sets_by_service.get_mut(service) {
            names.remove(name);
            if names.is_empty() {
                self.sets_by_service.remove(service);
            }
        }
    }

    /// The slices of `svc` as they are now: from the snapshot during a
    /// rebuild, else from the stored EndpointSlices of its namespace.
    fn slices_of(&self, svc: &ServiceKey) -> Vec<SliceMembers> {
        if let Some(c) = &self.snapshot {
            return c
                .services
                .get(svc)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default();
        }
        let start = ResourceKey {
            kind: ResourceKind::EndpointSlice,
            namespace: Some(svc.0.clone()),
            name: String::new(),
        };
        self.resources
            .resources_from(start..)
            .take_while(|(k, _)| {
                k.kind == ResourceKind::EndpointSlice && k.namespace.as_ref() == Some(&svc.0)
            })
            .filter_map(|(_, r)| slice_of(r))
            .filter(|(s, _)| s == svc)
            .map(|(_, m)| m)
            .collect()
    }

    /// The counted members of a new Service set (other sources: empty).
    pub(super) fn count_service(&self, source: &SetSource) -> Counts {
        let SetSource::Service { service, ports, v6 } = source else {
            return Counts::Addresses(AddressCounts::new(false));
        };
        let slices = self.slices_of(service);
        if *ports {
            let mut c = PortCounts::new(*v6);
            let mut scratch = ElementDelta::default();
            for key in slices.iter().flat_map(SliceMembers::address_ports) {
                c.bump(key, 1, &mut scratch);
            }
            return Counts::Ports(c);
        }
        let mut c = AddressCounts::new(*v6);
        c.fill(
            slices
                .iter()
                .flat_map(|m| m.addrs.iter().map(|a| IpNet::from(*a))),
        );
        c.settle();
        Counts::Addresses(c)
    }

    /// EndpointSlices changed from `old` to `new` each: moves the counts
    /// of their Services' sets; returns how many sets changed.
    pub(super) fn bump_services(&mut self, slices: Vec<(Slice, Slice)>) -> usize {
        let mut touched = 0;
        for (old, new) in slices {
            if old == new {
                continue;
            }
            let mut names: BTreeSet<String> = BTreeSet::new();
            for (svc, _) in old.iter().chain(new.iter()) {
                names.extend(self.sets_by_service.get(svc).into_iter().flatten().cloned());
            }
            for name in names {
                let delta = self.bump_service_set(&name, old.as_ref(), new.as_ref());
                if !delta.is_empty() {
                    touched += 1;
                    self.record_elements(&name, delta);
                }
            }
        }
        touched
    }

    /// Moves one Service set's counts from `old`'s contribution to `new`'s.
    fn bump_service_set(
        &mut self,
        name: &str,
        old: Option<&(ServiceKey, SliceMembers)>,
        new: Option<&(ServiceKey, SliceMembers)>,
    ) -> ElementDelta {
        let mut delta = ElementDelta::default();
        let Some(SetSource::Service { service, .. }) = self.ruleset.set_sources.get(name) else {
            return delta;
        };
        let mine = |s: Option<&(ServiceKey, SliceMembers)>| {
            s.filter(|(svc, _)| svc == service).map(|(_, m)| m.clone())
        };
        let (o, n) = (mine(old), mine(new));
        match self.counts.get_mut(name) {
            Some(Counts::Ports(c)) => {
                for key in o.iter().flat_map(SliceMembers::address_ports) {
                    c.bump(key, -1, &mut delta);
                }
                for key in n.iter().flat_map(SliceMembers::address_ports) {
                    c.bump(key, 1, &mut delta);
                }
            }
            Some(Counts::Addresses(c)) => {
                for a in o.iter().flat_map(|m| m.addrs.iter()) {
                    c.bump(IpNet::from(*a), -1, &mut delta);
                }
                for a in n.iter().flat_map(|m| m.addrs.iter()) {
                    c.bump(IpNet::from(*a), 1, &mut delta);
                }
            }
            None => {}
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;

    const BASE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: c}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.1.2}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: app == 'c'\n  types: [Egress, Ingress]\n  egress: [{action: Allow, destination: {services: {name: api}}}]\n  ingress: [{action: Allow, source: {services: {name: api}}}]\n";

    fn slice(name: &str, svc: &str, addrs: &[&str]) -> Resource {
        let eps: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{addresses: [{a}]}}"))
            .collect();
        let y = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{port: 8080}}, {{port: 53, protocol: UDP}}]\n",
            eps.join(", ")
        );
        let mut r = crate::model::load::load_str(&y, std::path::Path::new("s.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        r.resources.remove(0).resource
    }

    fn base() -> Vec<Resource> {
        let r = crate::model::load::load_str(BASE, std::path::Path::new("b.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        r.resources.into_iter().map(|l| l.resource).collect()
    }

    /// Applies `u`; checks the outcome is set elements only, the change
    /// names no chain, and the result equals a full compile of `all`.
    fn step(engine: &mut Incremental, u: Update, all: &[Resource]) -> Change {
        engine.take_change();
        let outcome = engine.apply(vec![u]);
        assert!(matches!(outcome, Outcome::Sets(_)), "{outcome:?}");
        let change = engine.take_change();
        assert!(
            change.chains.is_empty() && change.sets.is_empty(),
            "{change:?}"
        );
        assert_eq!(engine.ruleset(), &compile(&Cluster::build(all, "n1"), "n1"));
        change
    }

    fn elements(change: &Change) -> Vec<String> {
        let mut out: Vec<String> = change
            .elements
            .values()
            .flat_map(|d| {
                let added = d.added.iter().map(|e| format!("+{e}"));
                added.chain(d.removed.iter().map(|e| format!("-{e}")))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn slices_coming_changing_moving_and_going_are_element_deltas() {
        let mut all = base();
        let mut engine = Incremental::new(all.clone(), "n1", |_| {});
        let a = slice("api-1", "api", &["198.18.3.10"]);
        all.push(a.clone());
        let c = step(&mut engine, Update::put(a), &all);
        assert_eq!(
            elements(&c),
            [
                "+198.18.3.10",
                "+198.18.3.10 . 17 . 53",
                "+198.18.3.10 . 6 . 8080"
            ]
        );
        // A second slice of the same Service sharing an address: only the
        // new address is added; the shared one is counted twice.
        let b = slice("api-2", "api", &["198.18.3.10", "198.18.3.11"]);
        all.push(b.clone());
        let c = step(&mut engine, Update::put(b.clone()), &all);
        assert_eq!(
            elements(&c),
            [
                "+198.18.3.10/31",
                "+198.18.3.11 . 17 . 53",
                "+198.18.3.11 . 6 . 8080",
                "-198.18.3.10"
            ]
        );
        // The second slice moves to another Service: its own address goes,
        // the shared one stays (the first slice still holds it).
        let moved = slice("api-2", "web", &["198.18.3.10", "198.18.3.11"]);
        all.pop();
        all.push(moved.clone());
        let c = step(&mut engine, Update::put(moved.clone()), &all);
        assert_eq!(
            elements(&c),
            [
                "+198.18.3.10",
                "-198.18.3.10/31",
                "-198.18.3.11 . 17 . 53",
                "-198.18.3.11 . 6 . 8080"
            ]
        );
        all.pop();
        engine.take_change();
        let outcome = engine.apply(vec![Update::delete(moved.key())]);
        assert_eq!(outcome, Outcome::Unchanged, "a slice of an unused Service");
        assert_eq!(
            engine.ruleset(),
            &compile(&Cluster::build(&all, "n1"), "n1")
        );
        let gone = all.pop().expect("api-1");
        let c = step(&mut engine, Update::delete(gone.key()), &all);
        assert_eq!(
            elements(&c),
            [
                "-198.18.3.10",
                "-198.18.3.10 . 17 . 53",
                "-198.18.3.10 . 6 . 8080"
            ]
        );
    }
}
