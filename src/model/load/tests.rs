use std::path::Path;

use super::*;
use crate::diag::Severity;

fn fixture(name: &str) -> LoadResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/seeds")
        .join(name);
    load_file(&path)
}

/// (line, column, message fragment, hint fragment)
type Expected = (usize, usize, &'static str, &'static str);

fn assert_errors(name: &str, expected: &[Expected]) {
    let r = fixture(name);
    let errors: Vec<_> = r.errors().collect();
    assert_eq!(
        errors.len(),
        expected.len(),
        "{name}: {:#?}",
        errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
    );
    for (d, (line, col, msg, hint)) in errors.iter().zip(expected) {
        let pos = d.pos.expect("position");
        assert_eq!(
            (pos.line, pos.col),
            (*line, *col),
            "{name}: {}",
            d.one_line()
        );
        assert!(
            d.message.contains(msg),
            "{name}: message {:?} lacks {msg:?}",
            d.message
        );
        let h = d.hint.clone().unwrap_or_default();
        assert!(h.contains(hint), "{name}: hint {h:?} lacks {hint:?}");
        assert!(d.resource.is_some() || d.stage == crate::diag::Stage::Syntax);
    }
    assert!(
        r.resources.is_empty(),
        "{name}: an invalid resource was kept"
    );
}

fn assert_valid(name: &str, kinds: &[ResourceKind]) {
    let r = fixture(name);
    assert!(
        !r.has_errors(),
        "{name}: {:#?}",
        r.diagnostics
            .iter()
            .map(|d| d.one_line())
            .collect::<Vec<_>>()
    );
    let got: Vec<_> = r.resources.iter().map(|l| l.resource.kind()).collect();
    assert_eq!(got, kinds, "{name}");
}

#[test]
fn seed_examples_that_are_valid_load() {
    use ResourceKind::*;
    for name in [
        "000-backend-allow.yaml",
        "000-db-allow.yaml",
        "001-backend-allow.yaml",
        "001-db-allow.yaml",
        "003-access-nginx.yaml",
        "003-default-deny.yaml",
        "004-01-backend-ingress-deny.yaml",
        "004-02-backend-ingress-allow-frontend.yaml",
        "004-03-all-pods-allow-within-namespace.yaml",
        "004-04-backend-ingress-allow-monitoring-namespace.yaml",
        "004-05-backend-ingress-allow-monitoring-app.yaml",
        "004-06-frontend-egress-deny.yaml",
        "004-07-frontend-egress-allow-to-backend.yaml",
        "004-08-all-pods-egress-allow-dns.yaml",
    ] {
        assert_valid(name, &[K8sNetworkPolicy]);
    }
    assert_valid("001-deny-nodeports.yaml", &[GlobalNetworkPolicy]);
    assert_valid("001-access-nginx-calico.yaml", &[NetworkPolicy]);
    assert_valid("001-log-denied-packets.yaml", &[NetworkPolicy]);
}

#[test]
fn obsolete_api_version_loads_with_a_warning() {
    let r = fixture("001-access-nginx-k8s.yaml");
    assert_eq!(r.resources.len(), 1);
    let w: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("extensions/v1beta1"));
    assert_eq!(w[0].pos.unwrap().line, 4);
}

#[test]
fn seed_000_and_001_accounts_allow_is_rejected_precisely() {
    for name in ["000-accounts-allow.yaml", "001-accounts-allow.yaml"] {
        assert_errors(
            name,
            &[
                (
                    6,
                    3,
                    "unknown field `Namespace`",
                    "did you mean `namespace`? field names are case-sensitive",
                ),
                (
                    15,
                    7,
                    "unknown field `NamespaceSelector`",
                    "did you mean `namespaceSelector`",
                ),
                // Reported in the same run: `ports` is indented under the peer.
                (
                    18,
                    7,
                    "unknown field `ports`",
                    "expected one of: podSelector, namespaceSelector, ipBlock",
                ),
            ],
        );
    }
}

