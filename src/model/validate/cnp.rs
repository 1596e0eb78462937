//! Validation of ClusterNetworkPolicy: the rules of the upstream CRD
//! (kubernetes-sigs/network-policy-api `apis/v1alpha2`: enums, 0–1000
//! priority, exactly-one-of subjects, peers and protocols, item limits,
//! CIDR format, no named ports towards networks), each with its field path.

use super::super::cnp::*;
use super::{Checker, check_label_selector, parse_net, port_name_problem};
use crate::model::yaml::FieldPath;

pub(super) fn check_cnp(c: &mut Checker, spec: &ClusterNetworkPolicySpec, path: &FieldPath) {
    if spec.tier.is_none() {
        c.error_hint(
            &path.key("tier"),
            "a ClusterNetworkPolicy needs `tier`",
            "add `tier: Admin` (before NetworkPolicies) or `tier: Baseline` (after them)",
        );
    }
    match spec.priority {
        None => c.error_hint(
            &path.key("priority"),
            "a ClusterNetworkPolicy needs `priority`",
            "add `priority: N` with N from 0 (checked first) to 1000",
        ),
        Some(p) if !(0..=MAX_PRIORITY).contains(&p) => c.error_hint(
            &path.key("priority"),
            format!("priority {p} is out of range 0-{MAX_PRIORITY}"),
            "use a value from 0 (checked first) to 1000",
        ),
        Some(_) => {}
    }
    check_subject(c, spec.subject.as_ref(), &path.key("subject"));
    for (dir, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        let dp = path.key(dir);
        if rules.len() > MAX_ITEMS {
            c.error(
                &dp,
                format!(
                    "{} {dir} rules: at most {MAX_ITEMS} are allowed",
                    rules.len()
                ),
            );
        }
        for (i, rule) in rules.iter().enumerate() {
            check_rule(c, rule, dir == "ingress", &dp.index(i));
        }
    }
}

fn check_subject(c: &mut Checker, subject: Option<&CnpSubject>, path: &FieldPath) {
    let Some(s) = subject else {
        c.error_hint(
            path,
            "a ClusterNetworkPolicy needs `subject`",
            "add `subject: {namespaces: {}}` (every pod) or `subject: {pods: {namespaceSelector: …, podSelector: …}}`",
        );
        return;
    };
    match (&s.namespaces, &s.pods) {
        (Some(_), Some(_)) => c.error_hint(
            &path.key("pods"),
            "`subject` sets both `namespaces` and `pods`; exactly one is allowed",
            "keep one: `pods` can carry a namespaceSelector too",
        ),
        (None, None) => c.error_hint(
            path,
            "`subject` sets neither `namespaces` nor `pods`",
            "set exactly one of them",
        ),
        (Some(ns), None) => check_label_selector(c, ns, &path.key("namespaces")),
        (None, Some(p)) => check_namespaced_pod(c, p, &path.key("pods")),
    }
}

fn check_namespaced_pod(c: &mut Checker, p: &NamespacedPod, path: &FieldPath) {
    check_label_selector(c, &p.namespace_selector, &path.key("namespaceSelector"));
    match &p.pod_selector {
        Some(sel) => check_label_selector(c, sel, &path.key("podSelector")),
        None => c.error_hint(
            &path.key("podSelector"),
            "`pods` needs `podSelector`",
            "add `podSelector: {}` to select every pod of the namespaces",
        ),
    }
}

fn check_rule(c: &mut Checker, rule: &CnpRule, ingress: bool, path: &FieldPath) {
    if let Some(name) = &rule.name
        && name.chars().count() > 100
    {
        c.error(
            &path.key("name"),
            "a rule name may have at most 100 characters",
        );
    }
    if rule.action.is_none() {
        c.error_hint(
            &path.key("action"),
            "a rule needs `action`",
            "add `action: Accept`, `Deny` or `Pass`",
        );
    }
    let (field, other) = if ingress {
        ("from", "to")
    } else {
        ("to", "from")
    };
    let (mine, theirs) = if ingress {
        (&rule.from, &rule.to)
    } else {
        (&rule.to, &rule.from)
    };
    if theirs.is_some() {
        c.error_hint(
            &path.key(other),
            format!(
                "`{other}` is not a field of an {} rule",
                if ingress { "ingress" } else { "egress" }
            ),
            format!("write the peers under `{field}`"),
        );
    }
    match mine.as_deref() {
        None | Some([]) => c.error_hint(
            &path.key(field),
            format!("a rule needs at least one peer in `{field}`"),
            "add e.g. `- namespaces: {}` (every pod in the cluster)",
        ),
        Some(peers) => {
            if peers.len() > MAX_ITEMS {
                c.error(
                    &path.key(field),
                    format!("at most {MAX_ITEMS} peers are allowed"),
                );
            }
            for (i, peer) in peers.iter().enumerate() {
                check_peer(c, peer, ingress, &path.key(field).index(i));
            }
        }
    }
    if let Some(protocols) = &rule.protocols {
        check_protocols(c, protocols, &path.key("protocols"));
        let named = protocols
            .iter()
            .position(|p| p.destination_named_port.is_some());
        if let Some(i) = named
            && mine
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|p| p.networks.is_some())
        {
            c.error_hint(
                &path.key("protocols").index(i).key("destinationNamedPort"),
                "a named port cannot be used in a rule with a `networks` peer: networks have no named ports",
                "use a port number, or move the networks peer into a rule of its own",
            );
        }
    }
}

