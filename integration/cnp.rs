//! ClusterNetworkPolicy with real packets, on the topology of the
//! network-policy-api conformance suite (`conformance/base/manifests.yaml`
//! of kubernetes-sigs/network-policy-api): namespaces
//! `network-policy-conformance-{gryffindor,slytherin,hufflepuff,ravenclaw}`
//! labelled `conformance-house: <house>`, two pods in each (the house's
//! StatefulSet: `harry-potter-0/1`, `draco-malfoy-0/1`, `cedric-diggory-0/1`,
//! `luna-lovegood-0/1`) serving TCP 80 (named `web`) and 8080, UDP 53
//! (named `dns`) and 5353, plus a host outside the cluster on the node's
//! uplink (TCP 80, UDP 53). Every phase probes the full table (every pod to
//! every other pod on every port, every pod to the outside host) against
//! an expectation written from the case's description. The upstream cases
//! poke a few cells after patching a policy; each test here names the case
//! it mirrors and applies the patched policy as a phase of its own. SCTP
//! cases are not re-expressed: the sandbox has no SCTP server.

mod support;

use support::*;

const HOUSES: [(&str, &str); 4] = [
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];
const G: usize = 0;
const S: usize = 1;
const H: usize = 2;
const R: usize = 3;

const POD_PORTS: [(Proto, u16); 4] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 8080),
    (Proto::Udp, 53),
    (Proto::Udp, 5353),
];
const OUTSIDE_PORTS: [(Proto, u16); 2] = [(Proto::Tcp, 80), (Proto::Udp, 53)];

/// A pod: house index and ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct P {
    house: usize,
    i: usize,
}

/// Where a probe goes: a pod, or the host outside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Pod(P),
    Outside,
}

impl To {
    fn house(self) -> Option<usize> {
        match self {
            To::Pod(p) => Some(p.house),
            To::Outside => None,
        }
    }
}

/// One cell of the table.
#[derive(Debug, Clone, Copy)]
struct Cell {
    from: P,
    to: To,
    port: u16,
    proto: Proto,
}

fn namespace(house: usize) -> String {
    format!("network-policy-conformance-{}", HOUSES[house].0)
}

fn pod_name(p: P) -> String {
    format!("{}-{}", HOUSES[p.house].1, p.i)
}

fn ip_of(p: P) -> String {
    format!("198.18.{}.{}", p.house + 1, p.i + 10)
}

fn all_pods() -> Vec<P> {
    (0..4)
        .flat_map(|house| (0..2).map(move |i| P { house, i }))
        .collect()
}

struct World {
    node: Node,
    _servers: Vec<Servers>,
}

fn world(tag: &str) -> Option<World> {
    if !kernel::require_kernel(tag) {
        return None;
    }
    let mut node = Node::new(tag);
    node.add_outside();
    for p in all_pods() {
        node.add_pod(&namespace(p.house), &pod_name(p), &ip_of(p), None);
    }
    let mut servers: Vec<Servers> = node
        .pods
        .iter()
        .map(|pod| Servers::start(&pod.ns, &pod.name, &POD_PORTS))
        .collect();
    servers.push(Servers::start(
        node.outside.as_ref().unwrap(),
        "outside",
        &OUTSIDE_PORTS,
    ));
    Some(World {
        node,
        _servers: servers,
    })
}

