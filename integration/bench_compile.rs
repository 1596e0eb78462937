//! Compile benchmark: builds synthetic clusters (sizes S, M, L, XL; or
//! `--size NAME` to run one) and times cluster build + compile + render for
//! the node `node-0`, reporting the median of several runs, the ruleset's
//! shape and the process's peak resident memory so far (the generated
//! input included; run one size per process to read it per size).
//! Run: `cargo bench --bench compile [-- --size L]`.

use std::time::{Duration, Instant};

use tortie::calc::Cluster;
use tortie::compile::compile;
use tortie::synth::{LOCAL_NODE, Size, generate};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The process's peak resident memory (VmHWM) in MB, 0 when unknown.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let smoke = !args.iter().any(|a| a == "--bench");
    let only = if smoke {
        Some("S".to_string())
    } else {
        args.iter()
            .position(|a| a == "--size")
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    let sizes = [
        ("S", Size::S),
        ("M", Size::M),
        ("L", Size::L),
        ("XL", Size::XL),
    ];
    println!(
        "| size | policies | pods | local endpoints | build | compile | render | total (median of {runs}) | chains | rules | jumps | sets | set elements | text | peak memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, size) in sizes {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let resources = generate(size);
        let (mut b, mut c, mut r, mut t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..runs {
            let t0 = Instant::now();
            let cluster = Cluster::build(&resources, LOCAL_NODE);
            let t1 = Instant::now();
            let rs = compile(&cluster, LOCAL_NODE);
            let t2 = Instant::now();
            let text = rs.render();
            let t3 = Instant::now();
            b.push(t1 - t0);
            c.push(t2 - t1);
            r.push(t3 - t2);
            t.push(t3 - t0);
            last = Some((rs, text.len()));
        }
        let (rs, bytes) = last.expect("one run");
        let elements: usize = rs.sets.values().map(|s| s.elements.len()).sum();
        println!(
            "| {name} | {} | {} | {} | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {} | {} | {} | {} | {} | {:.1} MB | {:.0} MB |",
            size.policies,
            size.pods,
            size.local_pods,
            median(b).as_secs_f64(),
            median(c).as_secs_f64(),
            median(r).as_secs_f64(),
            median(t).as_secs_f64(),
            rs.chains.len(),
            rs.rule_count(),
            rs.jump_count(),
            rs.sets.len(),
            elements,
            bytes as f64 / 1e6,
            peak_rss_mb()
        );
    }
}
