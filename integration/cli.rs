//! The command line as users run it: the built binary, its output and its
//! exit codes.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tortie(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tortie"));
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tortie");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const BROKEN: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: d}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - NamespaceSelector: {}\n";

#[test]
fn version_names_the_build_nft_and_kernel() {
    let out = tortie(&["version"], &[], None);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.starts_with(&format!("tortie {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("\nnft: ") && s.contains("\nkernel: "), "{s}");
}

#[test]
fn validate_reads_stdin_and_prints_json_for_ci() {
    let out = tortie(&["validate", "-f", "-", "-o", "json"], &[], Some(BROKEN));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "<stdin>");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(8), Some(7))
    );
    assert_eq!(d["field"], "spec.ingress[0].from[0].NamespaceSelector");
    assert!(d["help"].as_str().unwrap().contains("namespaceSelector"));
    // Fixed, it passes.
    let fixed = BROKEN.replace("NamespaceSelector", "namespaceSelector");
    let out = tortie(&["validate", "-f", "-", "-o", "json"], &[], Some(&fixed));
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn felix_environment_variables_are_honoured() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n";
    let run =
        |env: &[(&str, &str)]| tortie(&["compile", "-f", "-", "--node", "n1"], env, Some(yaml));
    let plain = text(&run(&[]).stdout);
    assert!(
        plain.contains("DefaultEndpointToHostAction: Drop"),
        "{plain}"
    );
    let out = run(&[("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT")]);
    assert!(text(&out.stdout).contains("DefaultEndpointToHostAction: Accept"));
    let out = run(&[("FELIX_NOSUCHTHING", "1")]);
    assert!(
        text(&out.stderr).contains("FELIX_NOSUCHTHING: not a parameter tortie uses"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn compile_says_when_nothing_is_on_the_node_and_convert_when_nothing_converts() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: d}\nspec: {nodeName: worker-1}\nstatus: {podIP: 198.18.0.1}\n";
    let out = tortie(
        &["compile", "-f", "-", "--node", "Worker-1"],
        &[],
        Some(yaml),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("no endpoint is on this node") && err.contains("e.g. worker-1"),
        "{err}"
    );
    let calico = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all()}\n";
    let out = tortie(&["convert", "-f", "-"], &[], Some(calico));
    assert!(out.status.success());
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("nothing to convert"),
        "{}",
        text(&out.stderr)
    );
}

