//! What the calculation reads of a pod ([`PodFacts`]), from a model
//! [`Pod`] or from the compact [`PodRecord`] the incremental engine keeps
//! per pod instead of the model object: interned labels, node and service
//! account, the parsed addresses and the named ports, nothing else. A
//! record is the model pod's facts taken once, so both give the same
//! endpoint by construction.

use std::net::IpAddr;

use super::NamedPort;
use super::labels::Sym;
use crate::model::types::Protocol;
use crate::model::{Pod, ResourceKey};

/// The inputs of a pod's endpoint.
pub trait PodFacts {
    /// `metadata.namespace` as given (the endpoint defaults it).
    fn namespace(&self) -> Option<&str>;
    /// `metadata.name` (empty when missing).
    fn name(&self) -> &str;
    /// Host-network and finished pods have no endpoint.
    fn skipped(&self) -> bool;
    /// `podIPs` that parse, with `podIP` first when it is not among them.
    fn addrs(&self) -> Vec<IpAddr>;
    fn service_account(&self) -> Option<&str>;
    fn node(&self) -> Option<&str>;
    /// The pod's own labels (interned), in key order.
    fn own_labels(&self) -> impl Iterator<Item = (Sym, Sym)>;
    /// Container ports that have a name and a valid number.
    fn named_ports(&self) -> Vec<NamedPort>;
}

impl PodFacts for Pod {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    fn skipped(&self) -> bool {
        self.spec.host_network
            || matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    fn addrs(&self) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = (self.status.pod_ips.iter())
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if let Some(ip) = self.status.pod_ip.as_ref().and_then(|i| i.parse().ok())
            && !addrs.contains(&ip)
        {
            addrs.insert(0, ip);
        }
        addrs
    }

    fn service_account(&self) -> Option<&str> {
        self.spec.service_account_name.as_deref()
    }

    fn node(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    fn own_labels(&self) -> impl Iterator<Item = (Sym, Sym)> {
        self.metadata.labels.pairs().iter().copied()
    }

    fn named_ports(&self) -> Vec<NamedPort> {
        (self.spec.containers.iter())
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| {
                let name = p.name?;
                let protocol = (p.protocol.as_deref())
                    .and_then(Protocol::from_name)
                    .unwrap_or(Protocol::Tcp);
                let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
                Some(NamedPort {
                    name,
                    protocol,
                    port,
                })
            })
            .collect()
    }
}

/// A pod as the incremental engine keeps it (its key holds the namespace
/// and name): about 80 bytes plus the labels, against about 1.5 kB for the
/// model object with its label map and strings.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    labels: Box<[(Sym, Sym)]>,
    node: Option<Sym>,
    service_account: Option<Sym>,
    addrs: Addrs,
    ports: Box<[(Sym, Protocol, u16)]>,
    skipped: bool,
}

/// A pod's addresses: almost always one, held inline.
#[derive(Debug, Clone, PartialEq)]
enum Addrs {
    One(IpAddr),
    Many(Box<[IpAddr]>),
}

impl Addrs {
    fn of(mut addrs: Vec<IpAddr>) -> Addrs {
        match addrs.as_slice() {
            [one] => Addrs::One(*one),
            _ => {
                addrs.shrink_to_fit();
                Addrs::Many(addrs.into_boxed_slice())
            }
        }
    }

    fn to_vec(&self) -> Vec<IpAddr> {
        match self {
            Addrs::One(a) => vec![*a],
            Addrs::Many(all) => all.to_vec(),
        }
    }
}

impl PodRecord {
    /// The facts of `pod`, taken once.
    pub fn of(pod: &Pod) -> PodRecord {
        let ports = pod.named_ports().into_iter();
        PodRecord {
            labels: pod.metadata.labels.pairs().into(),
            node: pod.node().map(Sym::new),
            service_account: pod.service_account().map(Sym::new),
            addrs: Addrs::of(pod.addrs()),
            ports: ports
                .map(|p| (Sym::new(&p.name), p.protocol, p.port))
                .collect(),
            skipped: pod.skipped(),
        }
    }

    /// Whether the pod's own labels have `key`.
    pub fn has_label(&self, key: &str) -> bool {
        self.labels.iter().any(|(k, _)| k.as_str() == key)
    }

    pub fn node(&self) -> Option<&'static str> {
        self.node.map(Sym::as_str)
    }

    pub fn service_account(&self) -> Option<&'static str> {
        self.service_account.map(Sym::as_str)
    }
}

