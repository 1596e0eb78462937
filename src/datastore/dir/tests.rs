use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn tier(name: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\n")
}

/// A scratch directory holding `root/` (the datastore) and `outside/`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tortie-dir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        Scratch(dir)
    }
    fn root(&self) -> PathBuf {
        self.0.join("root")
    }
    fn outside(&self) -> PathBuf {
        self.0.join("outside")
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The consumer's side: the objects the updates leave, and the files in
/// force as the reports say.
#[derive(Default)]
struct InForce {
    objects: BTreeMap<ResourceKey, Resource>,
    files: BTreeSet<PathBuf>,
}

impl InForce {
    fn apply(&mut self, c: FileChange) {
        self.take(c.into_changes());
    }

    fn take(&mut self, c: Changes) {
        for u in c.updates {
            match u.value {
                Some(r) => self.objects.insert(u.key, r),
                None => self.objects.remove(&u.key),
            };
        }
        for r in c.reports {
            match r.status {
                Status::Read(_) => self.files.insert(PathBuf::from(r.item)),
                Status::Removed => self.files.remove(Path::new(&r.item)),
                Status::Kept | Status::Rejected => false,
            };
        }
    }

    fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(PathBuf::as_path).collect()
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.objects.keys().map(|k| k.name.clone()).collect();
        v.sort();
        v
    }
}

/// The source's bookkeeping driven by hand: jobs run inline.
struct Harness {
    tree: Tree,
    limits: Limits,
    in_force: InForce,
    changes: Vec<FileChange>,
}

impl Harness {
    fn new(root: &Path, limits: Limits) -> Harness {
        let pool = Arc::new(Pool::new(limits.max_total_values));
        Harness {
            tree: Tree::new(root, pool),
            limits,
            in_force: InForce::default(),
            changes: Vec::new(),
        }
    }

    /// A rescan (with `forced` paths, or every file), then every job.
    fn sync_with(&mut self, forced: &[&Path], all: bool) -> &[FileChange] {
        let forced: BTreeSet<PathBuf> = forced.iter().map(|p| p.to_path_buf()).collect();
        let (changes, mut jobs) = self.tree.rescan(&forced, all).unwrap();
        let mut out = changes;
        while let Some(job) = jobs.pop() {
            let parsed = parse_job(&job, &self.limits, &self.tree.pool);
            let done = Done {
                path: job.path,
                generation: job.generation,
                parsed,
            };
            let (change, more) = self.tree.complete(done);
            out.extend(change);
            jobs.extend(more);
        }
        for c in &out {
            self.in_force.apply(c.clone());
        }
        self.changes = out;
        &self.changes
    }

    fn sync(&mut self) -> &[FileChange] {
        self.sync_with(&[], false)
    }

    /// The files in force equal the resource files on disk.
    fn assert_matches_disk(&self, what: &str) {
        let on_disk: Vec<PathBuf> = walk(&self.tree.root)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        let in_force: Vec<PathBuf> = self.in_force.files.iter().cloned().collect();
        assert_eq!(in_force, on_disk, "{what}");
    }

    fn names(&self) -> Vec<String> {
        self.in_force.names()
    }
}

#[test]
fn an_invalid_edit_keeps_the_previous_content_and_removal_forgets() {
    let s = Scratch::new("keep");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let f = s.write("root/p.yaml", &tier("a"));
    h.sync();
    assert_eq!(h.names(), ["a"]);
    s.write("root/p.yaml", &tier("Bad_Name"));
    let c = h.sync_with(&[&f], false);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].status, Status::Kept);
    assert!(!c[0].diagnostics.is_empty());
    assert_eq!(h.names(), ["a"]);
    s.write("root/p.yaml", &tier("b"));
    h.sync_with(&[&f], false);
    assert_eq!(h.names(), ["b"]);
    std::fs::remove_file(&f).unwrap();
    assert_eq!(h.sync()[0].status, Status::Removed);
    assert!(h.names().is_empty());
    // A new file with errors contributes its valid documents.
    s.write("root/q.yaml", &format!("{}---\nkind: Nope\n", tier("ok")));
    let c = h.sync();
    assert!(matches!(c[0].status, Status::Read(_)) && !c[0].diagnostics.is_empty());
    assert_eq!(h.names(), ["ok"]);
    // The same content again (an event without a change) emits nothing.
    let q = s.root().join("q.yaml");
    assert!(h.sync_with(&[&q], false).is_empty());
}

