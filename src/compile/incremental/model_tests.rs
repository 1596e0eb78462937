//! Model-based test of the engine: random updates across every kind, and
//! after each batch the incrementally kept ruleset must render byte for
//! byte as a full compile of the same resources, with a change record that
//! names every difference.
//!
//! `TORTIE_MODEL_STEPS` (default 400) and `TORTIE_MODEL_SEED` (default:
//! several fixed seeds) control the run; a failure prints the seed, the
//! step and the batch.

use super::*;
use crate::compile::compile;

/// The seeded generator, with the helpers the documents need.
struct Rng(crate::synth::Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NODE: &str = "n1";
const NAMESPACES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

fn selector(r: &mut Rng) -> String {
    r.pick(&[
        "app == 'web'",
        "app == 'api'",
        "app in {'db', 'api'}",
        "has(tier)",
        "tier == 'a' && app == 'web'",
        "all()",
        "!has(app)",
        "role == 'edge'",
        "kind == 'ext'",
        "pcns.team == 'red'",
        "pcsa.role == 'front'",
    ])
    .to_string()
}

fn labels(r: &mut Rng, keys: &[(&str, &[&str])]) -> String {
    let mut out = Vec::new();
    for (k, vs) in keys {
        if r.chance(60) {
            out.push(format!("{k}: {}", r.pick(vs)));
        }
    }
    format!("{{{}}}", out.join(", "))
}

fn entity(r: &mut Rng, namespaced: bool) -> String {
    let mut f = Vec::new();
    if r.chance(40) {
        f.push(format!("selector: \"{}\"", selector(r)));
    }
    if r.chance(15) {
        f.push(format!("notSelector: \"{}\"", selector(r)));
    }
    if namespaced && r.chance(20) {
        f.push(format!(
            "namespaceSelector: \"{}\"",
            r.pick(&["team == 'red'", "all()", "global()", "env == 'prod'"])
        ));
    }
    if r.chance(25) {
        let n = r.below(4);
        if r.chance(70) {
            f.push(format!(
                "nets: [198.18.{n}.0/24, 198.18.{}.{}/32]",
                n + 1,
                r.below(8)
            ));
        } else {
            f.push(format!("nets: ['fd74:6f72::{n}/128', 'fd74:6f72::/120']"));
        }
    }
    if r.chance(10) && !f.iter().any(|x| x.contains("fd74")) {
        f.push(format!("notNets: [198.18.{}.0/25]", r.below(4)));
    }
    if r.chance(30) {
        f.push(format!(
            "ports: [{}]",
            r.pick(&[
                "80",
                "80, 443",
                "8000:8080, 8080",
                "http",
                "http, 443",
                "dns"
            ])
        ));
    }
    if r.chance(8) {
        f.push(format!(
            "serviceAccounts: {{names: [{}]}}",
            r.pick(&["sa-x", "sa-y"])
        ));
    }
    format!("{{{}}}", f.join(", "))
}

/// A `services` side: a Service by name (its namespace left to default in
/// a namespaced policy, half the time).
fn service_entity(r: &mut Rng, namespaced: bool) -> String {
    let name = r.pick(&["web", "api"]);
    let ns = r.pick(&NAMESPACES);
    if namespaced && r.chance(50) {
        format!("{{services: {{name: {name}}}}}")
    } else {
        format!("{{services: {{name: {name}, namespace: {ns}}}}}")
    }
}

fn rules(r: &mut Rng, namespaced: bool, allow_pass: bool) -> String {
    rules_dir(r, namespaced, allow_pass, None)
}

/// As [`rules`]; with `egress` known, some rules match a Service (the
/// destination of egress, the source of ingress, as Calico allows).
fn rules_dir(r: &mut Rng, namespaced: bool, allow_pass: bool, egress: Option<bool>) -> String {
    let mut out = String::new();
    for _ in 0..r.below(3) {
        let action = if allow_pass {
            r.pick(&["Allow", "Deny", "Pass", "Log"])
        } else {
            r.pick(&["Allow", "Deny", "Log"])
        };
        let proto = r.pick(&["TCP", "UDP", ""]);
        let src = entity(r, namespaced);
        let mut dst = entity(r, namespaced);
        if proto.is_empty() {
            // Ports need a protocol: keep only what stands without one.
            dst = "{}".into();
        }
        let mut src = strip_ports(&src);
        match egress {
            Some(true) if r.chance(50) => dst = service_entity(r, namespaced),
            Some(false) if r.chance(50) => src = service_entity(r, namespaced),
            _ => {}
        }
        out.push_str(&format!("  - action: {action}\n"));
        if !proto.is_empty() {
            out.push_str(&format!("    protocol: {proto}\n"));
        }
        out.push_str(&format!("    source: {src}\n"));
        out.push_str(&format!("    destination: {dst}\n"));
    }
    out
}

/// Source ports would be fine, but named ones are not: drop them.
fn strip_ports(e: &str) -> String {
    match e.find(", ports:").or_else(|| e.find("ports:")) {
        Some(i) => {
            let end = e[i..].find(']').map_or(e.len() - 1, |j| i + j + 1);
            format!("{}{}", &e[..i], &e[end..]).replace("{, ", "{")
        }
        None => e.to_string(),
    }
}

fn policy_types(r: &mut Rng) -> &'static str {
    ["[Ingress]", "[Egress]", "[Ingress, Egress]"][r.below(3)]
}

