//! Validation of decoded resources: the rules Calico's API server and the
//! Kubernetes API apply, each reported with the field path it concerns.

use std::net::IpAddr;

use ipnet::IpNet;

use super::types::*;
use super::yaml::FieldPath;
use super::{Resource, ResourceKind};
use crate::selector::{self, MAX_SELECTOR_LEN, Selector};

/// One validation finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub path: FieldPath,
    pub message: String,
    pub hint: Option<String>,
    /// A warning does not make the resource invalid.
    pub warning: bool,
}

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(Finding {
            path: path.clone(),
            message: message.into(),
            hint: None,
            warning: false,
        });
    }
    fn error_hint(
        &mut self,
        path: &FieldPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.findings.push(Finding {
            path: path.clone(),
            message: message.into(),
            hint: Some(hint.into()),
            warning: false,
        });
    }
    fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(Finding {
            path: path.clone(),
            message: message.into(),
            hint: None,
            warning: true,
        });
    }
}

/// Validates one resource; an empty result (or warnings only) means valid.
pub fn validate(resource: &Resource) -> Vec<Finding> {
    let mut c = Checker::default();
    let root = FieldPath::root();
    let meta_path = root.key("metadata");
    let spec = root.key("spec");
    let kind = resource.kind();
    check_meta(&mut c, kind, resource.meta(), &meta_path);
    match resource {
        Resource::NetworkPolicy(o) => check_policy(&mut c, &o.spec, &spec, false),
        Resource::GlobalNetworkPolicy(o) => check_policy(&mut c, &o.spec, &spec, true),
        Resource::HostEndpoint(o) => check_host_endpoint(&mut c, &o.spec, &spec),
        Resource::WorkloadEndpoint(o) => check_workload_endpoint(&mut c, &o.spec, &spec),
        Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
            if o.metadata.labels.contains_key(selector::NAMESPACE_LABEL) {
                c.error(
                    &meta_path.key("labels").key(selector::NAMESPACE_LABEL),
                    format!("the label `{}` is reserved for namespaced endpoints and may not be set on a network set", selector::NAMESPACE_LABEL),
                );
            }
            for (i, net) in o.spec.nets.iter().enumerate() {
                check_cidr(&mut c, net, &spec.key("nets").index(i));
            }
        }
        Resource::Profile(o) => {
            check_rules(
                &mut c,
                &o.spec.ingress,
                &spec.key("ingress"),
                Dir::Ingress,
                false,
            );
            check_rules(
                &mut c,
                &o.spec.egress,
                &spec.key("egress"),
                Dir::Egress,
                false,
            );
            for (k, v) in &o.spec.labels_to_apply {
                let p = spec.key("labelsToApply").key(k);
                check_label(&mut c, k, v, &p);
            }
        }
        Resource::Tier(o) => check_tier(
            &mut c,
            o.metadata.name.as_deref().unwrap_or(""),
            &o.spec,
            &spec,
        ),
        Resource::FelixConfiguration(o) => check_felix(
            &mut c,
            o.metadata.name.as_deref().unwrap_or(""),
            &o.spec,
            &spec,
        ),
        Resource::K8sNetworkPolicy(o) => check_k8s_policy(&mut c, &o.spec, &spec),
        Resource::ClusterNetworkPolicy(o) => cnp::check_cnp(&mut c, &o.spec, &spec),
        Resource::StagedNetworkPolicy(o) | Resource::StagedGlobalNetworkPolicy(o) => {
            let global = kind == ResourceKind::StagedGlobalNetworkPolicy;
            check_policy(&mut c, &o.spec.to_enforced(), &spec, global);
            let rules = !o.spec.ingress.is_empty() || !o.spec.egress.is_empty();
            check_staged_delete(&mut c, o.spec.action(), rules, &spec);
        }
        Resource::StagedKubernetesNetworkPolicy(o) => {
            check_k8s_policy(&mut c, &o.spec.to_enforced(), &spec);
            let rules = !o.spec.ingress.is_empty() || !o.spec.egress.is_empty();
            check_staged_delete(&mut c, o.spec.action(), rules, &spec);
        }
        Resource::Namespace(_) | Resource::ServiceAccount(_) => {}
        Resource::EndpointSlice(o) => services::check_endpoint_slice(&mut c, o),
        Resource::Pod(p) => {
            if let Some(ip) = &p.status.pod_ip
                && ip.parse::<IpAddr>().is_err()
            {
                c.error(
                    &root.key("status").key("podIP"),
                    format!("`{ip}` is not an IP address"),
                );
            }
            for (i, ip) in p.status.pod_ips.iter().enumerate() {
                if ip.ip.parse::<IpAddr>().is_err() {
                    c.error(
                        &root.key("status").key("podIPs").index(i).key("ip"),
                        format!("`{}` is not an IP address", ip.ip),
                    );
                }
            }
        }
    }
    c.findings
}

