//! `tortie run` against hostile and large input files: an alias bomb is
//! rejected while the agent keeps applying other changes and gives the
//! memory back; a 50 MB file does not delay a small file's change; renamed
//! directories leave the rules in force equal to the files on disk.

mod support;

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tortie::model::emit::cluster_dump;

/// `tortie run` as a process, its log captured; killed on drop.
struct Agent {
    child: Child,
    metrics: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(dir: &Path, netns: &str, extra: &[&str]) -> Agent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tortie"))
            .args([
                "run", "--node", "node1", "--netns", netns, "--syslog", "none",
            ])
            .arg(format!("--datastore=dir:{}", dir.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tortie run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("agent: {}", line.chars().take(300).collect::<String>());
                sink.lock().unwrap().push(line);
            }
        });
        let a = Agent {
            child,
            metrics: format!("127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.get("/readyz").map(|(code, _)| code) != Some(200) {
            assert!(Instant::now() < deadline, "tortie run did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        support::agent::http_get(&self.metrics, path)
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The first log line with every one of `words`, if any yet.
    fn logged(&self, words: &[&str]) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .cloned()
    }

    /// Waits (at most `limit`) for a log line with every one of `words`.
    fn wait_log(&self, words: &[&str], limit: Duration) -> (Duration, String) {
        let start = Instant::now();
        loop {
            if let Some(line) = self.logged(words) {
                return (start.elapsed(), line);
            }
            assert!(
                start.elapsed() < limit,
                "no log line with {words:?} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ALLOW_GOOD: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}]}]}\n";
const ALLOW_BOTH: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {}}]}]}\n";
const DENY_GOOD: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny}\nspec: {selector: app == 'server', order: 1, types: [Ingress], ingress: [{action: Deny, source: {selector: app == 'good'}}]}\n";
const DENY_BAD: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny}\nspec: {selector: app == 'server', order: 1, types: [Ingress], ingress: [{action: Deny, source: {selector: app == 'bad'}}]}\n";

fn write(path: &Path, text: &str) {
    support::agent::write_atomically(path, text)
}

/// A node with three pods, and a scratch directory holding the datastore
/// (`root/`, with the cluster in it) and `outside/`.
struct World {
    t: Trio,
    dir: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let t = Trio::new(tag);
        let dir = std::env::temp_dir().join(format!("tortie-faults-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("root/cluster.yaml"), t.cluster_yaml()).unwrap();
        World { t, dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn outside(&self) -> PathBuf {
        self.dir.join("outside")
    }
    fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.root(), &self.t.node.ns.name, extra)
    }

    /// Waits (at most `limit`) for the verdicts (good, bad) to become `want`.
    fn within(&self, limit: Duration, want: (bool, bool), what: &str) -> Duration {
        let t = support::agent::wait_verdicts(&self.t, want, limit, what, String::new);
        eprintln!("{what}: in force after {t:?}");
        t
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TWO_SECONDS: Duration = Duration::from_secs(2);

/// One resource-shaped YAML document of ~470 bytes whose aliases expand to
/// 1,111,111 values (under the old per-document limit of 2 million).
fn bomb_document(n: usize) -> String {
    let mut text = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: bomb-{n:02}}}\nspec:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    );
    for i in 1..6 {
        let p = format!("*a{}", i - 1);
        let refs = [p.as_str(); 10].join(", ");
        let _ = writeln!(text, "  a{i}: &a{i} [{refs}]");
    }
    text
}