fn tier_line(r: &mut Rng) -> String {
    match r.below(4) {
        0 => "  tier: t-sec\n".into(),
        1 => "  tier: t-app\n".into(),
        _ => String::new(),
    }
}

/// A random document for the object in `slot` (kind, namespace, name).
fn document(r: &mut Rng, kind: ResourceKind, ns: &str, name: &str) -> String {
    let v3 = "apiVersion: projectcalico.org/v3";
    match kind {
        ResourceKind::Namespace => format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {}, annotations: {{tortie.io/connection-logs: '{}'}}}}\n",
            labels(r, &[("team", &["red", "blue"]), ("env", &["prod", "dev"])]),
            r.pick(&["true", "false", "false"])
        ),
        ResourceKind::ServiceAccount => format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {ns}, labels: {}}}\n",
            labels(r, &[("role", &["front", "back"])])
        ),
        ResourceKind::Pod => {
            let node = r.pick(&[NODE, NODE, "n2", "n3"]);
            let ip = format!("198.18.{}.{}", r.below(3), r.below(6));
            let ips = if r.chance(30) {
                format!(
                    "\n  podIPs: [{{ip: {ip}}}, {{ip: 'fd74:6f72::{}'}}]",
                    r.below(6)
                )
            } else {
                String::new()
            };
            let phase = if r.chance(8) { "Succeeded" } else { "Running" };
            let ip = if r.chance(90) {
                format!("\n  podIP: '{ip}'")
            } else {
                String::new()
            };
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {}\n  containers:\n  - name: c\n    ports: [{{name: http, containerPort: {}}}, {{name: dns, containerPort: 53, protocol: UDP}}]\nstatus:\n  phase: {phase}{ip}{ips}\n",
                labels(r, &[("app", &["web", "api", "db"]), ("tier", &["a", "b"])]),
                r.pick(&["sa-x", "sa-y", "default"]),
                r.pick(&["80", "8080"]),
            )
        }
        ResourceKind::HostEndpoint => {
            let iface = match r.below(4) {
                0 => "interfaceName: '*', ".to_string(),
                1 => String::new(),
                n => format!("interfaceName: eth{n}, "),
            };
            format!(
                "{v3}\nkind: HostEndpoint\nmetadata: {{name: {name}, labels: {}}}\nspec: {{node: {}, {iface}expectedIPs: [198.19.0.{}]}}\n",
                labels(r, &[("role", &["edge", "core"])]),
                r.pick(&[NODE, "n2"]),
                r.below(3)
            )
        }
        ResourceKind::NetworkSet | ResourceKind::GlobalNetworkSet => {
            let (k, meta) = if kind == ResourceKind::NetworkSet {
                ("NetworkSet", format!("namespace: {ns}, "))
            } else {
                ("GlobalNetworkSet", String::new())
            };
            format!(
                "{v3}\nkind: {k}\nmetadata: {{name: {name}, {meta}labels: {}}}\nspec: {{nets: [198.19.{}.0/24, 198.18.{}.{}/31]}}\n",
                labels(r, &[("kind", &["ext", "int"])]),
                1 + r.below(3),
                r.below(3),
                2 * r.below(3)
            )
        }
        ResourceKind::Tier => format!(
            "{v3}\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{order: {}, defaultAction: {}}}\n",
            [100, 200, 300][r.below(3)],
            r.pick(&["Deny", "Pass"])
        ),
        ResourceKind::NetworkPolicy => format!(
            "{v3}\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}  order: {}\n  selector: \"{}\"\n  types: {}\n  ingress:\n{}  egress:\n{}",
            tier_line(r),
            r.below(4) * 10,
            selector(r),
            policy_types(r),
            rules_dir(r, true, true, Some(false)),
            rules_dir(r, true, true, Some(true))
        ),
        ResourceKind::GlobalNetworkPolicy => {
            let (flags, types, egress) = match r.below(6) {
                0 => (
                    "  preDNAT: true\n  applyOnForward: true\n",
                    "[Ingress]",
                    false,
                ),
                1 => (
                    "  doNotTrack: true\n  applyOnForward: true\n",
                    "[Ingress, Egress]",
                    true,
                ),
                2 => ("  applyOnForward: true\n", "[Ingress, Egress]", true),
                _ => ("", policy_types(r), true),
            };
            let egress = if egress {
                rules_dir(r, false, true, Some(true))
            } else {
                String::new()
            };
            let pass = flags.is_empty();
            format!(
                "{v3}\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{}{flags}  order: {}\n  selector: \"{}\"\n  types: {types}\n  ingress:\n{}  egress:\n{egress}",
                tier_line(r),
                r.below(4) * 10,
                selector(r),
                rules_dir(r, false, pass, Some(false)),
            )
        }
        ResourceKind::K8sNetworkPolicy => {
            let peer = match r.below(4) {
                0 => "- podSelector: {matchLabels: {app: web}}".to_string(),
                1 => "- namespaceSelector: {matchLabels: {team: red}}".to_string(),
                2 => format!(
                    "- ipBlock: {{cidr: 198.18.{}.0/24, except: [198.18.{}.0/28]}}",
                    r.below(3),
                    r.below(3)
                ),
                _ => "- podSelector: {}".to_string(),
            };
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    {peer}\n    ports: [{{port: {}}}]\n  egress:\n  - to:\n    {peer}\n",
                labels(r, &[("app", &["web", "api", "db"])]),
                r.pick(&["80", "http", "443"]),
            )
        }
        ResourceKind::ClusterNetworkPolicy => cnp_document(r, name),
        ResourceKind::Profile => format!(
            "{v3}\nkind: Profile\nmetadata: {{name: {name}}}\nspec:\n  labelsToApply: {}\n  ingress:\n{}  egress:\n{}",
            labels(r, &[("app", &["web", "db"])]),
            rules(r, false, false),
            rules(r, false, false)
        ),
        ResourceKind::WorkloadEndpoint => format!(
            "{v3}\nkind: WorkloadEndpoint\nmetadata: {{name: {name}, namespace: {ns}, labels: {}}}\nspec: {{node: {}, orchestrator: k8s, endpoint: eth0, interfaceName: caliw{name}, profiles: [prof-0], ipNetworks: [198.18.2.{}/32]}}\n",
            labels(r, &[("app", &["web", "api"])]),
            r.pick(&[NODE, "n2"]),
            r.below(6)
        ),
        ResourceKind::EndpointSlice => {
            let v6 = r.chance(20);
            let addr = |r: &mut Rng| {
                if v6 {
                    format!("'fd74:6f72::{}'", r.below(6))
                } else {
                    format!("198.18.{}.{}", r.below(3), r.below(6))
                }
            };
            let endpoints: Vec<String> = (0..r.below(4))
                .map(|_| {
                    format!(
                        "{{addresses: [{}], conditions: {{ready: {}}}}}",
                        addr(r),
                        r.pick(&["true", "false"])
                    )
                })
                .collect();
            let ports = r.pick(&[
                "[{port: 80, protocol: TCP}]",
                "[{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]",
                "[{port: 80}, {port: null}]",
                "[]",
            ]);
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {}}}}}\naddressType: {}\nendpoints: [{}]\nports: {ports}\n",
                r.pick(&["web", "api"]),
                if v6 { "IPv6" } else { "IPv4" },
                endpoints.join(", "),
            )
        }
        ResourceKind::StagedNetworkPolicy
        | ResourceKind::StagedGlobalNetworkPolicy
        | ResourceKind::StagedKubernetesNetworkPolicy => staged_document(r, kind, ns, name),
        ResourceKind::FelixConfiguration => format!(
            "{v3}\nkind: FelixConfiguration\nmetadata: {{name: default}}\nspec: {{defaultEndpointToHostAction: {}, logDroppedPackets: {}, connectionLogsEnabled: {}}}\n",
            r.pick(&["Drop", "Accept", "Return"]),
            r.pick(&["true", "false"]),
            r.pick(&["true", "false", "false"])
        ),
    }
}

