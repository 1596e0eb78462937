//! Section "kernel" of the performance report: with one size's table loaded
//! in a network namespace, what the daemon's path (`Dataplane::apply_change`)
//! costs from "change ready" to "committed": one set element added and
//! removed (netlink batch), one policy chain rewritten, one change
//! carrying a chain and an element together (each as one netlink batch and,
//! interleaved, through nft), and a refresh with no drift (CPU). Medians of
//! `runs` (at least 10).

use std::time::{Duration, Instant};

use super::support::Netns;
use super::{Report, median};
use tortie::calc::Cluster;
use tortie::compile::compile;
use tortie::compile::ir::{Change, Rule, Ruleset, SetType};
use tortie::nft::elements::encode;
use tortie::nft::{Dataplane, TableState, plan};
use tortie::synth::LOCAL_NODE;

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Whether the element text `e` of an IPv4 set covers `ip`.
fn covers(e: &str, ip: &[u8]) -> bool {
    let Ok(k) = encode(SetType::Ipv4, e) else {
        return false;
    };
    k.start.as_slice() <= ip && k.end.as_ref().is_none_or(|end| ip < end.as_slice())
}

/// The IPv4 set with the most elements (up to 1,000) and an address that
/// none of its elements covers.
fn target_set(rs: &Ruleset) -> (String, String) {
    let set = rs
        .sets
        .values()
        .filter(|s| s.ty == SetType::Ipv4 && s.elements.len() <= 1000)
        .max_by_key(|s| s.elements.len())
        .expect("an IPv4 set");
    for k in 0..=255u8 {
        let ip = [198, 18, k, 255];
        if !set.elements.iter().any(|e| covers(e, &ip)) {
            let text = format!("198.18.{k}.255");
            return (set.name.clone(), text);
        }
    }
    panic!("no free address for set {}", set.name);
}

fn element_change(set: &str, add: bool, e: &str) -> Change {
    let mut c = Change::default();
    let d = c.elements_of(set);
    if add {
        d.add(e.to_string());
    } else {
        d.remove(e.to_string());
    }
    c
}

/// Applies `to` with `change` and returns the wall time in ms.
fn timed(dp: &mut Dataplane, to: &Ruleset, change: &Change, netlink: bool) -> f64 {
    dp.set_rule_batches(netlink);
    let t = Instant::now();
    let r = dp.apply_change(to, change).expect("apply_change");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(r.sent && r.netlink == netlink && !r.read_back, "{r:?}");
    ms
}

/// `--sections LIST`: only the named sections (`kernel`), written to `out`.
pub fn sections_only(
    rep: &mut Report,
    list: &str,
    sizes: &[&str],
    name: &str,
    runs: usize,
    out: &str,
    machine: &str,
) {
    rep.line("# Performance (selected sections)");
    rep.line("");
    rep.line(&format!(
        "Measured on {machine}, `cargo bench --bench perf -- --sections {list} --sizes {name}`."
    ));
    for s in list.split(',') {
        match s {
            "kernel" => kernel_section(rep, name, runs),
            "calc" => {
                rep.line("");
                rep.line("## 3a. Compute per update");
                rep.line("");
                super::perf_calc::section(rep, sizes);
            }
            "packets" => {
                rep.line("");
                rep.line(&format!("## 4. Packet path ({name})"));
                rep.line("");
                super::packet_path(rep, name, runs, 20_000);
            }
            "incremental" => {
                rep.line("");
                rep.line(&format!("## 3. Incremental changes ({name})"));
                rep.line("");
                super::incremental(rep, name, runs);
            }
            "compile" => {
                rep.line("");
                rep.line("## 1. Compile (release build)");
                rep.line("");
                super::compile_table(rep, sizes, runs);
            }
            "apply" => {
                rep.line("");
                rep.line("## 2. Full apply vs the `nft -f` floor");
                rep.line("");
                super::full_apply(rep, sizes, runs);
            }
            "daemon" => {
                rep.line("");
                rep.line("## 5. `tortie run` memory, from a directory");
                rep.line("");
                rep.line("| size | ready after | resident | peak |");
                rep.line("|---|---|---|---|");
                super::daemon_memory(rep, name);
            }
            "kube" => {
                rep.line("");
                rep.line("## 5. `tortie run` memory, from a Kubernetes API");
                super::daemon_memory_kube_table(rep, sizes);
            }
            other => {
                panic!(
                    "--sections: unknown section `{other}` (known: compile, apply, calc, incremental, kernel, packets, daemon, kube)"
                )
            }
        }
    }
    std::fs::write(out, &rep.out).expect("write report");
    eprintln!("wrote {out}");
}