// ---------------------------------------------------------------------------
// Names and labels

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label name part: 1-63 of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn curly_hint(s: &str) -> Option<&'static str> {
    s.contains(['“', '”', '‘', '’'])
        .then_some("it contains curly quotes (“ ” ‘ ’), probably pasted from a word processor: use straight quotes or none")
}

/// Checks a Kubernetes label key; returns a message when invalid.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!(
            "label key `{key}` has an invalid prefix `{p}`: it must be a DNS subdomain (lowercase letters, digits, `-` and `.`)"
        ));
    }
    if !is_qualified_name_part(name) {
        return Some(format!(
            "label key `{key}` is invalid: the name part must be 1-63 characters of letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    None
}

/// Checks a Kubernetes label value; returns a message when invalid.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || is_qualified_name_part(value) {
        None
    } else {
        Some(format!(
            "label value `{value}` is invalid: it must be empty or 1-63 characters of letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ))
    }
}

fn check_label(c: &mut Checker, key: &str, value: &str, path: &FieldPath) {
    if let Some(msg) = label_key_problem(key) {
        match curly_hint(key) {
            Some(h) => c.error_hint(path, msg, h),
            None => c.error(path, msg),
        }
    } else if let Some(msg) = label_value_problem(value) {
        match curly_hint(value) {
            Some(h) => c.error_hint(path, msg, h),
            None => c.error(path, msg),
        }
    }
}

fn check_meta(c: &mut Checker, kind: ResourceKind, meta: &ObjectMeta, path: &FieldPath) {
    let name = meta.name.as_deref().unwrap_or("");
    if name.is_empty() {
        c.error(path, format!("{kind} needs `metadata.name`"));
    } else {
        let np = path.key("name");
        match kind {
            ResourceKind::NetworkPolicy => {
                let ok = name.len() <= 253 && {
                    let parts: Vec<&str> = name.split('.').collect();
                    match parts.as_slice() {
                        [a] => is_dns_label(a),
                        [a, b] => is_dns_label(a) && is_dns_label(b),
                        [pre, "default", rest @ ..] if (*pre == "knp" || *pre == "ossg") => {
                            is_dns_subdomain(&rest.join("."))
                        }
                        _ => false,
                    }
                };
                if !ok {
                    c.error_hint(
                        &np,
                        format!("invalid NetworkPolicy name `{name}`"),
                        "use lowercase letters, digits and `-` (a DNS label), optionally prefixed with `<tier>.`",
                    );
                }
            }
            ResourceKind::GlobalNetworkPolicy => {
                let ok = name.len() <= 253
                    && match name.split_once('.') {
                        Some((a, b)) => is_dns_label(a) && is_dns_label(b),
                        None => is_dns_label(name),
                    };
                if !ok {
                    c.error_hint(
                        &np,
                        format!("invalid GlobalNetworkPolicy name `{name}`"),
                        "use lowercase letters, digits and `-` (a DNS label), optionally prefixed with `<tier>.`",
                    );
                }
            }
            ResourceKind::Tier => {
                if !is_dns_label(name) {
                    c.error_hint(
                        &np,
                        format!("invalid Tier name `{name}`"),
                        "a tier name is a DNS label: 1-63 lowercase letters, digits and `-`, no dots",
                    );
                }
            }
            ResourceKind::Namespace => {
                if !is_dns_label(name) {
                    c.error(
                        &np,
                        format!("invalid Namespace name `{name}`: it must be a DNS label"),
                    );
                }
            }
            ResourceKind::FelixConfiguration => {
                if name != "default" && !name.starts_with("node.") {
                    c.warn(
                        &np,
                        format!("FelixConfiguration `{name}` is ignored: only `default` and `node.<nodename>` take effect"),
                    );
                }
            }
            _ => {
                if !is_dns_subdomain(name) {
                    c.error_hint(
                        &np,
                        format!("invalid {kind} name `{name}`"),
                        "use lowercase letters, digits, `-` and `.` (a DNS subdomain, at most 253 characters)",
                    );
                }
            }
        }
    }
    match (&meta.namespace, kind.namespaced()) {
        (Some(ns), false) if !ns.is_empty() => c.error_hint(
            &path.key("namespace"),
            format!("{kind} is not namespaced"),
            "remove `metadata.namespace`",
        ),
        (Some(ns), true) if !is_dns_label(ns) => c.error(
            &path.key("namespace"),
            format!("invalid namespace `{ns}`: it must be a DNS label"),
        ),
        _ => {}
    }
    for (k, v) in &meta.labels {
        check_label(c, k, v, &path.key("labels").key(k));
    }
}

// ---------------------------------------------------------------------------
// Policies

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

fn check_selector(
    c: &mut Checker,
    text: &str,
    path: &FieldPath,
    global_ok: GlobalUse,
) -> Option<Selector> {
    if text.len() > MAX_SELECTOR_LEN {
        c.error_hint(
            path,
            format!(
                "selector is longer than {MAX_SELECTOR_LEN} characters ({})",
                text.len()
            ),
            "Calico has the same limit (its CRD caps selectors at 1024 characters): \
             label the endpoints and select by that label, or split the policy",
        );
        return None;
    }
    match selector::parse(text) {
        Ok(sel) => {
            match global_ok {
                GlobalUse::Never if sel.uses_global() => c.error_hint(
                    path,
                    "`global()` is not allowed here",
                    "`global()` only has meaning as the whole of a rule's `namespaceSelector`",
                ),
                GlobalUse::WholeOnly if sel.uses_global() && !sel.is_whole_global() => c.error_hint(
                    path,
                    "`global()` must be the whole namespaceSelector",
                    "write `namespaceSelector: global()` on its own to match non-namespaced entities",
                ),
                _ => {}
            }
            Some(sel)
        }
        Err(e) => {
            c.error(path, format!("invalid selector `{text}`: {}", e));
            None
        }
    }
}

#[derive(Clone, Copy)]
enum GlobalUse {
    Never,
    WholeOnly,
}

fn check_policy(c: &mut Checker, spec: &PolicySpec, path: &FieldPath, global: bool) {
    if let Some(tier) = &spec.tier
        && !is_dns_label(tier)
    {
        c.error(
            &path.key("tier"),
            format!("invalid tier name `{tier}`: it must be a DNS label"),
        );
    }
    if let Some(order) = spec.order
        && !order.is_finite()
    {
        c.error(&path.key("order"), "order must be a finite number");
    }
    if let Some(sel) = &spec.selector {
        check_selector(c, sel, &path.key("selector"), GlobalUse::Never);
    }
    if let Some(sel) = &spec.service_account_selector {
        check_selector(
            c,
            sel,
            &path.key("serviceAccountSelector"),
            GlobalUse::Never,
        );
    }
    let mut seen = Vec::new();
    for (i, t) in spec.types.iter().enumerate() {
        if seen.contains(t) {
            c.error(
                &path.key("types").index(i),
                format!("type `{t:?}` is listed twice"),
            );
        }
        seen.push(*t);
    }
    for (i, h) in spec.performance_hints.iter().enumerate() {
        if h != "AssumeNeededOnEveryNode" {
            c.error_hint(
                &path.key("performanceHints").index(i),
                format!("unknown performance hint `{h}`"),
                "the only hint is `AssumeNeededOnEveryNode`",
            );
        }
    }
    let gnp_only: [(&str, bool); 4] = [
        ("namespaceSelector", spec.namespace_selector.is_some()),
        ("doNotTrack", spec.do_not_track),
        ("preDNAT", spec.pre_dnat),
        ("applyOnForward", spec.apply_on_forward),
    ];
    if global {
        if let Some(sel) = &spec.namespace_selector {
            check_selector(c, sel, &path.key("namespaceSelector"), GlobalUse::Never);
        }
    } else {
        for (field, set) in gnp_only {
            if set {
                c.error_hint(
                    &path.key(field),
                    format!("`{field}` is only valid in a GlobalNetworkPolicy"),
                    "move this policy to a GlobalNetworkPolicy, or remove the field",
                );
            }
        }
    }
    if spec.pre_dnat && spec.do_not_track {
        c.error_hint(
            &path.key("preDNAT"),
            "a policy cannot be both preDNAT and doNotTrack",
            "keep `doNotTrack: true` to police untracked traffic before conntrack (e.g. for an IPVS load balancer), or `preDNAT: true` to police before DNAT; not both",
        );
    }
    for (field, set) in [
        ("preDNAT", spec.pre_dnat),
        ("doNotTrack", spec.do_not_track),
    ] {
        if set && !spec.apply_on_forward && global {
            c.error_hint(
                &path.key(field),
                format!("`{field}: true` needs `applyOnForward: true`"),
                "add `applyOnForward: true` to the spec",
            );
        }
    }
    if spec.pre_dnat {
        if !spec.egress.is_empty() {
            c.error(
                &path.key("egress"),
                "a preDNAT policy may only have ingress rules",
            );
        }
        if spec.types.contains(&PolicyType::Egress) {
            c.error(
                &path.key("types"),
                "a preDNAT policy may only be of type Ingress",
            );
        }
    }
    for (dir, rules, key) in [
        (Dir::Ingress, &spec.ingress, "ingress"),
        (Dir::Egress, &spec.egress, "egress"),
    ] {
        if rules.len() > 1024 {
            c.error_hint(
                &path.key(key),
                format!(
                    "at most 1024 {key} rules are allowed, found {}",
                    rules.len()
                ),
                "Calico has the same limit (its CRD allows 1024 rules per direction): \
                 split the rules over several policies with consecutive orders",
            );
        }
        check_rules(c, rules, &path.key(key), dir, global);
    }
    if !spec.types.is_empty() {
        if !spec.egress.is_empty() && !spec.types.contains(&PolicyType::Egress) {
            c.warn(
                &path.key("egress"),
                "egress rules are ignored: `types` does not include Egress",
            );
        }
        if !spec.ingress.is_empty() && !spec.types.contains(&PolicyType::Ingress) {
            c.warn(
                &path.key("ingress"),
                "ingress rules are ignored: `types` does not include Ingress",
            );
        }
    }
}

fn check_rules(c: &mut Checker, rules: &[Rule], path: &FieldPath, dir: Dir, global: bool) {
    for (i, rule) in rules.iter().enumerate() {
        check_rule(c, rule, &path.index(i), dir, global);
    }
}

fn is_icmp(p: Protocol) -> Option<u8> {
    match p.normalised() {
        Protocol::Icmp => Some(4),
        Protocol::IcmpV6 => Some(6),
        _ => None,
    }
}

fn check_rule(c: &mut Checker, rule: &Rule, path: &FieldPath, dir: Dir, global: bool) {
    if let Some(v) = rule.ip_version
        && v != 4
        && v != 6
    {
        c.error(
            &path.key("ipVersion"),
            format!("ipVersion must be 4 or 6, not {v}"),
        );
    }
    for (field, icmp) in [("icmp", &rule.icmp), ("notICMP", &rule.not_icmp)] {
        let Some(icmp) = icmp else { continue };
        let p = path.key(field);
        if rule.protocol.and_then(is_icmp).is_none() {
            c.error_hint(
                &p,
                format!("`{field}` needs `protocol: ICMP` or `protocol: ICMPv6`"),
                "set the rule's protocol to ICMP (IPv4) or ICMPv6 (IPv6)",
            );
        }
        if let Some(t) = icmp.icmp_type
            && !(0..=254).contains(&t)
        {
            c.error(
                &p.key("type"),
                format!("ICMP type {t} is out of range 0-254"),
            );
        }
        if let Some(code) = icmp.code {
            if !(0..=255).contains(&code) {
                c.error(
                    &p.key("code"),
                    format!("ICMP code {code} is out of range 0-255"),
                );
            }
            if icmp.icmp_type.is_none() {
                c.error(&p.key("code"), "an ICMP code needs an ICMP type");
            }
        }
    }
    if let (Some(fam), Some(v)) = (rule.protocol.and_then(is_icmp), rule.ip_version)
        && i64::from(fam) != v
    {
        c.error(
            &path.key("ipVersion"),
            format!(
                "protocol {} is IPv{fam} only, but ipVersion is {v}",
                rule.protocol.expect("protocol")
            ),
        );
    }
    if rule.action != Action::Allow && rule.http.is_some() {
        c.error(
            &path.key("http"),
            "an `http` match is only allowed on Allow rules",
        );
    }
    if let Some(http) = &rule.http {
        if dir == Dir::Egress {
            c.error(
                &path.key("http"),
                "an `http` match is not allowed in egress rules",
            );
        } else if rule
            .protocol
            .is_some_and(|p| p.normalised() != Protocol::Tcp)
        {
            c.error(
                &path.key("http"),
                "an `http` match needs protocol TCP or no protocol",
            );
        } else {
            let _ = http;
            c.error_hint(
                &path.key("http"),
                "`http` (layer 7) matches are not enforced by tortie",
                "remove the `http` match; tortie enforces layer 3 and 4 only and will not widen an allow silently",
            );
        }
    }
    let mut families = Vec::new();
    for (side, ent) in [("source", &rule.source), ("destination", &rule.destination)] {
        let sp = path.key(side);
        check_entity(c, rule, ent, &sp, &mut families);
        services::check_rule_services(c, ent, &sp, dir, side, global);
    }
    families.sort_unstable();
    families.dedup();
    if families.len() > 1 {
        c.error_hint(
            path,
            "this rule mixes IPv4 and IPv6 networks",
            "split it into one rule per IP version",
        );
    }
    if let (Some(v), Some(f)) = (rule.ip_version, families.first())
        && families.len() == 1
        && i64::from(*f) != v
    {
        c.error(
            path,
            format!("the rule's networks are IPv{f} but ipVersion is {v}"),
        );
    }
}

fn check_entity(
    c: &mut Checker,
    rule: &Rule,
    ent: &EntityRule,
    path: &FieldPath,
    families: &mut Vec<u8>,
) {
    for (field, nets) in [("nets", &ent.nets), ("notNets", &ent.not_nets)] {
        for (i, net) in nets.iter().enumerate() {
            let p = path.key(field).index(i);
            if let Some(n) = check_cidr(c, net, &p) {
                families.push(if n.addr().is_ipv4() { 4 } else { 6 });
                if field == "notNets" && n.prefix_len() == 0 {
                    c.error_hint(
                        &p,
                        format!("`{net}` in notNets would match nothing"),
                        "a /0 in notNets excludes every address; remove the rule or the notNets entry",
                    );
                }
            }
        }
    }
    if let Some(s) = &ent.selector {
        check_selector(c, s, &path.key("selector"), GlobalUse::Never);
    }
    if let Some(s) = &ent.not_selector {
        check_selector(c, s, &path.key("notSelector"), GlobalUse::Never);
    }
    if let Some(s) = &ent.namespace_selector {
        check_selector(c, s, &path.key("namespaceSelector"), GlobalUse::WholeOnly);
    }
    if let Some(sa) = &ent.service_accounts {
        if let Some(s) = &sa.selector {
            check_selector(
                c,
                s,
                &path.key("serviceAccounts").key("selector"),
                GlobalUse::Never,
            );
        }
        for (i, n) in sa.names.iter().enumerate() {
            if !is_dns_subdomain(n) {
                c.error(
                    &path.key("serviceAccounts").key("names").index(i),
                    format!("invalid service account name `{n}`"),
                );
            }
        }
    }
    for (field, ports) in [("ports", &ent.ports), ("notPorts", &ent.not_ports)] {
        for (i, port) in ports.iter().enumerate() {
            let p = path.key(field).index(i);
            match port {
                Port::Range(..) => match rule.protocol {
                    Some(proto) if proto.supports_ports() => {}
                    Some(proto) => c.error_hint(
                        &p,
                        format!("port matches need protocol TCP, UDP or SCTP, not {proto}"),
                        "change the rule's protocol or remove the ports",
                    ),
                    None => c.error_hint(
                        &p,
                        "a numeric port needs the rule to set `protocol` (TCP, UDP or SCTP)",
                        "add `protocol: TCP` (or UDP/SCTP) to the rule",
                    ),
                },
                Port::Named(name) => {
                    if let Some(proto) = rule.protocol
                        && !proto.supports_ports()
                    {
                        c.error(
                            &p,
                            format!("port matches need protocol TCP, UDP or SCTP, not {proto}"),
                        );
                    }
                    if let Some(msg) = port_name_problem(name) {
                        c.error(&p, msg);
                    }
                }
            }
        }
    }
}

/// Checks a named port the way Calico and Kubernetes do (IANA service name).
pub fn port_name_problem(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--");
    (!ok).then(|| {
        format!(
            "`{name}` is neither a port number, a range `N:M`, nor a valid port name (1-15 lowercase letters, digits and single `-`, at least one letter)"
        )
    })
}

/// Parses a CIDR or bare address (a bare address is a /32 or /128).
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn check_cidr(c: &mut Checker, net: &str, path: &FieldPath) -> Option<IpNet> {
    match parse_net(net) {
        Some(n) => Some(n),
        None => {
            if net.starts_with('<') {
                c.error_hint(
                    path,
                    format!("`{net}` is a placeholder, not a network"),
                    "replace it with a real address, e.g. 203.0.113.7/32",
                );
            } else {
                c.error(path, format!("`{net}` is not a valid CIDR or IP address"));
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Endpoints, tiers, configuration

fn check_endpoint_ports(c: &mut Checker, ports: &[EndpointPort], path: &FieldPath) {
    for (i, p) in ports.iter().enumerate() {
        let pp = path.index(i);
        if let Some(msg) = port_name_problem(&p.name) {
            c.error(&pp.key("name"), msg);
        }
        if !(1..=65535).contains(&p.port) {
            c.error(
                &pp.key("port"),
                format!("port {} is out of range 1-65535", p.port),
            );
        }
        if !p.protocol.supports_ports() {
            c.error(
                &pp.key("protocol"),
                format!(
                    "a named port needs protocol TCP, UDP or SCTP, not {}",
                    p.protocol
                ),
            );
        }
    }
}

fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_host_endpoint(c: &mut Checker, spec: &HostEndpointSpec, path: &FieldPath) {
    if spec.node.is_empty() {
        c.error(
            &path.key("node"),
            "a HostEndpoint needs `node`: the name of the node it belongs to",
        );
    }
    match &spec.interface_name {
        Some(i) if i != "*" && !is_interface_name(i) => c.error(
            &path.key("interfaceName"),
            format!("invalid interface name `{i}`: use `*` or 1-15 characters of letters, digits, `_`, `.` and `-`"),
        ),
        _ => {}
    }
    if spec.interface_name.is_none() && spec.expected_ips.is_empty() {
        c.error_hint(
            path,
            "a HostEndpoint needs `interfaceName` or `expectedIPs`",
            "set `interfaceName: eth0` (or `*` for all interfaces), or list the host's addresses in `expectedIPs`",
        );
    }
    for (i, ip) in spec.expected_ips.iter().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            c.error(
                &path.key("expectedIPs").index(i),
                format!("`{ip}` is not an IP address"),
            );
        }
    }
    for (i, p) in spec.profiles.iter().enumerate() {
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            c.error(
                &path.key("profiles").index(i),
                format!("invalid profile name `{p}`"),
            );
        }
    }
    check_endpoint_ports(c, &spec.ports, &path.key("ports"));
}

fn check_workload_endpoint(c: &mut Checker, spec: &WorkloadEndpointSpec, path: &FieldPath) {
    if spec.node.is_empty() {
        c.error(&path.key("node"), "a WorkloadEndpoint needs `node`");
    }
    if !is_interface_name(&spec.interface_name) {
        c.error(
            &path.key("interfaceName"),
            format!(
                "invalid interface name `{}`: 1-15 characters of letters, digits, `_`, `.` and `-`",
                spec.interface_name
            ),
        );
    }
    for (i, net) in spec.ip_networks.iter().enumerate() {
        check_cidr(c, net, &path.key("ipNetworks").index(i));
    }
    check_endpoint_ports(c, &spec.ports, &path.key("ports"));
}

/// The fixed order and default action of Calico's built-in tiers.
pub fn builtin_tier(name: &str) -> Option<(f64, TierAction)> {
    match name {
        "default" => Some((1_000_000.0, TierAction::Deny)),
        "kube-admin" => Some((1_000.0, TierAction::Pass)),
        "kube-baseline" => Some((10_000_000.0, TierAction::Pass)),
        _ => None,
    }
}

fn check_tier(c: &mut Checker, name: &str, spec: &TierSpec, path: &FieldPath) {
    if let Some(order) = spec.order
        && !order.is_finite()
    {
        c.error(&path.key("order"), "order must be a finite number");
    }
    if let Some((order, action)) = builtin_tier(name) {
        if spec.order.is_some_and(|o| o != order) {
            c.error(
                &path.key("order"),
                format!("the `{name}` tier's order is fixed at {order}"),
            );
        }
        if spec.default_action.is_some_and(|a| a != action) {
            c.error(
                &path.key("defaultAction"),
                format!("the `{name}` tier's defaultAction is fixed at {action:?}"),
            );
        }
    }
}

fn one_of(c: &mut Checker, value: &Option<String>, allowed: &[&str], path: &FieldPath) {
    if let Some(v) = value
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(v))
    {
        c.error(path, format!("`{v}` is not one of: {}", allowed.join(", ")));
    }
}

/// Parses `N/second|minute|hour|day` with N in 1-9999.
pub fn parse_rate(text: &str) -> Option<(u32, &str)> {
    let (n, unit) = text.split_once('/')?;
    let n: u32 = n.parse().ok()?;
    ((1..=9999).contains(&n) && matches!(unit, "second" | "minute" | "hour" | "day"))
        .then_some((n, unit))
}

fn check_felix(c: &mut Checker, _name: &str, spec: &FelixConfigurationSpec, path: &FieldPath) {
    if let Some(r) = spec.connection_logs_per_endpoint_rate
        && r < 1
    {
        c.error(
            &path.key("connectionLogsPerEndpointRate"),
            format!("connectionLogsPerEndpointRate must be at least 1 (records per endpoint and second), not {r}"),
        );
    }
    one_of(
        c,
        &spec.default_endpoint_to_host_action,
        &["Drop", "Return", "Accept"],
        &path.key("defaultEndpointToHostAction"),
    );
    one_of(
        c,
        &spec.nftables_filter_deny_action,
        &["Drop", "Reject"],
        &path.key("nftablesFilterDenyAction"),
    );
    one_of(
        c,
        &spec.iptables_filter_deny_action,
        &["Drop", "Reject"],
        &path.key("iptablesFilterDenyAction"),
    );
    one_of(
        c,
        &spec.nftables_filter_allow_action,
        &["Accept", "Return"],
        &path.key("nftablesFilterAllowAction"),
    );
    one_of(
        c,
        &spec.nftables_mangle_allow_action,
        &["Accept", "Return"],
        &path.key("nftablesMangleAllowAction"),
    );
    one_of(
        c,
        &spec.iptables_filter_allow_action,
        &["Accept", "Return"],
        &path.key("iptablesFilterAllowAction"),
    );
    one_of(
        c,
        &spec.iptables_mangle_allow_action,
        &["Accept", "Return"],
        &path.key("iptablesMangleAllowAction"),
    );
    one_of(
        c,
        &spec.nftables_mode,
        &["Enabled", "Disabled", "Auto"],
        &path.key("nftablesMode"),
    );
    one_of(
        c,
        &spec.service_loop_prevention,
        &["Drop", "Reject", "Disabled"],
        &path.key("serviceLoopPrevention"),
    );
    if let Some(p) = &spec.log_prefix
        && (p.len() > 64
            || !p
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' '))
    {
        c.error_hint(
            &path.key("logPrefix"),
            format!("invalid logPrefix `{p}`"),
            "use at most 64 printable ASCII characters, without `\"` or `\\`",
        );
    }
    if let Some(r) = &spec.log_action_rate_limit
        && parse_rate(r).is_none()
    {
        c.error_hint(
            &path.key("logActionRateLimit"),
            format!("invalid logActionRateLimit `{r}`"),
            "write N/second, N/minute, N/hour or N/day with N from 1 to 9999",
        );
    }
    if let Some(b) = spec.log_action_rate_limit_burst
        && !(0..=9999).contains(&b)
    {
        c.error(
            &path.key("logActionRateLimitBurst"),
            format!("burst {b} is out of range 0-9999"),
        );
    }
    if let Some(p) = &spec.interface_prefix
        && (p.is_empty()
            || !p
                .split(',')
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric())))
    {
        c.error(
            &path.key("interfacePrefix"),
            format!("invalid interfacePrefix `{p}`"),
        );
    }
    if let Some(d) = &spec.nftables_refresh_interval
        && crate::model::parse_duration(d).is_none()
    {
        c.error_hint(
            &path.key("nftablesRefreshInterval"),
            format!("invalid duration `{d}`"),
            "write a duration such as 90s, 5m or 1h30m",
        );
    }
    for (field, ports) in [
        (
            "failsafeInboundHostPorts",
            &spec.failsafe_inbound_host_ports,
        ),
        (
            "failsafeOutboundHostPorts",
            &spec.failsafe_outbound_host_ports,
        ),
    ] {
        for (i, p) in ports.iter().flatten().enumerate() {
            let pp = path.key(field).index(i);
            if !["TCP", "UDP", "SCTP"]
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&p.protocol))
            {
                c.error(
                    &pp.key("protocol"),
                    format!(
                        "failsafe protocol must be TCP, UDP or SCTP, not `{}`",
                        p.protocol
                    ),
                );
            }
            if !(0..=65535).contains(&p.port) {
                c.error(
                    &pp.key("port"),
                    format!("port {} is out of range 0-65535", p.port),
                );
            }
            if let Some(net) = &p.net {
                check_cidr(c, net, &pp.key("net"));
            }
        }
    }
    for key in spec.unused.keys() {
        c.warn(
            &path.key(key),
            format!("FelixConfiguration field `{key}` is accepted but not used by tortie"),
        );
    }
}