#[test]
fn directories_renamed_out_inside_and_back_are_followed() {
    let s = Scratch::new("mv");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    s.write("root/sub/p.yaml", &tier("p"));
    s.write("root/q.yaml", &tier("q"));
    h.sync();
    assert_eq!(h.names(), ["p", "q"]);
    // Out of the tree: its policies leave.
    std::fs::rename(s.root().join("sub"), s.outside().join("sub")).unwrap();
    h.sync();
    h.assert_matches_disk("renamed out");
    assert_eq!(h.names(), ["q"]);
    // Back in under another name, then edited there.
    std::fs::rename(s.outside().join("sub"), s.root().join("sub2")).unwrap();
    h.sync();
    h.assert_matches_disk("renamed in");
    assert_eq!(h.names(), ["p", "q"]);
    let moved = s.write("root/sub2/p.yaml", &tier("edited"));
    h.sync_with(&[&moved], false);
    assert_eq!(h.names(), ["edited", "q"]);
    // Renamed inside the tree: the old path leaves, the new one holds it.
    std::fs::rename(s.root().join("sub2"), s.root().join("sub3")).unwrap();
    h.sync();
    h.assert_matches_disk("renamed inside");
    assert_eq!(h.names(), ["edited", "q"]);
    // A whole subtree deleted.
    s.write("root/sub3/deep/er/x.yaml", &tier("x"));
    h.sync();
    assert_eq!(h.names(), ["edited", "q", "x"]);
    std::fs::remove_dir_all(s.root().join("sub3")).unwrap();
    h.sync();
    h.assert_matches_disk("subtree deleted");
    assert_eq!(h.names(), ["q"]);
}

#[test]
fn symlinks_are_followed_and_retargets_take_effect() {
    let s = Scratch::new("ln");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let t1 = s.write("outside/t1.yaml", &tier("one"));
    let t2 = s.write("outside/t2.yaml", &tier("two"));
    let link = s.root().join("link.yaml");
    std::os::unix::fs::symlink(&t1, &link).unwrap();
    h.sync();
    assert_eq!(h.names(), ["one"]);
    // Retarget atomically, as `ln -sfn` and ConfigMap volumes do.
    let tmp = s.root().join(".link.tmp");
    std::os::unix::fs::symlink(&t2, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    h.sync();
    assert_eq!(h.names(), ["two"]);
    // The target edited outside the tree: no event, the rescan finds it.
    std::fs::write(&t2, tier("two-edited")).unwrap();
    h.sync();
    assert_eq!(h.names(), ["two-edited"]);
    // A dangling link is not a file on disk.
    std::fs::remove_file(&t2).unwrap();
    h.sync();
    h.assert_matches_disk("dangling link");
    assert!(h.names().is_empty());
    // A link to a directory is walked, and a link loop ends.
    s.write("outside/d/in-dir.yaml", &tier("in-dir"));
    std::os::unix::fs::symlink(s.outside().join("d"), s.root().join("d")).unwrap();
    std::os::unix::fs::symlink(s.root(), s.root().join("loop")).unwrap();
    h.sync();
    assert_eq!(h.names(), ["in-dir"]);
}

#[test]
fn an_overflow_rereads_every_file_even_with_unchanged_stamps() {
    let s = Scratch::new("ovf");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let f = s.write("root/p.yaml", &tier("aaa"));
    h.sync();
    // An edit whose event was lost and whose stamp looks unchanged (coarse
    // timestamps, same size): a plain rescan cannot see it...
    std::fs::write(&f, tier("bbb")).unwrap();
    let stamp = Stamp::of(&std::fs::metadata(&f).unwrap());
    h.tree.files.get_mut(&f).unwrap().stamp = Some(stamp);
    assert!(h.sync().is_empty());
    assert_eq!(h.names(), ["aaa"]);
    // ...the rescan forced by an overflow does.
    h.sync_with(&[], true);
    assert_eq!(h.names(), ["bbb"]);
    // And the watcher's overflow event is what forces it.
    let mut burst = Burst::default();
    let overflow =
        notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan);
    burst.add(Ok(overflow));
    assert!(burst.overflow);
    let mut burst = Burst::default();
    burst.add(Err(notify::Error::generic("queue lost")));
    assert!(burst.overflow);
}

