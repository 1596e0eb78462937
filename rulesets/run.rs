//! Golden rulesets: every `rulesets/<case>.yaml` compiles, for the node named
//! on its first line (`# node: NAME`), to exactly `rulesets/<case>.nft`; each
//! expected file passes `nft -c -f` inside a throwaway network namespace; and
//! the output does not depend on the order of the input documents.
//!
//! To regenerate after an intended change: `UPDATE_GOLDEN=1 cargo test --test golden`,
//! then review the diff.

#[path = "../integration/support/kernel.rs"]
mod kernel;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tortie::calc::{Cluster, HostInterface};
use tortie::compile::compile;
use tortie::model::Resource;
use tortie::model::load::load_file;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rulesets");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn node_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# node: ")
        .unwrap_or_else(|| panic!("{}: first line must be `# node: NAME`", path.display()))
        .trim()
        .to_string()
}

/// `# host-interface: NAME=IP[,IP…]` header lines: the node's interfaces,
/// for host endpoints that bind by `expectedIPs`.
fn host_interfaces(path: &Path) -> BTreeMap<String, Vec<IpAddr>> {
    let text = std::fs::read_to_string(path).unwrap();
    let list: Vec<HostInterface> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# host-interface: "))
        .map(|spec| {
            spec.parse()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    HostInterface::map(&list)
}

fn cluster(case: &Path, resources: &[Resource], node: &str) -> Cluster {
    let mut c = Cluster::build(resources, node);
    c.host_interfaces = host_interfaces(case);
    c
}

fn load(path: &Path) -> Vec<Resource> {
    let r = load_file(path);
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(
        errors.is_empty(),
        "{}: input has errors:\n{}",
        path.display(),
        errors.join("\n")
    );
    r.resources.into_iter().map(|l| l.resource).collect()
}

#[test]
fn golden_rulesets_match_byte_for_byte() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "expected the golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let node = node_of(case);
        let resources = load(case);
        let text = compile(&cluster(case, &resources, &node), &node).render();
        let expected_path = case.with_extension("nft");
        if update {
            std::fs::write(&expected_path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "missing {} (run with UPDATE_GOLDEN=1)",
                expected_path.display()
            )
        });
        if expected != text {
            let line = expected
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .map(|i| i + 1)
                .unwrap_or(expected.lines().count().min(text.lines().count()) + 1);
            failures.push(format!(
                "{}: differs from the expected ruleset at line {line}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_does_not_depend_on_input_order() {
    for case in cases() {
        let node = node_of(&case);
        let resources = load(&case);
        let want = compile(&cluster(&case, &resources, &node), &node).render();
        let mut reversed = resources.clone();
        reversed.reverse();
        assert_eq!(
            want,
            compile(&cluster(&case, &reversed, &node), &node).render(),
            "{}",
            case.display()
        );
        // A deterministic shuffle: interleave from both ends.
        let mut shuffled = Vec::new();
        let (mut lo, mut hi) = (0usize, resources.len());
        while lo < hi {
            hi -= 1;
            shuffled.push(resources[hi].clone());
            if lo < hi {
                shuffled.push(resources[lo].clone());
                lo += 1;
            }
        }
        assert_eq!(
            want,
            compile(&cluster(&case, &shuffled, &node), &node).render(),
            "{}",
            case.display()
        );
    }
}

#[test]
fn every_expected_ruleset_passes_the_real_nft_parser() {
    if !kernel::require_kernel("every_expected_ruleset_passes_the_real_nft_parser") {
        return;
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let expected = case.with_extension("nft");
        match kernel::nft_check(&expected) {
            Ok(()) => checked += 1,
            Err(e) => failures.push(format!("{}:\n{e}", expected.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 10);
}
