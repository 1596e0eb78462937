//! Staged policies and connection logs with real packets: staged policies
//! never change a verdict, their rules count the first packet of each
//! connection, and a staged verdict that differs from the enforced one is
//! logged (NFLOG → RFC 5424 syslog) naming both deciding rules; connection
//! logs write one record per new connection, allowed or denied. The same
//! for host endpoints (`HepLab`: outside host `a` on the node's eth0): a
//! staged deny over an allowing host-endpoint policy, a staged preDNAT deny
//! where nothing is enforced before DNAT, and one connection record per
//! connection and stage, failsafes and end-of-tier drops named.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::nflog::LogWorld;
use support::*;
use tortie::calc::{Cluster, LogBackend};
use tortie::compile::compile;
use tortie::logging::LogStats;
use tortie::model::Resource;
use tortie::model::load::load_str;

/// A node with pods nginx, access, other (labelled `run: <name>`), a TCP
/// server on nginx:80, and a syslog socket fed by the NFLOG reader.
struct World(LogWorld);

impl std::ops::Deref for World {
    type Target = LogWorld;
    fn deref(&self) -> &LogWorld {
        &self.0
    }
}

fn world(tag: &str) -> World {
    World(LogWorld::new(tag, &[(Proto::Tcp, 80)]))
}

impl World {
    /// Compiles `policies` with the NFLOG backend on `group`, applies them,
    /// and starts the reader writing to a fresh syslog socket.
    fn apply(&mut self, policies: &str, group: u16) {
        self.apply_with(policies, group, false);
    }

    /// As `apply`, with connection logs on or off.
    fn apply_with(&mut self, policies: &str, group: u16, connection_logs: bool) {
        let (cluster, rs) = self.0.apply(policies, |c| {
            c.settings.log_backend = LogBackend::Nflog { group };
            c.settings.connection_logs = connection_logs;
        });
        assert!(
            connection_logs || !cluster.staged.is_empty(),
            "the staged policies loaded"
        );
        self.0.listen(&cluster, &rs, group, None);
    }

    fn attempt(&self, from: &str) -> bool {
        self.0.attempt(from, 80, Proto::Tcp)
    }

    /// Packets counted by the rules of `chain` whose comment contains `note`.
    fn counted(&self, chain: &str, note: &str) -> u64 {
        counted(&self.node.ns, chain, note)
    }
}

/// Packets counted in `ns` by the rules of `chain` whose comment contains
/// `note`.
fn counted(ns: &Netns, chain: &str, note: &str) -> u64 {
    let text = ns.output(&["nft", "list", "chain", "inet", "tortie", chain]);
    let mut total = 0;
    for line in text.lines().filter(|l| l.contains(note)) {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "packets" {
                total += words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// A staged deny of what ALLOW_ACCESS allows (same name: it replaces it).
const STAGED_DENY_WEB: &str = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-web, namespace: default}
spec:
  selector: run == 'nginx'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}
";

const ALLOW_ACCESS: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: default}
spec:
  selector: run == 'nginx'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: run == 'access'}
    destination: {ports: [80]}
";

