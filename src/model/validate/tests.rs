//! Table of invalid resources, each beside a valid counterpart that differs
//! only in the offending detail.

use std::path::Path;

use crate::model::load::load_str;

fn doc(kind: &str, body: &str) -> String {
    let (api, kind) = match kind {
        "k8s" => ("networking.k8s.io/v1", "NetworkPolicy"),
        "Namespace" | "Pod" => ("v1", kind),
        "EndpointSlice" => ("discovery.k8s.io/v1", kind),
        k => ("projectcalico.org/v3", k),
    };
    let meta = if body.starts_with("metadata:") {
        ""
    } else {
        "metadata: {name: x}\n"
    };
    format!("apiVersion: {api}\nkind: {kind}\n{meta}{body}\n")
}

fn rule(r: &str) -> String {
    format!("spec: {{selector: all(), ingress: [{r}]}}")
}

fn slice(family: &str, endpoints: &str, ports: &str) -> String {
    format!(
        "metadata: {{name: web-1, namespace: dev, labels: {{kubernetes.io/service-name: web}}}}\naddressType: {family}\nendpoints: {endpoints}\nports: {ports}"
    )
}

fn erule(r: &str) -> String {
    format!("spec: {{selector: all(), types: [Egress], egress: [{r}]}}")
}

/// (kind, valid body, invalid body, message fragment)
fn cases() -> Vec<(&'static str, String, String, &'static str)> {
    let s = |x: &str| x.to_string();
    vec![
        // --- names and metadata
        (
            "GlobalNetworkPolicy",
            s("metadata: {name: allow-dns}"),
            s("metadata: {name: Allow_DNS}"),
            "invalid GlobalNetworkPolicy name",
        ),
        (
            "GlobalNetworkPolicy",
            s("metadata: {name: sec.allow}"),
            s("metadata: {name: a.b.c}"),
            "invalid GlobalNetworkPolicy name",
        ),
        (
            "GlobalNetworkPolicy",
            s("metadata: {name: x}"),
            s("metadata: {}"),
            "needs `metadata.name`",
        ),
        (
            "GlobalNetworkPolicy",
            s("metadata: {name: x}"),
            s("metadata: {name: x, namespace: dev}"),
            "is not namespaced",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: web, namespace: dev}"),
            s("metadata: {name: web, namespace: Dev}"),
            "invalid namespace",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: web}"),
            s("metadata: {name: -web}"),
            "invalid NetworkPolicy name",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: knp.default.web}"),
            s("metadata: {name: knp.default.}"),
            "invalid NetworkPolicy name",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: web, labels: {app: web}}"),
            s("metadata: {name: web, labels: {app: 'web site'}}"),
            "label value `web site` is invalid",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: web, labels: {example.com/app: web}}"),
            s("metadata: {name: web, labels: {Example_Com/app: web}}"),
            "invalid prefix",
        ),
        (
            "NetworkPolicy",
            s("metadata: {name: web, labels: {a: b}}"),
            s("metadata: {name: web, labels: {'-a': b}}"),
            "label key `-a` is invalid",
        ),
        (
            "Tier",
            s("metadata: {name: security}"),
            s("metadata: {name: sec.urity}"),
            "invalid Tier name",
        ),
        (
            "Tier",
            s("metadata: {name: security}"),
            s("metadata: {name: Security}"),
            "invalid Tier name",
        ),
        (
            "Namespace",
            s("metadata: {name: dev}"),
            s("metadata: {name: dev.team}"),
            "invalid Namespace name",
        ),
        (
            "HostEndpoint",
            s("metadata: {name: n1-eth0}\nspec: {node: n1, interfaceName: eth0}"),
            s("metadata: {name: N1_eth0}\nspec: {node: n1, interfaceName: eth0}"),
            "invalid HostEndpoint name",
        ),
        (
            "GlobalNetworkSet",
            s("metadata: {name: x, labels: {role: db}}"),
            s("metadata: {name: x, labels: {projectcalico.org/namespace: db}}"),
            "is reserved",
        ),
        (
            "NetworkSet",
            s("metadata: {name: x, labels: {role: db}}"),
            s("metadata: {name: x, labels: {projectcalico.org/namespace: db}}"),
            "is reserved",
        ),
        // --- policy spec
        (
            "GlobalNetworkPolicy",
            s("spec: {tier: security}"),
            s("spec: {tier: Security}"),
            "invalid tier name",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {order: 10}"),
            s("spec: {order: .inf}"),
            "finite",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {selector: role == 'db'}"),
            s("spec: {selector: role = 'db'}"),
            "`=` is not an operator",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {selector: role == 'db'}"),
            s("spec: {selector: role == 'db' &&}"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {selector: global()}"),
            "`global()` is not allowed here",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {selector: all(), serviceAccountSelector: role == 'x'}"),
            s("spec: {selector: all(), serviceAccountSelector: global()}"),
            "`global()` is not allowed here",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {serviceAccountSelector: role == 'x'}"),
            s("spec: {serviceAccountSelector: role == }"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {namespaceSelector: team == 'a'}"),
            s("spec: {namespaceSelector: team ==}"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            format!(
                "spec: {{selector: \"{}\"}}",
                "a == 'b' || ".repeat(80) + "has(c)"
            ),
            format!(
                "spec: {{selector: \"{}\"}}",
                "a == 'b' || ".repeat(100) + "has(c)"
            ),
            "longer than 1024",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {types: [Ingress, Egress]}"),
            s("spec: {types: [Ingress, Ingress]}"),
            "listed twice",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {types: [Ingress]}"),
            s("spec: {types: [ingress]}"),
            "unknown value `ingress`",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {performanceHints: [AssumeNeededOnEveryNode]}"),
            s("spec: {performanceHints: [Fast]}"),
            "unknown performance hint",
        ),
        (
            "NetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {selector: all(), namespaceSelector: all()}"),
            "only valid in a GlobalNetworkPolicy",
        ),
        (
            "NetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {selector: all(), doNotTrack: true}"),
            "only valid in a GlobalNetworkPolicy",
        ),
        (
            "NetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {selector: all(), preDNAT: true}"),
            "only valid in a GlobalNetworkPolicy",
        ),
        (
            "NetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {selector: all(), applyOnForward: true}"),
            "only valid in a GlobalNetworkPolicy",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {preDNAT: true, applyOnForward: true, types: [Ingress]}"),
            s("spec: {preDNAT: true, types: [Ingress]}"),
            "needs `applyOnForward: true`",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {doNotTrack: true, applyOnForward: true}"),
            s("spec: {doNotTrack: true}"),
            "needs `applyOnForward: true`",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {doNotTrack: true, applyOnForward: true}"),
            s("spec: {doNotTrack: true, preDNAT: true, applyOnForward: true}"),
            "both preDNAT and doNotTrack",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {preDNAT: true, applyOnForward: true, ingress: [{action: Deny}]}"),
            s("spec: {preDNAT: true, applyOnForward: true, egress: [{action: Deny}]}"),
            "may only have ingress rules",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {preDNAT: true, applyOnForward: true, types: [Ingress]}"),
            s("spec: {preDNAT: true, applyOnForward: true, types: [Egress]}"),
            "may only be of type Ingress",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {selector: all()}"),
            s("spec: {Selector: all()}"),
            "unknown field `Selector`",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {order: 10}"),
            s("spec: {order: ten}"),
            "expected",
        ),
        (
            "GlobalNetworkPolicy",
            s("spec: {ingress: []}"),
            s("spec: {ingress: {action: Allow}}"),
            "expected a list, found a map",
        ),
        // --- rules
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow}"),
            rule("{action: allow}"),
            "unknown value `allow`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow}"),
            rule("{action: Accept}"),
            "unknown value `Accept`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow}"),
            rule("{}"),
            "missing required field `action`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, ipVersion: 6}"),
            rule("{action: Allow, ipVersion: 5}"),
            "ipVersion must be 4 or 6",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP}"),
            rule("{action: Allow, protocol: tcp}"),
            "did you mean `TCP`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: 47}"),
            rule("{action: Allow, protocol: 256}"),
            "out of range 1-255",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: 47}"),
            rule("{action: Allow, protocol: 0}"),
            "out of range 1-255",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: UDPLite}"),
            rule("{action: Allow, protocol: GRE}"),
            "unknown protocol `GRE`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, notProtocol: UDP}"),
            rule("{action: Allow, notProtocol: udp}"),
            "did you mean `UDP`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 8}}"),
            rule("{action: Allow, icmp: {type: 8}}"),
            "`icmp` needs `protocol: ICMP`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 8}}"),
            rule("{action: Allow, protocol: TCP, icmp: {type: 8}}"),
            "`icmp` needs `protocol: ICMP`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, notICMP: {type: 8}}"),
            rule("{action: Allow, notICMP: {type: 8}}"),
            "`notICMP` needs",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 254}}"),
            rule("{action: Allow, protocol: ICMP, icmp: {type: 255}}"),
            "ICMP type 255 is out of range",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 3, code: 255}}"),
            rule("{action: Allow, protocol: ICMP, icmp: {type: 3, code: 256}}"),
            "ICMP code 256 is out of range",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 3, code: 1}}"),
            rule("{action: Allow, protocol: ICMP, icmp: {code: 1}}"),
            "needs an ICMP type",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, ipVersion: 4}"),
            rule("{action: Allow, protocol: ICMP, ipVersion: 6}"),
            "IPv4 only",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMPv6, ipVersion: 6}"),
            rule("{action: Allow, protocol: ICMPv6, ipVersion: 4}"),
            "IPv6 only",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: 1, icmp: {type: 0}}"),
            rule("{action: Allow, protocol: 2, icmp: {type: 0}}"),
            "`icmp` needs",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: ICMP, icmp: {type: 8}}"),
            rule("{action: Allow, protocol: ICMP, icmp: {type: 8, name: echo}}"),
            "unknown field `name`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: [80]}}"),
            rule("{action: Allow, destination: {ports: [80]}}"),
            "numeric port needs the rule to set `protocol`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: UDP, destination: {ports: [53]}}"),
            rule("{action: Allow, protocol: ICMP, destination: {ports: [53]}}"),
            "need protocol TCP, UDP or SCTP",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: SCTP, destination: {ports: [9000]}}"),
            rule("{action: Allow, protocol: 47, destination: {ports: [9000]}}"),
            "need protocol TCP, UDP or SCTP",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: [65535]}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: [65536]}}"),
            "out of range 1-65535",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: [1]}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: [0]}}"),
            "out of range 1-65535",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: ['30000:32767']}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: ['32767:30000']}}"),
            "reversed",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: ['8000:9000']}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: ['8000-9000']}}"),
            "Calico writes ranges as `8000:9000`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: ['1:2']}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: ['1:70000']}}"),
            "out of range",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, destination: {ports: [http]}}"),
            rule("{action: Allow, destination: {ports: [HTTP]}}"),
            "valid port name",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, destination: {ports: [web-8080]}}"),
            rule("{action: Allow, destination: {ports: [web--8080]}}"),
            "valid port name",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, destination: {ports: [serve-80-tcp]}}"),
            rule("{action: Allow, destination: {ports: [a-very-long-port-name]}}"),
            "valid port name",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {notPorts: [22]}}"),
            rule("{action: Allow, destination: {notPorts: [22]}}"),
            "numeric port needs",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, source: {ports: [1024]}}"),
            rule("{action: Allow, protocol: TCP, source: {ports: [true]}}"),
            "expected a port",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP, destination: {ports: [80]}}"),
            rule("{action: Allow, protocol: TCP, destination: {ports: 80}}"),
            "expected a list",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {nets: [198.18.0.0/16]}}"),
            rule("{action: Allow, source: {nets: [198.18.0.0/33]}}"),
            "not a valid CIDR",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {nets: [198.18.0.1]}}"),
            rule("{action: Allow, source: {nets: [198.18.0.256]}}"),
            "not a valid CIDR",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {nets: ['fd74:6f72::/32']}}"),
            rule("{action: Allow, source: {nets: ['fd74:6f72::/129']}}"),
            "not a valid CIDR",
        ),
        (
            "GlobalNetworkPolicy",
            rule(
                "{action: Allow, source: {nets: [198.18.0.0/16]}, destination: {nets: [198.19.0.0/16]}}",
            ),
            rule(
                "{action: Allow, source: {nets: [198.18.0.0/16]}, destination: {nets: ['fd74:6f72::/32']}}",
            ),
            "mixes IPv4 and IPv6",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {nets: [198.18.0.0/16, 198.19.0.0/16]}}"),
            rule("{action: Allow, source: {nets: [198.18.0.0/16, 'fd74:6f72::/32']}}"),
            "mixes IPv4 and IPv6",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, ipVersion: 4, source: {nets: [198.18.0.0/16]}}"),
            rule("{action: Allow, ipVersion: 6, source: {nets: [198.18.0.0/16]}}"),
            "networks are IPv4 but ipVersion is 6",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {notNets: [198.18.0.0/15]}}"),
            rule("{action: Allow, source: {notNets: [0.0.0.0/0]}}"),
            "would match nothing",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {notNets: ['fd74:6f72::/32']}}"),
            rule("{action: Allow, source: {notNets: ['::/0']}}"),
            "would match nothing",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {nets: [198.18.0.0/16]}}"),
            rule("{action: Allow, source: {net: 198.18.0.0/16}}"),
            "unknown field `net`",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {selector: role == 'db'}}"),
            rule("{action: Allow, source: {selector: role == db}}"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {notSelector: role == 'db'}}"),
            rule("{action: Allow, source: {notSelector: global()}}"),
            "`global()` is not allowed here",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {namespaceSelector: global()}}"),
            rule("{action: Allow, source: {namespaceSelector: global() && a == 'b'}}"),
            "must be the whole namespaceSelector",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {namespaceSelector: team == 'a'}}"),
            rule("{action: Allow, source: {namespaceSelector: team in 'a'}}"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {serviceAccounts: {names: [api]}}}"),
            rule("{action: Allow, source: {serviceAccounts: {names: [API]}}}"),
            "invalid service account name",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {serviceAccounts: {selector: role == 'x'}}}"),
            rule("{action: Allow, source: {serviceAccounts: {selector: role ==}}}"),
            "invalid selector",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, source: {services: {name: web, namespace: dev}}}"),
            rule(
                "{action: Allow, source: {services: {name: web, namespace: dev}, selector: all()}}",
            ),
            "cannot be combined with selector",
        ),
        (
            "GlobalNetworkPolicy",
            rule(
                "{action: Allow, source: {services: {name: web, namespace: dev}, ports: [80]}, protocol: TCP}",
            ),
            rule("{action: Allow, source: {services: {name: web}}}"),
            "needs a `namespace`",
        ),
        (
            "NetworkPolicy",
            erule("{action: Allow, destination: {services: {name: web}}}"),
            erule("{action: Allow, destination: {services: {name: Web}}}"),
            "not a valid Service name",
        ),
        (
            "NetworkPolicy",
            erule("{action: Allow, protocol: TCP, destination: {services: {name: web}}}"),
            erule(
                "{action: Allow, protocol: TCP, destination: {services: {name: web}, ports: [80]}}",
            ),
            "destination `ports` and `notPorts` cannot be combined",
        ),
        (
            "NetworkPolicy",
            erule("{action: Allow, destination: {services: {name: web}}}"),
            erule("{action: Allow, destination: {services: {name: web}, nets: [198.18.0.0/24]}}"),
            "cannot be combined with nets",
        ),
        (
            "NetworkPolicy",
            rule("{action: Allow, source: {services: {name: web}}}"),
            rule("{action: Allow, destination: {services: {name: web}}}"),
            "only allowed in an egress rule's destination",
        ),
        (
            "EndpointSlice",
            slice(
                "IPv4",
                "[{addresses: [198.18.0.5]}]",
                "[{port: 80, protocol: TCP}]",
            ),
            slice("IPv4", "[{addresses: [fd74:6f72::5]}]", "[{port: 80}]"),
            "is not an IPv4 address",
        ),
        (
            "EndpointSlice",
            slice("IPv6", "[{addresses: ['fd74:6f72::5']}]", "[{port: 80}]"),
            slice("IPv6", "[{addresses: [web-0]}]", "[{port: 80}]"),
            "is not an IP address",
        ),
        (
            "EndpointSlice",
            slice("IPv4", "[]", "[{name: http, port: 8080, protocol: UDP}]"),
            slice("IPv4", "[]", "[{name: http, port: 8080, protocol: udp}]"),
            "unknown protocol `udp`",
        ),
        (
            "EndpointSlice",
            slice("IPv4", "[]", "[{port: 65535}]"),
            slice("IPv4", "[]", "[{port: 70000}]"),
            "not in 1-65535",
        ),
        (
            "EndpointSlice",
            slice("IPv4", "[]", "null"),
            slice("IPv5", "[]", "null"),
            "unknown addressType",
        ),
        (
            "GlobalNetworkPolicy",
            erule("{action: Allow}"),
            erule("{action: Allow, source: {services: {name: web, namespace: dev}}}"),
            "only allowed in an egress rule's destination",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow}"),
            rule("{action: Deny, http: {methods: [GET]}}"),
            "only allowed on Allow rules",
        ),
        (
            "GlobalNetworkPolicy",
            erule("{action: Allow}"),
            erule("{action: Allow, http: {methods: [GET]}}"),
            "not allowed in egress rules",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, protocol: TCP}"),
            rule("{action: Allow, protocol: UDP, http: {methods: [GET]}}"),
            "needs protocol TCP",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow}"),
            rule("{action: Allow, http: {paths: [{exact: /}]}}"),
            "not enforced by tortie",
        ),
        (
            "GlobalNetworkPolicy",
            rule("{action: Allow, metadata: {annotations: {a: b}}}"),
            rule("{action: Allow, metadata: {labels: {a: b}}}"),
            "unknown field `labels`",
        ),
        // --- endpoints and sets
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: eth0}"),
            s("spec: {interfaceName: eth0}"),
            "needs `node`",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: eth0}"),
            s("spec: {node: n1}"),
            "needs `interfaceName` or `expectedIPs`",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: '*'}"),
            s("spec: {node: n1, interfaceName: 'eth0/1'}"),
            "invalid interface name",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: eth0}"),
            s("spec: {node: n1, interfaceName: averyverylongname0}"),
            "invalid interface name",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, expectedIPs: [198.18.0.1]}"),
            s("spec: {node: n1, expectedIPs: [198.18.0.0/24]}"),
            "not an IP address",
        ),
        (
            "HostEndpoint",
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, protocol: TCP, port: 22}]}",
            ),
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, protocol: TCP, port: 0}]}",
            ),
            "out of range 1-65535",
        ),
        (
            "HostEndpoint",
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, protocol: TCP, port: 22}]}",
            ),
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: SSH, protocol: TCP, port: 22}]}",
            ),
            "valid port name",
        ),
        (
            "HostEndpoint",
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, protocol: TCP, port: 22}]}",
            ),
            s(
                "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, protocol: ICMP, port: 22}]}",
            ),
            "needs protocol TCP, UDP or SCTP",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: eth0, profiles: [p1]}"),
            s("spec: {node: n1, interfaceName: eth0, profiles: ['p 1']}"),
            "invalid profile name",
        ),
        (
            "HostEndpoint",
            s("spec: {node: n1, interfaceName: eth0}"),
            s("spec: {node: n1, interface: eth0}"),
            "unknown field `interface`",
        ),
        (
            "GlobalNetworkSet",
            s("spec: {nets: [198.18.0.0/24]}"),
            s("spec: {nets: [198.18.0.0/24, bogus]}"),
            "not a valid CIDR",
        ),
        (
            "NetworkSet",
            s("spec: {nets: ['fd74:6f72::1']}"),
            s("spec: {nets: ['fd74:6f72::g']}"),
            "not a valid CIDR",
        ),
        (
            "WorkloadEndpoint",
            s("spec: {node: n1, interfaceName: cali0123456789a, ipNetworks: [198.18.0.5/32]}"),
            s("spec: {node: n1, interfaceName: cali0123456789a, ipNetworks: [198.18.0.500/32]}"),
            "not a valid CIDR",
        ),
        (
            "WorkloadEndpoint",
            s("spec: {node: n1, interfaceName: cali0123456789a}"),
            s("spec: {node: n1}"),
            "invalid interface name",
        ),
        (
            "Profile",
            s("spec: {labelsToApply: {team: a}}"),
            s("spec: {labelsToApply: {team: 'a b'}}"),
            "is invalid",
        ),
        (
            "Profile",
            s("spec: {ingress: [{action: Allow}]}"),
            s("spec: {ingress: [{action: Allow, ipVersion: 7}]}"),
            "ipVersion must be 4 or 6",
        ),
        // --- tiers and configuration
        (
            "Tier",
            s("metadata: {name: default}\nspec: {order: 1000000}"),
            s("metadata: {name: default}\nspec: {order: 5}"),
            "order is fixed",
        ),
        (
            "Tier",
            s("metadata: {name: kube-admin}\nspec: {defaultAction: Pass}"),
            s("metadata: {name: kube-admin}\nspec: {defaultAction: Deny}"),
            "defaultAction is fixed",
        ),
        (
            "Tier",
            s("spec: {defaultAction: Pass}"),
            s("spec: {defaultAction: Allow}"),
            "unknown value `Allow`",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {defaultEndpointToHostAction: Accept}"),
            s("metadata: {name: default}\nspec: {defaultEndpointToHostAction: Allow}"),
            "is not one of",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {nftablesFilterDenyAction: Reject}"),
            s("metadata: {name: default}\nspec: {nftablesFilterDenyAction: Block}"),
            "is not one of",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {logActionRateLimit: 10/second}"),
            s("metadata: {name: default}\nspec: {logActionRateLimit: 10/fortnight}"),
            "invalid logActionRateLimit",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {logActionRateLimit: 9999/minute}"),
            s("metadata: {name: default}\nspec: {logActionRateLimit: 10000/minute}"),
            "invalid logActionRateLimit",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {logPrefix: 'calico-packet %t %n'}"),
            s("metadata: {name: default}\nspec: {logPrefix: 'bad \"prefix'}"),
            "invalid logPrefix",
        ),
        (
            "FelixConfiguration",
            s(
                "metadata: {name: default}\nspec: {failsafeInboundHostPorts: [{protocol: TCP, port: 22}]}",
            ),
            s(
                "metadata: {name: default}\nspec: {failsafeInboundHostPorts: [{protocol: ICMP, port: 22}]}",
            ),
            "failsafe protocol",
        ),
        (
            "FelixConfiguration",
            s(
                "metadata: {name: default}\nspec: {failsafeOutboundHostPorts: [{protocol: UDP, port: 53}]}",
            ),
            s(
                "metadata: {name: default}\nspec: {failsafeOutboundHostPorts: [{protocol: UDP, port: 70000}]}",
            ),
            "out of range 0-65535",
        ),
        (
            "FelixConfiguration",
            s(
                "metadata: {name: default}\nspec: {failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 198.18.0.0/16}]}",
            ),
            s(
                "metadata: {name: default}\nspec: {failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 198.18.0.0/99}]}",
            ),
            "not a valid CIDR",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {nftablesRefreshInterval: 90s}"),
            s("metadata: {name: default}\nspec: {nftablesRefreshInterval: 90x}"),
            "invalid duration",
        ),
        (
            "FelixConfiguration",
            s("metadata: {name: default}\nspec: {interfacePrefix: cali}"),
            s("metadata: {name: default}\nspec: {interfacePrefix: 'cali-'}"),
            "invalid interfacePrefix",
        ),
        // --- Kubernetes NetworkPolicy
        (
            "k8s",
            s("spec: {podSelector: {matchLabels: {app: web}}}"),
            s("spec: {podSelector: {app: web}}"),
            "unknown field `app`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}}"),
            s("spec: {podSelector: {matchExpressions: [{key: app, operator: In}]}}"),
            "needs at least one value",
        ),
        (
            "k8s",
            s("spec: {podSelector: {matchExpressions: [{key: app, operator: Exists}]}}"),
            s(
                "spec: {podSelector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}}",
            ),
            "takes no values",
        ),
        (
            "k8s",
            s(
                "spec: {podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [a]}]}}",
            ),
            s(
                "spec: {podSelector: {matchExpressions: [{key: app, operator: notin, values: [a]}]}}",
            ),
            "unknown operator",
        ),
        (
            "k8s",
            s("spec: {podSelector: {matchLabels: {app: web}}}"),
            s("spec: {podSelector: {matchLabels: {app: 'web!'}}}"),
            "label value",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, policyTypes: [Ingress, Egress]}"),
            s("spec: {podSelector: {}, policyTypes: [Egress, Egress]}"),
            "listed twice",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, policyTypes: [Ingress]}"),
            s("spec: {podSelector: {}, types: [Ingress]}"),
            "unknown field `types`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"),
            s("spec: {podSelector: {}, ingress: [{from: [{}]}]}"),
            "a peer needs",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"),
            s("spec: {podSelector: {}, ingress: [{to: [{podSelector: {}}]}]}"),
            "unknown field `to`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, egress: [{to: [{podSelector: {}}]}]}"),
            s("spec: {podSelector: {}, egress: [{from: [{podSelector: {}}]}]}"),
            "unknown field `from`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16}}]}]}"),
            s(
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16}, podSelector: {}}]}]}",
            ),
            "cannot be combined",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16}}]}]}"),
            s("spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.1}}]}]}"),
            "is not a CIDR",
        ),
        (
            "k8s",
            s(
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.18.1.0/24]}}]}]}",
            ),
            s(
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.19.1.0/24]}}]}]}",
            ),
            "strict subset",
        ),
        (
            "k8s",
            s(
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.18.1.0/24]}}]}]}",
            ),
            s(
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.18.0.0/16]}}]}]}",
            ),
            "strict subset",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocol: UDP}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocol: ICMP}]}]}"),
            "unsupported protocol",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocol: TCP}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocol: tcp}]}]}"),
            "did you mean `TCP`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}"),
            "out of range 1-65535",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 90}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 70}]}]}"),
            "endPort 70 must be between",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 90}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: http, endPort: 90}]}]}"),
            "needs a numeric port",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 90}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{endPort: 90}]}]}"),
            "needs `port` to be set",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: serve-80-tcp}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: [{port: Serve_80}]}]}"),
            "valid port name",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}"),
            s("spec: {podSelector: {}, ingress: [{ports: {port: 80}}]}"),
            "expected a list, found a map",
        ),
        (
            "k8s",
            s("metadata: {name: web, namespace: prod}\nspec: {podSelector: {}}"),
            s("metadata: {name: web, Namespace: prod}\nspec: {podSelector: {}}"),
            "unknown field `Namespace`",
        ),
        (
            "k8s",
            s("spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"),
            s("spec: {podSelector: {}, ingress: [{from: [{NamespaceSelector: {}}]}]}"),
            "unknown field `NamespaceSelector`",
        ),
        (
            "Pod",
            s("metadata: {name: p}\nstatus: {podIP: 198.18.0.5}"),
            s("metadata: {name: p}\nstatus: {podIP: 198.18.0}"),
            "not an IP address",
        ),
    ]
}

