//! Tracing the sandbox's probes: each probe of a truth table (and each
//! ping) is also traced on the ruleset the node last applied, and the
//! trace's verdict must equal what the packets did.

use std::net::IpAddr;
use std::path::Path;

use super::{Peer, Query, Trace};
use crate::calc::Cluster;
use crate::model::Resource;
use crate::model::load::load_str;
use crate::sandbox::{Netns, Node, Probe, Proto, probe_all};

/// A probe as a trace query, or why it cannot be one.
pub enum Traced {
    Trace(Box<Trace>),
    /// Not expressible as a trace query (said why).
    Not(String),
}

impl Node {
    /// The cluster of the last applied input, with the node's interfaces
    /// read from its namespace (they say which addresses are the node's).
    fn trace_cluster(&self) -> Result<(Cluster, crate::compile::ir::Ruleset), String> {
        let book = self.book.borrow();
        let (yaml, ruleset) = book
            .applied
            .as_ref()
            .ok_or("nothing applied yet: apply before probing")?;
        let r = load_str(yaml, Path::new("test.yaml"));
        let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let mut cluster = Cluster::build(&resources, &self.name);
        cluster.host_interfaces =
            crate::hostifaces::read(&self.ns.target()).map_err(|e| e.to_string())?;
        Ok((cluster, ruleset.clone()))
    }

    /// Records an input applied some other way (`tortie apply`), compiled
    /// as that command compiles it: with the namespace's interfaces.
    pub fn record_cli_applied(&self, yaml: &str) {
        let r = load_str(yaml, Path::new("test.yaml"));
        let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let mut cluster = Cluster::build(&resources, &self.name);
        cluster.host_interfaces = crate::hostifaces::read(&self.ns.target()).unwrap_or_default();
        let rs = crate::compile::compile(&cluster, &self.name);
        self.book.borrow_mut().applied = Some((yaml.to_string(), rs));
    }

    /// Records an input compiled by the caller and applied as `ruleset`.
    pub fn record_applied(&self, yaml: &str, ruleset: &crate::compile::ir::Ruleset) {
        self.book.borrow_mut().applied = Some((yaml.to_string(), ruleset.clone()));
    }

    /// Who sends from the namespace at `from`: a pod, a host outside
    /// (with the node interface it is behind), or the node itself.
    fn sender(
        &self,
        from: &Path,
        to: IpAddr,
        cluster: &Cluster,
    ) -> Result<(Peer, Option<String>), String> {
        if let Some(p) = self.pods.iter().find(|p| p.ns.path() == from) {
            return Ok((
                Peer::Pod {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                },
                None,
            ));
        }
        let book = self.book.borrow();
        if let Some((_, ip, iface)) = book.remotes.iter().find(|r| r.0 == from) {
            return Ok((Peer::Ip(*ip), Some(iface.clone())));
        }
        if from == self.ns.path() {
            // The node's address on the interface towards `to`, else any.
            let via = book.remotes.iter().find(|r| r.1 == to).map(|r| r.2.clone());
            let fam = |a: &&IpAddr| a.is_ipv6() == to.is_ipv6() && !is_link_local(a);
            let on = |i: &str| {
                cluster
                    .host_interfaces
                    .get(i)
                    .and_then(|v| v.iter().find(fam).copied())
            };
            let addr = via
                .as_deref()
                .and_then(on)
                .or_else(|| {
                    cluster
                        .host_interfaces
                        .values()
                        .flatten()
                        .find(fam)
                        .copied()
                })
                .ok_or("the node has no address of the probe's family")?;
            return Ok((Peer::Ip(addr), None));
        }
        Err(format!(
            "{} is not a namespace of this node's sandbox",
            from.display()
        ))
    }

    /// One probe traced on the last applied ruleset.
    pub fn trace_probe(&self, from: &Path, to: IpAddr, proto: u8, port: Option<u16>) -> Traced {
        match self.trace_cluster() {
            Ok(ctx) => self.trace_in(&ctx, from, to, proto, port),
            Err(e) => Traced::Not(format!("trace failed: {e}")),
        }
    }

    fn trace_in(
        &self,
        ctx: &(Cluster, crate::compile::ir::Ruleset),
        from: &Path,
        to: IpAddr,
        proto: u8,
        port: Option<u16>,
    ) -> Traced {
        match self.try_trace(ctx, from, to, proto, port) {
            Ok(t) => t,
            Err(e) => Traced::Not(format!("trace failed: {e}")),
        }
    }