impl World {
    /// Namespaces and pods as the conformance manifests make them: pods
    /// carry their house and StatefulSet pod-name labels, and the named
    /// container ports `web` (TCP 80) and `dns` (UDP 53).
    fn cluster_yaml(&self) -> String {
        let mut y = String::new();
        for (house, (label, _)) in HOUSES.iter().enumerate() {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {}, labels: {{conformance-house: {label}}}}}\n",
                namespace(house),
            ));
        }
        for p in all_pods() {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{conformance-house: {}, statefulset.kubernetes.io/pod-name: {}}}}}\nspec: {{nodeName: {}, containers: [{{name: c, ports: [{{name: web, containerPort: 80}}, {{name: dns, containerPort: 53, protocol: UDP}}]}}]}}\nstatus: {{podIP: '{}'}}\n",
                pod_name(p),
                namespace(p.house),
                HOUSES[p.house].0,
                pod_name(p),
                self.node.name,
                ip_of(p)
            ));
        }
        y
    }

    /// Applies the policies and checks every cell against `expect`.
    fn phase(&self, name: &str, policies: &[String], expect: &dyn Fn(Cell) -> bool) {
        let mut y = self.cluster_yaml();
        for pol in policies {
            y.push_str("---\n");
            y.push_str(pol);
            y.push('\n');
        }
        self.node.apply_yaml(&y);
        let mut cells = Vec::new();
        for from in all_pods() {
            let from_ns = self
                .node
                .pod(&namespace(from.house), &pod_name(from))
                .ns
                .path();
            for (to, ip, ports) in targets(from) {
                for &(proto, port) in ports {
                    let cell = Cell {
                        from,
                        to,
                        port,
                        proto,
                    };
                    let to_name = match to {
                        To::Pod(t) => pod_name(t),
                        To::Outside => "outside".into(),
                    };
                    cells.push((
                        Probe {
                            from: from_ns.clone(),
                            to: ip,
                            port,
                            proto,
                        },
                        expect(cell),
                        format!("{name}: {} -> {to_name}:{port} {proto:?}", pod_name(from)),
                    ));
                }
            }
        }
        assert_eq!(cells.len(), 8 * (7 * 4 + 2));
        if let Err(e) = check_truth_table(&cells) {
            panic!("{e}");
        }
    }
}

/// A probe destination: who, its address, the ports it serves.
type Target = (To, std::net::IpAddr, &'static [(Proto, u16)]);

/// Every other pod, then the outside host.
fn targets(from: P) -> Vec<Target> {
    let mut out: Vec<Target> = all_pods()
        .into_iter()
        .filter(|t| *t != from)
        .map(|t| (To::Pod(t), ip_of(t).parse().unwrap(), &POD_PORTS[..]))
        .collect();
    out.push((
        To::Outside,
        UPLINK_OUTSIDE_IP.parse().unwrap(),
        &OUTSIDE_PORTS[..],
    ));
    out
}

/// A ClusterNetworkPolicy document.
fn cnp(name: &str, tier: &str, priority: u32, subject: &str, rules: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  subject: {subject}\n{rules}"
    )
}

/// A Kubernetes NetworkPolicy in a house's namespace.
fn np(house: usize, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {}}}\nspec: {spec}",
        namespace(house)
    )
}

/// `{namespaces: {matchLabels: {kubernetes.io/metadata.name: …}}}`
fn ns_is(house: usize) -> String {
    format!(
        "{{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: {}}}}}}}",
        namespace(house)
    )
}

/// `{pods: …}` selecting every pod of a house, by house labels.
fn house_pods(house: usize) -> String {
    let h = HOUSES[house].0;
    format!(
        "{{pods: {{namespaceSelector: {{matchLabels: {{conformance-house: {h}}}}}, podSelector: {{matchLabels: {{conformance-house: {h}}}}}}}}}"
    )
}

/// Between two houses (either direction).
fn between(c: Cell, a: usize, b: usize) -> bool {
    let t = c.to.house();
    (c.from.house == a && t == Some(b)) || (c.from.house == b && t == Some(a))
}

