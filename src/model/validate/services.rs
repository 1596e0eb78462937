//! Validation of what `services` rule matches rest on: the `services` field
//! of a rule side (Calico's CRD rules on EntityRule and Rule, and the
//! policy-level rules of `validator.go`), and EndpointSlice documents (the
//! Kubernetes API's rules for the fields tortie reads).

use std::net::IpAddr;

use super::{Checker, Dir, is_dns_label, is_dns_subdomain};
use crate::model::types::*;
use crate::model::yaml::FieldPath;

/// `services` on one side of a rule (`side` is "source" or "destination").
pub(super) fn check_rule_services(
    c: &mut Checker,
    ent: &EntityRule,
    sp: &FieldPath,
    dir: Dir,
    side: &str,
    global: bool,
) {
    let Some(svc) = &ent.services else {
        return;
    };
    let svp = sp.key("services");
    let allowed = matches!(
        (dir, side),
        (Dir::Egress, "destination") | (Dir::Ingress, "source")
    );
    if !allowed {
        c.error_hint(
            &svp,
            "`services` is only allowed in an egress rule's destination or an ingress rule's source",
            "Calico matches a Service as the destination of egress or the source of ingress only",
        );
    }
    if svc.name.is_empty() {
        c.error(&svp.key("name"), "`services` needs a `name`");
    } else if !is_dns_subdomain(&svc.name) {
        c.error(
            &svp.key("name"),
            format!(
                "`{}` is not a valid Service name (lower-case DNS subdomain)",
                svc.name
            ),
        );
    }
    match svc.namespace.as_deref() {
        None | Some("") if global => c.error_hint(
            &svp.key("namespace"),
            "`services` in a GlobalNetworkPolicy needs a `namespace`",
            "add `namespace: <the Service's namespace>`",
        ),
        Some(ns) if !ns.is_empty() && !is_dns_label(ns) => c.error(
            &svp.key("namespace"),
            format!("`{ns}` is not a valid namespace name"),
        ),
        _ => {}
    }
    let conflicts: Vec<&str> = [
        (
            "selector",
            ent.selector.as_deref().is_some_and(|s| !s.is_empty()),
        ),
        (
            "notSelector",
            ent.not_selector.as_deref().is_some_and(|s| !s.is_empty()),
        ),
        (
            "namespaceSelector",
            ent.namespace_selector
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
        ),
        ("serviceAccounts", ent.service_accounts.is_some()),
        ("nets", !ent.nets.is_empty()),
        ("notNets", !ent.not_nets.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !conflicts.is_empty() {
        c.error_hint(
            &svp,
            format!(
                "`services` cannot be combined with {} on the same side",
                conflicts.join(", ")
            ),
            "a Service match stands for its endpoints: use either the Service or the other matches",
        );
    }
    if side == "destination" && (!ent.ports.is_empty() || !ent.not_ports.is_empty()) {
        let field = if ent.ports.is_empty() {
            "notPorts"
        } else {
            "ports"
        };
        c.error_hint(
            &sp.key(field),
            "destination `ports` and `notPorts` cannot be combined with `services`",
            "the Service's EndpointSlice ports are the ports matched; remove `ports`",
        );
    }
}

/// An EndpointSlice: its service label, address type, addresses and ports.
pub(super) fn check_endpoint_slice(c: &mut Checker, o: &crate::model::Object<EndpointSliceSpec>) {
    let root = FieldPath::root();
    let label = root.key("metadata").key("labels").key(SERVICE_NAME_LABEL);
    match o.metadata.labels.get(SERVICE_NAME_LABEL) {
        None => c.warn(
            &label,
            format!(
                "this EndpointSlice has no `{SERVICE_NAME_LABEL}` label: it belongs to no Service and no `services` rule matches it"
            ),
        ),
        Some(s) if !is_dns_subdomain(s) => {
            c.error(&label, format!("`{s}` is not a valid Service name"))
        }
        Some(_) => {}
    }
    let family = match o.spec.address_type.as_deref() {
        Some("IPv4") => Some(false),
        Some("IPv6") => Some(true),
        Some("FQDN") => {
            c.warn(
                &root.key("addressType"),
                "FQDN endpoints are not IP addresses: `services` rules ignore this slice, as Calico does",
            );
            None
        }
        Some(other) => {
            c.error_hint(
                &root.key("addressType"),
                format!("unknown addressType `{other}`"),
                "use IPv4, IPv6 or FQDN",
            );
            None
        }
        None => {
            c.error_hint(
                &root.key("addressType"),
                "an EndpointSlice needs an `addressType`",
                "add `addressType: IPv4` (or IPv6)",
            );
            None
        }
    };
    if let Some(v6) = family {
        for (i, ep) in o.spec.endpoints.iter().enumerate() {
            for (j, a) in ep.addresses.iter().enumerate() {
                let p = root.key("endpoints").index(i).key("addresses").index(j);
                match a.parse::<IpAddr>() {
                    Ok(ip) if ip.is_ipv6() == v6 => {}
                    Ok(_) => c.error(
                        &p,
                        format!(
                            "`{a}` is not an {} address, but addressType says so",
                            if v6 { "IPv6" } else { "IPv4" }
                        ),
                    ),
                    Err(_) => c.error(&p, format!("`{a}` is not an IP address")),
                }
            }
        }
    }
    for (i, port) in o.spec.ports.iter().flatten().enumerate() {
        let p = root.key("ports").index(i);
        if let Some(n) = port.port
            && !(1..=65535).contains(&n)
        {
            c.error(&p.key("port"), format!("port {n} is not in 1-65535"));
        }
        if let Some(proto) = port.protocol.as_deref()
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            c.error_hint(
                &p.key("protocol"),
                format!("unknown protocol `{proto}`"),
                "use TCP, UDP or SCTP (upper case)",
            );
        }
    }
}

/// The slice's members as `services` sets hold them: every IP address of
/// every endpoint (readiness is not read, as in Calico's service index),
/// and `(protocol number, port)` per port with a number (TCP when the
/// protocol is not given). An FQDN slice has no addresses.
pub fn slice_members(spec: &EndpointSliceSpec) -> (Vec<IpAddr>, Vec<(u8, u16)>) {
    if spec.address_type.as_deref() == Some("FQDN") {
        return (Vec::new(), Vec::new());
    }
    let mut addrs: Vec<IpAddr> = spec
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut ports: Vec<(u8, u16)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|n| *n > 0)?;
            let proto = match p.protocol.as_deref() {
                Some("UDP") => 17,
                Some("SCTP") => 132,
                _ => 6,
            };
            Some((proto, port))
        })
        .collect();
    ports.sort();
    ports.dedup();
    (addrs, ports)
}
