//! `tortie trace`: which stage, tier, policy and rule decide one packet.
//!
//! The answer comes from running the packet through the compiled
//! [`Ruleset`] — the same chains, rules, sets and verdict maps rendered for
//! the kernel — with an interpreter of the nft rule text tortie emits
//! (`nft`, `eval`), not from a second model of Calico's semantics; the
//! stages, tiers and policies shown are read back from the chains' names
//! and the rules' notes (`stages`). The traced packet is the first of a new
//! connection (conntrack state NEW). `render` prints text and JSON.

pub mod eval;
pub mod nft;
pub mod probe;
pub mod render;
pub mod stages;

use std::net::IpAddr;

use crate::calc::{Cluster, Endpoint, EndpointId};
use crate::compile::ir::Ruleset;

pub use eval::Packet;
pub use stages::{PolicyTrace, Stage, TierTrace, Trace};

/// The source port of the traced packet when not given: the first port of
/// the kernel's default ephemeral range.
pub const DEFAULT_SPORT: u16 = 32768;

/// One side of the traced packet, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Pod { namespace: String, name: String },
    HostEndpoint(String),
    Ip(IpAddr),
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Peer::Ip(ip));
        }
        match s.split_once('/') {
            Some(("hostendpoint", name)) if !name.is_empty() && !name.contains('/') => {
                Ok(Peer::HostEndpoint(name.to_string()))
            }
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Peer::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "`{s}` is not NAMESPACE/POD, hostendpoint/NAME or an IP address"
            )),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Peer::HostEndpoint(n) => write!(f, "hostendpoint/{n}"),
            Peer::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A 5-tuple to trace, with the interfaces of remote sides when the node
/// has host endpoints on named interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: Peer,
    pub to: Peer,
    /// IP protocol number.
    pub proto: u8,
    pub port: Option<u16>,
    pub sport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// The interface a packet from a remote SRC arrives on.
    pub iif: Option<String>,
    /// The interface a packet to a remote DST leaves by.
    pub oif: Option<String>,
    /// A DNAT the node does outside tortie's table (a kube-proxy NodePort):
    /// the destination it rewrites DST to, before routing.
    pub dnat: Option<std::net::SocketAddr>,
    /// The packet is one conntrack calls invalid (a SYN-ACK it saw no SYN
    /// for, say) instead of the first of a new connection.
    pub ct_invalid: bool,
}

/// Why a query cannot be traced; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error(
        "--node {node}: no pod or host endpoint in the input is on this node (nodes with endpoints: {known}); check the node name"
    )]
    UnknownNode { node: String, known: String },
    #[error(
        "{flag} {peer}: no such pod in the input (pods in namespace {namespace}: {known}); check the namespace and name"
    )]
    UnknownPod {
        flag: &'static str,
        peer: String,
        namespace: String,
        known: String,
    },
    #[error(
        "{flag} {peer}: no such HostEndpoint in the input (host endpoints: {known}); check the name"
    )]
    UnknownHostEndpoint {
        flag: &'static str,
        peer: String,
        known: String,
    },
    #[error("{flag} {peer}: {problem}")]
    Address {
        flag: &'static str,
        peer: String,
        problem: String,
    },
    #[error(
        "{peer} is not on node {node}: say which interface the packet {how} with {flag} NAME (host endpoint interfaces on this node: {known})"
    )]
    NeedInterface {
        peer: String,
        node: String,
        how: &'static str,
        flag: &'static str,
        known: String,
    },
    #[error("{0}")]
    Query(String),
    #[error(
        "the compiled ruleset cannot be evaluated: {0}; this is a bug in tortie, please report it"
    )]
    Eval(#[from] eval::EvalError),
}

/// Where one side of the packet is, seen from the node.
#[derive(Debug, Clone)]
enum Place<'c> {
    /// A workload on this node, behind its interface.
    Workload(&'c Endpoint),
    /// The node itself (a host endpoint of it, or one of its addresses).
    Host,
    /// Anything reached through the node's other interfaces.
    Remote,
}

