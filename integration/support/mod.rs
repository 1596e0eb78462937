//! Shared by the real-kernel tests: the sandbox from the library, plus the
//! checks that decide whether kernel tests can run here.

#![allow(dead_code)]

pub mod agent;
pub mod hep;
pub mod kernel;

pub use tortie::sandbox::*;

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A node with three pods in `default`, labelled `app=<name>`: `server`
/// (serving TCP 80), `good` and `bad`.
pub struct Trio {
    pub node: Node,
    pub labels: BTreeMap<(String, String), Vec<(String, String)>>,
    _servers: Servers,
}

impl Trio {
    pub fn new(tag: &str) -> Trio {
        let mut node = Node::new(tag);
        node.add_pod("default", "server", "198.18.0.2", None);
        node.add_pod("default", "good", "198.18.0.3", None);
        node.add_pod("default", "bad", "198.18.0.4", None);
        let servers = Servers::start(
            &node.pod("default", "server").ns,
            "server",
            &[(Proto::Tcp, 80)],
        );
        let labels = ["server", "good", "bad"]
            .iter()
            .map(|n| {
                (
                    ("default".to_string(), n.to_string()),
                    vec![("app".to_string(), n.to_string())],
                )
            })
            .collect();
        Trio {
            node,
            labels,
            _servers: servers,
        }
    }

    pub fn server(&self) -> IpAddr {
        self.node.pod("default", "server").ip4
    }

    /// The Namespace and Pods, as YAML.
    pub fn cluster_yaml(&self) -> String {
        self.node.cluster_yaml(&self.labels, &BTreeMap::new())
    }

    /// Whether `good` and `bad` reach the server on TCP 80.
    pub fn verdicts(&self) -> (bool, bool) {
        let probe = |from: &str| Probe {
            from: self.node.pod("default", from).ns.path(),
            to: self.server(),
            port: 80,
            proto: Proto::Tcp,
        };
        let r = probe_all(&[probe("good"), probe("bad")]);
        (r[0], r[1])
    }
}
