//! The command line as users run it: the built binary, its output and its
//! exit codes.

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