#[test]
fn admin_deny_overrides_a_networkpolicy_allow() {
    // Mirrors CNPAdminTierIntegration, "Should Deny traffic from slytherin
    // to gryffindor respecting CNP": the Admin Deny wins over a
    // NetworkPolicy that allows slytherin in both directions.
    let Some(w) = world("cnp-adeny") else { return };
    let allow_slytherin = np(
        G,
        "allow-gress-from-to-slytherin-to-gryffindor",
        "{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}], egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]}",
    );
    let deny = cnp(
        "pass-example",
        "Admin",
        10,
        "{namespaces: {matchLabels: {conformance-house: gryffindor}}}",
        "  ingress:\n  - {name: deny-all-ingress-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}\n  egress:\n  - {name: deny-all-egress-to-slytherin, action: Deny, to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}\n",
    );
    // Gryffindor pods are selected by the NetworkPolicy: everything but
    // slytherin is denied by it; slytherin is denied by the Admin tier.
    let np_only = |c: Cell| {
        let g_to = c.to.house() == Some(G);
        let g_from = c.from.house == G;
        if !(g_to || g_from) {
            return true;
        }
        if g_to && g_from {
            return false; // gryffindor -> gryffindor: neither policy allows it
        }
        between(c, G, S)
    };
    w.phase(
        "np-allows-slytherin",
        std::slice::from_ref(&allow_slytherin),
        &np_only,
    );
    w.phase(
        "admin-deny-over-np-allow",
        &[allow_slytherin.clone(), deny.clone()],
        &|c| np_only(c) && !between(c, G, S),
    );
}

#[test]
fn admin_accept_overrides_a_networkpolicy_deny() {
    // Mirrors CNPAdminTierIngressTCP, "Should support an 'allow-ingress'
    // policy for TCP protocol; ensure rule ordering is respected" (ravenclaw
    // accepted before its deny), here over a default-deny NetworkPolicy.
    let Some(w) = world("cnp-aacc") else { return };
    let deny_all = np(G, "deny-all", "{podSelector: {}, policyTypes: [Ingress]}");
    let accept = cnp(
        "ingress-tcp",
        "Admin",
        3,
        &ns_is(G),
        &format!(
            "  ingress:\n  - {{name: allow-from-ravenclaw-everything, action: Accept, from: [{}]}}\n  - {{name: deny-from-ravenclaw-everything, action: Deny, from: [{}]}}\n",
            ns_is(R),
            ns_is(R)
        ),
    );
    w.phase("np-deny", std::slice::from_ref(&deny_all), &|c| {
        c.to.house() != Some(G)
    });
    w.phase("admin-accept-over-np-deny", &[deny_all, accept], &|c| {
        c.to.house() != Some(G) || c.from.house == R
    });
}

#[test]
fn admin_pass_hands_over_to_networkpolicy_then_baseline() {
    // Mirrors CNPAdminTierIntegration, "Should support a 'pass-ingress' /
    // 'pass-egress' policy and respect the NP": the Admin rules patched to
    // Pass; with the NetworkPolicy the pass reaches it (allowed), without
    // it the pass reaches the Baseline deny.
    let Some(w) = world("cnp-apass") else { return };
    let allow_slytherin = np(
        G,
        "allow-gress-from-to-slytherin-to-gryffindor",
        "{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}], egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]}",
    );
    let admin = |action: &str| {
        cnp(
            "pass-example",
            "Admin",
            10,
            "{namespaces: {matchLabels: {conformance-house: gryffindor}}}",
            &format!(
                "  ingress:\n  - {{name: ingress-from-slytherin, action: {action}, from: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}\n  egress:\n  - {{name: egress-to-slytherin, action: {action}, to: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}\n"
            ),
        )
    };
    let baseline = cnp(
        "default",
        "Baseline",
        10,
        "{namespaces: {matchLabels: {conformance-house: gryffindor}}}",
        "  ingress:\n  - {name: deny-all-ingress-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}\n  egress:\n  - {name: deny-all-egress-to-slytherin, action: Deny, to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}\n",
    );
    let np_verdict = |c: Cell| {
        let (g_to, g_from) = (c.to.house() == Some(G), c.from.house == G);
        if !(g_to || g_from) {
            return true;
        }
        !(g_to && g_from) && between(c, G, S)
    };
    w.phase(
        "admin-deny",
        &[admin("Deny"), allow_slytherin.clone(), baseline.clone()],
        &|c| np_verdict(c) && !between(c, G, S),
    );
    w.phase(
        "admin-pass-to-np",
        &[admin("Pass"), allow_slytherin, baseline.clone()],
        &np_verdict,
    );
    w.phase("admin-pass-to-baseline", &[admin("Pass"), baseline], &|c| {
        !between(c, G, S)
    });
}

