use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::model::load::load_str;

fn resources(yaml: &str) -> Vec<Resource> {
    let r = load_str(yaml, Path::new("t.yaml"));
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    r.resources.into_iter().map(|l| l.resource).collect()
}

fn cluster(yaml: &str, node: &str) -> Cluster {
    Cluster::build(&resources(yaml), node)
}

const PODS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: blue}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: api, namespace: a, labels: {tier: gold}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: api, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 198.18.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: b, labels: {app: web}}
spec: {nodeName: n2}
status: {podIP: 198.18.0.2, podIPs: [{ip: 198.18.0.2}, {ip: 'fd74:6f72::2'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: b}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 198.18.9.9}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: b}
spec: {nodeName: n1}
";

#[test]
fn pod_interfaces_are_named_as_calico_names_them() {
    assert_eq!(
        pod_interface_name("cali", "default", "frontend"),
        "cali9b723216629"
    );
    assert_eq!(pod_interface_name("cali", "default", "frontend").len(), 15);
}

#[test]
fn pods_become_endpoints_with_implicit_and_profile_labels() {
    let c = cluster(PODS, "n1");
    // hostNetwork and IP-less pods are not workload endpoints.
    assert_eq!(c.endpoints.len(), 2);
    let web_a = c.local_endpoints("n1").next().unwrap();
    assert_eq!(web_a.labels["projectcalico.org/namespace"], "a");
    assert_eq!(web_a.labels["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(web_a.labels["projectcalico.org/serviceaccount"], "api");
    assert_eq!(web_a.labels["pcns.team"], "red");
    assert_eq!(web_a.labels["pcns.projectcalico.org/name"], "a");
    assert_eq!(web_a.labels["pcsa.tier"], "gold");
    assert_eq!(web_a.profiles[..], ["kns.a", "ksa.a.api"]);
    assert_eq!(
        web_a.ports,
        [NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80
        }]
    );
    let web_b = &c.endpoints[1];
    assert_eq!(web_b.addrs.len(), 2);
}

#[test]
fn namespaced_policies_only_select_their_namespace() {
    let yaml = format!(
        "{PODS}---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec: {{selector: app == 'web'}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g}}\nspec: {{selector: app == 'web', namespaceSelector: team == 'blue'}}\n"
    );
    let c = cluster(&yaml, "n1");
    let a = &c.endpoints[0];
    let b = &c.endpoints[1];
    let names = |e| {
        c.policies_for(e)
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(a), ["np/a/p"]);
    assert_eq!(names(b), ["gnp/g"]);
}

#[test]
fn policies_sort_by_tier_then_order_then_name() {
    let yaml = "
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-unordered}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b}
spec: {order: 5}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a}
spec: {order: 5}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.x}
spec: {tier: first, order: 1000}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: c}
spec: {order: 1.5}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ghost.p}
spec: {tier: ghost}
";
    let c = cluster(yaml, "n1");
    let order: Vec<String> = c.policies.iter().map(|p| p.id.name.clone()).collect();
    assert_eq!(order, ["first.x", "c", "a", "b", "z-unordered"]);
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].message.contains("tier `ghost` does not exist"));
}

#[test]
fn empty_types_default_like_the_api_server() {
    let yaml = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: none}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: egress-only}
spec: {egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: both}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
";
    let c = cluster(yaml, "n1");
    let t: Vec<(String, bool, bool)> = c
        .policies
        .iter()
        .map(|p| (p.id.name.clone(), p.ingress, p.egress))
        .collect();
    assert_eq!(
        t,
        [
            ("both".into(), true, true),
            ("egress-only".into(), false, true),
            ("none".into(), true, false)
        ]
    );
}

#[test]
fn selector_members_include_network_sets_and_host_endpoints() {
    let yaml = format!(
        "{PODS}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: s, labels: {{app: web}}}}\nspec: {{nets: [198.19.0.0/24]}}\n---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h, labels: {{app: web}}}}\nspec: {{node: n1, expectedIPs: [198.18.100.1]}}\n"
    );
    let c = cluster(&yaml, "n1");
    let sel = crate::selector::parse("app == 'web'").unwrap();
    let members: Vec<String> = c
        .selector_members(&sel)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        members,
        [
            "198.18.0.1/32",
            "198.18.0.2/32",
            "198.18.100.1/32",
            "198.19.0.0/24",
            "fd74:6f72::2/128"
        ]
    );
    let np = c.named_port_members(&crate::selector::Selector::All, "http", None);
    assert_eq!(np.len(), 1);
    assert_eq!(
        c.notes
            .iter()
            .filter(|n| n.message.contains("no interfaceName"))
            .count(),
        1
    );
}

#[test]
fn felix_configuration_layers_default_then_node() {
    let yaml = "
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {defaultEndpointToHostAction: Accept, logPrefix: a, failsafeInboundHostPorts: [{protocol: TCP, port: 22}]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n1}
spec: {logPrefix: b}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n2}
spec: {logPrefix: c}
";
    let c = cluster(yaml, "n1");
    assert_eq!(c.settings.endpoint_to_host, EndpointToHostAction::Accept);
    assert_eq!(c.settings.log_prefix, "b");
    assert_eq!(c.settings.failsafe_in.len(), 1);
    assert_eq!(
        c.settings.failsafe_out.len(),
        9,
        "outbound keeps Felix's defaults"
    );
    let d = cluster("", "n1");
    assert_eq!(d.settings.endpoint_to_host, EndpointToHostAction::Drop);
    assert_eq!(d.settings.log_prefix, "calico-packet");
}

fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string())
        ],
        prop_oneof![
            Just("1".to_string()),
            Just("2".to_string()),
            Just("3".to_string())
        ],
        0..3,
    )
}

proptest! {
    /// The index may return extra candidates but never misses a match.
    #[test]
    fn label_index_never_misses_a_match(
        labels in proptest::collection::vec(arb_labels(), 0..30),
        text in prop_oneof![
            Just("a == '1'"), Just("a != '1'"), Just("has(b)"), Just("!has(b)"),
            Just("a in {'1', '2'}"), Just("a == '1' && b == '2'"), Just("a == '1' || has(c)"),
            Just("a not in {'1'}"), Just("(a == '1' || b == '2') && !has(c)"), Just("all()"),
            Just("c contains '1'"), Just("a == '1' || !has(c)"),
        ],
    ) {
        let endpoints: Vec<Endpoint> = labels.iter().enumerate().map(|(i, l)| Endpoint {
            id: EndpointId::Host { name: format!("h{i}") },
            node: "n".into(),
            iface: None,
            addrs: vec![],
            labels: l.into(),
            profiles: Default::default(),
            ports: vec![],
        }).collect();
        let index = LabelIndex::build(&endpoints, &[]);
        let sel = crate::selector::parse(text).unwrap();
        let candidates = index.candidate_endpoints(&sel);
        for (i, e) in endpoints.iter().enumerate() {
            if sel.matches(&e.labels) {
                prop_assert!(candidates.contains(&i), "{text}: missed {:?}", e.labels);
            }
        }
    }
}

proptest! {
    /// Own labels over shared inherited ones read exactly as the merged
    /// map (own winning), and symbol selectors agree with text selectors.
    #[test]
    fn layered_labels_read_as_the_merged_map(
        own in arb_labels(),
        inherited in arb_labels(),
        text in prop_oneof![
            Just("a == '1'"), Just("a != '1'"), Just("has(b)"), Just("!has(b)"),
            Just("a in {'1', '2'}"), Just("a == '1' && b == '2'"), Just("a == '1' || has(c)"),
            Just("a not in {'1'}"), Just("(a == '1' || b == '2') && !has(c)"), Just("all()"),
            Just("c contains '1'"), Just("b starts with '2'"), Just("c ends with '3'"),
        ],
    ) {
        use crate::calc::labels::{LabelMap, SymSelector, pairs_of, shared};
        let mut merged = inherited.clone();
        merged.extend(own.clone());
        let layered = LabelMap::layered(
            pairs_of(own.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Some(shared(pairs_of(inherited.iter().map(|(k, v)| (k.as_str(), v.as_str()))))),
        );
        prop_assert_eq!(layered.to_map(), merged.clone());
        prop_assert_eq!(&layered, &LabelMap::from(&merged));
        let sel = crate::selector::parse(text).unwrap();
        prop_assert_eq!(sel.matches(&layered), sel.matches(&merged), "{}", text);
        prop_assert_eq!(SymSelector::new(&sel).matches(&layered), sel.matches(&merged), "{}", text);
    }
}

proptest! {
    /// Sorting by positions gives the order a stable sort by id gives.
    #[test]
    fn endpoints_sort_as_a_stable_sort_by_id(
        names in proptest::collection::vec((0u8..4, 0u8..6), 0..40),
    ) {
        let eps: Vec<Endpoint> = names.iter().enumerate().map(|(i, (ns, n))| Endpoint {
            id: EndpointId::Workload { namespace: format!("ns{ns}"), name: format!("p{n}") },
            node: format!("{i}").into(),
            iface: None,
            addrs: vec![],
            labels: Default::default(),
            profiles: Default::default(),
            ports: vec![],
        }).collect();
        let mut want = eps.clone();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        let mut got = eps;
        super::sort_endpoints(&mut got);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn felix_environment_variables_beat_felix_configuration() {
    let vars = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let (env, problems) = crate::calc::felix_env(vars(&[
        ("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT"),
        (
            "FELIX_FailsafeInboundHostPorts",
            "tcp:22, udp:[fd74:6f72::/32]:68, tcp:198.18.0.0/15:2222",
        ),
        ("FELIX_FAILSAFEOUTBOUNDHOSTPORTS", "none"),
        ("FELIX_NFTABLESREFRESHINTERVAL", "2.5"),
        ("FELIX_LOGSEVERITYSCREEN", "Loud"),
        ("FELIX_DEFAULTENDPOINTTOHOSTACTION_TYPO", "x"),
        ("PATH", "/bin"),
    ]));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("not one of Debug"), "{problems:?}");
    assert!(problems[1].contains("ignored"), "{problems:?}");
    let yaml = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {defaultEndpointToHostAction: Drop, failsafeInboundHostPorts: [{protocol: TCP, port: 1}]}\n";
    let r = crate::model::load::load_str(yaml, std::path::Path::new("f.yaml"));
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let s = Cluster::build_with_env(&resources, "n1", Some(&env)).settings;
    assert_eq!(
        s.endpoint_to_host,
        crate::calc::EndpointToHostAction::Accept
    );
    let ports: Vec<(u16, Option<String>)> = s
        .failsafe_in
        .iter()
        .map(|p| (p.port, p.net.map(|n| n.to_string())))
        .collect();
    assert_eq!(
        ports,
        [
            (22, None),
            (68, Some("fd74:6f72::/32".into())),
            (2222, Some("198.18.0.0/15".into()))
        ]
    );
    assert!(s.failsafe_out.is_empty());
    assert_eq!(s.refresh_interval, std::time::Duration::from_millis(2500));
    // A bad value is reported and changes nothing.
    let (env, problems) =
        crate::calc::felix_env(vars(&[("FELIX_DEFAULTENDPOINTTOHOSTACTION", "Allow")]));
    assert!(problems[0].contains("not one of"), "{problems:?}");
    assert!(env.default_endpoint_to_host_action.is_none());
}

#[test]
fn node_notes_name_a_mistyped_node_and_unused_policies() {
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: d, labels: {app: a}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.0.1}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: used}\nspec: {selector: app == 'a'}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: unused}\nspec: {selector: app == 'zzz'}\n";
    let c = cluster(pods, "N1");
    let notes = crate::calc::node_notes(&c, "N1");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].message.contains("no endpoint is on this node"),
        "{:?}",
        notes
    );
    assert!(notes[0].message.contains("e.g. n1"), "{:?}", notes);
    let notes = crate::calc::node_notes(&cluster(pods, "n1"), "n1");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].message.starts_with("1 policy selects no endpoint"),
        "{notes:?}"
    );
    assert!(notes[0].message.contains("gnp/unused") && !notes[0].message.contains("gnp/used,"));
    let empty = crate::calc::node_notes(&cluster("", "n1"), "n1");
    assert!(
        empty[0].message.contains("the input has no endpoints"),
        "{empty:?}"
    );
}

