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