#[test]
fn over_budget_files_are_rejected_whole_and_their_values_given_back() {
    let s = Scratch::new("bud");
    let limits = Limits {
        max_file_bytes: 4096,
        max_file_values: 200,
        max_total_values: 1_000,
    };
    let mut h = Harness::new(&s.root(), limits);
    let f = s.write("root/p.yaml", &tier("a"));
    let c = h.sync();
    assert!(matches!(c[0].status, Status::Read(_)), "{c:#?}");
    let held = h.tree.pool.used();
    assert!(held > 0);
    // In force, then over the file budget: kept; the parse's values returned.
    let many: String = (0..300).map(|i| format!("k{i}: {i}\n")).collect();
    s.write("root/p.yaml", &many);
    let c = h.sync_with(&[&f], false);
    assert_eq!(c[0].status, Status::Kept);
    assert!(c[0].diagnostics[0].message.contains("more than 200 values"));
    assert_eq!(h.tree.pool.used(), held);
    assert_eq!(h.names(), ["a"]);
    // A new file over the size limit: rejected before reading.
    s.write("root/big.yaml", &"#".repeat(5000));
    let c = h.sync();
    assert_eq!(c[0].status, Status::Rejected);
    assert!(
        c[0].diagnostics[0]
            .message
            .contains("more than the limit of 4096 bytes")
    );
    assert!(
        c[0].diagnostics[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("--max-file-size")
    );
    assert_eq!(h.tree.pool.used(), held);
    assert_eq!(
        h.in_force.paths(),
        [f.as_path()],
        "a rejected file is not in force"
    );
    // Removing the rejected file clears its report (the gauge falls).
    std::fs::remove_file(s.root().join("big.yaml")).unwrap();
    let c = h.sync();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].status, c[0].diagnostics.len()), (Status::Removed, 0));
}

#[test]
fn a_file_refused_for_the_datastore_budget_is_retried_when_room_appears() {
    let s = Scratch::new("pool");
    let limits = Limits {
        max_file_bytes: 1 << 20,
        max_file_values: 1 << 20,
        max_total_values: 5_000,
    };
    let mut h = Harness::new(&s.root(), limits);
    // Two files of ~2,600 values each: only one fits.
    let body = |name: &str| -> String {
        let notes: String = (0..1300).map(|i| format!("# {i}\n")).collect();
        let labels: String = (0..1300).map(|i| format!("    l{i}: v\n")).collect();
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {name}\n  labels:\n{labels}spec: {{nets: [198.18.0.0/24]}}\n{notes}"
        )
    };
    s.write("root/a.yaml", &body("a"));
    let b = s.write("root/b.yaml", &body("b"));
    let c = h.sync().to_vec();
    let refused: Vec<_> = c.iter().filter(|c| c.status == Status::Rejected).collect();
    assert_eq!(refused.len(), 1, "{c:#?}");
    assert!(
        refused[0].diagnostics[0]
            .message
            .contains("all files together")
    );
    let refused_path = refused[0].path.clone();
    // Room appears (the other file goes): the next rescan reads it again.
    let other = if refused_path == b {
        s.root().join("a.yaml")
    } else {
        b
    };
    std::fs::remove_file(&other).unwrap();
    h.sync();
    h.assert_matches_disk("retried after room appeared");
    assert_eq!(h.in_force.files.len(), 1);
}

#[test]
fn a_file_changed_while_parsed_is_parsed_again() {
    let s = Scratch::new("again");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let f = s.write("root/p.yaml", &tier("one"));
    let forced = BTreeSet::from([f.clone()]);
    let (_, jobs) = h.tree.rescan(&forced, false).unwrap();
    assert_eq!(jobs.len(), 1);
    let first = &jobs[0];
    let parsed = parse_job(first, &h.limits, &h.tree.pool);
    // The file changes while the first parse is in flight.
    std::fs::write(&f, tier("two")).unwrap();
    let (_, more) = h.tree.rescan(&forced, false).unwrap();
    assert!(more.is_empty(), "one job per path in flight");
    let done = Done {
        path: f.clone(),
        generation: first.generation,
        parsed,
    };
    let (change, mut rerun) = h.tree.complete(done);
    h.in_force.apply(change.unwrap());
    assert_eq!(rerun.len(), 1, "parsed again");
    let rerun = rerun.pop().unwrap();
    let parsed = parse_job(&rerun, &h.limits, &h.tree.pool);
    let (change, none) = h.tree.complete(Done {
        path: f,
        generation: rerun.generation,
        parsed,
    });
    assert!(none.is_empty());
    h.in_force.apply(change.unwrap());
    assert_eq!(h.names(), ["two"]);
}