/// Large enough for a build's two-thread paths (pod batches, the split
/// sort): every pod's endpoint is the one the pod alone makes, and the
/// endpoints are in id order.
#[test]
fn a_large_build_makes_each_pod_endpoint_as_one_pod_alone_does() {
    use crate::synth::{LOCAL_NODE, Size, generate};
    let size = Size {
        pods: 20_000,
        ..Size::S
    };
    let resources = generate(size);
    let c = Cluster::build(&resources, LOCAL_NODE);
    assert!(c.endpoints.len() >= 20_000, "{}", c.endpoints.len());
    assert!(c.endpoints.windows(2).all(|w| w[0].id < w[1].id));
    let mut pods = 0;
    for r in &resources {
        let Resource::Pod(p) = r else { continue };
        let alone = c
            .pod_endpoint(p)
            .expect("every generated pod has an address");
        let at = c.endpoints.binary_search_by(|e| e.id.cmp(&alone.id));
        assert_eq!(at.map(|i| &c.endpoints[i]), Ok(&alone));
        pods += 1;
    }
    assert_eq!(pods, 20_000);
}

/// Validation refuses these objects first; past it (a resource built in
/// code), a field that does not parse makes the policy or profile refused
/// with a note: it is never read as `all()` or as an empty net list.
#[test]
fn a_policy_or_profile_with_a_field_that_does_not_parse_is_refused_with_a_note() {
    let y = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: by-rule}
spec:
  selector: app == 'web'
  ingress: [{action: Deny, source: {selector: app == 'bad'}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: by-selector}
spec:
  selector: app == 'web'
  ingress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: by-net}
spec:
  egress: [{action: Deny, destination: {notNets: [198.18.0.0/16]}}]
";
    let mut resources = resources(y);
    for r in &mut resources {
        match r {
            Resource::GlobalNetworkPolicy(o) if o.metadata.name.as_deref() == Some("by-rule") => {
                o.spec.ingress[0].source.selector = Some("app ==".into())
            }
            Resource::GlobalNetworkPolicy(o) => o.spec.selector = Some("app in {".into()),
            Resource::Profile(o) => o.spec.egress[0].destination.not_nets = vec!["x".into()],
            _ => {}
        }
    }
    let c = Cluster::build(&resources, "n1");
    assert!(c.policies.is_empty(), "{:?}", c.policies);
    assert!(!c.profiles.contains_key("by-net"));
    let said = |subject: &str, field: &str| {
        c.notes
            .iter()
            .any(|n| n.subject.contains(subject) && n.message.starts_with(field))
    };
    assert!(
        said("by-rule", "ingress[0].source.selector: "),
        "{:?}",
        c.notes
    );
    assert!(said("by-selector", "selector: "), "{:?}", c.notes);
    assert!(
        said("profile by-net", "egress[0].destination.notNets[0]: "),
        "{:?}",
        c.notes
    );
}
