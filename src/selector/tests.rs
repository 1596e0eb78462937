use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn labels(spec: &str) -> BTreeMap<String, String> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// (selector, labels as `k=v,k=v`, expected match)
const MATCH_TABLE: &[(&str, &str, bool)] = &[
    // empty and all()
    ("", "", true),
    ("", "a=b", true),
    ("   ", "a=b", true),
    ("all()", "", true),
    ("all()", "a=b", true),
    ("all( )", "a=b", true),
    ("!all()", "a=b", false),
    ("global()", "", true),
    ("!global()", "", false),
    // ==
    ("a == 'b'", "a=b", true),
    ("a == \"b\"", "a=b", true),
    ("a == 'b'", "a=c", false),
    ("a == 'b'", "", false),
    ("a == 'b'", "b=b", false),
    ("a=='b'", "a=b", true),
    ("a\t==\t'b'", "a=b", true),
    ("a == ''", "a=", true),
    ("a == ''", "", false),
    ("a == 'B'", "a=b", false),
    ("a == 'b c'", "a=b c", true),
    ("a == \"it's\"", "a=it's", true),
    ("a == '\"q\"'", "a=\"q\"", true),
    ("a.b/c-d_e == 'x'", "a.b/c-d_e=x", true),
    (
        "projectcalico.org/namespace == 'default'",
        "projectcalico.org/namespace=default",
        true,
    ),
    (
        "projectcalico.org/namespace == 'default'",
        "projectcalico.org/namespace=kube-system",
        false,
    ),
    ("ibm.role=='worker_public'", "ibm.role=worker_public", true),
    (
        "ibm.role=='worker_public'",
        "ibm.role=worker_private",
        false,
    ),
    ("123 == '456'", "123=456", true),
    // !=
    ("a != 'b'", "a=b", false),
    ("a != 'b'", "a=c", true),
    ("a != 'b'", "", true),
    ("a != 'b'", "c=b", true),
    ("a!='b'", "a=b", false),
    ("a != ''", "a=", false),
    ("a != ''", "", true),
    // has
    ("has(a)", "a=b", true),
    ("has(a)", "a=", true),
    ("has(a)", "b=a", false),
    ("has(a)", "", false),
    ("has( a )", "a=x", true),
    ("has(\ta\t)", "a=x", true),
    ("!has(a)", "", true),
    ("!has(a)", "a=x", false),
    ("! has(a)", "a=x", false),
    ("has(a.b/c)", "a.b/c=1", true),
    (
        "has(projectcalico.org/namespace)",
        "projectcalico.org/namespace=x",
        true,
    ),
    // in / not in
    ("a in {'b'}", "a=b", true),
    ("a in {'b'}", "a=c", false),
    ("a in {'b'}", "", false),
    ("a in {'b', 'c'}", "a=c", true),
    ("a in {'b','c'}", "a=d", false),
    ("a in {}", "a=b", false),
    ("a in {}", "", false),
    ("a in {'b',}", "a=b", true),
    ("a in { 'b' , 'c' , }", "a=c", true),
    ("a in {\"b\", 'c'}", "a=b", true),
    ("a in {'c', 'b', 'c'}", "a=b", true),
    ("a in {''}", "a=", true),
    ("a not in {'b'}", "a=b", false),
    ("a not in {'b'}", "a=c", true),
    ("a not in {'b'}", "", true),
    ("a not in {}", "a=b", true),
    ("a not in {}", "", true),
    ("a not in {'b', 'c'}", "a=c", false),
    ("a notin {'b'}", "a=c", true),
    ("a notin {'b'}", "a=b", false),
    ("a  not   in  {'b'}", "a=b", false),
    ("a in{'b'}", "a=b", true),
    ("!a in {'b'}", "a=b", false),
    ("!a in {'b'}", "", true),
    // contains / starts with / ends with
    ("a contains 'bc'", "a=abcd", true),
    ("a contains 'bc'", "a=abd", false),
    ("a contains 'bc'", "", false),
    ("a contains ''", "a=x", true),
    ("a contains ''", "", false),
    ("a starts with 'ab'", "a=abcd", true),
    ("a starts with 'ab'", "a=cab", false),
    ("a starts with 'ab'", "", false),
    ("a startswith 'ab'", "a=abc", true),
    ("a starts  with 'ab'", "a=abc", true),
    ("a ends with 'cd'", "a=abcd", true),
    ("a ends with 'cd'", "a=cdab", false),
    ("a ends with 'cd'", "", false),
    ("a endswith 'cd'", "a=xcd", true),
    ("!a contains 'x'", "", true),
    ("!a starts with 'x'", "a=xy", false),
    // labels that look like keywords
    ("contains == 'x'", "contains=x", true),
    ("in == 'x'", "in=x", true),
    ("has == 'x'", "has=x", true),
    ("all == 'x'", "all=x", true),
    ("global == 'x'", "global=x", true),
    ("not == 'x'", "not=x", true),
    ("starts == 'x'", "starts=x", true),
    ("inx in {'y'}", "inx=y", true),
    ("containsx == 'y'", "containsx=y", true),
    // &&
    ("a == 'b' && c == 'd'", "a=b,c=d", true),
    ("a == 'b' && c == 'd'", "a=b", false),
    ("a == 'b' && c == 'd'", "c=d", false),
    ("a == 'b' && c == 'd'", "", false),
    ("a == 'b'&&c == 'd'", "a=b,c=d", true),
    ("has(a) && has(b) && has(c)", "a=1,b=2,c=3", true),
    ("has(a) && has(b) && has(c)", "a=1,b=2", false),
    ("a != 'x' && b != 'y'", "", true),
    ("a != 'x' && b != 'y'", "a=x", false),
    ("all() && a == 'b'", "a=b", true),
    ("all() && a == 'b'", "a=c", false),
    // ||
    ("a == 'b' || c == 'd'", "a=b", true),
    ("a == 'b' || c == 'd'", "c=d", true),
    ("a == 'b' || c == 'd'", "", false),
    ("a == 'b'||c == 'd'", "c=d", true),
    ("has(a) || has(b) || has(c)", "c=1", true),
    ("has(a) || has(b) || has(c)", "d=1", false),
    ("all() || a == 'b'", "", true),
    // precedence: && binds tighter than ||
    ("a == '1' || b == '2' && c == '3'", "a=1", true),
    ("a == '1' || b == '2' && c == '3'", "b=2", false),
    ("a == '1' || b == '2' && c == '3'", "b=2,c=3", true),
    ("a == '1' && b == '2' || c == '3'", "c=3", true),
    ("a == '1' && b == '2' || c == '3'", "a=1", false),
    ("a == '1' && (b == '2' || c == '3')", "a=1,c=3", true),
    ("a == '1' && (b == '2' || c == '3')", "c=3", false),
    ("(a == '1' || b == '2') && c == '3'", "b=2,c=3", true),
    ("(a == '1' || b == '2') && c == '3'", "b=2", false),
    // ! binds to one operation
    ("!a == 'x'", "a=x", false),
    ("!a == 'x'", "a=y", true),
    ("!a == 'x'", "", true),
    ("!a == 'x' && b == 'y'", "b=y", true),
    ("!a == 'x' && b == 'y'", "a=x,b=y", false),
    ("!(a == 'x' && b == 'y')", "a=x", true),
    ("!(a == 'x' && b == 'y')", "a=x,b=y", false),
    ("!(has(b) || !has(a))", "a=1", true),
    ("!(has(b) || !has(a))", "a=1,b=1", false),
    ("!(has(b) || !has(a))", "", false),
    ("! (has( b)||! has(a ))", "a=1", true),
    ("!!has(a)", "a=1", true),
    ("!!has(a)", "", false),
    ("!!!has(a)", "", true),
    ("! ! has(a)", "a=1", true),
    ("!(!has(a))", "a=1", true),
    ("!a != 'x'", "", false),
    ("!a != 'x'", "a=x", true),
    ("!a not in {'x'}", "", false),
    ("!a not in {'x'}", "a=x", true),
    // parentheses
    ("(a == 'b')", "a=b", true),
    ("((a == 'b'))", "a=b", true),
    ("( ( a == 'b' ) )", "a=b", true),
    ("(all())", "", true),
    ("(has(a)) && (has(b))", "a=1,b=1", true),
    (
        "((has(a) || has(b)) && (has(c) || has(d)))",
        "b=1,c=1",
        true,
    ),
    ("((has(a) || has(b)) && (has(c) || has(d)))", "b=1", false),
    // generated k8s selectors
    (
        "projectcalico.org/orchestrator == 'k8s' && run == 'nginx'",
        "projectcalico.org/orchestrator=k8s,run=nginx",
        true,
    ),
    (
        "projectcalico.org/orchestrator == 'k8s' && run == 'nginx'",
        "run=nginx",
        false,
    ),
    (
        "(projectcalico.org/orchestrator == 'k8s' && app == 'backend') && projectcalico.org/namespace == 'default'",
        "projectcalico.org/orchestrator=k8s,app=backend,projectcalico.org/namespace=default",
        true,
    ),
    (
        "(projectcalico.org/orchestrator == 'k8s' && app == 'backend') && projectcalico.org/namespace == 'default'",
        "projectcalico.org/orchestrator=k8s,app=backend,projectcalico.org/namespace=other",
        false,
    ),
    ("pcns.type == 'monitoring'", "pcns.type=monitoring", true),
    ("pcns.type == 'monitoring'", "type=monitoring", false),
    (
        "pod in {'b', 'c'} && pcns.ns not in {'x'}",
        "pod=b,pcns.ns=y",
        true,
    ),
    (
        "pod in {'b', 'c'} && pcns.ns not in {'x'}",
        "pod=b,pcns.ns=x",
        false,
    ),
    (
        "pod in {'b', 'c'} && pcns.ns not in {'x'}",
        "pod=a,pcns.ns=y",
        false,
    ),
];