/// The consumer's side of a running source.
struct Follower {
    rx: mpsc::Receiver<Event>,
    in_force: InForce,
    root: PathBuf,
}

impl Follower {
    /// Does `f`, then waits (at most 5 s) until the files in force equal
    /// the files on disk and `names` holds; returns how long that took.
    fn step(&mut self, what: &str, names: &[&str], f: impl FnOnce()) -> Duration {
        f();
        let start = Instant::now();
        loop {
            while let Ok(ev) = self.rx.try_recv() {
                if let Event::Changes(c) = ev {
                    self.in_force.take(c);
                }
            }
            let disk: Vec<PathBuf> = walk(&self.root)
                .map(|m| m.into_keys().collect())
                .unwrap_or_default();
            let now: Vec<PathBuf> = self.in_force.files.iter().cloned().collect();
            let got = self.in_force.names();
            if disk == now && got == names {
                eprintln!("{what}: in sync after {:?}", start.elapsed());
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{what}: in force {now:?} {got:?}, on disk {disk:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn the_watcher_follows_renames_deletes_and_symlinks_with_inotify() {
    let s = Scratch::new("inotify");
    s.write("root/sub/p.yaml", &tier("p"));
    s.write("root/q.yaml", &tier("q"));
    let (tx, rx) = mpsc::channel();
    let opts = DirOptions {
        rescan_every: Duration::from_secs(3600),
        ..DirOptions::default()
    };
    let _watching = watch(&s.root(), opts, move |c| tx.send(c).is_ok()).unwrap();
    let mut w = Follower {
        rx,
        in_force: InForce::default(),
        root: s.root(),
    };
    let (root, out) = (s.root(), s.outside());
    w.step("initial", &["p", "q"], || {});
    w.step("rename out", &["q"], || {
        std::fs::rename(root.join("sub"), out.join("sub")).unwrap()
    });
    w.step("rename back in", &["p", "q"], || {
        std::fs::rename(out.join("sub"), root.join("sub2")).unwrap()
    });
    w.step("rename inside", &["p", "q"], || {
        std::fs::rename(root.join("sub2"), root.join("sub3")).unwrap()
    });
    w.step("edit in the renamed directory", &["p2", "q"], || {
        s.write("root/sub3/p.yaml", &tier("p2"));
    });
    w.step("new subtree", &["c", "p2", "q"], || {
        s.write("root/sub3/a/b/c.yaml", &tier("c"));
    });
    w.step("subtree delete", &["q"], || {
        std::fs::remove_dir_all(root.join("sub3")).unwrap()
    });
    let t1 = s.write("outside/t1.yaml", &tier("one"));
    let t2 = s.write("outside/t2.yaml", &tier("two"));
    w.step("symlink added", &["one", "q"], || {
        std::os::unix::fs::symlink(&t1, root.join("l.yaml")).unwrap()
    });
    w.step("symlink retargeted", &["q", "two"], || {
        std::os::unix::fs::symlink(&t2, root.join(".l.tmp")).unwrap();
        std::fs::rename(root.join(".l.tmp"), root.join("l.yaml")).unwrap();
    });
    w.step("symlink removed", &["q"], || {
        std::fs::remove_file(root.join("l.yaml")).unwrap()
    });
}

#[test]
fn a_large_file_is_settled_in_its_own_lane() {
    let s = Scratch::new("large");
    s.write("root/q.yaml", &tier("q"));
    let (tx, rx) = mpsc::channel();
    let _watching = watch(&s.root(), DirOptions::default(), move |c| {
        tx.send(c).is_ok()
    })
    .unwrap();
    // The initial listing, complete when `watch` returns: one file, Synced.
    let initial: Vec<Event> = rx.try_iter().collect();
    assert_eq!(initial.len(), 2, "{initial:?}");
    assert!(matches!(initial[1], Event::Synced));
    let big = s.root().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let Event::Changes(c) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a change for the large file")
    else {
        panic!("not a change");
    };
    let c = &c.reports[0];
    assert_eq!(
        (c.item.as_str(), c.status),
        (big.display().to_string().as_str(), Status::Rejected)
    );
    assert!(
        c.diagnostics[0]
            .message
            .contains("more than the limit of 16777216 bytes")
    );
}

#[test]
fn a_rescan_while_a_new_file_is_parsed_does_not_parse_it_twice() {
    let s = Scratch::new("twice");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let big = s.write("root/big.yaml", &tier("big"));
    let (_, jobs) = h.tree.rescan(&BTreeSet::new(), false).unwrap();
    assert_eq!(jobs.len(), 1);
    // Another file's event while the new file is still being parsed.
    let small = s.write("root/small.yaml", &tier("small"));
    let (_, more) = h.tree.rescan(&BTreeSet::from([small]), false).unwrap();
    assert_eq!(more.len(), 1, "only the small file: {more:?}");
    assert!(h.tree.again.is_empty());
    // An event naming the file in flight does parse it again afterwards.
    let (_, none) = h
        .tree
        .rescan(&BTreeSet::from([big.clone()]), false)
        .unwrap();
    assert!(none.is_empty());
    assert!(h.tree.again.contains(&big));
}

fn tiers(names: &[&str]) -> String {
    names.iter().map(|n| format!("---\n{}", tier(n))).collect()
}

#[test]
fn one_document_edited_in_a_file_of_1000_is_one_update() {
    let s = Scratch::new("onedoc");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = s.write("root/many.yaml", &tiers(&refs));
    let c = h.sync().to_vec();
    assert_eq!(c[0].updates.len(), 1000);
    assert_eq!(c[0].status, Status::Read(1000));
    // Edit document 500 only (a label added).
    let mut edited = refs.clone();
    let text = |edited: &[&str]| -> String {
        edited
            .iter()
            .map(|n| match *n {
                "t500" => format!("---\n{}", tier_labelled("t500", "a")),
                n => format!("---\n{}", tier(n)),
            })
            .collect()
    };
    s.write("root/many.yaml", &text(&edited));
    let c = h.sync_with(&[&f], false).to_vec();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].updates.len(), 1, "{:?}", c[0].updates);
    let u = &c[0].updates[0];
    assert_eq!(u.key.name, "t500");
    assert!(u.value.as_ref().unwrap().meta().labels.contains_key("from"));
    // Remove one document: one delete. A comment-only edit: nothing.
    edited.remove(10);
    s.write("root/many.yaml", &text(&edited));
    let c = h.sync_with(&[&f], false).to_vec();
    assert_eq!(c[0].updates, [Update::delete(u_key("t10"))]);
    s.write("root/many.yaml", &format!("# note\n{}", text(&edited)));
    let c = h.sync_with(&[&f], false).to_vec();
    assert!(c[0].updates.is_empty(), "{:?}", c[0].updates);
    // The file removed: a delete per key it defined.
    std::fs::remove_file(&f).unwrap();
    let c = h.sync().to_vec();
    assert_eq!(c[0].status, Status::Removed);
    assert_eq!(c[0].updates.len(), 999);
    assert!(c[0].updates.iter().all(|u| u.value.is_none()));
    assert!(h.names().is_empty());
}

fn u_key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: crate::model::ResourceKind::Tier,
        namespace: None,
        name: name.into(),
    }
}

fn tier_labelled(name: &str, v: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}, labels: {{from: {v}}}}}\n"
    )
}