#[test]
fn baseline_deny_applies_only_where_no_networkpolicy_selects_the_pod() {
    // Mirrors CNPBaselineTierIngressTCP ("deny-ingress" from ravenclaw) with
    // the Kubernetes rule that a NetworkPolicy selecting a pod makes the
    // final decision: cedric-diggory-0 is selected by an allow-all policy,
    // so the baseline deny does not reach it; every other pod is denied.
    let Some(w) = world("cnp-bdeny") else { return };
    let baseline = cnp(
        "default",
        "Baseline",
        10,
        "{namespaces: {}}",
        &format!(
            "  ingress:\n  - {{name: deny-from-ravenclaw-everything, action: Deny, from: [{}]}}\n",
            ns_is(R)
        ),
    );
    let allow_one = np(
        H,
        "allow-all-to-cedric-0",
        "{podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: cedric-diggory-0}}, policyTypes: [Ingress], ingress: [{}]}",
    );
    w.phase("baseline-deny-and-np", &[baseline, allow_one], &|c| {
        c.from.house != R || c.to == To::Pod(P { house: H, i: 0 }) || c.to == To::Outside
    });
}

#[test]
fn priority_orders_policies_inside_a_tier() {
    // Mirrors CNPAdminTierPriorityField: priority-50 Deny wins over the
    // priority-60 Pass; patched to priority 40, the Pass wins and the
    // Baseline Accept decides (both directions between gryffindor and
    // slytherin). A baseline deny of hufflepuff shows the Accept is what
    // lets slytherin through, not the default.
    let Some(w) = world("cnp-prio") else { return };
    let gp = house_pods(G);
    let sp = house_pods(S);
    let deny50 = cnp(
        "priority-50-example",
        "Admin",
        50,
        &gp,
        &format!(
            "  ingress:\n  - {{name: deny-all-ingress-from-slytherin, action: Deny, from: [{sp}]}}\n  egress:\n  - {{name: deny-all-egress-to-slytherin, action: Deny, to: [{sp}]}}\n"
        ),
    );
    let pass = |prio: u32| {
        cnp(
            "old-priority-60-new-priority-40-example",
            "Admin",
            prio,
            &gp,
            &format!(
                "  ingress:\n  - {{name: pass-all-ingress-from-slytherin, action: Pass, from: [{sp}]}}\n  egress:\n  - {{name: pass-all-egress-to-slytherin, action: Pass, to: [{sp}]}}\n"
            ),
        )
    };
    let baseline = cnp(
        "default",
        "Baseline",
        10,
        &gp,
        &format!(
            "  ingress:\n  - {{name: allow-all-ingress-from-slytherin, action: Accept, from: [{sp}]}}\n  - {{name: deny-the-rest, action: Deny, from: [{{namespaces: {{}}}}]}}\n  egress:\n  - {{name: allow-all-egress-to-slytherin, action: Accept, to: [{sp}]}}\n"
        ),
    );
    let rest_denied = |c: Cell| c.to.house() == Some(G) && c.from.house != S;
    w.phase(
        "deny-50-before-pass-60",
        &[deny50.clone(), pass(60), baseline.clone()],
        &|c| !between(c, G, S) && !rest_denied(c),
    );
    w.phase(
        "pass-40-before-deny-50",
        &[deny50, pass(40), baseline],
        &|c| !rest_denied(c),
    );
}