/// A record with the key it is stored under: the facts of one pod.
#[derive(Debug, Clone, Copy)]
pub struct KeyedPod<'a>(pub &'a ResourceKey, pub &'a PodRecord);

impl PodFacts for KeyedPod<'_> {
    fn namespace(&self) -> Option<&str> {
        self.0.namespace.as_deref()
    }

    fn name(&self) -> &str {
        &self.0.name
    }

    fn skipped(&self) -> bool {
        self.1.skipped
    }

    fn addrs(&self) -> Vec<IpAddr> {
        self.1.addrs.to_vec()
    }

    fn service_account(&self) -> Option<&str> {
        self.1.service_account()
    }

    fn node(&self) -> Option<&str> {
        self.1.node()
    }

    fn own_labels(&self) -> impl Iterator<Item = (Sym, Sym)> {
        self.1.labels.iter().copied()
    }

    fn named_ports(&self) -> Vec<NamedPort> {
        (self.1.ports.iter())
            .map(|(name, protocol, port)| NamedPort {
                name: *name,
                protocol: *protocol,
                port: *port,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::Cluster;
    use crate::model::types::{Container, ContainerPort, PodIp};
    use crate::model::{Resource, ResourceKey};

    fn pod(edit: impl FnOnce(&mut Pod)) -> Pod {
        let mut p = Pod {
            metadata: Default::default(),
            spec: Default::default(),
            status: Default::default(),
        };
        p.metadata.name = Some("web-1".into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.labels = [("app", "web"), ("tier", "front")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.spec.node_name = Some("n2".into());
        p.status.pod_ip = Some("198.18.0.7".into());
        let port = |name: Option<&str>, n, proto: Option<&str>| ContainerPort {
            name: name.map(Sym::from),
            container_port: n,
            protocol: proto.map(Sym::from),
        };
        p.spec.containers = vec![
            Container {
                ports: vec![port(Some("http"), 80, None), port(None, 81, None)],
            },
            Container {
                ports: vec![
                    port(Some("dns"), 53, Some("UDP")),
                    port(Some("bad"), 0, None),
                ],
            },
        ];
        edit(&mut p);
        p
    }

    /// A record gives the endpoint its model pod gives, whatever the pod.
    #[test]
    fn a_record_yields_the_endpoint_of_its_pod() {
        let c = Cluster::build(&[], "n1");
        let cases = [
            pod(|_| {}),
            pod(|p| p.metadata.namespace = None),
            pod(|p| p.metadata.name = None),
            pod(|p| {
                p.status.pod_ips = ["198.18.0.9", "fd74:6f72::9", "nonsense"]
                    .map(|ip| PodIp { ip: ip.into() })
                    .into();
            }),
            pod(|p| p.status.pod_ip = None),
            pod(|p| p.status.pod_ip = Some("nonsense".into())),
            pod(|p| p.spec.host_network = true),
            pod(|p| p.status.phase = Some("Succeeded".into())),
            pod(|p| p.status.phase = Some("Running".into())),
            pod(|p| p.spec.service_account_name = Some("robot".into())),
        ];
        let mut some = 0;
        for p in cases {
            let key: ResourceKey = Resource::Pod(p.clone()).key();
            let record = PodRecord::of(&p);
            let from_record = c.pod_endpoint(&KeyedPod(&key, &record));
            assert_eq!(from_record, c.pod_endpoint(&p), "{p:?}");
            some += usize::from(from_record.is_some());
        }
        assert_eq!(
            some, 6,
            "no address, a bad address, host network, finished: none"
        );
        let with_ports = c.pod_endpoint(&pod(|_| {})).expect("an endpoint");
        assert_eq!(with_ports.ports.len(), 2, "named, valid ports only");
    }

    #[test]
    fn records_differ_exactly_when_what_calc_reads_differs() {
        let base = PodRecord::of(&pod(|_| {}));
        let annotated = pod(|p| {
            p.metadata.annotations.insert("note".into(), "x".into());
            p.status.phase = Some("Pending".into());
        });
        assert_eq!(PodRecord::of(&annotated), base);
        let relabelled = pod(|p| {
            p.metadata.labels.insert("app", "api");
        });
        assert_ne!(PodRecord::of(&relabelled), base);
        let moved = pod(|p| p.spec.node_name = Some("n3".into()));
        assert_ne!(PodRecord::of(&moved), base);
        assert!(base.has_label("tier") && !base.has_label("web"));
        assert_eq!((base.node(), base.service_account()), (Some("n2"), None));
    }
}