#[test]
fn a_staged_deny_over_an_allowing_policy_counts_and_logs_would_deny_but_traffic_flows() {
    if !kernel::require_kernel("staged_deny") {
        return;
    }
    let mut w = world("stgdeny");
    let staged = STAGED_DENY_WEB;
    w.apply(&format!("{ALLOW_ACCESS}---\n{staged}"), 21);
    const N: usize = 4;
    for i in 0..N {
        assert!(
            w.attempt("access"),
            "attempt {i}: the staged deny changed a verdict"
        );
    }
    // Denied by the enforced policy and by the staged one: same verdict.
    assert!(!w.attempt("other"));
    let msgs = w.messages(Duration::from_millis(800));
    assert_eq!(
        msgs.len(),
        N,
        "one would-deny record per allowed connection: {msgs:#?}"
    );
    eprintln!("example: {}", msgs[0]);
    for m in &msgs {
        assert!(m.starts_with("<133>1 "), "{m}");
        assert!(m.contains(" STAGED [tortie@32473 action=\"would deny\" kind=\"snp\" namespace=\"default\" policy=\"allow-web\" tier=\"default\" rule=\"ingress#0\""), "{m}");
        assert!(m.contains("src=\"198.18.0.3\""), "{m}");
        assert!(
            m.contains(
                "enforced_action=\"Allow\" enforced_rule=\"np/default/allow-web ingress#0\""
            ),
            "{m}"
        );
        assert!(m.contains("would deny by snp/default/allow-web ingress#0 (enforced: Allow by np/default/allow-web ingress#0)"), "{m}");
    }
    let staged_hits = w.counted(
        "filter-ssi-snp/default/allow-web",
        ";staged: snp/default/allow-web ingress#0 Deny\"",
    );
    assert_eq!(
        staged_hits as usize,
        N + 1,
        "the staged rule counts every new connection it decides"
    );
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_staged_delete_of_an_allowing_policy_logs_would_deny_for_what_it_alone_allowed() {
    if !kernel::require_kernel("staged_delete") {
        return;
    }
    let mut w = world("stgdel");
    let deny_all = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: default}
spec: {podSelector: {}, policyTypes: [Ingress]}
";
    let delete = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-web, namespace: default}
spec: {stagedAction: Delete}
";
    w.apply(&format!("{ALLOW_ACCESS}---\n{deny_all}---\n{delete}"), 22);
    const N: usize = 3;
    for i in 0..N {
        assert!(
            w.attempt("access"),
            "attempt {i}: the staged delete changed a verdict"
        );
    }
    for _ in 0..2 {
        assert!(!w.attempt("other"), "denied either way");
    }
    let msgs = w.messages(Duration::from_millis(800));
    assert_eq!(
        msgs.len(),
        N,
        "a record only for what allow-web alone allowed: {msgs:#?}"
    );
    eprintln!("example: {}", msgs[0]);
    for m in &msgs {
        assert!(
            m.contains("action=\"would deny\" tier=\"default\" rule=\"end of tier\""),
            "{m}"
        );
        assert!(m.contains("src=\"198.18.0.3\""), "{m}");
        assert!(m.contains("endpoint=\"workload default/nginx\""), "{m}");
        assert!(
            m.contains("enforced_rule=\"np/default/allow-web ingress#0\""),
            "{m}"
        );
    }
    // In the staged view every new connection to nginx ends its tier.
    let chain = format!("filter-stws-{}", w.node.pod("default", "nginx").iface);
    let end_of_tier = w.counted(&chain, ";staged: end of tier default\"");
    assert_eq!(end_of_tier as usize, N + 2, "counted in {chain}");
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn connection_logs_write_one_record_per_new_connection_allowed_or_denied() {
    if !kernel::require_kernel("connection_logs") {
        return;
    }
    let mut w = world("connlog");
    w.apply_with(ALLOW_ACCESS, 23, true);
    const N: usize = 3;
    const M: usize = 2;
    for _ in 0..N {
        assert!(w.attempt("access"));
    }
    for _ in 0..M {
        assert!(!w.attempt("other"));
    }
    let msgs = w.messages(Duration::from_millis(1500));
    assert_eq!(msgs.len(), N + M, "one record per connection: {msgs:#?}");
    eprintln!("allowed: {}", msgs[0]);
    eprintln!("denied: {}", msgs[N]);
    let egress = |pod: &str| {
        format!(
            "egress=\"Allow by profile/kns.default egress#0\" egress_endpoint=\"workload default/{pod}\""
        )
    };
    for m in &msgs[..N] {
        assert!(
            m.contains(" CONN [tortie@32473 action=\"Connection\""),
            "{m}"
        );
        assert!(m.contains("src=\"198.18.0.3\""), "{m}");
        assert!(m.contains("verdict=\"allow\""), "{m}");
        assert!(m.contains(&egress("access")), "{m}");
        assert!(m.contains("ingress=\"Allow by np/default/allow-web ingress#0\" ingress_endpoint=\"workload default/nginx\""), "{m}");
        assert!(
            m.contains("time_source=\"packet\""),
            "the packet's own timestamp: {m}"
        );
    }
    for m in &msgs[N..] {
        assert!(m.starts_with("<132>1 "), "{m}");
        assert!(m.contains("src=\"198.18.0.4\""), "{m}");
        assert!(m.contains("verdict=\"deny\""), "{m}");
        assert!(m.contains(&egress("other")), "{m}");
        assert!(
            m.contains(
                "ingress=\"Deny by end of tier (tier default) (selected by np/default/allow-web)\""
            ),
            "an end-of-tier drop names the policies that selected nginx: {m}"
        );
    }
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(w.stats.suppressed.load(Ordering::Relaxed), 0);
}