#[test]
fn accounts_allow_with_only_the_case_fixed_still_reports_the_ports_map() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seeds/000-accounts-allow.yaml"),
    )
    .unwrap()
    .replace("Namespace:", "namespace:")
    .replace("NamespaceSelector", "namespaceSelector");
    let r = load_str(&text, Path::new("accounts.yaml"));
    let e: Vec<_> = r.errors().collect();
    assert_eq!(e.len(), 1, "{:?}", e);
    // `ports` is indented under the peer, where it is not a field.
    assert!(
        e[0].message.contains("unknown field `ports`"),
        "{}",
        e[0].message
    );
    assert_eq!(e[0].pos.unwrap().line, 18);
    // Indent it as a rule field, and the map-for-a-list mistake shows.
    let text = text.replace(
        "      ports:\n        port: 3111",
        "    ports:\n      port: 3111",
    );
    let r = load_str(&text, Path::new("accounts.yaml"));
    let e: Vec<_> = r.errors().collect();
    assert_eq!(e.len(), 1, "{:?}", e);
    assert_eq!(e[0].message, "expected a list, found a map");
    assert!(
        e[0].hint
            .as_deref()
            .unwrap()
            .contains("`ports` takes a list")
    );
    assert_eq!(
        e[0].path.as_ref().unwrap().to_string(),
        "spec.ingress[0].ports"
    );
}

#[test]
fn seed_001_whitelist_is_rejected_with_placeholders_and_the_pre_dnat_conflict() {
    assert_errors(
        "001-whitelist.yaml",
        &[
            (21, 12, "both preDNAT and doNotTrack", "not both"),
            (
                20,
                9,
                "`<client_address>/32` is a placeholder",
                "replace it with a real address",
            ),
            (
                14,
                9,
                "`<loadbalancer_IP>/32` is a placeholder",
                "replace it",
            ),
        ],
    );
}

#[test]
fn seed_002_curly_quotes_are_rejected() {
    // Every mistake of a resource in one run: the curly quotes and the
    // `to:` of an ingress rule.
    assert_errors(
        "002-allow-same-namespace.yaml",
        &[
            (13, 21, "unknown field `“color”`", "curly quotes"),
            (14, 5, "unknown field `to`", "`to` belongs in egress rules"),
        ],
    );
    assert_errors(
        "002-allow-same-namespace-other-ns.yaml",
        &[
            (13, 21, "unknown field `“color”`", "curly quotes"),
            (14, 27, "unknown field `“something”`", "curly quotes"),
            (15, 5, "unknown field `to`", "`to` belongs in egress rules"),
        ],
    );
    assert_errors(
        "002-allow-egress-same-namespace.yaml",
        &[
            (13, 21, "unknown field `“color**”`", "curly quotes"),
            (14, 7, "unknown field `ports`", "expected one of"),
        ],
    );
    assert_errors(
        "002-allow-egress-external.yaml",
        &[(10, 28, "label key `“color”` is invalid", "curly quotes")],
    );
}

#[test]
fn seed_002_stray_egress_line_is_a_syntax_error() {
    assert_errors(
        "002-default-ingress-deny.yaml",
        &[(14, 1, "neither `key: value` nor a list item", "")],
    );
    // With the stray line folded into the list, `types` is named as the k8s field.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seeds/002-default-ingress-deny.yaml"),
    )
    .unwrap()
    .replace("\nEgress", "\n  - Egress");
    let r = load_str(&text, Path::new("deny.yaml"));
    let e: Vec<_> = r.errors().collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].message, "unknown field `types`");
    assert!(
        e[0].hint
            .as_deref()
            .unwrap()
            .contains("did you mean `policyTypes`")
    );
}

#[test]
fn seed_002_corrected_examples_load() {
    let fixed = r#"
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata:
  name: allow-same-namespace
  namespace: default
spec:
  podSelector:
    matchLabels: {"color": "blue"}
  ingress:
  - from:
    - podSelector:
        matchLabels: {"color": "red"}
    ports:
    - port: 80
"#;
    let r = load_str(fixed, Path::new("fixed.yaml"));
    assert!(!r.has_errors(), "{:?}", r.diagnostics);
    assert_eq!(r.resources.len(), 1);
}

#[test]
fn one_bad_document_never_hides_the_others() {
    let text = "\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: 100
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: bad
spec:
  selctor: all()
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ok}
spec: {selector: all()}
---
this is: [not closed
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: dev, labels: {team: a}}
- apiVersion: projectcalico.org/v3
  kind: Tier
  metadata: {name: Bad_Name}