#[test]
fn named_ports_ingress_and_egress() {
    // Mirrors CNPAdminTierIngressNamedPort (the UDP policy's rule patched to
    // `destinationNamedPort: dns`: 53 allowed, 5353 not) and
    // CNPAdminTierEgressNamedPort (`web`), both directions on one policy.
    let Some(w) = world("cnp-named") else { return };
    let policy = cnp(
        "named-ports",
        "Admin",
        20,
        "{namespaces: {matchLabels: {conformance-house: hufflepuff}}}",
        &format!(
            "  ingress:\n  - {{name: allow-dns-from-gryffindor, action: Accept, from: [{g}], protocols: [{{destinationNamedPort: dns}}]}}\n  - {{name: deny-rest-from-gryffindor, action: Deny, from: [{g}]}}\n  egress:\n  - {{name: allow-web-to-ravenclaw, action: Accept, to: [{r}], protocols: [{{destinationNamedPort: web}}]}}\n  - {{name: deny-rest-to-ravenclaw, action: Deny, to: [{r}]}}\n",
            g = ns_is(G),
            r = ns_is(R)
        ),
    );
    w.phase("named-ports", &[policy], &|c| {
        if c.from.house == G && c.to.house() == Some(H) {
            return c.proto == Proto::Udp && c.port == 53;
        }
        if c.from.house == H && c.to.house() == Some(R) {
            return c.proto == Proto::Tcp && c.port == 80;
        }
        true
    });
}

#[test]
fn egress_networks_inline_cidrs() {
    // Mirrors CNPAdminTierEgressInlineCIDRPeers: gryffindor may reach
    // slytherin's pods, everything else (0.0.0.0/0 and ::/0) is denied;
    // then an Accept of the outside host's /32 on TCP 80 before the deny.
    let Some(w) = world("cnp-nets") else { return };
    let policy = |extra: &str| {
        cnp(
            "inline-cidr-as-peers-example",
            "Admin",
            85,
            &house_pods(G),
            &format!(
                "  egress:\n{extra}  - {{name: allow-egress-to-slytherin, action: Accept, to: [{}]}}\n  - {{name: deny-egress-to-internet, action: Deny, to: [{{networks: [0.0.0.0/0, '::/0']}}]}}\n",
                house_pods(S)
            ),
        )
    };
    w.phase("deny-the-internet", &[policy("")], &|c| {
        c.from.house != G || c.to.house() == Some(S)
    });
    let outside = format!(
        "  - {{name: allow-outside-web, action: Accept, to: [{{networks: ['{UPLINK_OUTSIDE_IP}/32']}}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}]}}\n"
    );
    w.phase("allow-outside-tcp-80", &[policy(&outside)], &|c| {
        c.from.house != G
            || c.to.house() == Some(S)
            || (c.to == To::Outside && c.proto == Proto::Tcp && c.port == 80)
    });
}

/// The ingress rules of the conformance `ingress-tcp` / `ingress-udp`
/// policies (their TCP and UDP halves, one policy), in the given order.
fn ingress_rules(order: &[usize], tier_has_pass: bool) -> String {
    let rules = [
        format!(
            "{{name: allow-from-ravenclaw-everything, action: Accept, from: [{}]}}",
            ns_is(R)
        ),
        format!(
            "{{name: deny-from-ravenclaw-everything, action: Deny, from: [{}]}}",
            ns_is(R)
        ),
        format!(
            "{{name: pass-from-ravenclaw-everything, action: Pass, from: [{}]}}",
            ns_is(R)
        ),
        format!(
            "{{name: deny-from-slytherin-at-port-80-53, action: Deny, from: [{}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}, {{udp: {{destinationPort: {{number: 53}}}}}}]}}",
            ns_is(S)
        ),
        format!(
            "{{name: pass-from-slytherin-at-port-80-53, action: Pass, from: [{}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}, {{udp: {{destinationPort: {{number: 53}}}}}}]}}",
            ns_is(S)
        ),
        format!(
            "{{name: allow-from-hufflepuff-at-port-80-5353, action: Accept, from: [{}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}, {{udp: {{destinationPort: {{number: 5353}}}}}}]}}",
            ns_is(H)
        ),
        format!(
            "{{name: deny-from-hufflepuff-everything-else, action: Deny, from: [{}]}}",
            ns_is(H)
        ),
    ];
    let mut out = String::from("  ingress:\n");
    for &i in order {
        if !tier_has_pass && (i == 2 || i == 4) {
            continue;
        }
        out.push_str(&format!("  - {}\n", rules[i]));
    }
    out
}

