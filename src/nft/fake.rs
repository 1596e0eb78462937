//! An in-memory kernel for tests without root. It keeps tortie's table as
//! chains of rule hashes, sets and verdict maps, applies each transaction
//! atomically (on a copy, committed only if every command succeeds), and
//! enforces what the kernel enforces for ordering: a rule or map element
//! may only name objects that exist, and an object that something still
//! refers to cannot be deleted (EBUSY). Element batches are checked like
//! the netlink path is: against the generation id (every commit, and
//! `FakeControl::concurrent_commit`, moves it on), all or nothing, a
//! missing element or set refused by name. On demand it fails, hangs until
//! released (honouring the same deadline and stop flag as the real one),
//! crashes as if nft had been killed by a signal, or has no netlink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::NftError;
use super::elements::{ElementBatch, SetElements, encode};
use super::exec::Limits;
use super::kernel::Kernel;
use super::rules::{self, Op};
use super::state::TableState;

/// A fault the next calls meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// nft exits non-zero with this message.
    Fail(String),
    /// nft hangs until `FakeControl::release` (or deadline / stop).
    Hang,
    /// nft is killed by this signal.
    Crash(i32),
}

#[derive(Debug, Default)]
struct Control {
    /// Applied to every call while set, after `queue` is used up.
    always: Option<Fault>,
    /// Applied to the next calls, one each (`None`: the call goes through).
    queue: Vec<Option<Fault>>,
    released: bool,
    calls: usize,
    /// Text of every transaction attempted, in order.
    transactions: Vec<String>,
    /// Every element batch attempted, in order.
    batches: Vec<ElementBatch>,
    /// Every change batch (chains, rules, elements) attempted, in order.
    changes: Vec<Vec<Op>>,
    /// Commits by anyone (the ruleset generation id).
    generation: u32,
    /// Element batches fail as if the netlink socket could not be used.
    netlink_down: bool,
}

/// The test's handle on a `FakeKernel` owned by a dataplane.
#[derive(Debug, Clone, Default)]
pub struct FakeControl(Arc<Mutex<Control>>);