fn from_label(h: &Harness, name: &str) -> Option<String> {
    h.in_force
        .objects
        .get(&u_key(name))
        .and_then(|r| r.meta().labels.get("from").cloned())
}

#[test]
fn a_key_in_two_files_is_reported_the_first_file_wins_and_its_removal_promotes_the_other() {
    let s = Scratch::new("dup");
    let mut h = Harness::new(&s.root(), Limits::DAEMON);
    let a = s.write("root/a.yaml", &tier_labelled("x", "a"));
    let b = s.write("root/b.yaml", &tier_labelled("x", "b"));
    let c = h.sync().to_vec();
    assert_eq!(
        from_label(&h, "x").as_deref(),
        Some("a"),
        "the first path wins"
    );
    let dups: Vec<_> = c
        .iter()
        .flat_map(|c| &c.diagnostics)
        .filter(|d| d.message.contains("is defined twice"))
        .collect();
    assert_eq!(dups.len(), 1, "{c:#?}");
    assert_eq!(
        dups[0].file.as_deref(),
        Some(b.as_path()),
        "reported on the loser"
    );
    assert!(dups[0].message.contains("a.yaml:1"), "{}", dups[0].message);
    // Editing the loser changes nothing in force.
    s.write("root/b.yaml", &tier_labelled("x", "b2"));
    let c = h.sync_with(&[&b], false).to_vec();
    assert!(c[0].updates.is_empty(), "{:?}", c[0].updates);
    // The winner goes: the other file's definition is read again and wins.
    std::fs::remove_file(&a).unwrap();
    h.sync();
    assert_eq!(from_label(&h, "x").as_deref(), Some("b2"), "promoted");
    // A new first file takes over; removing the last one deletes.
    s.write("root/0.yaml", &tier_labelled("x", "zero"));
    h.sync();
    assert_eq!(from_label(&h, "x").as_deref(), Some("zero"));
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(s.root().join("0.yaml")).unwrap();
    h.sync();
    assert_eq!(from_label(&h, "x"), None);
    assert!(h.tree.keys.is_empty(), "nothing left in the key index");
    // Twice within one file: the first document wins, the second is reported.
    s.write(
        "root/c.yaml",
        &format!(
            "{}---\n{}",
            tier_labelled("y", "first"),
            tier_labelled("y", "second")
        ),
    );
    let c = h.sync().to_vec();
    assert_eq!(from_label(&h, "y").as_deref(), Some("first"));
    assert!(
        c[0].diagnostics
            .iter()
            .any(|d| d.message.contains("is defined twice"))
    );
}