/// A Kubernetes label selector over random labels.
fn lsel(r: &mut Rng, keys: &[(&str, &[&str])]) -> String {
    format!("{{matchLabels: {}}}", labels(r, keys))
}

/// A random ClusterNetworkPolicy: either tier, a priority that may tie,
/// either subject form, and rules of every action, peer and protocol form.
fn cnp_document(r: &mut Rng, name: &str) -> String {
    let subject = if r.chance(50) {
        format!("{{namespaces: {}}}", lsel(r, &[("team", &["red", "blue"])]))
    } else {
        format!(
            "{{pods: {{namespaceSelector: {}, podSelector: {}}}}}",
            lsel(r, &[("env", &["prod", "dev"])]),
            lsel(r, &[("app", &["web", "api", "db"])])
        )
    };
    let mut text = format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {}\n  priority: {}\n  subject: {subject}\n",
        r.pick(&["Admin", "Baseline"]),
        r.below(3) * 5
    );
    for (dir, field) in [("ingress", "from"), ("egress", "to")] {
        if r.chance(30) {
            continue;
        }
        text.push_str(&format!("  {dir}:\n"));
        for _ in 0..1 + r.below(2) {
            let peer = match r.below(if dir == "egress" { 4 } else { 3 }) {
                0 => format!("namespaces: {}", lsel(r, &[("team", &["red", "blue"])])),
                1 => format!(
                    "pods: {{namespaceSelector: {{}}, podSelector: {}}}",
                    lsel(r, &[("app", &["web", "api"])])
                ),
                2 => {
                    "pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {}}".into()
                }
                _ => format!("networks: [198.18.{}.0/24, 198.19.0.0/16]", r.below(3)),
            };
            let named_ok = !peer.starts_with("networks");
            let protocols = match r.below(4) {
                0 => String::new(),
                1 => "    protocols: [{tcp: {destinationPort: {number: 80}}}, {udp: {destinationPort: {number: 53}}}]\n".into(),
                2 => "    protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8080}}}}]\n".into(),
                _ if named_ok => "    protocols: [{destinationNamedPort: http}, {sctp: {destinationPort: {number: 9}}}]\n".into(),
                _ => "    protocols: [{tcp: {destinationPort: {number: 443}}}]\n".into(),
            };
            text.push_str(&format!(
                "  - action: {}\n    {field}: [{{{peer}}}]\n{protocols}",
                r.pick(&["Accept", "Deny", "Pass"])
            ));
        }
    }
    text
}

