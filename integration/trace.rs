//! Golden `tortie trace` outputs: each `integration/trace/<case>.args` holds
//! the arguments after `tortie trace` (paths relative to the repository);
//! the command's stdout, then its stderr and exit code when not empty and
//! 0, must equal `integration/trace/<case>.out` byte for byte. Cases whose
//! name ends in `.json` print JSON, which must also parse and follow the
//! schema of docs/trace.md.
//!
//! To regenerate after an intended change: `UPDATE_GOLDEN=1 cargo test --test trace`,
//! then review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("integration/trace"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "args"))
        .collect();
    v.sort();
    v
}

/// Runs `tortie trace ARGS` from the repository root: what it printed.
fn run(args: &str) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_tortie"))
        .current_dir(root())
        .arg("trace")
        .args(args.split_whitespace())
        .env_remove("NODENAME")
        .env("RUST_LOG", "off")
        .output()
        .expect("run tortie trace");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn transcript(stdout: &str, stderr: &str, code: i32) -> String {
    let mut t = stdout.to_string();
    if !stderr.is_empty() || code != 0 {
        t.push_str(&format!("--- stderr ---\n{stderr}--- exit {code} ---\n"));
    }
    t
}

/// The fields docs/trace.md promises, at every level.
fn check_schema(case: &Path, v: &serde_json::Value) {
    let verdict = v["verdict"].as_str().unwrap_or_default();
    assert!(
        matches!(verdict, "allow" | "deny"),
        "{}: verdict {verdict}",
        case.display()
    );
    for s in v["stages"].as_array().expect("stages") {
        let stage = s["stage"].as_str().expect("stage");
        assert!(
            [
                "egress",
                "ingress",
                "untracked",
                "prednat",
                "forward",
                "host-ingress",
                "host-egress"
            ]
            .contains(&stage),
            "{}: stage {stage}",
            case.display()
        );
        assert!(s["endpoint"].is_string());
        assert!(matches!(
            s["verdict"].as_str(),
            Some("allow" | "deny" | "pass")
        ));
        for t in s["tiers"].as_array().expect("tiers") {
            assert!(t["tier"].is_string() && t["outcome"].is_string());
            for p in t["policies"].as_array().expect("policies") {
                for k in ["kind", "namespace", "name"] {
                    assert!(p[k].is_string(), "{}: {k} in {p}", case.display());
                }
                assert!(p["rule"].is_u64() || p["rule"].is_null());
                assert!(p["action"].is_string() || p["action"].is_null());
            }
        }
    }
}

#[test]
fn golden_traces_match_byte_for_byte() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 8, "only {} trace cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let args = std::fs::read_to_string(case).unwrap();
        let (stdout, stderr, code) = run(args.trim());
        let got = transcript(&stdout, &stderr, code);
        let stem = case.file_stem().unwrap().to_string_lossy().into_owned();
        if stem.ends_with(".json") {
            assert_eq!(code, 0, "{}: {stderr}", case.display());
            let v: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}\n{stdout}", case.display()));
            check_schema(case, &v);
        }
        let expected_path = case.with_extension("out");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            wrong.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                case.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} traces differ (UPDATE_GOLDEN=1 to accept):\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_verdicts_of_the_golden_cases_are_the_expected_ones() {
    // Independent of the transcripts: what each case must decide.
    for (case, verdict) in [
        ("tiers-pass-then-allow", "verdict: allow"),
        ("tiers-end-of-tier-drop", "verdict: deny"),
        ("hep-failsafe", "verdict: allow"),
        ("hep-forward-allow", "verdict: allow"),
        ("tutorial-frontend-backend", "verdict: allow"),
        ("ipv6-echo", "verdict: allow"),
        ("whitelist-untracked-reply", "verdict: deny"),
        ("untracked-deny-drops-replies", "verdict: deny"),
    ] {
        let args =
            std::fs::read_to_string(root().join(format!("integration/trace/{case}.args"))).unwrap();
        let (stdout, stderr, code) = run(args.trim());
        assert_eq!(code, 0, "{case}: {stderr}");
        assert!(
            stdout.ends_with(&format!("{verdict}\n")),
            "{case}:\n{stdout}"
        );
    }
    let (_, stderr, code) =
        run(&std::fs::read_to_string(root().join("integration/trace/unknown-pod.args")).unwrap());
    assert_eq!(code, 2);
    assert!(stderr.contains("no such pod"), "{stderr}");
}