#[derive(Debug, Clone)]
struct Side<'c> {
    place: Place<'c>,
    addrs: Vec<IpAddr>,
    label: String,
    /// The host interface a host endpoint polices (not `*`).
    iface: Option<String>,
}

fn names(v: impl IntoIterator<Item = String>) -> String {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn resolve_pod<'c>(
    cluster: &'c Cluster,
    node: &str,
    flag: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Side<'c>, TraceError> {
    let wanted = EndpointId::Workload {
        namespace: namespace.into(),
        name: name.into(),
    };
    let Some(ep) = cluster.endpoints.iter().find(|e| e.id == wanted) else {
        return Err(TraceError::UnknownPod {
            flag,
            peer: format!("{namespace}/{name}"),
            namespace: namespace.into(),
            known: names(cluster.endpoints.iter().filter_map(|e| match &e.id {
                EndpointId::Workload { namespace: n, name } if n == namespace => Some(name.clone()),
                _ => None,
            })),
        });
    };
    let place = if ep.node == node && ep.iface.is_some() {
        Place::Workload(ep)
    } else {
        Place::Remote
    };
    Ok(Side {
        place,
        addrs: ep.addrs.clone(),
        label: format!("{namespace}/{name}"),
        iface: None,
    })
}

fn resolve_hep<'c>(
    cluster: &'c Cluster,
    node: &str,
    flag: &'static str,
    name: &str,
) -> Result<Side<'c>, TraceError> {
    let wanted = EndpointId::Host { name: name.into() };
    let Some(ep) = cluster.endpoints.iter().find(|e| e.id == wanted) else {
        return Err(TraceError::UnknownHostEndpoint {
            flag,
            peer: format!("hostendpoint/{name}"),
            known: names(cluster.endpoints.iter().filter_map(|e| match &e.id {
                EndpointId::Host { name } => Some(name.clone()),
                _ => None,
            })),
        });
    };
    let label = format!("hostendpoint/{name}");
    if ep.node != node {
        return Ok(Side {
            place: Place::Remote,
            addrs: ep.addrs.clone(),
            label,
            iface: None,
        });
    }
    let iface = crate::compile::host_endpoint_bindings(cluster, node)
        .into_iter()
        .find(|(_, e)| e.id == ep.id)
        .map(|(i, _)| i)
        .filter(|i| i != "*");
    let mut addrs = ep.addrs.clone();
    if let Some(held) = iface.as_ref().and_then(|i| cluster.host_interfaces.get(i)) {
        addrs.extend(
            held.iter()
                .filter(|a| !addrs.contains(a))
                .collect::<Vec<_>>(),
        );
    }
    Ok(Side {
        place: Place::Host,
        addrs,
        label,
        iface,
    })
}

fn resolve_ip<'c>(cluster: &'c Cluster, node: &str, ip: IpAddr) -> Side<'c> {
    let owner = cluster.endpoints.iter().find(|e| e.addrs.contains(&ip));
    let label = ip.to_string();
    let side = |place| Side {
        place,
        addrs: vec![ip],
        label: label.clone(),
        iface: None,
    };
    match owner {
        Some(ep) if ep.node == node => match &ep.id {
            EndpointId::Workload { .. } if ep.iface.is_some() => side(Place::Workload(ep)),
            EndpointId::Host { .. } => side(Place::Host),
            _ => side(Place::Remote),
        },
        _ => {
            let held = cluster
                .host_interfaces
                .iter()
                .find(|(_, addrs)| addrs.contains(&ip));
            match held {
                Some((iface, _)) => Side {
                    iface: Some(iface.clone()),
                    ..side(Place::Host)
                },
                None => side(Place::Remote),
            }
        }
    }
}