/// A staged policy: a random document of the enforced kind, restaged
/// (`Set` three times in four, else `Delete`).
fn staged_document(r: &mut Rng, kind: ResourceKind, ns: &str, name: &str) -> String {
    let enforced = crate::model::staged::enforced_kind(kind).expect("a staged kind");
    let doc = document(r, enforced, ns, name);
    let action = if r.chance(75) { "Set" } else { "Delete" };
    let (old_kind, old_api) = match enforced {
        ResourceKind::K8sNetworkPolicy => {
            ("kind: NetworkPolicy\n", "apiVersion: networking.k8s.io/v1")
        }
        ResourceKind::NetworkPolicy => {
            ("kind: NetworkPolicy\n", "apiVersion: projectcalico.org/v3")
        }
        _ => (
            "kind: GlobalNetworkPolicy\n",
            "apiVersion: projectcalico.org/v3",
        ),
    };
    doc.replacen(old_api, "apiVersion: projectcalico.org/v3", 1)
        .replacen(old_kind, &format!("kind: {}\n", kind.kind_name()), 1)
        .replacen("spec:\n", &format!("spec:\n  stagedAction: {action}\n"), 1)
}

/// The object slots updates are drawn from, weighted towards pods.
fn slots() -> Vec<(ResourceKind, &'static str, String)> {
    use ResourceKind::*;
    let mut out = Vec::new();
    for ns in NAMESPACES {
        out.push((Namespace, ns, ns.to_string()));
        for sa in ["sa-x", "sa-y"] {
            out.push((ServiceAccount, ns, sa.to_string()));
        }
        for i in 0..6 {
            out.push((Pod, ns, format!("p{i}")));
            out.push((Pod, ns, format!("p{i}")));
        }
        for i in 0..2 {
            out.push((NetworkPolicy, ns, format!("np{i}")));
            out.push((K8sNetworkPolicy, ns, format!("k{i}")));
        }
        out.push((NetworkSet, ns, "set0".into()));
        // Staged policies named as enforced ones (replace or delete them)
        // and one of their own.
        out.push((StagedNetworkPolicy, ns, "np0".into()));
        out.push((StagedNetworkPolicy, ns, "snp9".into()));
        out.push((StagedKubernetesNetworkPolicy, ns, "k0".into()));
    }
    for i in 0..4 {
        out.push((GlobalNetworkPolicy, "", format!("g{i}")));
    }
    out.push((StagedGlobalNetworkPolicy, "", "g0".into()));
    for i in 0..3 {
        out.push((HostEndpoint, "", format!("h{i}")));
        out.push((ClusterNetworkPolicy, "", format!("c{i}")));
    }
    out.push((GlobalNetworkSet, "", "gs0".into()));
    out.push((Tier, "", "t-sec".into()));
    out.push((Tier, "", "t-app".into()));
    out.push((Profile, "", "prof-0".into()));
    out.push((WorkloadEndpoint, "ns-a", "w0".into()));
    out.push((FelixConfiguration, "", "default".into()));
    // Slices of two Services spread over the namespaces (a label change
    // moves a slice from one Service to the other).
    for (ns, slice) in [
        ("ns-a", "web-1"),
        ("ns-a", "web-2"),
        ("ns-b", "api-1"),
        ("ns-c", "web-1"),
    ] {
        // Weighted like pods: slices change often in real clusters.
        for _ in 0..3 {
            out.push((EndpointSlice, ns, slice.to_string()));
        }
    }
    out
}

