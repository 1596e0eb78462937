//! The desired state: the engine fed by batches of updates (and the node's
//! interfaces), what a compute publishes (notes, the packet log's context,
//! size metrics, the refresh interval), and the misconfiguration checks
//! after each compute. Hands the ruleset's changes to the kernel side.

use std::time::{Duration, Instant};

use crate::compile::incremental::{Incremental, NodeContext, Outcome};
use crate::compile::ir::Change;
use crate::hostifaces::InterfaceAddrs;
use crate::model::Update;

use super::Options;
use super::checks::{Census, Checks};
use super::kernel::View;
use super::metrics::{Metrics, Snapshot};
use super::pump::Batch;

pub struct Desired {
    engine: Incremental,
    refresh: Duration,
    /// The node's interfaces, when followed.
    interfaces: Option<InterfaceAddrs>,
    checks: Checks,
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Unchanged => "none",
        Outcome::Sets(_) => "sets",
        Outcome::Parts(_) => "parts",
        Outcome::Full => "full",
    }
}

impl Desired {
    /// The first compute, from the complete initial listing.
    pub fn new(
        initial: Vec<Update>,
        interfaces: Option<InterfaceAddrs>,
        opts: &Options,
        ctx: &Ctx,
    ) -> Desired {
        let backend = opts.log_backend;
        let connection_logs = opts.connection_logs;
        let (env, problems) = crate::calc::felix_env(std::env::vars());
        for p in problems {
            tracing::warn!("{p}");
        }
        let context = NodeContext {
            host_interfaces: interfaces.clone().unwrap_or_default(),
            felix_env: Some(env),
        };
        let started = Instant::now();
        // One update per key (the pump keeps the latest): the objects.
        let resources: Vec<_> = initial.into_iter().filter_map(|u| u.value).collect();
        let objects = resources.len();
        let engine = Incremental::with_context(resources, &opts.node, context, move |s| {
            s.log_backend = backend;
            s.connection_logs |= connection_logs;
        });
        // The listing's model objects are gone (the engine keeps records):
        // give their pages back before the daemon settles.
        let built = started.elapsed();
        crate::datastore::trim_heap();
        tracing::info!(
            objects,
            node = %opts.node,
            compute_ms = started.elapsed().as_millis() as u64,
            trim_ms = (started.elapsed() - built).as_millis() as u64,
            "initial listing complete"
        );
        let mut d = Desired {
            engine,
            refresh: Duration::ZERO,
            interfaces,
            checks: Checks::default(),
        };
        d.publish(true, opts, ctx);
        d.check(opts, ctx);
        d
    }

    /// What the kernel side needs.
    pub fn view(&self, opts: &Options) -> View<'_> {
        View {
            ruleset: self.engine.ruleset(),
            refresh: self.refresh_every(opts),
        }
    }

    pub fn refresh_every(&self, opts: &Options) -> Duration {
        opts.refresh.unwrap_or(self.refresh).max(super::MIN_REFRESH)
    }

    /// The ruleset changes since the last call.
    pub fn take_change(&mut self) -> Change {
        self.engine.take_change()
    }

    /// Feeds one batch to the engine; true when the ruleset may have changed.
    pub fn apply(&mut self, batch: Batch, opts: &Options, ctx: &Ctx) -> bool {
        let mut changed = false;
        if let Some(map) = batch.interfaces {
            self.interfaces = Some(map.clone());
            if self.engine.set_host_interfaces(map) != Outcome::Unchanged {
                tracing::info!("the node's interfaces changed; host endpoints re-bound");
                self.publish(false, opts, ctx);
                changed = true;
            }
        }
        if !batch.updates.is_empty() {
            changed |= self.compute(batch.updates, opts, ctx);
        }
        self.check(opts, ctx);
        changed
    }

    fn compute(&mut self, updates: Vec<Update>, opts: &Options, ctx: &Ctx) -> bool {
        let count = updates.len();
        let span = tracing::info_span!("change", first = %updates[0].key, updates = count);
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = self.engine.apply(updates);
        match outcome {
            Outcome::Full => self.publish(true, opts, ctx),
            Outcome::Parts(_) => self.publish(false, opts, ctx),
            Outcome::Sets(_) => {
                let snap = ctx.metrics.snapshot();
                publish_sizes(self, snap.local_endpoints, snap.local_policies, ctx.metrics);
            }
            Outcome::Unchanged => {}
        }
        let sets = match outcome {
            Outcome::Sets(n) => n,
            _ => 0,
        };
        tracing::info!(
            recompute = outcome_label(outcome),
            sets,
            compute_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            "change detected"
        );
        outcome != Outcome::Unchanged
    }

    fn check(&mut self, opts: &Options, ctx: &Ctx) {
        self.checks.run(
            &self.engine,
            &opts.node,
            ctx.census,
            self.interfaces.as_ref(),
            ctx.metrics,
        );
    }

    /// Publishes what a compute produced: the log context and metrics, and
    /// after a rebuild (`rebuilt`) the notes and settings it brings.
    fn publish(&mut self, rebuilt: bool, opts: &Options, ctx: &Ctx) {
        let node = opts.node.as_str();
        let cluster = self.engine.cluster();
        if rebuilt {
            if let (Some(level), Some(sev)) = (&opts.log_level, &cluster.settings.log_severity) {
                level.set_felix_severity(sev);
            }
            for n in &cluster.notes {
                tracing::warn!(subject = %n.subject, "{}", n.message);
            }
        }
        let locals: Vec<_> = cluster.local_endpoints(node).collect();
        if let Ok(mut c) = ctx.log_ctx.write() {
            c.index = self.engine.ruleset().log_index.clone();
            c.connection_rate = cluster.settings.connection_logs_rate;
            c.endpoints = locals
                .iter()
                .filter_map(|e| Some((e.iface.clone()?, e.id.to_string())))
                .collect();
        }
        let (n_locals, n_policies) = (locals.len(), self.engine.local_policy_count());
        self.refresh = cluster.settings.refresh_interval;
        publish_sizes(self, n_locals, n_policies, ctx.metrics);
    }
}

/// What a compute reads besides its input.
pub struct Ctx<'a> {
    pub metrics: &'a Metrics,
    pub log_ctx: &'a crate::logging::SharedContext,
    pub census: &'a Census,
}

impl<'a> Ctx<'a> {
    pub fn new(
        metrics: &'a Metrics,
        log_ctx: &'a crate::logging::SharedContext,
        census: &'a Census,
    ) -> Ctx<'a> {
        Ctx {
            metrics,
            log_ctx,
            census,
        }
    }
}

fn publish_sizes(d: &Desired, local_endpoints: usize, local_policies: usize, metrics: &Metrics) {
    let ruleset = d.engine.ruleset();
    metrics.set_snapshot(Snapshot {
        local_endpoints,
        local_policies,
        selectors: ruleset
            .sets
            .keys()
            .filter(|k| k.starts_with("s4-") || k.starts_with("s6-"))
            .count(),
        set_members: ruleset.sets.values().map(|s| s.elements.len()).sum(),
        rules: ruleset.rule_count(),
        chains: ruleset.chains.len(),
        sets: ruleset.sets.len(),
    });
}