fn resolve<'c>(
    cluster: &'c Cluster,
    node: &str,
    flag: &'static str,
    peer: &Peer,
) -> Result<Side<'c>, TraceError> {
    match peer {
        Peer::Pod { namespace, name } => resolve_pod(cluster, node, flag, namespace, name),
        Peer::HostEndpoint(name) => resolve_hep(cluster, node, flag, name),
        Peer::Ip(ip) => Ok(resolve_ip(cluster, node, *ip)),
    }
}

/// The addresses of both sides in one family: the one the protocol
/// needs, else IPv4 when both sides have it, else IPv6.
fn addresses(q: &Query, from: &Side<'_>, to: &Side<'_>) -> Result<(IpAddr, IpAddr), TraceError> {
    let families: Vec<bool> = match q.proto {
        1 => vec![false],
        58 => vec![true],
        _ => vec![false, true],
    };
    for v6 in families {
        let pick = |s: &Side<'_>| s.addrs.iter().copied().find(|a| a.is_ipv6() == v6);
        if let (Some(a), Some(b)) = (pick(from), pick(to)) {
            return Ok((a, b));
        }
    }
    let problem = |s: &Side<'_>| {
        if s.addrs.is_empty() {
            "has no address: give it expectedIPs, name the interface's address with --host-interface NAME=IP, or trace its IP address".to_string()
        } else {
            format!(
                "has no address in a family the other side has for this protocol (its addresses: {})",
                names(s.addrs.iter().map(IpAddr::to_string))
            )
        }
    };
    let (flag, side) = if from.addrs.is_empty() || to.addrs.is_empty() {
        if from.addrs.is_empty() {
            ("--from", from)
        } else {
            ("--to", to)
        }
    } else {
        ("--to", to)
    };
    Err(TraceError::Address {
        flag,
        peer: side.label.clone(),
        problem: problem(side),
    })
}

/// Host-endpoint interfaces named in the ruleset's dispatch maps.
fn named_host_interfaces(ruleset: &Ruleset) -> Vec<String> {
    ruleset
        .maps
        .iter()
        .filter(|(name, _)| name.contains("-hep"))
        .flat_map(|(_, m)| m.elements.keys().cloned())
        .collect()
}

/// The interface a remote side uses: the one given, or (when no host
/// endpoint names an interface, so the name cannot matter) `uplink`.
fn remote_iface(
    given: &Option<String>,
    ruleset: &Ruleset,
    node: &str,
    peer: &str,
    flag: &'static str,
) -> Result<String, TraceError> {
    if let Some(i) = given {
        return Ok(i.clone());
    }
    let named = named_host_interfaces(ruleset);
    if named.is_empty() {
        return Ok("uplink".into());
    }
    Err(TraceError::NeedInterface {
        peer: peer.into(),
        node: node.into(),
        how: if flag == "--iif" {
            "arrives on"
        } else {
            "leaves by"
        },
        flag,
        known: names(named),
    })
}

/// The packet the node sees for `q`.
fn packet(
    cluster: &Cluster,
    ruleset: &Ruleset,
    node: &str,
    q: &Query,
) -> Result<Packet, TraceError> {
    let (ports, icmp) = check_l4(q)?;
    let from = resolve(cluster, node, "--from", &q.from)?;
    let to = resolve(cluster, node, "--to", &q.to)?;
    let (saddr, daddr) = addresses(q, &from, &to)?;
    let (iif, oif) = interfaces(ruleset, node, q, &from, &to)?;
    let dnat = match q.dnat {
        None => None,
        Some(to) => Some(dnat_of(cluster, ruleset, node, q, to)?),
    };
    Ok(Packet {
        dnat,
        iif,
        oif,
        saddr,
        daddr,
        proto: q.proto,
        sport: ports.then(|| q.sport.unwrap_or(DEFAULT_SPORT)),
        dport: q.port,
        icmp: icmp.then(|| {
            let default_type = if q.proto == 1 { 8 } else { 128 };
            (
                q.icmp_type.unwrap_or(default_type),
                q.icmp_code.unwrap_or(0),
            )
        }),
    })
}

