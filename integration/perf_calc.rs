//! Compute per update (`cargo bench --bench perf`, section 3a): the
//! engine (`compile::incremental`) fed one update at a time, as the
//! daemon feeds it, on the synthetic cluster of each size. Each size runs
//! in its own process (`--child-calc SIZE`) so that its peak memory is its
//! own; it prints one line per measurement for the parent to tabulate.

use std::time::Instant;

use tortie::compile::incremental::Incremental;
use tortie::model::types::{ObjectMeta, Port, TierSpec};
use tortie::model::{Object, Resource, Update};
use tortie::synth::{LOCAL_NODE, Size, generate, pod_ip};

/// Updates per kind (changes of the default tier reach every policy and
/// endpoint: fewer of them).
const N: usize = 60;
const N_REBUILD: usize = 5;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Bench {
    engine: Incremental,
    lines: Vec<String>,
}

impl Bench {
    /// Times `apply` of each batch (the batches of one label).
    fn time(&mut self, label: &str, batches: Vec<Vec<Update>>) {
        // TORTIE_CALC_ONLY=TEXT times only the kinds whose label has TEXT
        // (for profiling one kind).
        if std::env::var("TORTIE_CALC_ONLY").is_ok_and(|only| !label.contains(&only)) {
            return;
        }
        let mut t = Vec::new();
        let mut sizes = Vec::new();
        for b in batches {
            let start = Instant::now();
            self.engine.apply(b);
            t.push(ms(start));
            let change = self.engine.take_change();
            sizes.push(change_size(self.engine.ruleset(), &change) as f64);
        }
        let n = t.len();
        self.lines.push(format!(
            "update\t{label}\t{:.3}\t{:.3}\t{n}",
            quantile(t.clone(), 0.5),
            quantile(t, 0.99)
        ));
        self.lines
            .push(format!("size\t{label}\t{:.0}", quantile(sizes, 0.5)));
    }
}

/// What an update changed in the ruleset: the rules of the chains it
/// re-rendered (as they are now), the elements of sets it replaced whole,
/// and the set elements it added or removed.
fn change_size(rs: &tortie::compile::ir::Ruleset, c: &tortie::compile::ir::Change) -> usize {
    // A chain removed (or left empty) counts as one.
    let rules: usize = c
        .chains
        .iter()
        .map(|n| rs.chains.get(n).map_or(1, |ch| ch.rules.len().max(1)))
        .sum();
    let sets: usize = c
        .sets
        .iter()
        .map(|n| rs.sets.get(n).map_or(1, |s| s.elements.len().max(1)))
        .sum();
    let elements: usize = c
        .elements
        .values()
        .map(|d| d.added.len() + d.removed.len())
        .sum();
    rules + sets + elements + c.maps.len()
}

fn pods(all: &[Resource], local: bool) -> Vec<tortie::model::Pod> {
    all.iter()
        .filter_map(|r| match r {
            Resource::Pod(p) if (p.spec.node_name.as_deref() == Some(LOCAL_NODE)) == local => {
                Some(p.clone())
            }
            _ => None,
        })
        .collect()
}

fn relabel(p: &tortie::model::Pod, app: &str) -> Update {
    let mut p = p.clone();
    p.metadata.labels.insert("app", app);
    Update::put(Resource::Pod(p))
}

/// Pod add, delete and relabel, on a remote or the local node; a later
/// `round` relabels other pods (ones not read since the build).
fn pod_updates(
    b: &mut Bench,
    pods: &[tortie::model::Pod],
    local: bool,
    first_ip: usize,
    round: usize,
) {
    let where_ = if local { "local" } else { "remote" };
    let added: Vec<tortie::model::Pod> = (0..N)
        .map(|i| {
            let mut p = pods[i % pods.len()].clone();
            p.metadata.name = Some(format!("bench-{where_}-{i}"));
            p.status.pod_ip = Some(pod_ip(first_ip + i));
            p
        })
        .collect();
    let put = added
        .iter()
        .map(|p| vec![Update::put(Resource::Pod(p.clone()))]);
    b.time(&format!("{where_} pod add"), put.collect());
    let del = added
        .iter()
        .map(|p| vec![Update::delete(Resource::Pod(p.clone()).key())]);
    b.time(&format!("{where_} pod delete"), del.collect());
    let step = (pods.len() / N).max(1);
    let chosen: Vec<_> = (pods.iter().skip(round % step).step_by(step))
        .cycle()
        .take(N)
        .collect();
    let moved = chosen
        .iter()
        .enumerate()
        .map(|(i, p)| vec![relabel(p, &format!("app-bench-{}", i % 2))]);
    b.time(&format!("{where_} pod relabel"), moved.collect());
    let back = chosen
        .iter()
        .map(|p| vec![Update::put(Resource::Pod((*p).clone()))]);
    b.engine.apply(back.flatten().collect());
}