#[test]
fn conformance_admin_ingress_tcp_and_udp_rule_order() {
    // Mirrors CNPAdminTierIngressTCP and CNPAdminTierIngressUDP: allow,
    // deny and pass from ravenclaw in that order (allowed); deny then pass
    // from slytherin at TCP 80 / UDP 53 (denied there, allowed elsewhere);
    // hufflepuff only at TCP 80 / UDP 5353. Then the patches: deny moved
    // before allow (ravenclaw denied) and pass before deny (slytherin
    // passed: with no NetworkPolicy, allowed).
    let Some(w) = world("cnp-ingr") else { return };
    let subject = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-gryffindor}}}";
    let huffle = |c: Cell| {
        (c.proto == Proto::Tcp && c.port == 80) || (c.proto == Proto::Udp && c.port == 5353)
    };
    let slyth_denied = |c: Cell| {
        (c.proto == Proto::Tcp && c.port == 80) || (c.proto == Proto::Udp && c.port == 53)
    };
    w.phase(
        "as-written",
        &[cnp(
            "ingress-tcp",
            "Admin",
            3,
            subject,
            &ingress_rules(&[0, 1, 2, 3, 4, 5, 6], true),
        )],
        &|c| match (c.from.house, c.to.house()) {
            (S, Some(G)) => !slyth_denied(c),
            (H, Some(G)) => huffle(c),
            _ => true,
        },
    );
    w.phase(
        "deny-first-pass-first",
        &[cnp(
            "ingress-tcp",
            "Admin",
            3,
            subject,
            &ingress_rules(&[1, 0, 2, 4, 3, 5, 6], true),
        )],
        &|c| match (c.from.house, c.to.house()) {
            (R, Some(G)) => false,
            (H, Some(G)) => huffle(c),
            _ => true,
        },
    );
}

#[test]
fn conformance_baseline_ingress_tcp_and_udp() {
    // Mirrors CNPBaselineTierIngressTCP and CNPBaselineTierIngressUDP (the
    // same rules without Pass, in tier Baseline), and that a NetworkPolicy
    // selecting gryffindor's pods takes precedence over all of them.
    let Some(w) = world("cnp-bingr") else { return };
    let subject = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-gryffindor}}}";
    let base = cnp(
        "default",
        "Baseline",
        10,
        subject,
        &ingress_rules(&[0, 1, 2, 3, 4, 5, 6], false),
    );
    let huffle = |c: Cell| {
        (c.proto == Proto::Tcp && c.port == 80) || (c.proto == Proto::Udp && c.port == 5353)
    };
    let slyth_denied = |c: Cell| {
        (c.proto == Proto::Tcp && c.port == 80) || (c.proto == Proto::Udp && c.port == 53)
    };
    let baseline_only = |c: Cell| match (c.from.house, c.to.house()) {
        (S, Some(G)) => !slyth_denied(c),
        (H, Some(G)) => huffle(c),
        _ => true,
    };
    w.phase("baseline", std::slice::from_ref(&base), &baseline_only);
    let np_allow_all = np(
        G,
        "allow-all",
        "{podSelector: {}, policyTypes: [Ingress], ingress: [{}]}",
    );
    w.phase("np-over-baseline", &[base, np_allow_all], &|_| true);
}