#[test]
fn match_table() {
    assert!(
        MATCH_TABLE.len() >= 150,
        "table has {} cases",
        MATCH_TABLE.len()
    );
    for (text, spec, want) in MATCH_TABLE {
        let sel = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let got = sel.matches(&labels(spec));
        assert_eq!(
            got, *want,
            "selector {text:?} labels {spec:?} (parsed {sel})"
        );
        // The canonical form must evaluate the same way.
        let again = parse(&sel.canonical()).unwrap_or_else(|e| panic!("reparse {sel}: {e}"));
        assert_eq!(again, sel, "round trip of {text:?} via {sel}");
        assert_eq!(again.matches(&labels(spec)), *want);
    }
}

/// (selector, byte offset of the error, a fragment of the message)
const BAD_TABLE: &[(&str, usize, &str)] = &[
    ("a", 1, "operator after label `a`"),
    ("a ==", 4, "quoted value"),
    ("a == b", 5, "quoted value"),
    ("a = 'b'", 2, "`=` is not an operator"),
    ("a === 'b'", 4, "quoted value"),
    ("a == 'b", 5, "unterminated string"),
    ("a == \"b", 5, "unterminated string"),
    ("a == 'b\"", 5, "unterminated string"),
    ("== 'b'", 0, "expected a label"),
    ("'a' == 'b'", 0, "expected a label"),
    ("a == 'b' &&", 11, "expected a label"),
    ("a == 'b' ||", 11, "expected a label"),
    ("&& a == 'b'", 0, "expected a label"),
    ("a == 'b' & c == 'd'", 9, "single `&`"),
    ("a == 'b' | c == 'd'", 9, "single `|`"),
    ("a == 'b' c == 'd'", 9, "`&&`, `||` or the end"),
    ("(a == 'b'", 9, "`)` to close the `(`"),
    ("a == 'b')", 8, "`&&`, `||` or the end"),
    ("()", 1, "expected a label"),
    ("has(a", 5, "`)` to close `has(`"),
    ("has()", 4, "label name inside"),
    ("has(a b)", 6, "`)` to close `has(`"),
    ("has('a')", 4, "label name inside"),
    ("all(a)", 4, "takes no arguments"),
    ("global(x)", 7, "takes no arguments"),
    ("a in 'b'", 5, "`{` to open"),
    ("a in {'b'", 9, "`,` or `}`"),
    ("a in {b}", 6, "quoted value"),
    ("a in {'b' 'c'}", 10, "`,` or `}`"),
    ("a not in", 8, "`{` to open"),
    ("a not 'b'", 2, "operator after label"),
    ("a starts 'b'", 2, "operator after label"),
    ("a contains", 10, "quoted value"),
    ("a ends with b", 12, "quoted value"),
    ("a == 'b'\n&& c == 'd'", 8, "newlines are not allowed"),
    ("a ==\n'b'", 4, "newlines are not allowed"),
    ("a == “b”", 5, "curly quote"),
    ("“a” == 'b'", 0, "curly quote"),
    ("a:b == 'c'", 1, "operator after label"),
    ("a == 'b' && !", 13, "expected a label"),
    ("!", 1, "expected a label"),
    ("a in {'b',,}", 10, "quoted value"),
    ("a=='x' &&& b=='y'", 9, "single `&`"),
];