";
    let r = load_str(text, Path::new("mixed.yaml"));
    let names: Vec<_> = r.resources.iter().map(|l| l.resource.key().name).collect();
    assert_eq!(names, ["security", "ok", "dev"]);
    let errs: Vec<_> = r
        .errors()
        .map(|d| (d.pos.unwrap().line, d.message.clone()))
        .collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].0, 13);
    assert!(errs[0].1.contains("unknown field `selctor`"));
    // An unclosed flow list is reported where the document ends.
    assert_eq!(errs[1].0, 21);
    assert!(errs[1].1.contains("YAML syntax error"));
    assert_eq!(errs[2].0, 30);
    assert!(errs[2].1.contains("invalid Tier name"));
    // The namespace gets its name label, as the API server adds it.
    let ns = r
        .resources
        .iter()
        .find(|l| l.resource.kind() == ResourceKind::Namespace)
        .unwrap();
    assert_eq!(
        ns.resource
            .meta()
            .labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("dev")
    );
}

#[test]
fn json_documents_load() {
    let r = load_str(
        r#"{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"x"},"spec":{"nets":["198.18.0.0/24"]}}"#,
        Path::new("x.json"),
    );
    assert!(!r.has_errors());
    assert_eq!(r.resources.len(), 1);
}

#[test]
fn duplicates_across_files_keep_the_first() {
    let mut r = load_str(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\n",
        Path::new("1.yaml"),
    );
    r.extend(load_str(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\nspec: {order: 5}\n",
        Path::new("2.yaml"),
    ));
    check_duplicates(&mut r);
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].origin.file, Path::new("1.yaml"));
    let e: Vec<_> = r.errors().collect();
    assert!(e[0].message.contains("defined twice"));
}

#[test]
fn rendering_shows_the_caret_under_the_token() {
    let r = fixture("000-accounts-allow.yaml");
    let text = r.diagnostics[1].render();
    assert!(
        text.contains("15 |     - NamespaceSelector:\n   |       ^^^^^^^^^^^^^^^^^\n"),
        "{text}"
    );
    assert!(text.contains("= help: did you mean `namespaceSelector`?"));
    assert!(text.contains("fixtures/seeds/000-accounts-allow.yaml:15:7"));
}

#[test]
fn interleaved_duplicates_leave_exactly_the_first_of_each() {
    let tier = |n: &str, order: u32| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {n}}}\nspec: {{order: {order}}}\n---\n"
        )
    };
    let text = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)]
        .map(|(n, o)| tier(n, o))
        .concat();
    let mut r = load_str(&text, Path::new("t.yaml"));
    check_duplicates(&mut r);
    let kept: Vec<(String, usize)> = r
        .resources
        .iter()
        .map(|l| (l.resource.key().name.clone(), l.origin.line))
        .collect();
    assert_eq!(
        kept,
        [
            ("a".to_string(), 1),
            ("b".to_string(), 6),
            ("c".to_string(), 16)
        ]
    );
    assert_eq!(r.errors().count(), 3);
}