// ---------------------------------------------------------------------------
// Kubernetes NetworkPolicy

fn check_label_selector(c: &mut Checker, sel: &LabelSelector, path: &FieldPath) {
    for (k, v) in &sel.match_labels {
        check_label(c, k, v, &path.key("matchLabels").key(k));
    }
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let p = path.key("matchExpressions").index(i);
        if let Some(msg) = label_key_problem(&req.key) {
            c.error(&p.key("key"), msg);
        }
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if req.values.is_empty() {
                    c.error(
                        &p.key("values"),
                        format!("operator {} needs at least one value", req.operator),
                    );
                }
                for (j, v) in req.values.iter().enumerate() {
                    if let Some(msg) = label_value_problem(v) {
                        c.error(&p.key("values").index(j), msg);
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !req.values.is_empty() {
                    c.error(
                        &p.key("values"),
                        format!("operator {} takes no values", req.operator),
                    );
                }
            }
            other => {
                let hint = ["In", "NotIn", "Exists", "DoesNotExist"]
                    .iter()
                    .find(|x| x.eq_ignore_ascii_case(other))
                    .map(|x| format!("did you mean `{x}`? operators are case-sensitive"))
                    .unwrap_or_else(|| "use In, NotIn, Exists or DoesNotExist".into());
                c.error_hint(
                    &p.key("operator"),
                    format!("unknown operator `{other}`"),
                    hint,
                );
            }
        }
    }
}