#[test]
fn bad_selectors_report_the_column() {
    assert!(BAD_TABLE.len() >= 30);
    for (text, offset, fragment) in BAD_TABLE {
        let err = parse(text).expect_err(text);
        assert_eq!(err.offset, *offset, "offset for {text:?}: {err}");
        assert!(
            err.message.contains(fragment),
            "message for {text:?} was {:?}, wanted {fragment:?}",
            err.message
        );
    }
}

#[test]
fn label_length_limit() {
    let long = "a".repeat(MAX_LABEL_LEN);
    assert!(parse(&format!("has({long})")).is_ok());
    let too_long = "a".repeat(MAX_LABEL_LEN + 1);
    let err = parse(&format!("has({too_long})")).unwrap_err();
    assert_eq!(err.offset, 4);
    assert!(err.message.contains("longer than 512"));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!("{}has(a){}", "(".repeat(5000), ")".repeat(5000));
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("nested too deeply"));
    let ok = format!("{}has(a){}", "(".repeat(50), ")".repeat(50));
    assert_eq!(parse(&ok).unwrap(), Selector::Has("a".into()));
}

/// (input, canonical form)
const CANONICAL: &[(&str, &str)] = &[
    ("", "all()"),
    ("all()", "all()"),
    ("a=='b'", "a == \"b\""),
    ("a == \"b\"", "a == \"b\""),
    ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
    ("a!='b'", "a != \"b\""),
    ("has( a )", "has(a)"),
    ("!has(a)", "!has(a)"),
    ("!!has(a)", "has(a)"),
    ("!(!has(a))", "has(a)"),
    ("a in {'c','b','c'}", "a in {\"b\", \"c\"}"),
    ("a notin {}", "a not in {}"),
    ("a in {'b',}", "a in {\"b\"}"),
    ("a startswith 'x'", "a starts with \"x\""),
    ("a  ends   with 'x'", "a ends with \"x\""),
    ("a contains 'x'", "a contains \"x\""),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    (
        "a=='1'&&b=='2'&&c=='3'",
        "(a == \"1\" && b == \"2\" && c == \"3\")",
    ),
    (
        "a=='1'||b=='2'&&c=='3'",
        "(a == \"1\" || (b == \"2\" && c == \"3\"))",
    ),
    (
        "(a=='1'||b=='2')&&c=='3'",
        "((a == \"1\" || b == \"2\") && c == \"3\")",
    ),
    ("((a=='1'))", "a == \"1\""),
    ("global()", "global()"),
];