#[test]
fn sizes_parse_and_oversized_files_are_refused_unread() {
    assert_eq!(parse_size("16MiB"), Some(16 << 20));
    assert_eq!(parse_size("64M"), Some(64 << 20));
    assert_eq!(parse_size("300MB"), Some(300_000_000));
    assert_eq!(parse_size("1048576"), Some(1 << 20));
    assert_eq!(parse_size("2 GiB"), Some(2 << 30));
    for bad in ["", "0", "MiB", "12 parsecs", "-1M"] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
    let path = std::env::temp_dir().join(format!("tortie-size-{}.yaml", std::process::id()));
    std::fs::write(&path, "a: 1\n".repeat(100)).unwrap();
    let mut budget = yaml::Budget::new(1_000);
    let r = load_file_with(&path, 499, &mut budget);
    assert!(r.rejected && r.resources.is_empty());
    let d = &r.diagnostics[0];
    assert!(
        d.message
            .contains("the file is 500 bytes, more than the limit of 499 bytes"),
        "{}",
        d.message
    );
    assert!(d.hint.as_deref().unwrap().contains("TORTIE_MAX_FILE_SIZE"));
    assert!(!load_file_with(&path, 500, &mut budget).rejected);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn seven_mistakes_of_one_policy_are_seven_positioned_errors() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/diagnostics/seven-mistakes.yaml");
    let r = load_file(&path);
    let got: Vec<(usize, usize, String, String)> = r
        .errors()
        .map(|d| {
            let p = d.pos.unwrap();
            (
                p.line,
                p.col,
                d.path.as_ref().unwrap().to_string(),
                d.message.clone(),
            )
        })
        .collect();
    let want = [
        (8, 10, "spec.order", "expected a number"),
        (9, 3, "spec.selectr", "unknown field `selectr`"),
        (10, 11, "spec.types[0]", "unknown value `Ingres`"),
        (12, 13, "spec.ingress[0].action", "unknown value `allow`"),
        (13, 15, "spec.ingress[0].protocol", "unknown protocol `tcp`"),
        (
            15,
            14,
            "spec.ingress[0].destination.ports",
            "expected a list",
        ),
        (
            18,
            13,
            "spec.ingress[1].source.nets",
            "expected a list of strings",
        ),
    ];
    assert_eq!(got.len(), 7, "{got:#?}");
    for ((l, c, p, m), (wl, wc, wp, wm)) in got.iter().zip(want) {
        assert_eq!((*l, *c, p.as_str()), (wl, wc, wp), "{m}");
        assert!(m.starts_with(wm), "{m:?}");
    }
    assert!(
        r.errors()
            .all(|d| d.resource.as_deref() == Some("GlobalNetworkPolicy seven-mistakes"))
    );
    assert!(r.resources.is_empty());
}

#[test]
fn kinds_tortie_does_not_use_are_skipped_with_notes() {
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\n---\napiVersion: projectcalico.org/v3\nkind: Bogus\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Namespce\nmetadata: {name: t}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules: []\n";
    let mut r = load_str(text, Path::new("k.yaml"));
    let notes: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .map(|d| (d.pos.unwrap().line, d.message.clone()))
        .collect();
    assert_eq!(
        notes,
        [
            (
                2,
                "skipped BGPPeer (projectcalico.org/v3): tortie does not use this kind".to_string()
            ),
            (
                6,
                "skipped Service (v1): tortie does not use this kind".to_string()
            ),
            (
                10,
                "skipped Node (v1): tortie does not use this kind".to_string()
            ),
            // Whatever its fields: `rules` is not a field tortie knows.
            (
                26,
                "skipped ClusterRole (rbac.authorization.k8s.io/v1): tortie does not use this kind"
                    .to_string()
            ),
        ]
    );
    assert_eq!(r.skipped, 4);
    // A network policy kind tortie does not enforce, an unknown Calico kind
    // and a misspelt kind stay errors.
    let errors: Vec<_> = r.errors().map(|d| d.message.clone()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("AdminNetworkPolicy"));
    assert!(errors[1].contains("`Bogus`"));
    assert!(errors[2].contains("`Namespce`"));
    assert_eq!(r.counts(), (3, 0, 4));
    r.make_strict();
    assert_eq!(r.counts(), (7, 0, 0));
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.starts_with("unexpected kind: Service (v1)"))
    );
}

#[test]
fn validation_carets_point_at_the_key_to_remove_and_the_bad_character() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: a\n  namespace: foo\nspec:\n  selector: role == 'db' &&& x\n  ingress:\n  - action: Allow\n    source:\n      selector: \"a == 'b' &&& c\"\n";
    let r = load_str(text, Path::new("c.yaml"));
    let got: Vec<(usize, usize)> = r
        .errors()
        .map(|d| (d.pos.unwrap().line, d.pos.unwrap().col))
        .collect();
    // The key `namespace`, the third `&` of each selector (plain, quoted).
    assert_eq!(got, [(5, 3), (7, 28), (11, 29)], "{:#?}", r.diagnostics);
}