fn parse(text: &str) -> Option<Resource> {
    let r = crate::model::load::load_str(text, std::path::Path::new("model.yaml"));
    let mut v = r.resources;
    (v.len() == 1).then(|| v.remove(0).resource)
}

/// One random update (None when the generated document does not validate).
fn random_update(r: &mut Rng, slots: &[(ResourceKind, &str, String)]) -> Option<Update> {
    let (kind, ns, name) = &slots[r.below(slots.len())];
    // Rebuild-causing kinds change rarely, as in real clusters.
    if needs_rebuild(*kind) && !crate::model::staged::is_staged(*kind) && !r.chance(25) {
        return None;
    }
    if r.chance(25) {
        let res = parse(&document(r, *kind, ns, name))?;
        return Some(Update::delete(res.key()));
    }
    parse(&document(r, *kind, ns, name)).map(Update::put)
}

fn run(seed: u64, steps: usize) -> (usize, BTreeMap<&'static str, usize>) {
    let mut r = Rng(crate::synth::Rng::new(seed));
    let slots = slots();
    let mut state: BTreeMap<ResourceKey, Resource> = BTreeMap::new();
    for _ in 0..40 {
        if let Some(Update {
            key,
            value: Some(v),
        }) = random_update(&mut r, &slots)
        {
            state.insert(key, v);
        }
    }
    let mut engine = Incremental::new(state.values().cloned().collect(), NODE, |_| {});
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut done = 0;
    while done < steps {
        let batch: Vec<Update> = (0..1 + r.below(3) * usize::from(r.chance(20)))
            .filter_map(|_| random_update(&mut r, &slots))
            .collect();
        if batch.is_empty() {
            continue;
        }
        done += 1;
        let before = engine.ruleset().clone();
        engine.take_change();
        for u in &batch {
            match &u.value {
                Some(v) => state.insert(u.key.clone(), v.clone()),
                None => state.remove(&u.key),
            };
        }
        let outcome = engine.apply(batch.clone());
        let label = match outcome {
            Outcome::Unchanged => "unchanged",
            Outcome::Sets(_) => "sets",
            Outcome::Parts(_) => "parts",
            Outcome::Full => "full",
        };
        *outcomes.entry(label).or_default() += 1;
        let slices_only = batch
            .iter()
            .all(|u| u.key.kind == ResourceKind::EndpointSlice);
        assert!(
            !slices_only || matches!(outcome, Outcome::Sets(_) | Outcome::Unchanged),
            "seed {seed}, step {done}: an EndpointSlice batch re-rendered parts ({label}): {batch:?}"
        );
        let list: Vec<Resource> = state.values().cloned().collect();
        let cluster = Cluster::build(&list, NODE);
        let want = compile(&cluster, NODE);
        let staged_walks = want
            .chains
            .keys()
            .any(|k| k.starts_with("filter-stws-") || k.starts_with("filter-sfws-"));
        if staged_walks {
            *outcomes.entry("staged walks").or_default() += 1;
        }
        let connection_logs = want.chains.values().any(|c| {
            c.rules
                .iter()
                .any(|r| r.note.starts_with("connection log of"))
        });
        if connection_logs {
            *outcomes.entry("connection logs").or_default() += 1;
        }
        let got = engine.ruleset();
        if got.render() != want.render() || got != &want {
            let batch: Vec<String> = batch.iter().map(|u| format!("{u:?}")).collect();
            let sets: Vec<String> = want
                .sets
                .iter()
                .filter(|(n, s)| got.sets.get(*n) != Some(*s))
                .map(|(n, s)| {
                    format!(
                        "{n} ({}): got {:?}, want {:?}; {}",
                        s.comment,
                        got.sets.get(n).map(|g| &g.elements),
                        s.elements,
                        engine.debug_set(n)
                    )
                })
                .collect();
            panic!(
                "seed {seed}, step {done}: incremental differs from a full compile after {batch:#?} ({label})\n{}\nsets: {sets:#?}",
                first_difference(&got.render(), &want.render())
            );
        }
        let change = engine.take_change();
        super::tests::check_change(&before, engine.ruleset(), &change);
        if slices_only && change.elements.keys().any(|n| n.starts_with("sv")) {
            *outcomes.entry("service deltas").or_default() += 1;
        }
    }
    (done, outcomes)
}