#[test]
fn each_invalid_resource_fails_with_its_message_and_its_counterpart_loads() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for (i, (kind, good, bad, fragment)) in cases.iter().enumerate() {
        let good_text = doc(kind, good);
        let r = load_str(&good_text, Path::new("good.yaml"));
        assert!(
            !r.has_errors() && r.resources.len() == 1,
            "case {i}: valid counterpart rejected:\n{good_text}\n{:#?}",
            r.diagnostics
                .iter()
                .map(|d| d.one_line())
                .collect::<Vec<_>>()
        );
        let bad_text = doc(kind, bad);
        let r = load_str(&bad_text, Path::new("bad.yaml"));
        let errors: Vec<_> = r.errors().collect();
        assert!(
            r.resources.is_empty(),
            "case {i}: invalid resource kept:\n{bad_text}"
        );
        assert!(
            errors.iter().any(|d| d.message.contains(fragment)
                || d.hint.as_deref().is_some_and(|h| h.contains(fragment))),
            "case {i}: no error mentions {fragment:?}:\n{bad_text}\n{:#?}",
            errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
        );
        for d in &errors {
            assert!(
                d.pos.is_some(),
                "case {i}: error without a position: {}",
                d.one_line()
            );
        }
    }
}

#[test]
fn felix_configuration_unknown_fields_are_warnings() {
    let r = load_str(
        &doc(
            "FelixConfiguration",
            "metadata: {name: default}\nspec: {bpfEnabled: false, logPrefix: x}",
        ),
        Path::new("f.yaml"),
    );
    assert!(!r.has_errors());
    assert_eq!(r.resources.len(), 1);
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("`bpfEnabled` is accepted but not used"))
    );
}