fn policy_updates(b: &mut Bench, all: &[Resource]) {
    let gnps: Vec<_> = all
        .iter()
        .filter_map(|r| match r {
            Resource::GlobalNetworkPolicy(g) => Some(Object::clone(g)),
            _ => None,
        })
        .collect();
    let added: Vec<_> = (0..N)
        .map(|i| {
            let mut g = gnps[i % gnps.len()].clone();
            g.metadata.name = Some(format!("bench-gnp-{i}"));
            g
        })
        .collect();
    let put = added.iter().map(|g| {
        vec![Update::put(Resource::GlobalNetworkPolicy(Box::new(
            g.clone(),
        )))]
    });
    b.time("policy add", put.collect());
    let edit = |(i, g): (usize, &Object<tortie::model::types::PolicySpec>)| {
        let mut g = g.clone();
        let port = 9000 + i as u16;
        g.spec.ingress[1]
            .destination
            .ports
            .push(Port::Range(port, port));
        vec![Update::put(Resource::GlobalNetworkPolicy(Box::new(g)))]
    };
    // The synthetic policies' selectors name `app-{g % 20}`; local pods
    // carry app-0 and app-1.
    let used = |g: &&Object<tortie::model::types::PolicySpec>| {
        g.spec
            .selector
            .as_deref()
            .is_some_and(|s| s.starts_with("app == 'app-0'") || s.starts_with("app == 'app-1'"))
    };
    let edits = gnps
        .iter()
        .filter(used)
        .cycle()
        .take(N)
        .enumerate()
        .map(edit);
    b.time(
        "policy edit (a port; selects local endpoints)",
        edits.collect(),
    );
    let edits = gnps
        .iter()
        .filter(|g| !used(g))
        .take(N)
        .enumerate()
        .map(edit);
    b.time("policy edit (a port; selects none here)", edits.collect());
    let del = added.iter().map(|g| {
        vec![Update::delete(
            Resource::GlobalNetworkPolicy(Box::new(g.clone())).key(),
        )]
    });
    b.time("policy delete", del.collect());
}

