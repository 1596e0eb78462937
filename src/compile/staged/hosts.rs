//! Staged policies and connection logs for host endpoints: every stage
//! whose enforced chain exists (normal host ingress/egress, applyOnForward
//! ingress/egress, preDNAT, untracked ingress/egress) gets the same two
//! shadow walks as a workload, jumped to from that chain after conntrack's
//! own verdicts, walking the stage's own policies, failsafes and tail.
//!
//! "First packet of a connection": `ct state new` where conntrack has run
//! (filter and mangle). The untracked stage runs in raw, before conntrack,
//! so there is no connection yet: every packet is a first packet. Its
//! shadow walk runs for at most `connectionLogsPerEndpointRate` packets per
//! second per endpoint and direction (a `limit` on the jump, so untracked
//! traffic at line rate does not pay for it); packets beyond that are not
//! shadow-evaluated, counted or logged, and are still policed as always.

use super::*;

/// The connection record's name of a host-endpoint stage.
fn stage_name(kind: &HostChain) -> &'static str {
    match (kind.layer, kind.dir, kind.forward) {
        (Layer::Raw, Direction::Ingress, _) => "untracked-ingress",
        (Layer::Raw, Direction::Egress, _) => "untracked-egress",
        (Layer::Mangle, _, _) => "prednat",
        (Layer::Filter, Direction::Ingress, false) => "host-ingress",
        (Layer::Filter, Direction::Egress, false) => "host-egress",
        (Layer::Filter, Direction::Ingress, true) => "forward-ingress",
        (Layer::Filter, Direction::Egress, true) => "forward-egress",
    }
}

/// One stage of host endpoint `ep` bound to `iface`: its enforced and its
/// staged policy lists (the staged one equal when no staged policy touches
/// it), or `None` when the stage has no chain. A stage only staged policies
/// select gets its (policy-less, so verdict-neutral) enforced chain too, so
/// that the staged view has somewhere to run.
pub(in crate::compile) fn host_stage<'a>(
    cluster: &'a Cluster,
    ep: &'a Endpoint,
    applying: &[&'a Policy],
    iface: &str,
    kind: &HostChain,
) -> Option<(Vec<&'a Policy>, Vec<&'a Policy>)> {
    if kind.layer == Layer::Raw && iface == "*" {
        return None;
    }
    let wanted = |p: &&Policy| (kind.select)(p) && has_direction(p, kind.dir);
    let enforced: Vec<&'a Policy> = applying.iter().copied().filter(wanted).collect();
    let staged: Vec<&'a Policy> = if cluster.staged.is_empty() {
        enforced.clone()
    } else {
        staged_view(cluster, ep)
            .into_iter()
            .filter(wanted)
            .collect()
    };
    if enforced.is_empty() && staged.is_empty() && !kind.always {
        return None;
    }
    Some((enforced, staged))
}

fn differs(enforced: &[&Policy], staged: &[&Policy]) -> bool {
    !enforced
        .iter()
        .map(|p| &p.id)
        .eq(staged.iter().map(|p| &p.id))
}

fn view_stem(kind: &HostChain) -> String {
    format!("{}-s{}", kind.layer.prefix(), kind.stem)
}

/// The stage's shadow entry chain: `{layer}-s{stem}x-{tag}`, e.g.
/// `filter-sfhx-eth0` (after its views `filter-sfhe-`/`-sfhs-eth0`).
fn entry_name(kind: &HostChain, tag: &str) -> String {
    limit_name(&format!("{}x-{tag}", view_stem(kind)))
}

impl<'a> Compiler<'a> {
    /// The rule a host endpoint stage's enforced chain starts its shadow
    /// walks with, when it has any (its staged view differs, or its
    /// connections are logged).
    pub(in crate::compile) fn host_shadow_jump(
        &self,
        ep: &Endpoint,
        tag: &str,
        kind: &HostChain,
        enforced: &[&Policy],
        staged: &[&Policy],
    ) -> Option<Rule> {
        if !self.cluster.shadow_walks()
            || !(differs(enforced, staged) || self.cluster.connection_logged(ep))
        {
            return None;
        }
        let entry = entry_name(kind, tag);
        let first = if kind.style.conntrack {
            "ct state new".to_string()
        } else {
            let n = self.cluster.settings.connection_logs_rate.max(1);
            format!("limit rate {n}/second burst {n} packets")
        };
        Some(Rule::new(
            first,
            format!("jump {entry}"),
            "staged policies and connection logs",
        ))
    }

    /// The shadow chains of every host endpoint stage that jumps to them
    /// (see [`Compiler::host_shadow_jump`]).
    pub(super) fn host_shadow_chains(&mut self, hosts: &[(String, &'a Endpoint)]) {
        for (iface, ep) in hosts {
            let ep: &'a Endpoint = ep;
            let tag = if iface == "*" { "all" } else { iface.as_str() };
            let applying: Vec<&'a Policy> = self.cluster.policies_for(ep).collect();
            for kind in &HOST_CHAINS {
                let Some((enforced, staged)) = host_stage(self.cluster, ep, &applying, iface, kind)
                else {
                    continue;
                };
                let differs = differs(&enforced, &staged);
                let logged = self.cluster.connection_logged(ep);
                if !differs && !logged {
                    continue;
                }
                self.staged_endpoint(&Shadow {
                    entry: (entry_name(kind, tag), Rank::Tiers),
                    stem: view_stem(kind),
                    tag: tag.to_string(),
                    layer: kind.layer,
                    dir: kind.dir,
                    style: kind.style,
                    stage: stage_name(kind),
                    enforced: &enforced,
                    staged: differs.then_some(staged.as_slice()),
                    logged,
                    profiles: kind.profiles,
                    ep,
                });
            }
        }
    }
}