fn check_peer(c: &mut Checker, peer: &NetworkPolicyPeer, path: &FieldPath) {
    if let Some(s) = &peer.pod_selector {
        check_label_selector(c, s, &path.key("podSelector"));
    }
    if let Some(s) = &peer.namespace_selector {
        check_label_selector(c, s, &path.key("namespaceSelector"));
    }
    match &peer.ip_block {
        Some(block) => {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                c.error_hint(
                    &path.key("ipBlock"),
                    "`ipBlock` cannot be combined with `podSelector` or `namespaceSelector` in one peer",
                    "make them two peers: start the ipBlock with its own `- `",
                );
            }
            let bp = path.key("ipBlock");
            if let Some(cidr) = check_k8s_cidr(c, &block.cidr, &bp.key("cidr")) {
                for (i, ex) in block.except.iter().enumerate() {
                    let ep = bp.key("except").index(i);
                    if let Some(e) = check_k8s_cidr(c, ex, &ep)
                        && !(cidr.contains(&e) && e.prefix_len() > cidr.prefix_len())
                    {
                        c.error(
                            &ep,
                            format!(
                                "except `{ex}` must be a strict subset of cidr `{}`",
                                block.cidr
                            ),
                        );
                    }
                }
            }
        }
        None => {
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                c.error_hint(
                    path,
                    "a peer needs `podSelector`, `namespaceSelector` or `ipBlock`",
                    "use `podSelector: {}` to mean every pod in the policy's namespace",
                );
            }
        }
    }
}

