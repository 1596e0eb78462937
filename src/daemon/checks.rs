//! Loud misconfiguration in `tortie run`: which nodes the input's endpoints
//! are on (kept per update, a few bytes per endpoint), and the checks made
//! at start and on every recompute: no endpoint on this node while other
//! nodes have some (a mistyped `--node`), and local pods none of whose
//! interfaces exists (another CNI, or another `interfacePrefix`). Each
//! holds a `tortie_misconfigured{check}` gauge at 1 and is logged when it
//! starts or changes, then reminded at most every [`REMIND_EVERY`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::calc::{Cluster, Endpoint, EndpointId};
use crate::compile::incremental::Incremental;
use crate::hostifaces::InterfaceAddrs;
use crate::model::{Resource, ResourceKey, Update};

use super::metrics::Metrics;

/// A warning that still holds is logged again after this long.
pub const REMIND_EVERY: Duration = Duration::from_secs(300);

/// Endpoints per node, from the updates (pods, workload and host endpoints).
#[derive(Debug, Default)]
pub struct Census {
    /// Key hash → node index.
    at: HashMap<u64, u32>,
    names: Vec<String>,
    ids: HashMap<String, u32>,
    counts: Vec<u64>,
}

fn key_hash(k: &ResourceKey) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

/// The node an endpoint-like resource is on.
fn node_of(r: &Resource) -> Option<&str> {
    match r {
        Resource::Pod(p) if !p.spec.host_network => p.spec.node_name.as_deref(),
        Resource::WorkloadEndpoint(o) => Some(o.spec.node.as_str()),
        Resource::HostEndpoint(o) => Some(o.spec.node.as_str()),
        _ => None,
    }
    .filter(|n| !n.is_empty())
}

impl Census {
    pub fn note(&mut self, u: &Update) {
        let h = key_hash(&u.key);
        if let Some(old) = self.at.remove(&h) {
            self.counts[old as usize] -= 1;
        }
        let Some(node) = u.value.as_ref().and_then(node_of) else {
            return;
        };
        let id = match self.ids.get(node) {
            Some(id) => *id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(node.to_string());
                self.ids.insert(node.to_string(), id);
                self.counts.push(0);
                id
            }
        };
        self.counts[id as usize] += 1;
        self.at.insert(h, id);
    }

    /// Nodes with at least one endpoint.
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.names
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| **c > 0)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The wrong-node message, named as `calc::node_notes` names it for
/// `compile`: no endpoint here, endpoints on `others`.
fn wrong_node(node: &str, others: &BTreeSet<&str>) -> Option<String> {
    let mut c = Cluster::default();
    c.endpoints = others
        .iter()
        .filter(|n| **n != node)
        .map(|n| Endpoint {
            id: EndpointId::Host {
                name: String::new(),
            },
            node: (*n).into(),
            iface: None,
            addrs: Vec::new(),
            labels: Default::default(),
            profiles: Default::default(),
            ports: Vec::new(),
        })
        .collect();
    if c.endpoints.is_empty() {
        return None;
    }
    crate::calc::node_notes(&c, node)
        .into_iter()
        .next()
        .map(|n| n.message)
}

/// Local pods exist, but none of their interfaces does.
fn no_interfaces(engine: &Incremental, node: &str, ifaces: &InterfaceAddrs) -> Option<String> {
    let cluster = engine.cluster();
    let pods: Vec<&Endpoint> = cluster
        .local_endpoints(node)
        .filter(|e| matches!(e.id, EndpointId::Workload { .. }) && e.iface.is_some())
        .collect();
    let first = pods.first()?;
    if pods
        .iter()
        .any(|e| e.iface.as_ref().is_some_and(|i| ifaces.contains_key(i)))
    {
        return None;
    }
    Some(format!(
        "{} local pod(s), but none of their interfaces exists (e.g. {} for {}): tortie polices \
         pods by their host-side interface, named interfacePrefix ({}) + 11 hex characters as \
         Calico's CNI names them; with another CNI nothing is enforced for pods",
        pods.len(),
        first.iface.as_deref().unwrap_or_default(),
        first.id,
        cluster.settings.interface_prefixes.join(","),
    ))
}