fn first_difference(got: &str, want: &str) -> String {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        if g != w {
            return format!("line {}: got\n  {g}\nwant\n  {w}", i + 1);
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines)",
        got.lines().count(),
        want.lines().count()
    )
}

#[test]
fn every_kind_of_generated_document_validates_often() {
    let mut r = Rng(crate::synth::Rng::new(9));
    let slots = slots();
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for _ in 0..3000 {
        let (kind, ns, name) = &slots[r.below(slots.len())];
        let text = document(&mut r, *kind, ns, name);
        let e = seen.entry(format!("{kind:?}")).or_default();
        e.0 += 1;
        match parse(&text) {
            Some(_) => e.1 += 1,
            None if e.1 == 0 && e.0 > 30 => {
                let res = crate::model::load::load_str(&text, std::path::Path::new("m.yaml"));
                panic!(
                    "{kind:?} never validates:\n{text}\n{:?}",
                    res.diagnostics.first().map(|d| d.message.clone())
                );
            }
            None => {
                if std::env::var("TORTIE_MODEL_DEBUG").is_ok() {
                    let res = crate::model::load::load_str(&text, std::path::Path::new("m.yaml"));
                    eprintln!(
                        "{kind:?}: {:?}",
                        res.diagnostics
                            .iter()
                            .map(|d| d.message.clone())
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
    }
    for (kind, (tried, ok)) in &seen {
        assert!(
            ok * 10 >= tried * 6,
            "{kind}: only {ok} of {tried} documents validate"
        );
    }
}

#[test]
fn random_updates_across_every_kind_equal_full_compiles() {
    let steps: usize = std::env::var("TORTIE_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let seeds: Vec<u64> = match std::env::var("TORTIE_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("TORTIE_MODEL_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let (done, outcomes) = run(seed, steps);
        eprintln!("seed {seed}: {done} steps, outcomes {outcomes:?}");
        // Every path was exercised, and most updates did not rebuild.
        for label in [
            "sets",
            "parts",
            "full",
            "service deltas",
            "staged walks",
            "connection logs",
        ] {
            assert!(
                outcomes.get(label).copied().unwrap_or(0) > 0,
                "seed {seed}: no `{label}` outcome in {outcomes:?}"
            );
        }
        let full = outcomes.get("full").copied().unwrap_or(0);
        assert!(
            full * 5 < done,
            "seed {seed}: {full} rebuilds in {done} steps"
        );
    }
}