/// Whether the protocol has ports (then `--port` is required) or is ICMP
/// (then `--icmp-type` may be given), and that the flags fit it.
fn check_l4(q: &Query) -> Result<(bool, bool), TraceError> {
    let ports = matches!(q.proto, 6 | 17 | 132 | 136);
    let icmp = matches!(q.proto, 1 | 58);
    let problem = match (ports, icmp) {
        (false, _) if q.port.is_some() || q.sport.is_some() => {
            "--port and --sport apply to tcp, udp, sctp and udplite only; leave them out or use --icmp-type"
        }
        (true, _) if q.port.is_none() => "--port is required for tcp, udp, sctp and udplite",
        (_, false) if q.icmp_type.is_some() => "--icmp-type applies to icmp and icmpv6 only",
        _ => return Ok((ports, icmp)),
    };
    Err(TraceError::Query(problem.into()))
}

/// The input and output interfaces: a local pod's own, none for the node
/// itself, and for remote sides the one given (or `uplink`).
fn interfaces(
    ruleset: &Ruleset,
    node: &str,
    q: &Query,
    from: &Side<'_>,
    to: &Side<'_>,
) -> Result<(Option<String>, Option<String>), TraceError> {
    let not_remote = |flag: &str, side: &Side<'_>| {
        TraceError::Query(format!(
            "{flag} applies only to a side that is not on this node ({} is on it); leave it out",
            side.label
        ))
    };
    let iif = match &from.place {
        Place::Remote => Some(remote_iface(&q.iif, ruleset, node, &from.label, "--iif")?),
        _ if q.iif.is_some() => return Err(not_remote("--iif", from)),
        Place::Workload(ep) => ep.iface.clone(),
        Place::Host => None,
    };
    let oif = match &to.place {
        // Sent by the host through a host endpoint: that interface.
        Place::Remote => match from.iface.clone().filter(|_| q.oif.is_none()) {
            Some(i) => Some(i),
            None => Some(remote_iface(&q.oif, ruleset, node, &to.label, "--oif")?),
        },
        _ if q.oif.is_some() => return Err(not_remote("--oif", to)),
        Place::Workload(ep) => ep.iface.clone(),
        Place::Host => None,
    };
    if iif.is_none() && oif.is_none() {
        return Err(TraceError::Query(format!(
            "{} to {}: both are this node; traffic to itself goes over loopback, which tortie never polices",
            from.label, to.label
        )));
    }
    Ok((iif, oif))
}

/// The reply to `p` (from where a DNAT sent it): addresses, ports and
/// interfaces swapped; `None` for a packet that gets no reply (ICMP other
/// than an echo request, protocols without ports).
fn reply_of(p: &Packet) -> Option<Packet> {
    let icmp = match (p.proto, p.icmp) {
        (1, Some((8, code))) => Some((0, code)),
        (58, Some((128, code))) => Some((129, code)),
        (1 | 58, _) => return None,
        (6 | 17 | 132 | 136, _) => None,
        _ => return None,
    };
    let (saddr, sport, iif) = match &p.dnat {
        Some(d) => (d.daddr, d.dport, d.oif.clone()),
        None => (p.daddr, p.dport, p.oif.clone()),
    };
    Some(Packet {
        iif,
        oif: p.iif.clone(),
        saddr,
        daddr: p.saddr,
        proto: p.proto,
        sport,
        dport: p.sport,
        icmp,
        dnat: None,
    })
}