fn check_k8s_cidr(c: &mut Checker, text: &str, path: &FieldPath) -> Option<IpNet> {
    match text.parse::<IpNet>() {
        Ok(n) => Some(n),
        Err(_) => {
            c.error_hint(
                path,
                format!("`{text}` is not a CIDR"),
                "write an address with a prefix length, e.g. 198.18.0.0/24",
            );
            None
        }
    }
}

fn check_k8s_ports(c: &mut Checker, ports: &[NetworkPolicyPort], path: &FieldPath) {
    for (i, p) in ports.iter().enumerate() {
        let pp = path.index(i);
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            let hint = ["TCP", "UDP", "SCTP"]
                .iter()
                .find(|x| x.eq_ignore_ascii_case(proto))
                .map(|x| format!("did you mean `{x}`?"))
                .unwrap_or_else(|| "NetworkPolicy supports TCP, UDP and SCTP".into());
            c.error_hint(
                &pp.key("protocol"),
                format!("unsupported protocol `{proto}`"),
                hint,
            );
        }
        match &p.port {
            Some(IntOrString::Int(n)) => {
                if !(1..=65535).contains(n) {
                    c.error(&pp.key("port"), format!("port {n} is out of range 1-65535"));
                }
                if let Some(end) = p.end_port
                    && (end < *n || end > 65535)
                {
                    c.error(
                        &pp.key("endPort"),
                        format!("endPort {end} must be between port {n} and 65535"),
                    );
                }
            }
            Some(IntOrString::Str(name)) => {
                if let Some(msg) = port_name_problem(name) {
                    c.error(&pp.key("port"), msg);
                }
                if p.end_port.is_some() {
                    c.error(
                        &pp.key("endPort"),
                        "endPort needs a numeric port, not a named one",
                    );
                }
            }
            None => {
                if p.end_port.is_some() {
                    c.error(&pp.key("endPort"), "endPort needs `port` to be set");
                }
            }
        }
    }
}