#[test]
fn connection_logs_carry_the_staged_verdict_where_it_differs() {
    if !kernel::require_kernel("connlog_staged") {
        return;
    }
    let mut w = world("connstg");
    let staged = STAGED_DENY_WEB;
    w.apply_with(&format!("{ALLOW_ACCESS}---\n{staged}"), 24, true);
    const N: usize = 3;
    for _ in 0..N {
        assert!(w.attempt("access"), "the staged deny changed a verdict");
    }
    assert!(!w.attempt("other"));
    let msgs = w.messages(Duration::from_millis(1500));
    let conns: Vec<&String> = msgs.iter().filter(|m| m.contains(" CONN ")).collect();
    let would: Vec<&String> = msgs.iter().filter(|m| m.contains(" STAGED ")).collect();
    assert_eq!(conns.len(), N + 1, "one record per connection: {msgs:#?}");
    assert_eq!(
        would.len(),
        N,
        "one would-deny record per allowed connection: {msgs:#?}"
    );
    eprintln!("allowed, staged deny: {}", conns[0]);
    for m in conns.iter().filter(|m| m.contains("verdict=\"allow\"")) {
        assert!(
            m.contains("ingress_staged=\"") && m.contains("snp/default/allow-web ingress#0"),
            "the record carries the differing staged verdict and its rule: {m}"
        );
    }
    let denied: Vec<_> = conns
        .iter()
        .filter(|m| m.contains("verdict=\"deny\""))
        .collect();
    assert_eq!(denied.len(), 1, "{conns:#?}");
    assert!(
        !denied[0].contains("_staged="),
        "no staged field where the staged verdict is the same: {}",
        denied[0]
    );
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------
// Host endpoints

/// The host-endpoint lab with a HostEndpoint on eth0 (`hep: a`), policies
/// applied, and tortie's NFLOG reader; the reader stops on drop.
struct HepLog {
    lab: HepLab,
    socket: (UnixDatagram, PathBuf),
    stop: Arc<AtomicBool>,
    stats: Arc<LogStats>,
}

impl Drop for HepLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket.1);
    }
}

/// How long to read messages after the probes: the kernel batches NFLOG
/// messages and flushes them at the latest after a second.
const NFLOG_WAIT: Duration = Duration::from_millis(2500);

const HEP_A: &str = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {hep: a}}
spec: {node: node1, interfaceName: eth0}
";

/// Allows TCP 8080 to the node from outside on eth0.
const HEP_ALLOW_8080: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-web}
spec:
  selector: hep == 'a'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [8080]}
";