/// Runs the reply of an allowed request. A tracked request's reply is
/// ESTABLISHED (the filter chains accept it, but untracked policy in raw,
/// before conntrack, still sees it); an untracked request's reply is none
/// conntrack knows: INVALID for TCP and ICMP, NEW for UDP. The reply's
/// stages are shown when it is denied or the request was untracked; the
/// verdict becomes the reply's.
fn add_reply(
    parsed: &eval::Parsed<'_>,
    pkt: &Packet,
    untracked: bool,
    endpoints: &stages::Endpoints,
    trace: &mut Trace,
) -> Result<(), TraceError> {
    let Some(reply) = reply_of(pkt) else {
        return Ok(());
    };
    let state = match (untracked, pkt.proto) {
        (false, _) => "established",
        (true, 6 | 1 | 58) => "invalid",
        (true, _) => "new",
    };
    let r = eval::run_in_state(parsed, &reply, state)?;
    if r.allowed && !untracked {
        return Ok(());
    }
    let rt = stages::attribute(parsed.ruleset, &reply, &r, endpoints);
    let at = trace.stages.len();
    trace.stages.extend(rt.stages.into_iter().map(|mut s| {
        s.endpoint.push_str(" (reply)");
        s
    }));
    trace.verdict = rt.verdict;
    let shown = if r.untracked { "untracked" } else { state };
    trace.reply = Some((reply, shown, at));
    Ok(())
}

/// Where a foreign DNAT to `to` sends the packet.
fn dnat_of(
    cluster: &Cluster,
    ruleset: &Ruleset,
    node: &str,
    q: &Query,
    to: std::net::SocketAddr,
) -> Result<eval::Dnat, TraceError> {
    let side = resolve_ip(cluster, node, to.ip());
    let oif = match &side.place {
        Place::Workload(ep) => ep.iface.clone(),
        Place::Host => None,
        Place::Remote => Some(remote_iface(&q.oif, ruleset, node, &side.label, "--oif")?),
    };
    Ok(eval::Dnat {
        daddr: to.ip(),
        dport: Some(to.port()),
        oif,
    })
}

/// Traces `q` on `node` through `ruleset`, which must be the compile of
/// `cluster` for `node` (a caller wanting another view — staged policies
/// enforced, say — compiles that cluster and passes both).
pub fn trace(
    cluster: &Cluster,
    ruleset: &Ruleset,
    node: &str,
    q: &Query,
) -> Result<Trace, TraceError> {
    // A node with no endpoint is legitimate; one that is not among the
    // nodes of the input's endpoints is likely a typo.
    if !cluster.endpoints.is_empty() && cluster.local_endpoints(node).next().is_none() {
        return Err(TraceError::UnknownNode {
            node: node.into(),
            known: names(cluster.endpoints.iter().map(|e| e.node.to_string())),
        });
    }
    let pkt = packet(cluster, ruleset, node, q)?;
    let parsed = eval::Parsed::new(ruleset).map_err(eval::EvalError::from)?;
    let state = if q.ct_invalid { "invalid" } else { "new" };
    let run = eval::run_in_state(&parsed, &pkt, state)?;
    let endpoints = stages::Endpoints::of(cluster, node);
    let mut trace = stages::attribute(ruleset, &pkt, &run, &endpoints);
    trace.ct_state = state;
    if run.allowed && !q.ct_invalid {
        add_reply(&parsed, &pkt, run.untracked, &endpoints, &mut trace)?;
    }
    tracing::debug!(
        node = %node,
        from = %q.from,
        to = %q.to,
        verdict = %trace.verdict,
        stages = trace.stages.len(),
        "traced"
    );
    Ok(trace)
}

/// Compiles `cluster` for `node` and traces `q`.
pub fn trace_cluster(cluster: &Cluster, node: &str, q: &Query) -> Result<Trace, TraceError> {
    let ruleset = crate::compile::compile(cluster, node);
    trace(cluster, &ruleset, node, q)
}

/// The protocol number of a `--proto` value.
pub fn parse_proto(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    crate::ipproto::number(&lower)
        .or_else(|| lower.parse::<u8>().ok())
        .ok_or_else(|| {
            format!("`{s}` is not tcp, udp, sctp, icmp, icmpv6 or a protocol number (0-255)")
        })
}

#[cfg(test)]
mod tests;