fn namespace_updates(b: &mut Bench, all: &[Resource]) {
    let nss: Vec<_> = all
        .iter()
        .filter_map(|r| match r {
            Resource::Namespace(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    // `team` is what the Kubernetes policies' namespaceSelectors use.
    let moved = nss.iter().cycle().take(N).enumerate().map(|(i, n)| {
        let mut n = n.clone();
        n.metadata.labels.insert("team", format!("team-bench-{i}"));
        vec![Update::put(Resource::Namespace(n))]
    });
    b.time("namespace relabel", moved.collect());
}

fn other_updates(b: &mut Bench, all: &[Resource]) {
    let sets: Vec<_> = all
        .iter()
        .filter_map(|r| match r {
            Resource::GlobalNetworkSet(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let edits = (0..N).map(|i| {
        let mut s = sets[i % sets.len()].clone();
        s.spec.nets.push(format!("198.19.{}.0/24", 200 + i % 50));
        vec![Update::put(Resource::GlobalNetworkSet(s))]
    });
    b.time("network set edit", edits.collect());
    let hep = |i: usize| {
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: bench-hep, labels: {{app: app-{}, tier: api}}}}\nspec: {{node: {LOCAL_NODE}, interfaceName: eth0, expectedIPs: [198.19.9.{}]}}\n",
            i % 20,
            1 + i % 200
        );
        let r = tortie::model::load::load_str(&text, std::path::Path::new("hep.yaml"));
        vec![Update::put(r.resources[0].resource.clone())]
    };
    b.engine.apply(hep(0));
    b.time("host endpoint edit", (1..=N).map(hep).collect());
    let tier = |name: &str, order: f64| {
        vec![Update::put(Resource::Tier(Object {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: TierSpec {
                order: Some(order),
                ..TierSpec::default()
            },
        }))]
    };
    b.engine.apply(tier("bench-tier", 50.0));
    b.time(
        "tier order change (a tier no policy uses)",
        (0..N)
            .map(|i| tier("bench-tier", 60.0 + i as f64))
            .collect(),
    );
    b.time(
        "tier order change (the default tier: every policy)",
        (0..N_REBUILD)
            .map(|i| tier("default", 1_000_001.0 + i as f64))
            .collect(),
    );
}

/// Puts `cell` into column `col` of the row `label` (a new row gets "–"
/// in the columns before it).
fn put_cell(rows: &mut Vec<(String, Vec<String>)>, label: &str, col: usize, cell: String) {
    match rows.iter_mut().find(|(l, _)| l == label) {
        Some((_, cells)) => cells.push(cell),
        None => {
            let mut cells = vec!["–".to_string(); col];
            cells.push(cell);
            rows.push((label.to_string(), cells));
        }
    }
}

/// Section 3a: one child per size, then one table of every kind of update
/// (median / p99 per size), the engine's build time and peak memory.
pub fn section(rep: &mut super::Report, sizes: &[&str]) {
    let exe = std::env::current_exe().expect("exe");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut sizes_rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut build = Vec::new();
    let mut peak = Vec::new();
    for (col, name) in sizes.iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .args(["--child-calc", name])
            .output()
            .expect("child");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["build", t] => build.push(format!("{t} ms")),
                ["peak", m] => peak.push(format!("{m} MB")),
                ["size", label, n] => {
                    let med = rows
                        .iter()
                        .find(|(l, _)| l == label)
                        .and_then(|(_, c)| c.last())
                        .and_then(|c| c.split(' ').next())
                        .and_then(|m| m.parse::<f64>().ok());
                    let n: f64 = n.parse().unwrap_or(0.0);
                    let per = match med {
                        Some(m) if n > 0.0 => format!("{:.2} µs", m * 1000.0 / n),
                        _ => "–".into(),
                    };
                    put_cell(&mut sizes_rows, label, col, format!("{n:.0} ({per})"));
                }
                ["update", label, med, p99, n] => {
                    put_cell(&mut rows, label, col, format!("{med} / {p99} ms (n={n})"));
                }
                _ => {}
            }
        }
    }
    table(rep, "update (median / p99 compute)", sizes, rows);
    rep.line(&format!(
        "| engine build (initial, full) | {} |",
        build.join(" | ")
    ));
    rep.line(&format!(
        "| peak memory of the process (input included) | {} |",
        peak.join(" | ")
    ));
    rep.line("");
    rep.line("How large each change was (median over the same updates): the rules of the chains it re-rendered, the elements of sets it replaced whole, the set elements it added or removed, and the maps it changed; in brackets the median compute divided by it.");
    rep.line("");
    table(
        rep,
        "update (median size of the change, compute per unit)",
        sizes,
        sizes_rows,
    );
}

/// A table of `rows` under a header of `first` and the sizes.
fn table(rep: &mut super::Report, first: &str, sizes: &[&str], rows: Vec<(String, Vec<String>)>) {
    rep.line(&format!("| {first} | {} |", sizes.join(" | ")));
    rep.line(&format!("|---|{}", "---|".repeat(sizes.len())));
    for (label, cells) in rows {
        rep.line(&format!("| {label} | {} |", cells.join(" | ")));
    }
}

/// The child process: builds the engine for `size`, times every kind of
/// update, prints the figures.
pub fn child(size_name: &str) {
    let size = Size::by_name(size_name).expect("size");
    let all = generate(size);
    let t = Instant::now();
    let engine = Incremental::new(all.clone(), LOCAL_NODE, |_| {});
    let build = ms(t);
    let mut b = Bench {
        engine,
        lines: vec![format!("build\t{build:.1}")],
    };
    // TORTIE_CALC_REPEAT=R runs the pod updates R times (for profiling:
    // the updates then outweigh the build).
    let repeat = std::env::var("TORTIE_CALC_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1usize);
    let (remote, local) = (pods(&all, false), pods(&all, true));
    for round in 0..repeat {
        pod_updates(&mut b, &remote, false, 900_000, round);
        pod_updates(&mut b, &local, true, 950_000, round);
    }
    drop((remote, local));
    namespace_updates(&mut b, &all);
    policy_updates(&mut b, &all);
    other_updates(&mut b, &all);
    for l in &b.lines {
        println!("{l}");
    }
    println!("peak\t{:.0}", super::max_rss_mb());
}