#[test]
fn a_file_of_alias_bombs_is_rejected_and_the_agent_keeps_working() {
    if !kernel::require_kernel("faults_alias_bomb") {
        return;
    }
    let w = World::new("bomb");
    let policy = w.root().join("policy.yaml");
    write(&policy, ALLOW_GOOD);
    let mut a = w.agent(&[]);
    assert_eq!(w.t.verdicts(), (true, false), "initial ruleset");
    let before = a.status_kb("VmRSS");
    let bombs: String = (0..80)
        .map(|n| format!("---\n{}", bomb_document(n)))
        .collect();
    assert!(
        (30_000..40_000).contains(&bombs.len()),
        "{} bytes",
        bombs.len()
    );
    write(&w.root().join("bombs.yaml"), &bombs);
    let (t, line) = a.wait_log(
        &["bombs.yaml", "input budget exceeded"],
        Duration::from_secs(20),
    );
    eprintln!("alias bombs rejected after {t:?}: {line}");
    assert!(line.contains("more than 3000000 values") && line.contains("--max-file-values"));
    assert!(a.logged(&["file rejected", "bombs.yaml"]).is_some());
    // Alive and still applying other changes.
    write(&policy, ALLOW_BOTH);
    w.within(TWO_SECONDS, (true, true), "an edit after the bombs");
    assert!(a.alive(), "the agent died");
    // The memory is given back.
    let start = Instant::now();
    let after = loop {
        let rss = a.status_kb("VmRSS");
        if rss < before + 50 * 1024 || start.elapsed() > Duration::from_secs(5) {
            break rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let peak = a.status_kb("VmHWM");
    eprintln!("RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        after < before + 50 * 1024,
        "RSS {after} KiB, was {before} KiB"
    );
    assert!(a.metric("tortie_invalid_input_total{stage=\"syntax\"}") >= 1.0);
    // Once fixed, the file is read like any other.
    write(&w.root().join("bombs.yaml"), DENY_GOOD);
    w.within(Duration::from_secs(5), (false, true), "the fixed file");
}

/// About `bytes` of YAML: Namespaces and Pods of other nodes (the
/// benchmarks' synthetic cluster), valid if it is ever read.
fn big_cluster_yaml(bytes: usize) -> String {
    let all = tortie::synth::generate(tortie::synth::Size::XL);
    let mut out = cluster_dump(&all[..all.len().min(200 + 250_000)]);
    let cut = out[..bytes.min(out.len())].rfind("---\n").unwrap_or(0);
    out.truncate(cut);
    out
}

#[test]
fn a_file_over_the_size_limit_is_refused_unread() {
    if !kernel::require_kernel("faults_size_limit") {
        return;
    }
    let w = World::new("size");
    let policy = w.root().join("policy.yaml");
    write(&policy, ALLOW_GOOD);
    let a = w.agent(&[]);
    // 50 MB, sparse: refused from its size alone.
    let big = w.root().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let (t, line) = a.wait_log(
        &["big.yaml", "more than the limit of 16777216 bytes"],
        TWO_SECONDS,
    );
    eprintln!("refused after {t:?}: {line}");
    assert!(line.contains("--max-file-size"));
    write(&policy, ALLOW_BOTH);
    w.within(TWO_SECONDS, (true, true), "an edit after the refusal");
}

#[test]
fn a_50_mb_file_does_not_delay_a_small_files_change() {
    if !kernel::require_kernel("faults_large_file") {
        return;
    }
    let w = World::new("large");
    let policy = w.root().join("policy.yaml");
    write(&policy, ALLOW_GOOD);
    let text = big_cluster_yaml(50_000_000);
    assert!(text.len() > 49_000_000, "{} bytes", text.len());
    std::fs::write(w.outside().join("big.yaml"), &text).unwrap();
    drop(text);
    let a = w.agent(&["--max-file-size", "64MiB"]);
    assert_eq!(w.t.verdicts(), (true, false), "initial ruleset");
    // The big file arrives (renamed in whole), then a small edit.
    let started = Instant::now();
    std::fs::rename(w.outside().join("big.yaml"), w.root().join("big.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    write(&policy, ALLOW_BOTH);
    let t = w.within(
        TWO_SECONDS,
        (true, true),
        "a small edit while the 50 MB file is parsed",
    );
    let done_early = a.logged(&["big.yaml", "INFO", "file read"]).is_some()
        || a.logged(&["big.yaml", "input budget exceeded"]).is_some();
    eprintln!("small edit in force after {t:?}; big file settled by then: {done_early}");
    // The big file: read, or rejected by its value budget, within 5 s
    // (optimized builds; unoptimized ones parse ~10x slower: 120 s).
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 120 } else { 5 });
    let start = Instant::now();
    let outcome = loop {
        if let Some(l) = a.logged(&["big.yaml", "file read"]) {
            break l;
        }
        if let Some(l) = a.logged(&["big.yaml", "input budget exceeded"]) {
            break l;
        }
        assert!(
            started.elapsed() < limit,
            "the 50 MB file was not settled in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "50 MB file settled {:?} after it appeared ({:?} after the edit): {}",
        started.elapsed(),
        start.elapsed(),
        outcome.chars().take(200).collect::<String>()
    );
}

#[test]
fn directory_renames_leave_the_files_in_force_equal_to_the_files_on_disk() {
    if !kernel::require_kernel("faults_renames") {
        return;
    }
    let w = World::new("mv");
    write(&w.root().join("policy.yaml"), ALLOW_BOTH);
    std::fs::create_dir_all(w.root().join("sub")).unwrap();
    write(&w.root().join("sub/deny.yaml"), DENY_GOOD);
    let _a = w.agent(&[]);
    assert_eq!(w.t.verdicts(), (false, true), "initial ruleset");
    let (root, out) = (w.root(), w.outside());
    std::fs::rename(root.join("sub"), out.join("sub")).unwrap();
    w.within(TWO_SECONDS, (true, true), "directory renamed out");
    std::fs::rename(out.join("sub"), root.join("sub2")).unwrap();
    w.within(TWO_SECONDS, (false, true), "directory renamed back in");
    std::fs::rename(root.join("sub2"), root.join("sub3")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        w.t.verdicts(),
        (false, true),
        "renamed inside: still in force"
    );
    // The edit at the new path wins (no stale entry for the old path).
    write(&root.join("sub3/deny.yaml"), DENY_BAD);
    w.within(
        TWO_SECONDS,
        (true, false),
        "edit in the directory renamed inside",
    );
    std::fs::remove_dir_all(root.join("sub3")).unwrap();
    w.within(TWO_SECONDS, (true, true), "subtree deleted");
}

/// The dump format loads back whole (what the large-file test relies on).
/// With `TORTIE_DUMP=PATH` (and `TORTIE_DUMP_SIZE=S|M|L|XL`, default XL) it
/// also writes that cluster as one file, for measuring `tortie validate`.
#[test]
fn the_cluster_dump_loads_back_whole() {
    let resources = tortie::synth::generate(tortie::synth::Size::S);
    let text = cluster_dump(&resources);
    let r = tortie::model::load::load_str(&text, Path::new("dump.yaml"));
    assert!(
        !r.has_errors(),
        "{:?}",
        r.errors().next().map(|d| d.one_line())
    );
    assert_eq!(r.resources.len(), resources.len());
    if let Ok(path) = std::env::var("TORTIE_DUMP") {
        let size = std::env::var("TORTIE_DUMP_SIZE").unwrap_or_else(|_| "XL".into());
        let size = tortie::synth::Size::by_name(&size).expect("size S, M, L or XL");
        let text = cluster_dump(&tortie::synth::generate(size));
        std::fs::write(Path::new(&path), &text).unwrap();
        eprintln!("wrote {} bytes to {path}", text.len());
    }
}