#[test]
fn canonical_forms() {
    for (input, want) in CANONICAL {
        let sel = parse(input).unwrap();
        assert_eq!(sel.canonical(), *want, "canonical of {input:?}");
        assert_eq!(parse(want).unwrap(), sel);
    }
}

#[test]
fn uid_derives_from_the_canonical_form() {
    // Equal selectors written differently share one id; different ones do not.
    let a = parse("! (has( b)||! has(a ))").unwrap();
    let b = parse("!(has(b) || !has(a))").unwrap();
    assert_eq!(a.uid(), b.uid());
    assert_eq!(a.uid().len(), 2 + 38);
    assert!(a.uid().starts_with("s:"));
    assert_ne!(a.uid(), parse("has(a)").unwrap().uid());
    // Ids Calico publishes for these canonical forms.
    assert_eq!(a.uid(), "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q");
    assert_eq!(
        Selector::All.uid(),
        "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    );
    assert_eq!(
        parse("! (a == \"b\"&&! c != \"d\")").unwrap().uid(),
        "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"
    );
}

#[test]
fn helpers() {
    let s = parse("b == 'x' && (has(a) || !c in {'1'}) && global()").unwrap();
    assert_eq!(s.label_keys(), vec!["a", "b", "c"]);
    assert!(s.uses_global());
    assert!(!parse("has(a)").unwrap().uses_global());
    assert_eq!(
        Selector::All.and(parse("has(a)").unwrap()),
        parse("has(a)").unwrap()
    );
}

fn arb_label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("app.kubernetes.io/name".to_string()),
        "[a-z0-9_./-]{1,12}",
    ]
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("x".to_string()),
        Just("it's".to_string()),
        Just("say \"hi\"".to_string()),
        "[a-zA-Z0-9 _.-]{0,8}",
    ]
}

fn arb_selector() -> impl Strategy<Value = Selector> {
    let leaf = prop_oneof![
        Just(Selector::All),
        Just(Selector::Global),
        arb_label().prop_map(Selector::Has),
        (arb_label(), arb_value()).prop_map(|(k, v)| Selector::Equal(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Selector::NotEqual(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Selector::Contains(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Selector::EndsWith(k, v)),
        (arb_label(), proptest::collection::vec(arb_value(), 0..4)).prop_map(|(k, mut v)| {
            v.sort();
            v.dedup();
            Selector::In(k, v)
        }),
        (arb_label(), proptest::collection::vec(arb_value(), 0..4)).prop_map(|(k, mut v)| {
            v.sort();
            v.dedup();
            Selector::NotIn(k, v)
        }),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| match s {
                Selector::Not(x) => *x,
                x => Selector::Not(Box::new(x)),
            }),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Selector::And),
            proptest::collection::vec(inner, 2..4).prop_map(Selector::Or),
        ]
    })
}

proptest! {
    #[test]
    fn print_then_parse_is_identity(sel in arb_selector()) {
        let text = sel.canonical();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &sel);
        prop_assert_eq!(parsed.canonical(), text);
    }

    #[test]
    fn parser_never_panics(text in "\\PC{0,64}") {
        let _ = parse(&text);
    }

    #[test]
    fn parser_never_panics_on_selector_like_text(text in "[a-c!&|() '\"{},=in]{0,40}") {
        if let Ok(sel) = parse(&text) {
            let again = parse(&sel.canonical()).unwrap();
            prop_assert_eq!(again, sel);
        }
    }
}