fn check_peer(c: &mut Checker, peer: &CnpPeer, ingress: bool, path: &FieldPath) {
    let set: Vec<&str> = [
        ("namespaces", peer.namespaces.is_some()),
        ("pods", peer.pods.is_some()),
        ("networks", peer.networks.is_some()),
        ("nodes", peer.nodes.is_some()),
        ("domainNames", peer.domain_names.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    match set.as_slice() {
        [] => c.error_hint(
            path,
            "a peer sets none of `namespaces`, `pods`, `networks`",
            "set exactly one of them",
        ),
        [_] => {}
        [_, second, ..] => c.error_hint(
            &path.key(second),
            format!("a peer sets {}; exactly one is allowed", set.join(" and ")),
            "write each as a peer of its own",
        ),
    }
    if let Some(ns) = &peer.namespaces {
        check_label_selector(c, ns, &path.key("namespaces"));
    }
    if let Some(p) = &peer.pods {
        check_namespaced_pod(c, p, &path.key("pods"));
    }
    for (field, on) in [
        ("nodes", peer.nodes.is_some()),
        ("domainNames", peer.domain_names.is_some()),
    ] {
        if on {
            c.error_hint(
                &path.key(field),
                format!("`{field}` peers (experimental in network-policy-api v1alpha2) are not supported by tortie or Calico"),
                "use `networks` with the addresses instead",
            );
        }
    }
    if let Some(nets) = &peer.networks {
        if ingress {
            c.error_hint(
                &path.key("networks"),
                "`networks` peers are egress only",
                "for ingress, select the sources with `namespaces` or `pods`",
            );
        }
        check_networks(c, nets, &path.key("networks"));
    }
}

fn check_networks(c: &mut Checker, nets: &[String], path: &FieldPath) {
    if nets.is_empty() {
        c.error(path, "`networks` needs at least one CIDR");
    }
    if nets.len() > MAX_ITEMS {
        c.error(
            path,
            format!("at most {MAX_ITEMS} networks are allowed per peer"),
        );
    }
    for (i, n) in nets.iter().enumerate() {
        let ok = n.contains('/') && parse_net(n).is_some();
        if !ok {
            let hint = if parse_net(n).is_some() {
                format!("write the address as a CIDR, e.g. `{n}/32` (or `/128` for IPv6)")
            } else {
                "write a CIDR such as 198.18.0.0/24 or fd74:6f72::/64".to_string()
            };
            c.error_hint(&path.index(i), format!("`{n}` is not a CIDR"), hint);
        }
    }
}

fn check_protocols(c: &mut Checker, protocols: &[CnpProtocol], path: &FieldPath) {
    if protocols.is_empty() {
        c.error_hint(
            path,
            "`protocols` is empty",
            "remove it to match every protocol and port, or list at least one",
        );
    }
    if protocols.len() > MAX_ITEMS {
        c.error(path, format!("at most {MAX_ITEMS} protocols are allowed"));
    }
    for (i, p) in protocols.iter().enumerate() {
        let pp = path.index(i);
        let set: Vec<(&str, Option<&CnpProtoPorts>)> =
            [("tcp", &p.tcp), ("udp", &p.udp), ("sctp", &p.sctp)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, Some(v))))
                .chain(
                    p.destination_named_port
                        .as_ref()
                        .map(|_| ("destinationNamedPort", None)),
                )
                .collect();
        match set.as_slice() {
            [] => c.error_hint(
                &pp,
                "a protocols entry sets none of `tcp`, `udp`, `sctp`, `destinationNamedPort`",
                "set exactly one of them, e.g. `tcp: {destinationPort: {number: 80}}`",
            ),
            [_] => {}
            [_, (second, _), ..] => c.error_hint(
                &pp.key(second),
                "a protocols entry sets more than one of `tcp`, `udp`, `sctp`, `destinationNamedPort`",
                "write each as an entry of its own",
            ),
        }
        for (name, ports) in &set {
            if let Some(ports) = ports {
                check_proto_ports(c, ports, &pp.key(name));
            }
        }
        if let Some(name) = &p.destination_named_port
            && let Some(msg) = port_name_problem(name)
        {
            c.error(&pp.key("destinationNamedPort"), msg);
        }
    }
}

fn check_proto_ports(c: &mut Checker, ports: &CnpProtoPorts, path: &FieldPath) {
    let Some(port) = &ports.destination_port else {
        c.error_hint(
            &path.key("destinationPort"),
            "needs `destinationPort`",
            "add `destinationPort: {number: N}` or `{range: {start: N, end: M}}`",
        );
        return;
    };
    let path = path.key("destinationPort");
    let in_range = |n: i64| (1..=65535).contains(&n);
    match (port.number, port.range) {
        (Some(_), Some(_)) => c.error_hint(
            &path.key("range"),
            "`destinationPort` sets both `number` and `range`",
            "keep one",
        ),
        (None, None) => c.error_hint(
            &path,
            "`destinationPort` sets neither `number` nor `range`",
            "add `number: N` or `range: {start: N, end: M}`",
        ),
        (Some(n), None) if !in_range(n) => c.error(
            &path.key("number"),
            format!("port {n} is out of range 1-65535"),
        ),
        (None, Some(r)) => {
            for (k, v) in [("start", r.start), ("end", r.end)] {
                if !in_range(v) {
                    c.error(
                        &path.key("range").key(k),
                        format!("port {v} is out of range 1-65535"),
                    );
                }
            }
            if r.start >= r.end {
                c.error_hint(
                    &path.key("range"),
                    format!("range start {} must be less than end {}", r.start, r.end),
                    "for a single port use `number`",
                );
            }
        }
        _ => {}
    }
}
