//! `tortie selector` run as a user would: the built binary, its stdout,
//! stderr and exit code for the canonical form (0), match (0), no match (1),
//! parse errors with column and caret (2), and the `--labels` list syntax.

use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn selector(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tortie"))
        .arg("selector")
        .args(args)
        .output()
        .expect("run tortie");
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn prints_the_canonical_form_and_exits_0() {
    let r = selector(&["  app=='web'&&has( tier )"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "(app == \"web\" && has(tier))\n");
    // The canonical form parses back to itself.
    let again = selector(&[r.stdout.trim_end()]);
    assert_eq!(again.code, 0);
    assert_eq!(again.stdout, r.stdout);
    let empty = selector(&[""]);
    assert_eq!((empty.code, empty.stdout.as_str()), (0, "all()\n"));
}

#[test]
fn match_exits_0_and_no_match_exits_1() {
    let m = selector(&[
        "app == 'web' && tier != 'db'",
        "--labels",
        "app=web,tier=fe",
    ]);
    assert_eq!((m.code, m.stdout.as_str()), (0, "match\n"), "{}", m.stderr);
    let n = selector(&[
        "app == 'web' && tier != 'db'",
        "--labels",
        "app=web,tier=db",
    ]);
    assert_eq!(
        (n.code, n.stdout.as_str()),
        (1, "no match\n"),
        "{}",
        n.stderr
    );
}

#[test]
fn parse_error_exits_2_with_the_column_and_a_caret() {
    let r = selector(&["app == 'web' && && x"]);
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("at column 17"), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines[1], "  app == 'web' && && x", "{}", r.stderr);
    // The caret sits under the second `&&` (column 17).
    assert_eq!(lines[2], format!("  {}^", " ".repeat(16)), "{}", r.stderr);
    // Columns count characters, not bytes.
    let u = selector(&["a == 'é' ^"]);
    assert_eq!(u.code, 2);
    assert!(u.stderr.contains("at column 10"), "{}", u.stderr);
    assert_eq!(
        u.stderr.lines().nth(2),
        Some("           ^"),
        "{}",
        u.stderr
    );
}

#[test]
fn an_empty_value_is_a_value_and_the_empty_list_is_no_labels() {
    let r = selector(&["a == ''", "--labels", "a=,b=x"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "match\n"), "{}", r.stderr);
    let has = selector(&["has(a) && b == 'x'", "--labels", "a=,b=x"]);
    assert_eq!(has.code, 0, "{}", has.stdout);
    let none = selector(&["has(a)", "--labels", ""]);
    assert_eq!(
        (none.code, none.stdout.as_str()),
        (1, "no match\n"),
        "{}",
        none.stderr
    );
    let all = selector(&["all()", "--labels", ""]);
    assert_eq!((all.code, all.stdout.as_str()), (0, "match\n"));
    let absent = selector(&["a != 'x'", "--labels", ""]);
    assert_eq!(absent.code, 0, "`!=` matches an absent label");
}

#[test]
fn a_malformed_label_list_exits_2_naming_the_item() {
    for (labels, says) in [
        ("a", "item 1 `a` has no `=`"),
        ("b=1,a", "item 2 `a` has no `=`"),
        ("=x", "item 1 `=x` has an empty key"),
        ("a=1,a=2", "key `a` is given twice"),
    ] {
        let r = selector(&["has(a)", "--labels", labels]);
        assert_eq!(r.code, 2, "--labels {labels:?}: {}", r.stdout);
        assert!(r.stdout.is_empty(), "--labels {labels:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "--labels {labels:?}: {}", r.stderr);
    }
}