    fn try_trace(
        &self,
        (cluster, ruleset): &(Cluster, crate::compile::ir::Ruleset),
        from: &Path,
        to: IpAddr,
        proto: u8,
        port: Option<u16>,
    ) -> Result<Traced, String> {
        self.try_trace_packet(cluster, ruleset, from, to, proto, port, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn try_trace_packet(
        &self,
        cluster: &Cluster,
        ruleset: &crate::compile::ir::Ruleset,
        from: &Path,
        to: IpAddr,
        proto: u8,
        port: Option<u16>,
        invalid_from_sport: Option<u16>,
    ) -> Result<Traced, String> {
        let (peer, iif) = self.sender(from, to, cluster)?;
        let book = self.book.borrow();
        let oif = book.remotes.iter().find(|r| r.1 == to).map(|r| r.2.clone());
        let dnat = port.and_then(|p| {
            book.dnat
                .iter()
                .find(|(k, _)| *k == (to, p))
                .map(|(_, (a, p))| std::net::SocketAddr::new(*a, *p))
        });
        if dnat.is_some() && iif.is_none() && !matches!(peer, Peer::Pod { .. }) {
            return Ok(Traced::Not(
                "the node's own connection to its NodePort is DNATed in the output path, which trace does not model".into(),
            ));
        }
        let q = Query {
            from: peer,
            to: Peer::Ip(to),
            proto,
            port,
            sport: invalid_from_sport,
            icmp_type: None,
            icmp_code: None,
            iif,
            oif,
            dnat,
            ct_invalid: invalid_from_sport.is_some(),
        };
        drop(book);
        let t = super::trace(cluster, ruleset, &self.name, &q).map_err(|e| e.to_string())?;
        Ok(Traced::Trace(Box::new(t)))
    }

    /// A TCP packet conntrack calls invalid (a bare SYN-ACK) from the
    /// namespace at `from`, traced on the last applied ruleset.
    pub fn trace_invalid_tcp(&self, from: &Path, to: IpAddr, ports: (u16, u16)) -> Traced {
        let traced = self.trace_cluster().and_then(|(c, rs)| {
            self.try_trace_packet(&c, &rs, from, to, 6, Some(ports.1), Some(ports.0))
        });
        traced.unwrap_or_else(|e| Traced::Not(format!("trace failed: {e}")))
    }

    /// As [`crate::sandbox::check_truth_table`], and every probe is traced:
    /// a trace whose verdict differs from what the packets did (or a probe
    /// that cannot be traced) is an error too.
    pub fn check_truth_table(&self, cells: &[(Probe, bool, String)]) -> Result<(), String> {
        let ctx = self.trace_cluster()?;
        let traces: Vec<Traced> = cells
            .iter()
            .map(|(p, _, _)| {
                let proto = match p.proto {
                    Proto::Tcp => 6,
                    Proto::Udp => 17,
                };
                self.trace_in(&ctx, &p.from, p.to, proto, Some(p.port))
            })
            .collect();
        let probes: Vec<Probe> = cells.iter().map(|c| c.0.clone()).collect();
        let mut got = probe_all(&probes);
        let wrong: Vec<usize> = (0..cells.len()).filter(|&i| got[i] != cells[i].1).collect();
        if !wrong.is_empty() {
            let again = probe_all(&wrong.iter().map(|&i| probes[i].clone()).collect::<Vec<_>>());
            for (&i, g) in wrong.iter().zip(again) {
                got[i] = g;
            }
        }
        let word = |b: bool| if b { "allowed" } else { "denied" };
        let mut errors = Vec::new();
        for (i, (_, expected, label)) in cells.iter().enumerate() {
            if got[i] != *expected {
                errors.push(format!(
                    "{label}: expected {}, got {}",
                    word(*expected),
                    word(got[i])
                ));
            }
            match &traces[i] {
                Traced::Trace(t) if (t.verdict == "allow") != got[i] => errors.push(format!(
                    "{label}: the packets were {}, but trace says {}:\n{}",
                    word(got[i]),
                    t.verdict,
                    super::render::text(t)
                )),
                Traced::Trace(_) => {}
                Traced::Not(why) => errors.push(format!("{label}: not traced: {why}")),
            }
        }
        if errors.is_empty() {
            eprintln!(
                "trace: {} probes traced, every verdict agrees with the packets",
                cells.len()
            );
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// One ICMP echo from `ns` to `to` (see [`crate::sandbox::ping`]),
    /// traced: panics when the trace disagrees with the reply.
    pub fn ping(&self, ns: &Netns, to: IpAddr) -> bool {
        let traced = self.trace_probe(&ns.path(), to, if to.is_ipv6() { 58 } else { 1 }, None);
        let got = crate::sandbox::ping(ns, to);
        match traced {
            Traced::Trace(t) => assert_eq!(
                t.verdict == "allow",
                got,
                "ping {to}: the reply says {got}, trace says:\n{}",
                super::render::text(&t)
            ),
            Traced::Not(why) => panic!("ping {to}: not traced: {why}"),
        }
        got
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}