/// What the checks found last, and when each was last logged.
#[derive(Debug, Default)]
pub struct Checks {
    last: BTreeMap<&'static str, (String, Instant)>,
}

impl Checks {
    /// Runs every check; logs what starts, changes or is due a reminder,
    /// and sets the gauges. `ifaces` is None when the interfaces are not
    /// followed (then that check is not made).
    pub fn run(
        &mut self,
        engine: &Incremental,
        node: &str,
        census: &Census,
        ifaces: Option<&InterfaceAddrs>,
        metrics: &Metrics,
    ) {
        let local = engine.cluster().local_endpoints(node).count();
        let found = [
            (
                "wrong_node",
                (local == 0)
                    .then(|| wrong_node(node, &census.nodes()))
                    .flatten(),
            ),
            (
                "no_interfaces",
                ifaces.and_then(|m| no_interfaces(engine, node, m)),
            ),
        ];
        let mut gauges = BTreeMap::new();
        for (check, message) in found {
            gauges.insert(check, message.is_some());
            self.log(check, node, message);
        }
        metrics.set_misconfigured(gauges);
    }

    fn log(&mut self, check: &'static str, node: &str, message: Option<String>) {
        let Some(message) = message else {
            if self.last.remove(check).is_some() {
                tracing::info!(
                    check,
                    node,
                    "resolved: the node's configuration looks right now"
                );
            }
            return;
        };
        let due = match self.last.get(check) {
            Some((m, at)) => *m != message || at.elapsed() >= REMIND_EVERY,
            None => true,
        };
        if due {
            tracing::warn!(check, node, "{message}");
            self.last.insert(check, (message, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str) -> Resource {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: d}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: 198.18.0.1}}\n"
        );
        let r = crate::model::load::load_str(&text, std::path::Path::new("t.yaml"));
        r.resources.into_iter().next().unwrap().resource
    }

    #[test]
    fn the_census_follows_moves_and_deletes_and_names_the_closest_node() {
        let mut c = Census::default();
        c.note(&Update::put(pod("a", "n1")));
        c.note(&Update::put(pod("b", "n2")));
        assert_eq!(c.nodes(), BTreeSet::from(["n1", "n2"]));
        // A pod moved to another node, one deleted.
        c.note(&Update::put(pod("b", "n1")));
        assert_eq!(c.nodes(), BTreeSet::from(["n1"]));
        c.note(&Update::delete(pod("a", "n1").key()));
        assert_eq!(c.nodes(), BTreeSet::from(["n1"]));
        c.note(&Update::delete(pod("b", "n1").key()));
        assert!(c.nodes().is_empty());
        let others = BTreeSet::from(["n1", "zz"]);
        let m = wrong_node("N1", &others).expect("a warning");
        assert!(m.contains("e.g. n1") && m.contains("2 node(s)"), "{m}");
        assert_eq!(wrong_node("n1", &BTreeSet::from(["n1"])), None);
    }

    #[test]
    fn local_pods_without_their_interfaces_are_named_with_the_prefix() {
        let engine = Incremental::new(vec![pod("a", "n1"), pod("b", "n2")], "n1", |_| {});
        let iface = crate::calc::pod_interface_name("cali", "d", "a");
        let mut map = InterfaceAddrs::new();
        map.insert("eth0".into(), Vec::new());
        let m = no_interfaces(&engine, "n1", &map).expect("a warning");
        assert!(m.starts_with("1 local pod(s)"), "{m}");
        assert!(
            m.contains(&iface) && m.contains("interfacePrefix (cali)"),
            "{m}"
        );
        map.insert(iface, Vec::new());
        assert_eq!(no_interfaces(&engine, "n1", &map), None);
        // No local pods: nothing to say.
        assert_eq!(no_interfaces(&engine, "n3", &InterfaceAddrs::new()), None);
        // Both checks through the gauges.
        let metrics = Metrics::default();
        let mut census = Census::default();
        census.note(&Update::put(pod("b", "n2")));
        Checks::default().run(&engine, "N2", &census, Some(&map), &metrics);
        let text = metrics.render();
        assert!(
            text.contains("tortie_misconfigured{check=\"wrong_node\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tortie_misconfigured{check=\"no_interfaces\"} 0"),
            "{text}"
        );
    }
}