#[test]
fn a_directory_renamed_inside_the_tree_arrives_as_one_change_with_no_gap() {
    let s = Scratch::new("mvone");
    s.write("root/sub/p.yaml", &tier("p"));
    let (tx, rx) = mpsc::channel();
    let opts = DirOptions {
        rescan_every: Duration::from_secs(3600),
        ..DirOptions::default()
    };
    let _watching = watch(&s.root(), opts, move |c| tx.send(c).is_ok()).unwrap();
    let initial: Vec<Event> = rx.try_iter().collect();
    assert!(matches!(initial.last(), Some(Event::Synced)));
    std::fs::rename(s.root().join("sub"), s.root().join("sub2")).unwrap();
    let Ok(Event::Changes(c)) = rx.recv_timeout(Duration::from_secs(5)) else {
        panic!("no change after the rename");
    };
    let statuses: Vec<Status> = c.reports.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Status::Removed, Status::Read(1)], "{c:?}");
    // The delete and the put of `p` travel together: applied as one batch,
    // the tier never leaves.
    let names: Vec<(&str, bool)> = c
        .updates
        .iter()
        .map(|u| (u.key.name.as_str(), u.value.is_some()))
        .collect();
    assert_eq!(names, [("p", false), ("p", true)]);
}

#[test]
fn a_document_moved_between_two_files_in_one_burst_arrives_as_one_change() {
    let s = Scratch::new("mvdoc");
    s.write("root/a.yaml", &tiers(&["x", "y"]));
    s.write("root/b.yaml", &tiers(&["z"]));
    let (tx, rx) = mpsc::channel();
    let opts = DirOptions {
        rescan_every: Duration::from_secs(3600),
        debounce: Duration::from_millis(100),
        ..DirOptions::default()
    };
    let _watching = watch(&s.root(), opts, move |c| tx.send(c).is_ok()).unwrap();
    let _initial: Vec<Event> = rx.try_iter().collect();
    // `y` moves from a.yaml to b.yaml, both written within the debounce.
    support_write(&s.root().join("a.yaml"), &tiers(&["x"]));
    support_write(&s.root().join("b.yaml"), &tiers(&["z", "y"]));
    let Ok(Event::Changes(c)) = rx.recv_timeout(Duration::from_secs(5)) else {
        panic!("no change after the move");
    };
    assert_eq!(c.reports.len(), 2, "both files in one change: {c:?}");
    let mut applied = InForce::default();
    for name in ["x", "y", "z"] {
        applied.objects.insert(
            u_key(name),
            crate::model::Resource::Tier(crate::model::Object {
                metadata: Default::default(),
                spec: Default::default(),
            }),
        );
    }
    applied.take(c);
    assert_eq!(
        applied.names(),
        ["x", "y", "z"],
        "y is in force after the batch"
    );
}

fn support_write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