#[test]
fn egress_rules_without_the_egress_type_warn() {
    let r = load_str(
        &doc(
            "GlobalNetworkPolicy",
            "spec: {types: [Ingress], egress: [{action: Allow}]}",
        ),
        Path::new("p.yaml"),
    );
    assert!(!r.has_errors());
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("egress rules are ignored"))
    );
}

#[test]
fn the_1024_limits_say_they_are_calicos() {
    let long = format!(
        "spec: {{selector: \"{}\"}}",
        "a == 'b' || ".repeat(100) + "has(c)"
    );
    let many = format!(
        "spec: {{selector: all(), ingress: [{}]}}",
        vec!["{action: Allow}"; 1025].join(", ")
    );
    for (body, what) in [(long, "selector"), (many, "rules")] {
        let r = load_str(&doc("GlobalNetworkPolicy", &body), Path::new("l.yaml"));
        let d = r
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .unwrap_or_else(|| panic!("{what}: no error"));
        let hint = d.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("Calico has the same limit"), "{what}: {hint}");
    }
}

#[test]
fn an_egress_only_kubernetes_policy_without_policy_types_warns_that_it_isolates_ingress() {
    let body = "metadata: {name: x, namespace: d}\nspec: {podSelector: {}, egress: [{to: [{podSelector: {}}]}]}";
    let r = load_str(&doc("k8s", body), Path::new("k.yaml"));
    assert!(!r.has_errors());
    assert!(
        r.diagnostics
            .iter()
            .any(|d| !d.is_error() && d.message.contains("also denies all ingress")),
        "{:?}",
        r.diagnostics
    );
    // With policyTypes, or with ingress rules, nothing to say.
    let body = "metadata: {name: x, namespace: d}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}]}]}";
    let r = load_str(&doc("k8s", body), Path::new("k.yaml"));
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
}
