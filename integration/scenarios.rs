//! Seed scenarios with real packets: each step applies the policies to a
//! node namespace and asserts a full truth table of connection attempts.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use support::*;

type Labels = BTreeMap<(String, String), Vec<(String, String)>>;
type NsLabels = BTreeMap<String, Vec<(String, String)>>;

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn seed(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/seeds")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// One expectation: from a pod (or the outside) to an address and port.
struct Expect<'a> {
    from: &'a Netns,
    from_name: &'a str,
    to: IpAddr,
    to_name: &'a str,
    port: u16,
    proto: Proto,
    allowed: bool,
}

fn check(step: &str, expectations: &[Expect<'_>]) {
    let cells: Vec<(Probe, bool, String)> = expectations
        .iter()
        .map(|e| {
            (
                Probe {
                    from: e.from.path(),
                    to: e.to,
                    port: e.port,
                    proto: e.proto,
                },
                e.allowed,
                format!(
                    "{step}: {} -> {}:{} {:?}",
                    e.from_name, e.to_name, e.port, e.proto
                ),
            )
        })
        .collect();
    if let Err(e) = check_truth_table(&cells) {
        panic!("{e}");
    }
}

#[test]
fn seed_004_tutorial_step_by_step() {
    if !kernel::require_kernel("seed_004_tutorial_step_by_step") {
        return;
    }
    // The demo walks the tutorial and checks every step's truth table
    // (including the DNS side effect of step 08).
    let mut out = Vec::new();
    let report = tortie::demo::run(&mut out).expect("demo runs");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(report.steps, 9, "{text}");
    assert_eq!(report.probes, 54);
    assert!(
        report.mismatches.is_empty(),
        "{:#?}\n{text}",
        report.mismatches
    );
}