impl FakeControl {
    fn with<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// The next `n` calls meet `fault`.
    pub fn next(&self, n: usize, fault: Fault) {
        self.with(|c| c.queue.extend(std::iter::repeat_n(Some(fault), n)));
    }
    /// The next `n` calls go through (before any queued fault).
    pub fn pass(&self, n: usize) {
        self.with(|c| c.queue.extend(std::iter::repeat_n(None, n)));
    }
    /// Every call meets `fault` (or none) until changed.
    pub fn always(&self, fault: Option<Fault>) {
        self.with(|c| {
            c.always = fault;
            c.released = false;
        });
    }
    /// Lets hanging calls return (as if nft had finished normally).
    pub fn release(&self) {
        self.with(|c| {
            c.always = None;
            c.queue.retain(|f| *f != Some(Fault::Hang));
            c.released = true;
        });
    }
    pub fn calls(&self) -> usize {
        self.with(|c| c.calls)
    }
    pub fn transactions(&self) -> Vec<String> {
        self.with(|c| c.transactions.clone())
    }
    /// Every change batch that got as far as being sent, in order.
    pub fn changes(&self) -> Vec<Vec<Op>> {
        self.with(|c| c.changes.clone())
    }
    pub fn batches(&self) -> Vec<ElementBatch> {
        self.with(|c| c.batches.clone())
    }
    /// Element batches fail at the socket (`NftError::Netlink`) while set.
    pub fn netlink_down(&self, down: bool) {
        self.with(|c| c.netlink_down = down);
    }
    /// Another program commits something (outside tortie's table): the
    /// generation id moves on.
    pub fn concurrent_commit(&self) {
        self.with(|c| c.generation += 1);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    /// Chain → rules as (hash, names the rule refers to).
    chains: BTreeMap<String, Vec<(String, Vec<String>)>>,
    sets: BTreeMap<String, BTreeSet<String>>,
    maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// The in-memory kernel.
#[derive(Debug, Default)]
pub struct FakeKernel {
    table: Option<Table>,
    control: FakeControl,
    /// The generation at which tortie's view was last known to be right.
    seen: Option<u32>,
}

impl FakeKernel {
    pub fn new() -> (FakeKernel, FakeControl) {
        let k = FakeKernel::default();
        let c = k.control.clone();
        (k, c)
    }

    /// What the fake holds, as the dataplane compares it.
    pub fn state(&self) -> Option<TableState> {
        self.table.as_ref().map(Table::state)
    }

    /// Counts the call and plays the fault it meets, if any.
    fn fault(
        &self,
        what: &'static str,
        deadline: Duration,
        limits: &Limits,
    ) -> Result<(), NftError> {
        let fault = self.control.with(|c| {
            c.calls += 1;
            if c.queue.is_empty() {
                c.always.clone()
            } else {
                c.queue.remove(0)
            }
        });
        match fault {
            None => Ok(()),
            Some(Fault::Fail(stderr)) => Err(NftError::Rejected { stderr }),
            Some(Fault::Crash(signal)) => Err(NftError::Crashed {
                what,
                signal,
                stderr: String::new(),
            }),
            Some(Fault::Hang) => {
                let start = Instant::now();
                self.control.with(|c| c.released = false);
                loop {
                    if self.control.with(|c| c.released) {
                        return Ok(());
                    }
                    if limits.stopping() {
                        return Err(NftError::Interrupted { what });
                    }
                    if start.elapsed() >= deadline {
                        return Err(NftError::Timeout {
                            what,
                            after: deadline,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

impl Kernel for FakeKernel {
    fn transaction(&mut self, text: &str, limits: &Limits) -> Result<(), NftError> {
        self.control.with(|c| c.transactions.push(text.to_string()));
        let before = self.generation();
        let in_step = self.seen == Some(before)
            || text.contains("\nflush table ")
            || text.contains("\ndelete table ");
        self.seen = None;
        self.fault("transaction", limits.transaction, limits)?;
        let mut table = self.table.clone();
        for cmd in commands(text) {
            exec(&mut table, &cmd).map_err(|e| NftError::Rejected {
                stderr: format!("Error: Could not process rule: {e}\n{cmd}"),
            })?;
        }
        self.table = table;
        let after = self.control.with(|c| {
            c.generation += 1;
            c.generation
        });
        self.seen = in_step.then_some(after);
        Ok(())
    }

    fn list(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError> {
        self.seen = None;
        self.fault("listing", limits.list, limits)?;
        self.seen = Some(self.generation());
        Ok(self.state())
    }

    fn unchanged(&mut self, _limits: &Limits) -> bool {
        self.seen.is_some() && self.seen == Some(self.generation())
    }

    fn change(&mut self, ops: &[Op], limits: &Limits) -> Result<(), NftError> {
        self.apply_ops(ops, limits)
    }

    fn elements(&mut self, batch: &ElementBatch, limits: &Limits) -> Result<(), NftError> {
        self.control.with(|c| c.batches.push(batch.clone()));
        if self.control.with(|c| c.netlink_down) {
            return Err(NftError::Netlink {
                what: "open",
                reason: "Protocol not supported (os error 93)".into(),
            });
        }
        self.batch_generation(limits)?;
        let have = if batch.table {
            Some(self.table.clone().unwrap_or_default())
        } else {
            self.table.clone()
        };
        let mut table = have.ok_or(NftError::Element {
            set: batch
                .sets
                .first()
                .map(|s| s.set.clone())
                .unwrap_or_default(),
            element: String::new(),
            add: true,
            reason: ENOENT.into(),
        })?;
        for set in &batch.create {
            if table.sets.contains_key(&set.name) {
                return Err(NftError::Object {
                    what: format!("create set {}", set.name),
                    reason: "File exists (os error 17)".into(),
                });
            }
            table.sets.insert(set.name.clone(), set.elements.clone());
        }
        for add in [false, true] {
            for s in &batch.sets {
                apply_elements(&mut table, s, add)?;
            }
        }
        remove_objects(&mut table, &batch.remove)?;
        self.table = Some(table);
        self.seen = Some(self.control.with(|c| {
            c.generation += 1;
            c.generation
        }));
        Ok(())
    }
}

impl FakeKernel {
    /// What a genid-checked batch meets before it is applied: the injected
    /// fault, then a refusal when anything committed since the view was
    /// last known to be right (the view is untied either way).
    fn batch_generation(&mut self, limits: &Limits) -> Result<(), NftError> {
        let seen = self.seen.take();
        self.fault("netlink batch", limits.transaction, limits)?;
        let now = self.generation();
        if seen != Some(now) {
            return Err(NftError::Conflict {
                expected: seen.unwrap_or(0),
                reason: format!("the ruleset is at generation {now}"),
            });
        }
        Ok(())
    }

    /// A change batch, checked like `elements` and applied all or nothing;
    /// a rule the real encoder refuses is refused before anything "is sent".
    fn apply_ops(&mut self, ops: &[Op], limits: &Limits) -> Result<(), NftError> {
        if self.control.with(|c| c.netlink_down) {
            return Err(NftError::Netlink {
                what: "open",
                reason: "Protocol not supported (os error 93)".into(),
            });
        }
        for op in ops {
            if let Op::AddRule { chain, rule } = op {
                rules::encode(rule, chain)?;
            }
        }
        // Recorded (and counted as a call) once it would be sent.
        self.control.with(|c| c.changes.push(ops.to_vec()));
        self.batch_generation(limits)?;
        let mut table = self.table.clone();
        for op in ops {
            let cmd = op_command(table.as_ref(), op);
            exec(&mut table, &cmd).map_err(|reason| NftError::Object { what: cmd, reason })?;
        }
        self.table = table;
        self.seen = Some(self.control.with(|c| {
            c.generation += 1;
            c.generation
        }));
        Ok(())
    }

    fn generation(&self) -> u32 {
        self.control.with(|c| c.generation)
    }
}

/// A cleanup's deletions, refused like the kernel refuses them (EBUSY
/// while something still refers to the object).
fn remove_objects(t: &mut Table, r: &super::elements::Removals) -> Result<(), NftError> {
    let refused = |what: String, reason: &str| NftError::Object {
        what,
        reason: reason.to_string(),
    };
    for c in &r.flushed {
        let rules = t
            .chains
            .get_mut(c)
            .ok_or_else(|| refused(format!("flush chain {c}"), ENOENT))?;
        rules.clear();
    }
    let busy = "Device or resource busy (os error 16)";
    for (names, what) in [(&r.maps, "map"), (&r.chains, "chain"), (&r.sets, "set")] {
        for n in names {
            if t.referenced(n) {
                return Err(refused(format!("delete {what} {n}"), busy));
            }
            let gone = match what {
                "map" => t.maps.remove(n).is_some(),
                "chain" => t.chains.remove(n).is_some(),
                _ => t.sets.remove(n).is_some(),
            };
            if !gone {
                return Err(refused(format!("delete {what} {n}"), ENOENT));
            }
        }
    }
    Ok(())
}

/// One set's removals or additions, refused like the kernel refuses them.
fn apply_elements(t: &mut Table, s: &SetElements, add: bool) -> Result<(), NftError> {
    let texts = if add { &s.added } else { &s.removed };
    for e in texts {
        let err = |reason: &str| NftError::Element {
            set: s.set.clone(),
            element: e.clone(),
            add,
            reason: reason.to_string(),
        };
        encode(s.ty, e).map_err(|r| err(&r))?;
        let set = t.sets.get_mut(&s.set).ok_or_else(|| err(ENOENT))?;
        if add {
            set.insert(e.clone());
        } else if !set.remove(e) {
            return Err(err(ENOENT));
        }
    }
    Ok(())
}

impl Table {
    fn state(&self) -> TableState {
        TableState {
            chains: self
                .chains
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|(h, _)| h.clone()).collect()))
                .collect(),
            sets: self.sets.clone(),
            maps: self.maps.clone(),
        }
    }

    /// Whether any rule or map element refers to `name`.
    fn referenced(&self, name: &str) -> bool {
        self.chains
            .values()
            .flatten()
            .any(|(_, refs)| refs.iter().any(|r| r == name))
            || self
                .maps
                .values()
                .flat_map(|m| m.values())
                .any(|v| verdict_target(v) == Some(name))
    }
}

/// What an op does, as the nft command the fake runs.
fn op_command(table: Option<&Table>, op: &Op) -> String {
    let t = "inet tortie";
    match op {
        Op::NewChain(c) => format!("add chain {t} {c}"),
        Op::FlushChain(c) => format!("flush chain {t} {c}"),
        Op::AddRule { chain, rule } => format!("add rule {t} {chain} {}", rule.render(chain)),
        Op::FlushSet(s) => {
            let map = table.is_some_and(|tb| tb.maps.contains_key(s));
            format!("flush {} {t} {s}", if map { "map" } else { "set" })
        }
        Op::Elements {
            set, elements, add, ..
        } => format!(
            "{} element {t} {set} {{ {} }}",
            if *add { "add" } else { "delete" },
            elements.join(", ")
        ),
        Op::MapElements { map, elements } => {
            let items: Vec<String> = elements
                .iter()
                .map(|(k, v)| format!("\"{k}\" : {v}"))
                .collect();
            format!("add element {t} {map} {{ {} }}", items.join(", "))
        }
    }
}

fn verdict_target(v: &str) -> Option<&str> {
    v.strip_prefix("jump ").or_else(|| v.strip_prefix("goto "))
}

/// Turns a transaction into one command per line, expanding a
/// `table inet tortie { … }` block into the equivalent `add` commands.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if !(l.starts_with("table ") && l.ends_with('{')) {
            out.push(l.to_string());
            continue;
        }
        let t = l.trim_start_matches("table ").trim_end_matches('{').trim();
        out.push(format!("add table {t}"));
        // Objects: `set|map|chain NAME {` … `}` until the closing `}`.
        while let Some(line) = lines.next() {
            let l = line.trim();
            if l == "}" {
                break;
            }
            let mut w = l.split_whitespace();
            let (Some(kind), Some(name)) = (w.next(), w.next()) else {
                continue;
            };
            let mut body = Vec::new();
            for line in lines.by_ref() {
                if line.trim() == "}" {
                    break;
                }
                body.push(line.trim().to_string());
            }
            expand(&mut out, t, kind, name, &body);
        }
    }
    out
}

fn expand(out: &mut Vec<String>, t: &str, kind: &str, name: &str, body: &[String]) {
    out.push(format!("add {kind} {t} {name}"));
    if kind == "chain" {
        for rule in body.iter().filter(|l| !l.starts_with("type ")) {
            out.push(format!("add rule {t} {name} {rule}"));
        }
        return;
    }
    let joined = body.join(" ");
    if let Some((_, rest)) = joined.split_once("elements = {") {
        let elems = rest.rsplit_once('}').map(|(e, _)| e).unwrap_or(rest);
        out.push(format!("add element {t} {name} {{ {} }}", elems.trim()));
    }
}

/// The comma-separated items between the first `{` and the last `}`.
fn items(rest: &str) -> Vec<String> {
    let inner = rest
        .split_once('{')
        .and_then(|(_, r)| r.rsplit_once('}'))
        .map(|(i, _)| i)
        .unwrap_or("");
    inner
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

const ENOENT: &str = "No such file or directory";
const EBUSY: &str = "Device or resource busy";

fn exec(table: &mut Option<Table>, cmd: &str) -> Result<(), String> {
    let w: Vec<&str> = cmd.split_whitespace().collect();
    let (verb, obj) = (w.first().copied(), w.get(1).copied());
    if obj == Some("table") {
        return match verb {
            Some("add") => {
                table.get_or_insert_with(Table::default);
                Ok(())
            }
            Some("delete") => table.take().map(|_| ()).ok_or(ENOENT.into()),
            Some("flush") => {
                let t = table.as_mut().ok_or(ENOENT)?;
                t.chains.values_mut().for_each(Vec::clear);
                Ok(())
            }
            _ => Err(format!("unknown command `{cmd}`")),
        };
    }
    let t = table.as_mut().ok_or(ENOENT)?;
    let name = w.get(4).copied().ok_or(format!("no name in `{cmd}`"))?;
    // The text after `VERB OBJ FAMILY TABLE NAME`.
    let rest = w.get(5..).map(|r| r.join(" ")).unwrap_or_default();
    match (verb.unwrap_or(""), obj.unwrap_or("")) {
        ("add", "chain") => {
            t.chains.entry(name.into()).or_default();
        }
        ("flush", "chain") => t.chains.get_mut(name).ok_or(ENOENT)?.clear(),
        ("delete", "chain") => {
            let rules = t.chains.get(name).ok_or(ENOENT)?;
            if !rules.is_empty() || t.referenced(name) {
                return Err(EBUSY.into());
            }
            t.chains.remove(name);
        }
        ("add", "rule") => add_rule(t, name, &rest)?,
        ("add", "set") => {
            t.sets.entry(name.into()).or_default();
            declared_elements(t, name, &rest)?;
        }
        ("add", "map") => {
            t.maps.entry(name.into()).or_default();
            declared_elements(t, name, &rest)?;
        }
        ("flush", "set") => t.sets.get_mut(name).ok_or(ENOENT)?.clear(),
        ("flush", "map") => t.maps.get_mut(name).ok_or(ENOENT)?.clear(),
        ("delete", "set") | ("delete", "map") => {
            let exists = if obj == Some("set") {
                t.sets.contains_key(name)
            } else {
                t.maps.contains_key(name)
            };
            if !exists {
                return Err(ENOENT.into());
            }
            let used = t
                .chains
                .values()
                .flatten()
                .any(|(_, refs)| refs.iter().any(|r| r == name));
            if used {
                return Err(EBUSY.into());
            }
            t.sets.remove(name);
            t.maps.remove(name);
        }
        ("add", "element") => add_elements(t, name, &items(&rest))?,
        ("delete", "element") => delete_elements(t, name, &items(&rest))?,
        _ => return Err(format!("unknown command `{cmd}`")),
    }
    Ok(())
}

/// The `elements = { … }` of a one-line declaration, added.
fn declared_elements(t: &mut Table, name: &str, rest: &str) -> Result<(), String> {
    let Some((_, e)) = rest.split_once("elements = {") else {
        return Ok(());
    };
    let inner = e.split_once('}').map(|(i, _)| i).unwrap_or(e);
    add_elements(t, name, &items(&format!("{{{inner}}}")))
}

fn add_rule(t: &mut Table, chain: &str, rule: &str) -> Result<(), String> {
    if !t.chains.contains_key(chain) {
        return Err(ENOENT.into());
    }
    // The comment is free text: only what precedes it can refer to objects.
    let matches = rule.split(" comment \"").next().unwrap_or(rule);
    let words: Vec<&str> = matches.split_whitespace().collect();
    let mut refs = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if let Some(named) = w.strip_prefix('@') {
            let named = named.trim_end_matches([',', ';', '}']);
            if !t.sets.contains_key(named) && !t.maps.contains_key(named) {
                return Err(ENOENT.into());
            }
            refs.push(named.to_string());
        } else if matches!(*w, "jump" | "goto")
            && let Some(target) = words.get(i + 1)
        {
            let target = target.trim_end_matches([',', ';', '}']);
            if !t.chains.contains_key(target) {
                return Err(ENOENT.into());
            }
            refs.push(target.to_string());
        }
    }
    let hash = rule
        .split_once("comment \"")
        .map(|(_, c)| c.split([';', '"']).next().unwrap_or_default().to_string())
        .unwrap_or_default();
    t.chains.get_mut(chain).expect("checked").push((hash, refs));
    Ok(())
}

fn add_elements(t: &mut Table, name: &str, items: &[String]) -> Result<(), String> {
    if let Some(set) = t.sets.get_mut(name) {
        set.extend(items.iter().cloned());
        return Ok(());
    }
    let mut parsed = Vec::new();
    for item in items {
        let (k, v) = item
            .split_once(" : ")
            .ok_or(format!("bad map element {item}"))?;
        let v = v.trim().to_string();
        if let Some(target) = verdict_target(&v)
            && !t.chains.contains_key(target)
        {
            return Err(ENOENT.into());
        }
        parsed.push((k.trim().trim_matches('"').to_string(), v));
    }
    t.maps.get_mut(name).ok_or(ENOENT)?.extend(parsed);
    Ok(())
}

fn delete_elements(t: &mut Table, name: &str, items: &[String]) -> Result<(), String> {
    if let Some(set) = t.sets.get_mut(name) {
        for item in items {
            if !set.remove(item) {
                return Err(ENOENT.into());
            }
        }
        return Ok(());
    }
    let map = t.maps.get_mut(name).ok_or(ENOENT)?;
    for item in items {
        if map.remove(item.trim_matches('"')).is_none() {
            return Err(ENOENT.into());
        }
    }
    Ok(())
}