/// `tortie run` for about a second on an empty directory in a throwaway
/// namespace; its stderr. A file written meanwhile makes one change.
fn run_briefly(env: &[(&str, &str)], extra: &[&str]) -> String {
    let ns = tortie::sandbox::Netns::new("log");
    let dir =
        std::env::temp_dir().join(format!("tortie-cli-log-{}-{}", std::process::id(), ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tortie"));
    cmd.args(extra)
        .args([
            "run",
            "--node",
            "n1",
            "--netns",
            &ns.name,
            "--metrics-addr",
            "none",
            "--syslog",
            "none",
        ])
        .arg(format!("--datastore=dir:{}", dir.display()))
        .arg(format!("--lock-dir={}", dir.display()))
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    std::fs::write(
        dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text(&out.stderr)
}

#[test]
fn the_agent_log_has_levels_timestamps_rust_log_and_json() {
    if !support::kernel::require_kernel("the_agent_log_has_levels_timestamps_rust_log_and_json") {
        return;
    }
    let plain = run_briefly(&[], &[]);
    assert!(plain.contains(" INFO "), "{plain}");
    assert!(
        plain.lines().next().unwrap_or_default().starts_with("20"),
        "timestamp first: {plain}"
    );
    assert!(
        !plain.contains("changes received"),
        "debug hidden by default: {plain}"
    );
    let debug = run_briefly(&[("RUST_LOG", "debug")], &[]);
    assert!(debug.contains("changes received"), "{debug}");
    let felix = run_briefly(&[("FELIX_LOGSEVERITYSCREEN", "Debug")], &[]);
    assert!(felix.contains("changes received"), "{felix}");
    let json = run_briefly(&[], &["--log-format", "json"]);
    let first = json.lines().next().expect("a line");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO", "{first}");
    assert!(v["timestamp"].is_string(), "{first}");
}

fn fixture(name: &str) -> String {
    format!("{}/fixtures/diagnostics/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The seven mistakes of fixtures/diagnostics/seven-mistakes.yaml, each at
/// its line and column, with a fragment of its message.
const SEVEN: [(u64, u64, &str); 7] = [
    (8, 10, "expected a number, found the string \"100\""),
    (9, 3, "unknown field `selectr`"),
    (10, 11, "unknown value `Ingres`"),
    (12, 13, "unknown value `allow`"),
    (13, 15, "unknown protocol `tcp`"),
    (15, 14, "expected a list, found the integer 5432"),
    (
        18,
        13,
        "expected a list of strings, found the string \"198.18.0.0/24\"",
    ),
];

#[test]
fn seven_mistakes_are_seven_diagnostics_in_one_run() {
    let path = fixture("seven-mistakes.yaml");
    let out = tortie(&["validate", "-f", &path, "-o", "json"], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 7, "{v:#}");
    let got: Vec<(u64, u64, String)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let n = |k: &str| d[k].as_u64().unwrap();
            (
                n("line"),
                n("column"),
                d["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    for ((line, col, msg), (eline, ecol, emsg)) in got.iter().zip(SEVEN) {
        assert_eq!((*line, *col), (eline, ecol), "{msg}");
        assert!(msg.contains(emsg), "{msg:?} lacks {emsg:?}");
        assert!(!msg.contains("f64") && !msg.contains("u16") && !msg.contains("Vec"));
    }
    // The text form says the same, with the hint for the quoted number.
    let out = tortie(&["validate", "-f", &path], &[], None);
    let err = text(&out.stderr);
    assert!(err.contains("7 error(s), 0 warning(s)"), "{err}");
    assert!(err.contains("help: remove the quotes"), "{err}");
    assert!(err.contains("help: did you mean `selector`?"), "{err}");
}

const FOREIGN: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 198.18.0.0/16}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n";

#[test]
fn kinds_tortie_does_not_use_are_notes_and_strict_makes_them_errors() {
    let out = tortie(&["validate", "-f", "-"], &[], Some(FOREIGN));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let notes: Vec<&str> = err.lines().filter(|l| l.contains(": note: ")).collect();
    assert_eq!(notes.len(), 3, "{err}");
    assert!(notes[0].starts_with("<stdin>:2:7: note: skipped IPPool (projectcalico.org/v3)"));
    assert!(notes[1].contains("skipped Deployment (apps/v1)"), "{err}");
    assert!(notes[2].contains("skipped ConfigMap (v1)"), "{err}");
    assert!(text(&out.stdout).contains("Namespace: 1 valid"));
    // -o json carries the notes.
    let out = tortie(&["validate", "-f", "-", "-o", "json"], &[], Some(FOREIGN));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["errors"].as_u64(), v["notes"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(v["diagnostics"][1]["severity"], "note");
    assert_eq!(v["diagnostics"][1]["line"], 7);
    // --strict: errors, exit 1.
    let out = tortie(&["validate", "--strict", "-f", "-"], &[], Some(FOREIGN));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");
    assert!(
        err.contains("error: unexpected kind: Deployment (apps/v1)"),
        "{err}"
    );
    // compile shares the loader: a note without --strict, an error with it.
    let compile = |strict: bool| {
        let mut args = vec!["compile", "-f", "-", "--node", "n1"];
        if strict {
            args.push("--strict");
        }
        tortie(&args, &[], Some(FOREIGN))
    };
    let out = compile(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("note: skipped IPPool"));
    assert_eq!(compile(true).status.code(), Some(1));
}

#[test]
fn misspelt_kinds_stay_errors_with_a_suggestion() {
    let input = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicys\nmetadata: {name: x}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkpolicy\nmetadata: {name: y}\n---\napiVersion: v1\nkind: pods\nmetadata: {name: z}\n";
    let out = tortie(&["validate", "-f", "-"], &[], Some(input));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");
    assert!(err.contains("did you mean `NetworkPolicy`?"), "{err}");
    assert!(err.contains("did you mean `GlobalNetworkPolicy`?"), "{err}");
    assert!(!err.contains("note:"), "{err}");
}

#[test]
fn a_long_line_is_printed_cut_around_the_caret() {
    let long: String = (0..10_000)
        .map(|i| format!("\"l{i}\": \"v\", "))
        .collect::<String>();
    let more = long.replace("\"l", "\"m");
    let input = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: n, labels: {{{long}\"bad\": [1], {more}\"last\": x}}}}\n"
    );
    assert!(input.len() > 200_000);
    let out = tortie(&["validate", "-f", "-"], &[], Some(&input));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.len() < 2_000, "{} bytes printed", err.len());
    let source_line = err.lines().find(|l| l.starts_with("3 | ")).expect(&err);
    assert!(source_line.starts_with("3 | …") && source_line.ends_with('…'));
    assert!(err.contains("expected a string, found a list"), "{err}");
    // The caret is under the `[` of the bad value.
    let caret = err
        .lines()
        .find(|l| l.trim_start().starts_with("| ") && l.contains('^'))
        .unwrap();
    let at = caret.find('^').unwrap();
    assert_eq!(
        source_line.chars().nth(at),
        Some('['),
        "{source_line}\n{caret}"
    );
}