#[test]
fn conformance_admin_gress_combined_egress_rules() {
    // Mirrors CNPAdminTierGress and CNPAdminTierEgressTCP / EgressUDP (the
    // egress half of `gress-rules`): to ravenclaw everything; to slytherin
    // all but TCP 80 / UDP 53; to hufflepuff only TCP 8080 / UDP 5353.
    let Some(w) = world("cnp-gress") else { return };
    let subject = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-gryffindor}}}";
    let rules = format!(
        "  egress:\n  - {{name: allow-to-ravenclaw-everything, action: Accept, to: [{r}]}}\n  - {{name: deny-to-ravenclaw-everything, action: Deny, to: [{r}]}}\n  - {{name: pass-to-ravenclaw-everything, action: Pass, to: [{r}]}}\n  - {{name: deny-to-slytherin-at-ports-80-53, action: Deny, to: [{s}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}, {{udp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: pass-to-slytherin-at-ports-80-53, action: Pass, to: [{s}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}, {{udp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: allow-to-hufflepuff-at-ports-8080-5353, action: Accept, to: [{h}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 8080, end: 8081}}}}}}}}, {{udp: {{destinationPort: {{number: 5353}}}}}}]}}\n  - {{name: deny-to-hufflepuff-everything-else, action: Deny, to: [{h}]}}\n",
        r = ns_is(R),
        s = ns_is(S),
        h = ns_is(H)
    );
    w.phase(
        "gress-rules",
        &[cnp("gress-rules", "Admin", 15, subject, &rules)],
        &|c| match (c.from.house, c.to.house()) {
            (G, Some(S)) => {
                !((c.proto == Proto::Tcp && c.port == 80)
                    || (c.proto == Proto::Udp && c.port == 53))
            }
            (G, Some(H)) => {
                (c.proto == Proto::Tcp && c.port == 8080)
                    || (c.proto == Proto::Udp && c.port == 5353)
            }
            _ => true,
        },
    );
}

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tortie-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tortie run` on a directory datastore, killed on drop.
struct Agent {
    child: std::process::Child,
    metrics: String,
}

impl Agent {
    fn start(dir: &std::path::Path, netns: &str) -> Agent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tortie"))
            .args(["run", "--node", "node1", "--netns", netns])
            .args(["--refresh-interval", "1s", "--syslog", "none"])
            .arg(format!("--datastore=dir:{}", dir.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start tortie run");
        let a = Agent {
            child,
            metrics: format!("127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while support::agent::http_get(&a.metrics, "/readyz").map(|r| r.0) != Some(200) {
            assert!(std::time::Instant::now() < deadline, "tortie run not ready");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        a
    }

    /// The value of one series (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = support::agent::http_get(&self.metrics, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tortie_run_applies_cluster_network_policy_edits_and_counts_their_rules() {
    // The directory datastore through the engine: a ClusterNetworkPolicy
    // added, edited (Deny -> Accept over a NetworkPolicy deny) and deleted,
    // each in force within the bound; its rule's hits are counted under
    // tier kube-admin, kind kcnp and its name.
    use std::time::Duration;
    if !kernel::require_kernel("cnp-run") {
        return;
    }
    let t = Trio::new("cnp-run");
    let dir = Scratch::new("cnp-run");
    let write =
        |name: &str, text: &str| support::agent::write_atomically(&dir.path().join(name), text);
    write("cluster.yaml", &t.cluster_yaml());
    let guard = |action: &str| {
        cnp(
            "guard",
            "Admin",
            7,
            "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: server}}}}",
            &format!(
                "  ingress:\n  - {{name: bad-clients, action: {action}, from: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: bad}}}}}}}}]}}\n"
            ),
        )
    };
    write("guard.yaml", &guard("Deny"));
    let agent = Agent::start(dir.path(), &t.node.ns.name);
    let bound = Duration::from_secs(5);
    let none = String::new;
    let took = support::agent::wait_verdicts(&t, (true, false), bound, "add", none);
    eprintln!("ClusterNetworkPolicy in force {took:?} after the agent was ready");
    let series = "tortie_policy_packets{tier=\"kube-admin\",kind=\"kcnp\",namespace=\"\",policy=\"guard\",action=\"Deny\"}";
    let deadline = std::time::Instant::now() + bound;
    while agent.metric(series) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no hits counted for {series}"
        );
        t.verdicts();
        std::thread::sleep(Duration::from_millis(200));
    }
    write(
        "deny-all.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: default}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    );
    write("guard.yaml", &guard("Accept"));
    let took = support::agent::wait_verdicts(&t, (false, true), bound, "edit", none);
    eprintln!("edit (Deny -> Accept over a NetworkPolicy deny) in force after {took:?}");
    std::fs::remove_file(dir.path().join("guard.yaml")).unwrap();
    let took = support::agent::wait_verdicts(&t, (false, false), bound, "delete", none);
    eprintln!("delete in force after {took:?}");
}