/// Section 6 with its heading.
pub fn kernel_section(rep: &mut Report, name: &str, runs: usize) {
    rep.line("");
    rep.line(&format!("## 6. The kernel side ({name})"));
    rep.line("");
    rep.line("With the table loaded in a network namespace, through `Dataplane::apply_change` (what `tortie run` calls with the engine's `Change`), from \"change ready\" to \"committed\". Element-only changes go as one nf_tables netlink batch from tortie's long-lived socket; new sets (with their elements) and the deletion of objects nothing refers to any more go as netlink batches too, before and after the change; a change of chains and rules (with the element changes that come with it) goes as one netlink batch too, its rules encoded as nft encodes them; the nft rows run the same change through `nft -f` (`TORTIE_RULES_OVER_NETLINK=0`), interleaved. See docs/ruleset.md, \"The kernel\".");
    rep.line("");
    kernel(rep, name, runs);
}

/// The measurements of the "kernel" section for size `name`.
fn kernel(rep: &mut Report, name: &str, runs: usize) {
    let runs = runs.max(10);
    let resources = super::resources_for(name);
    let base = compile(&Cluster::build(&resources, LOCAL_NODE), LOCAL_NODE);
    let ns = Netns::new("kern");
    let mut dp = Dataplane::new(ns.target());
    let t = Instant::now();
    dp.apply(&base).expect("load");
    let load = t.elapsed().as_secs_f64();
    rep.line(&format!(
        "Table: {} rules, {} jump edges, {} sets, {} elements; loaded in {load:.1} s.",
        base.rule_count(),
        base.jump_count(),
        base.sets.len(),
        base.sets.values().map(|s| s.elements.len()).sum::<usize>()
    ));
    rep.line("");
    rep.line("| change (through `apply_change`) | how | median | min | max |");
    rep.line("|---|---|---|---|---|");
    let mut row = |label: &str, how: &str, v: Vec<f64>| {
        let min = v.iter().cloned().fold(f64::MAX, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        rep.line(&format!(
            "| {label} | {how} | {:.2} ms | {min:.2} ms | {max:.2} ms |",
            median(v)
        ));
    };
    // One element in and out of a selector set.
    let (set, ip) = target_set(&base);
    let mut with = base.clone();
    with.sets.get_mut(&set).unwrap().elements.insert(ip.clone());
    let (add, del) = (
        element_change(&set, true, &ip),
        element_change(&set, false, &ip),
    );
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        adds.push(timed(&mut dp, &with, &add, true));
        dels.push(timed(&mut dp, &base, &del, true));
    }
    let n = base.sets[&set].elements.len();
    row(
        &format!("one element added ({n}-element interval set)"),
        "netlink batch",
        adds,
    );
    row(
        &format!("one element removed ({n}-element interval set)"),
        "netlink batch",
        dels,
    );
    // One element in and out of the biggest named-port set.
    if let Some(np) = base
        .sets
        .values()
        .filter(|s| s.ty == SetType::NamedPortV4)
        .max_by_key(|s| s.elements.len())
    {
        let e = "198.18.0.255 . 6 . 9".to_string();
        let mut with = base.clone();
        with.sets
            .get_mut(&np.name)
            .unwrap()
            .elements
            .insert(e.clone());
        let (a, d) = (
            element_change(&np.name, true, &e),
            element_change(&np.name, false, &e),
        );
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(timed(&mut dp, &with, &a, true));
            v.push(timed(&mut dp, &base, &d, true));
        }
        let n = np.elements.len();
        row(
            &format!("one element added or removed ({n}-element concatenation)"),
            "netlink batch",
            v,
        );
    }
    // One policy chain rewritten (a rule added at its head, then removed).
    let chain = base
        .chains
        .values()
        .filter(|c| c.name.starts_with("filter-pi-") && !c.rules.is_empty())
        .map(|c| c.name.clone())
        .next()
        .expect("a policy chain");
    let mut edited = base.clone();
    let rules = &mut edited.chains.get_mut(&chain).unwrap().rules;
    rules.insert(0, Rule::new("tcp dport 9", "drop", "bench"));
    let mut one = Change::default();
    one.chains.insert(chain.clone());
    let (mut v, mut w) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        v.push(timed(&mut dp, &edited, &one, true));
        v.push(timed(&mut dp, &base, &one, true));
        w.push(timed(&mut dp, &edited, &one, false));
        w.push(timed(&mut dp, &base, &one, false));
    }
    let n = base.chains[&chain].rules.len();
    let label = format!("one policy chain rewritten ({n} rules + 1)");
    row(&label, "netlink batch, flush + refill", v);
    row(&label, "nft, flush + refill", w);
    // The same transaction checked by nft without committing (`nft -c`):
    // nft's own cost and the kernel's parse, without the commit (where the
    // kernel re-validates the jump graph).
    let text = plan::delta_of(&TableState::of(&base), &edited, &one).text;
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
                c.wait()
            })
            .expect("nft -c");
        assert!(out.success(), "nft -c failed");
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    row(
        "the same rewrite, `nft -c` (no commit; via `ip netns exec`)",
        "nft's share",
        v,
    );
    // A chain and an element together: one transaction through nft.
    let mut both = edited.clone();
    both.sets.get_mut(&set).unwrap().elements.insert(ip.clone());
    let mut mixed = add.clone();
    mixed.chains.insert(chain.clone());
    let mut back = del.clone();
    back.chains.insert(chain.clone());
    let (mut v, mut w) = (Vec::new(), Vec::new());
    let (mut nv, mut nw) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        v.push(timed(&mut dp, &both, &mixed, true));
        w.push(timed(&mut dp, &base, &back, true));
        nv.push(timed(&mut dp, &both, &mixed, false));
        nw.push(timed(&mut dp, &base, &back, false));
    }
    dp.set_rule_batches(true);
    row("one chain + one element added", "netlink batch", v);
    row("one chain + one element added", "nft, re-declared set", nv);
    let n = base.sets[&set].elements.len() + 1;
    let label = format!("one chain + one element removed ({n}-element set)");
    row(&label, "netlink batch, set flushed and refilled", w);
    row(&label, "nft, set flushed and refilled", nw);
    // A refresh with nothing changed: the generation id proves no drift;
    // the view is compared with the desired ruleset in memory.
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds());
        let r = dp.refresh(&base).expect("refresh");
        assert!(!r.sent && !r.read_back, "{r:?}");
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push((cpu_seconds() - c) * 1e3);
    }
    row(
        "refresh, no drift (wall)",
        "generation id + in-memory comparison",
        wall,
    );
    row("refresh, no drift (CPU of tortie)", "", cpu);
    // A refresh after another program committed: the whole table is read
    // back (over netlink) and compared.
    let mut v = Vec::new();
    for i in 0..3 {
        // (A new table each time: re-adding an existing one commits nothing.)
        ns.exec(&["nft", &format!("add table inet bench-other-{i}")]);
        let t = Instant::now();
        let r = dp.refresh(&base).expect("refresh");
        assert!(!r.sent && r.read_back, "{r:?}");
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    row(
        "refresh after another program committed (3 runs)",
        "netlink read-back + comparison",
        v,
    );
    // Start-up adoption: a new dataplane over the loaded table reads it and
    // finds nothing to do.
    let mut v = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = Dataplane::new(ns.target()).apply(&base).expect("adopt");
        assert!(!r.sent && r.read_back, "{r:?}");
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let label = format!(
        "start-up adoption of the loaded table (3 runs; loading it took {:.0} ms)",
        load * 1e3
    );
    row(&label, "netlink read-back + comparison", v);
    // Rule counters (the daemon's per-policy hits): one rule dump against
    // the JSON listing.
    let (mut nl, mut js) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let c = tortie::nft::readback::rule_counters(&ns.target(), Duration::from_secs(300))
            .expect("counters");
        nl.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let json = tortie::nft::exec::list_table_json(&ns.target())
            .expect("list")
            .expect("table");
        let j = tortie::nft::state::rule_counters(&json).expect("parse");
        js.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(c.len(), j.len());
    }
    row("rule counters (3 runs)", "netlink rule dump", nl);
    row("rule counters (3 runs)", "`nft -j list table` + parse", js);
    // (At XL a JSON read-back takes minutes: checked at the smaller sizes.)
    assert!(
        name == "XL" || dp.verify(&base).unwrap(),
        "the table ends as loaded"
    );
}