impl HepLog {
    /// The lab plus `HEP_A` and `policies`, compiled with the NFLOG backend
    /// on `group` (and connection logs on or off), applied, and read.
    fn new(tag: &str, policies: &str, group: u16, connection_logs: bool) -> HepLog {
        let lab = HepLab::new(tag);
        let y = format!("{}---\n{HEP_A}---\n{policies}", lab.cluster_yaml());
        let r = load_str(&y, Path::new("t.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        let res: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let mut cluster = Cluster::build(&res, "node1");
        cluster.settings.log_backend = LogBackend::Nflog { group };
        cluster.settings.connection_logs = connection_logs;
        let rs = compile(&cluster, "node1");
        lab.node.dataplane.borrow_mut().apply(&rs).unwrap();
        let stats = Arc::new(LogStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let socket = support::nflog::start_reader(
            &lab.node,
            &cluster,
            &rs,
            group,
            None,
            stats.clone(),
            stop.clone(),
        );
        HepLog {
            lab,
            socket,
            stop,
            stats,
        }
    }

    /// One TCP connection from outside host `a` to the node's `port`.
    fn connect(&self, port: u16) -> bool {
        let a = self.lab.host("a");
        probe_all(&[Probe {
            from: a.ns.path(),
            to: a.node_ip,
            port,
            proto: Proto::Tcp,
        }])[0]
    }

    /// The messages about `a`'s TCP packets received within `window`
    /// (anything else is printed and left out).
    fn messages(&self, window: Duration) -> Vec<String> {
        let src = format!("src=\"{}\"", self.lab.host("a").ip);
        let (ours, other): (Vec<String>, Vec<String>) =
            support::nflog::receive(&self.socket.0, window)
                .into_iter()
                .partition(|m| m.contains(&src) && m.contains("proto=\"tcp\""));
        for m in &other {
            eprintln!("not from a's probes: {m}");
        }
        ours
    }
}

/// A staged deny of TCP 8080 on host `a` (`spec_extra`: more spec lines)
/// over `HEP_ALLOW_8080`: `n` connections to 8080 all go through, the
/// failsafe port stays open, 8081 is denied in both views, and exactly `n`
/// staged records are logged, which are returned with the world.
fn staged_hep_deny(
    tag: &str,
    name: &str,
    spec_extra: &str,
    group: u16,
    n: usize,
) -> (HepLog, Vec<String>) {
    let staged = format!(
        "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {{name: {name}}}
spec:
  selector: hep == 'a'
{spec_extra}  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {{ports: [8080]}}
"
    );
    let w = HepLog::new(tag, &format!("{HEP_ALLOW_8080}---\n{staged}"), group, false);
    for i in 0..n {
        assert!(
            w.connect(8080),
            "attempt {i}: the staged deny changed a verdict"
        );
    }
    assert!(w.connect(22), "a failsafe port stays open");
    assert!(!w.connect(8081), "denied in both views");
    let msgs = w.messages(NFLOG_WAIT);
    assert_eq!(
        msgs.len(),
        n,
        "one would-deny per connection to 8080: {msgs:#?}"
    );
    eprintln!("example: {}", msgs[0]);
    (w, msgs)
}

#[test]
fn a_staged_deny_over_an_allowing_host_endpoint_policy_logs_would_deny_while_traffic_flows() {
    if !kernel::require_kernel("staged_hep_deny") {
        return;
    }
    const N: usize = 4;
    let (w, msgs) = staged_hep_deny("stghep", "host-web", "", 25, N);
    for m in &msgs {
        assert!(m.contains(" STAGED [tortie@32473 action=\"would deny\" kind=\"sgnp\" policy=\"host-web\" tier=\"default\" rule=\"ingress#0\""), "{m}");
        assert!(m.contains("dport=\"8080\""), "{m}");
        assert!(m.contains("endpoint=\"host endpoint node1-eth0\""), "{m}");
        assert!(
            m.contains("enforced_action=\"Allow\" enforced_rule=\"gnp/host-web ingress#0\""),
            "both deciding rules are named: {m}"
        );
    }
    let ns = &w.lab.node.ns;
    let staged_hits = counted(
        ns,
        "filter-ssi-sgnp/host-web",
        ";staged: sgnp/host-web ingress#0 Deny\"",
    );
    assert_eq!(
        staged_hits as usize, N,
        "the staged rule counts each connection it decides"
    );
    let failsafe = counted(ns, "filter-ssfs-in", ";staged: failsafe tcp:22\"");
    assert_eq!(
        failsafe, 1,
        "the staged view also stops at the failsafe, silently"
    );
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_staged_pre_dnat_deny_where_nothing_is_enforced_before_dnat_logs_would_deny() {
    if !kernel::require_kernel("staged_hep_prednat") {
        return;
    }
    const N: usize = 3;
    let extra = "  preDNAT: true\n  applyOnForward: true\n";
    let (w, msgs) = staged_hep_deny("stgpdn", "block-web", extra, 26, N);
    for m in &msgs {
        assert!(
            m.contains("action=\"would deny\" kind=\"sgnp\" policy=\"block-web\""),
            "{m}"
        );
        assert!(
            m.contains("enforced_action=\"Pass\" enforced_rule=\"no policy decided\""),
            "preDNAT enforced nothing: the packet went on: {m}"
        );
    }
    let hits = counted(
        &w.lab.node.ns,
        "mangle-ssi-sgnp/block-web",
        ";staged: sgnp/block-web ingress#0 Deny\"",
    );
    assert_eq!(hits as usize, N);
}

#[test]
fn host_endpoint_connection_logs_write_one_record_per_connection_and_stage() {
    if !kernel::require_kernel("connlog_hep") {
        return;
    }
    let w = HepLog::new("connhep", HEP_ALLOW_8080, 27, true);
    const N: usize = 3;
    const M: usize = 2;
    for _ in 0..N {
        assert!(w.connect(8080));
    }
    assert!(w.connect(22), "failsafe");
    for _ in 0..M {
        assert!(!w.connect(8081));
    }
    let msgs = w.messages(NFLOG_WAIT);
    assert_eq!(
        msgs.len(),
        N + 1 + M,
        "one record per connection: {msgs:#?}"
    );
    let with = |port: u16| -> Vec<&String> {
        let p = format!("dport=\"{port}\"");
        msgs.iter().filter(|m| m.contains(&p)).collect()
    };
    let (allowed, failsafe, denied) = (with(8080), with(22), with(8081));
    assert_eq!(
        (allowed.len(), failsafe.len(), denied.len()),
        (N, 1, M),
        "{msgs:#?}"
    );
    eprintln!("allowed: {}", allowed[0]);
    eprintln!("failsafe: {}", failsafe[0]);
    eprintln!("denied: {}", denied[0]);
    let endpoint = "host_ingress_endpoint=\"host endpoint node1-eth0\"";
    for m in &allowed {
        assert!(
            m.contains(" CONN [tortie@32473 action=\"Connection\""),
            "{m}"
        );
        assert!(m.contains("verdict=\"allow\""), "{m}");
        assert!(
            m.contains("host_ingress=\"Allow by gnp/host-web ingress#0\""),
            "{m}"
        );
        assert!(m.contains(endpoint), "{m}");
        assert!(m.contains("time_source=\"packet\""), "{m}");
    }
    assert!(failsafe[0].contains("verdict=\"allow\""), "{}", failsafe[0]);
    assert!(
        failsafe[0].contains("host_ingress=\"Allow by failsafe tcp:22\""),
        "a failsafe accept is named as one: {}",
        failsafe[0]
    );
    for m in &denied {
        assert!(m.starts_with("<132>1 "), "{m}");
        assert!(m.contains("verdict=\"deny\""), "{m}");
        assert!(
            m.contains(
                "host_ingress=\"Deny by end of tier (tier default) (selected by gnp/host-web)\""
            ),
            "an end-of-tier drop names the selecting policy: {m}"
        );
    }
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(w.stats.suppressed.load(Ordering::Relaxed), 0);
}

#[test]
fn host_endpoint_connection_records_carry_the_differing_staged_verdict() {
    if !kernel::require_kernel("connlog_hep_staged") {
        return;
    }
    let staged = "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: host-web}
spec:
  selector: hep == 'a'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [8080]}
";
    let policies = format!("{HEP_ALLOW_8080}---\n{staged}");
    let w = HepLog::new("connhst", &policies, 28, true);
    const N: usize = 2;
    for _ in 0..N {
        assert!(w.connect(8080), "the staged deny changed a verdict");
    }
    assert!(!w.connect(8081));
    let msgs = w.messages(NFLOG_WAIT);
    let conns: Vec<&String> = msgs.iter().filter(|m| m.contains(" CONN ")).collect();
    let would: Vec<&String> = msgs.iter().filter(|m| m.contains(" STAGED ")).collect();
    assert_eq!((conns.len(), would.len()), (N + 1, N), "{msgs:#?}");
    eprintln!("allowed, staged deny: {}", conns[0]);
    for m in conns.iter().filter(|m| m.contains("dport=\"8080\"")) {
        assert!(
            m.contains("host_ingress=\"Allow by gnp/host-web ingress#0\" host_ingress_endpoint=\"host endpoint node1-eth0\" host_ingress_staged=\"would deny by sgnp/host-web ingress#0\""),
            "{m}"
        );
    }
    let denied: Vec<_> = conns
        .iter()
        .filter(|m| m.contains("dport=\"8081\""))
        .collect();
    assert_eq!(denied.len(), 1, "{conns:#?}");
    assert!(
        !denied[0].contains("_staged="),
        "same verdict: {}",
        denied[0]
    );
}

#[test]
fn untracked_host_endpoint_packets_are_each_a_record_of_the_untracked_stages() {
    if !kernel::require_kernel("connlog_hep_untracked") {
        return;
    }
    let untracked = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: fast-web}
spec:
  selector: hep == 'a'
  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [8080]}
  egress:
  - action: Allow
    protocol: TCP
    source: {ports: [8080]}
";
    let w = HepLog::new("connutr", untracked, 29, true);
    assert!(w.connect(8080), "allowed untracked both ways");
    let a = w.lab.host("a").ip.to_string();
    let all = support::nflog::receive(&w.socket.0, NFLOG_WAIT);
    let tcp: Vec<&String> = all.iter().filter(|m| m.contains("proto=\"tcp\"")).collect();
    let stage =
        |key: &str| -> Vec<&String> { tcp.iter().copied().filter(|m| m.contains(key)).collect() };
    let (ingress, egress) = (stage("untracked_ingress="), stage("untracked_egress="));
    eprintln!("ingress: {}", ingress[0]);
    eprintln!("egress: {}", egress[0]);
    // Before conntrack every packet is a first packet: a's handshake SYN
    // and ACK at least, and the node's SYN-ACK, each named by its rule.
    assert!(ingress.len() >= 2 && !egress.is_empty(), "{tcp:#?}");
    for m in &ingress {
        assert!(
            m.contains(&format!("src=\"{a}\"")) && m.contains("dport=\"8080\""),
            "{m}"
        );
        assert!(
            m.contains("verdict=\"allow\" untracked_ingress=\"Allow by gnp/fast-web ingress#0\""),
            "{m}"
        );
    }
    for m in &egress {
        assert!(
            m.contains(&format!("dst=\"{a}\"")) && m.contains("sport=\"8080\""),
            "{m}"
        );
        assert!(
            m.contains("verdict=\"allow\" untracked_egress=\"Allow by gnp/fast-web egress#0\""),
            "{m}"
        );
    }
    assert_eq!(
        ingress.len() + egress.len(),
        tcp.len(),
        "accepted untracked: no later stage saw them: {tcp:#?}"
    );
    assert_eq!(w.stats.suppressed.load(Ordering::Relaxed), 0);
}