#[test]
fn reading_a_file_document_by_document_equals_loading_its_text() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = TempDir::new("stream");
    let dir = &tmp.0;
    let extra = dir.join("edge.yaml");
    std::fs::write(
        &extra,
        "--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n--- \napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n  bogus: 1\r\n...\n# only a comment\n---\nkind: [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: “c”}\n",
    )
    .unwrap();
    let mut files = resource_files(&root.join("fixtures")).unwrap();
    files.extend(resource_files(&root.join("rulesets")).unwrap());
    files.push(extra);
    let mut compared = 0;
    for f in &files {
        let streamed = load_file(f);
        let text = std::fs::read_to_string(f).unwrap();
        let whole = load_str(&text, f);
        assert_eq!(streamed.diagnostics, whole.diagnostics, "{}", f.display());
        assert_eq!(streamed.resources, whole.resources, "{}", f.display());
        assert_eq!(streamed.values, whole.values, "{}", f.display());
        compared += streamed.diagnostics.len();
    }
    assert!(compared > 30, "{compared} diagnostics compared");
    // Not UTF-8: the line is named, nothing is kept.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: \xff}\n",
    )
    .unwrap();
    let r = load_file(&bad);
    assert!(r.rejected && r.resources.is_empty());
    assert!(
        r.diagnostics[0].message.contains("not UTF-8 text (line 3)"),
        "{:?}",
        r.diagnostics
    );
}

/// A temporary directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tortie-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_in_parallel(path: &Path, threads: usize, budget: &mut Budget) -> LoadResult {
    let file = std::fs::File::open(path).unwrap();
    let reader = std::io::BufReader::new(std::io::Read::take(file, (1 << 30) + 1));
    load_parallel(path, reader, 1 << 30, budget, threads)
}

#[test]
fn loading_on_several_threads_gives_what_one_thread_gives() {
    let dir = TempDir::new("parallel");
    let path = dir.0.join("cluster.yaml");
    let mut text = crate::model::emit::cluster_dump(&crate::synth::generate(crate::synth::Size::S));
    // Problems spread over the file: a syntax error, a decode error, a
    // foreign kind, a duplicate.
    text.push_str("kind: [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, bogus: 1}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n");
    text.insert_str(
        0,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-0}\n---\n",
    );
    std::fs::write(&path, &text).unwrap();
    let one = load_file(&path);
    assert!(
        one.resources.len() > 4 * BATCH_DOCS,
        "{} resources",
        one.resources.len()
    );
    for threads in [2, 3] {
        let mut budget = Budget::new(Limits::CLI.max_file_values);
        let mut many = load_in_parallel(&path, threads, &mut budget);
        // Duplicates are found across files by `load_paths`; here, by hand.
        check_duplicates(&mut many);
        let mut one = load_file(&path);
        check_duplicates(&mut one);
        assert_eq!(many.diagnostics, one.diagnostics);
        assert_eq!(many.resources, one.resources);
        assert_eq!((many.values, many.skipped), (one.values, one.skipped));
        assert_eq!(many.counts(), (3, 0, 1));
    }
    // The file's budget is shared by the threads: an overrun rejects the file.
    let mut small = Budget::new(one.values / 2);
    let r = load_in_parallel(&path, 2, &mut small);
    assert!(r.rejected && r.resources.is_empty());
    assert_eq!(r.over_budget, Some(yaml::BudgetKind::File));
    assert!(
        r.diagnostics[0]
            .message
            .contains(&format!("more than {} values", one.values / 2))
    );
    // And so is the datastore's, charged when the file is read.
    let pool = Pool::new(one.values - 1);
    let mut shared = Budget::with_pool(usize::MAX, &pool, 0);
    let r = load_in_parallel(&path, 2, &mut shared);
    assert_eq!(r.over_budget, Some(yaml::BudgetKind::Datastore));
}

#[test]
fn endpoint_slices_load_with_positioned_errors_and_warnings() {
    let y = "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: a, namespace: x}\naddressType: IPv4\nendpoints: []\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b, namespace: x}\naddressType: IPv4\nendpoints:\n- addresses: [198.18.0.5]\n  zone: z1\n- addresses: [198.18.0.300]\nports: [{port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: c, namespace: x, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [198.18.0.6], nodeName: n2}]\n";
    let r = load_str(y, Path::new("slices.yaml"));
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("slices.yaml:2:7:") && errors[0].contains("discovery.k8s.io/v1`"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("slices.yaml:14:15:")
            && errors[1].contains("`198.18.0.300` is not an IP address"),
        "{errors:#?}"
    );
    let warnings: Vec<String> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.one_line())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("no `kubernetes.io/service-name` label")),
        "{warnings:#?}"
    );
    let names: Vec<String> = r
        .resources
        .iter()
        .map(|l| l.resource.key().to_string())
        .collect();
    assert_eq!(names, ["EndpointSlice x/c"], "only the valid slice loads");
}