/// A staged Delete removes the enforced policy of the same name: rules
/// given with it have no effect.
fn check_staged_delete(c: &mut Checker, action: StagedAction, rules: bool, path: &FieldPath) {
    if action == StagedAction::Delete && rules {
        c.warn(
            &path.key("stagedAction"),
            "stagedAction `Delete` stages the removal of the enforced policy of the same name: the rules given here are ignored",
        );
    }
}

fn check_k8s_policy(c: &mut Checker, spec: &K8sNetworkPolicySpec, path: &FieldPath) {
    check_label_selector(c, &spec.pod_selector, &path.key("podSelector"));
    let mut seen = Vec::new();
    for (i, t) in spec.policy_types.iter().enumerate() {
        if seen.contains(t) {
            c.error(
                &path.key("policyTypes").index(i),
                format!("policy type `{t:?}` is listed twice"),
            );
        }
        seen.push(*t);
    }
    for (i, rule) in spec.ingress.iter().enumerate() {
        let rp = path.key("ingress").index(i);
        for (j, peer) in rule.from.iter().enumerate() {
            check_peer(c, peer, &rp.key("from").index(j));
        }
        check_k8s_ports(c, &rule.ports, &rp.key("ports"));
    }
    for (i, rule) in spec.egress.iter().enumerate() {
        let rp = path.key("egress").index(i);
        for (j, peer) in rule.to.iter().enumerate() {
            check_peer(c, peer, &rp.key("to").index(j));
        }
        check_k8s_ports(c, &rule.ports, &rp.key("ports"));
    }
    if !spec.egress.is_empty() && spec.policy_types.is_empty() && spec.ingress.is_empty() {
        c.warn(
            &path.key("egress"),
            "this policy has only egress rules and no `policyTypes`: like the API \
             server, tortie takes policyTypes [Ingress, Egress], so it also denies all \
             ingress to the pods it selects; write `policyTypes: [Egress]` if you meant \
             only egress",
        );
    }
    if !spec.egress.is_empty()
        && !spec.policy_types.is_empty()
        && !spec.policy_types.contains(&PolicyType::Egress)
    {
        c.warn(
            &path.key("egress"),
            "egress rules are ignored: `policyTypes` does not include Egress",
        );
    }
}

mod cnp;
mod services;
pub use services::slice_members;

#[cfg(test)]
mod tests;
