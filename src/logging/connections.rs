//! Connection records: one per new connection, built from the NFLOG
//! messages the shadow walks send per stage (egress of the source, ingress
//! of the destination, each host endpoint stage crossed; see
//! docs/logging.md, "Connection logs"). An egress stage allowed towards a
//! local workload waits for that workload's ingress stage (bounded in time
//! and count); a host endpoint stage is a record of its own (one per
//! connection and stage); every other stage ends its record.
//! A per-endpoint token bucket limits records; what it suppresses is
//! counted and carried in the endpoint's next record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Record, Stage};
use crate::compile::ir::LogEntry;

/// How long an allowed egress stage waits for its ingress stage.
pub const PAIR_WAIT: Duration = Duration::from_millis(500);
/// At most this many stages wait (beyond, the oldest is written alone).
pub const PENDING_MAX: usize = 65_536;

/// The stages of host endpoints (`compile::staged::hosts`): each makes a
/// record of its own and leaves workload stages waiting for their pair.
pub const HOST_STAGES: [&str; 7] = [
    "host-ingress",
    "host-egress",
    "forward-ingress",
    "forward-egress",
    "prednat",
    "untracked-ingress",
    "untracked-egress",
];

type Flow = (Option<IpAddr>, Option<IpAddr>, u8, Option<u16>, Option<u16>);

fn flow(r: &Record) -> Flow {
    (r.src, r.dst, r.proto, r.sport, r.dport)
}

/// A token bucket of `rate` records per second, burst `rate`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

#[derive(Debug, Default)]
pub struct Connections {
    pending: HashMap<Flow, (Instant, Record)>,
    /// The last differing staged verdict per flow, with the enforced
    /// decision it differs from, for the stage's record.
    staged: HashMap<Flow, (LogEntry, Option<LogEntry>)>,
    buckets: HashMap<String, Bucket>,
}

impl Connections {
    /// Remembers a staged "would …" record for the connection stage that
    /// follows it (same packet, same chain). It is carried only by a stage
    /// whose enforced decision (the same mark id) is the one it differs
    /// from: a stage that is not connection-logged (a host endpoint's,
    /// with logs per namespace) does not lend its staged verdict to the
    /// next logged stage of the flow.
    pub fn staged(&mut self, rec: &Record) {
        if let Some(e) = &rec.entry {
            if self.staged.len() >= PENDING_MAX {
                self.staged.clear();
            }
            self.staged
                .insert(flow(rec), (e.clone(), rec.enforced.clone()));
        }
    }

    /// One connection stage (a `Connection` entry, its decision from the
    /// mark); the records now complete. `local` says whether an interface
    /// is a local workload's. Suppressed records are counted in `suppressed`.
    pub fn stage(
        &mut self,
        mut rec: Record,
        now: Instant,
        rate: u32,
        local: impl Fn(&str) -> bool,
        suppressed: &mut u64,
    ) -> Vec<Record> {
        let entry = rec.entry.clone().unwrap_or_default();
        let decision = match rec.enforced.take() {
            Some(d) => d,
            // Dispatch drops (unknown interface) decide themselves.
            None => LogEntry {
                action: "Deny".into(),
                ..entry.clone()
            },
        };
        let staged = self
            .staged
            .remove(&flow(&rec))
            .filter(|(_, enforced)| enforced.as_ref() == Some(&decision))
            .map(|(e, _)| e);
        let stage = Stage {
            stage: entry.rule.clone(),
            endpoint: entry.endpoint.clone(),
            decision,
            staged,
        };
        let key = flow(&rec);
        let mut out = self.expire(now, rate, suppressed);
        if HOST_STAGES.contains(&stage.stage.as_str()) {
            rec.stages.push(stage);
            out.extend(self.limit(rec, now, rate, suppressed));
            return out;
        }
        if stage.stage == "egress" && stage.decision.action == "Allow" && local(&rec.out_if) {
            rec.stages.push(stage);
            if self.pending.len() >= PENDING_MAX
                && let Some(oldest) = self.oldest()
                && let Some((_, r)) = self.pending.remove(&oldest)
            {
                out.extend(self.limit(r, now, rate, suppressed));
            }
            self.pending.insert(key, (now, rec));
            return out;
        }
        let rec = match self.pending.remove(&key) {
            Some((_, mut first)) if stage.stage == "ingress" => {
                first.stages.push(stage);
                first
            }
            other => {
                if let Some((_, r)) = other {
                    out.extend(self.limit(r, now, rate, suppressed));
                }
                rec.stages.push(stage);
                rec
            }
        };
        out.extend(self.limit(rec, now, rate, suppressed));
        out
    }

    /// Egress stages that waited longer than [`PAIR_WAIT`], as records.
    pub fn expire(&mut self, now: Instant, rate: u32, suppressed: &mut u64) -> Vec<Record> {
        let old: Vec<Flow> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) >= PAIR_WAIT)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in old {
            if let Some((_, r)) = self.pending.remove(&k) {
                out.extend(self.limit(r, now, rate, suppressed));
            }
        }
        out
    }

    fn oldest(&self) -> Option<Flow> {
        self.pending
            .iter()
            .min_by_key(|(_, (t, _))| *t)
            .map(|(k, _)| *k)
    }

    /// The record, unless its endpoint is over its rate (then counted).
    fn limit(
        &mut self,
        mut rec: Record,
        now: Instant,
        rate: u32,
        suppressed: &mut u64,
    ) -> Option<Record> {
        let endpoint = rec
            .stages
            .last()
            .map(|s| s.endpoint.clone())
            .unwrap_or_default();
        let rate = f64::from(rate.max(1));
        let b = self.buckets.entry(endpoint).or_insert(Bucket {
            tokens: rate,
            at: now,
            suppressed: 0,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens < 1.0 {
            b.suppressed += 1;
            *suppressed += 1;
            return None;
        }
        b.tokens -= 1.0;
        rec.suppressed = std::mem::take(&mut b.suppressed);
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn entry(action: &str, rule: &str, endpoint: &str) -> LogEntry {
        LogEntry {
            action: action.into(),
            rule: rule.into(),
            endpoint: endpoint.into(),
            ..LogEntry::default()
        }
    }

    fn stage_rec(dir: &str, endpoint: &str, decision: LogEntry, sport: u16) -> Record {
        Record {
            time: UNIX_EPOCH,
            id: "T1".into(),
            entry: Some(entry("Connection", dir, endpoint)),
            src: Some("198.18.0.3".parse().unwrap()),
            dst: Some("198.18.0.2".parse().unwrap()),
            proto: 6,
            sport: Some(sport),
            dport: Some(80),
            in_if: "calia".into(),
            out_if: "calib".into(),
            endpoint: String::new(),
            enforced: Some(decision),
            stages: Vec::new(),
            suppressed: 0,
            packet_time: false,
        }
    }

    #[test]
    fn egress_waits_for_ingress_and_denials_end_a_record() {
        let mut c = Connections::default();
        let now = Instant::now();
        let mut sup = 0;
        let allow = entry("Allow", "egress#0", "");
        let out = c.stage(
            stage_rec("egress", "a/client", allow, 1),
            now,
            10,
            |i| i == "calib",
            &mut sup,
        );
        assert!(out.is_empty(), "waits for the ingress stage");
        let deny = entry("Deny", "end of tier", "a/web");
        let out = c.stage(
            stage_rec("ingress", "a/web", deny, 1),
            now,
            10,
            |_| true,
            &mut sup,
        );
        assert_eq!(out.len(), 1);
        let stages: Vec<&str> = out[0].stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(stages, ["egress", "ingress"]);
        assert!(c.expire(now + PAIR_WAIT, 10, &mut sup).is_empty());
        // An allowed egress whose ingress never comes is written on expiry.
        let allow = entry("Allow", "egress#0", "");
        assert!(
            c.stage(
                stage_rec("egress", "a/client", allow, 2),
                now,
                10,
                |_| true,
                &mut sup
            )
            .is_empty()
        );
        assert_eq!(c.expire(now + PAIR_WAIT, 10, &mut sup).len(), 1);
    }

    #[test]
    fn the_rate_limit_counts_what_it_suppresses_and_reports_it_next() {
        let mut c = Connections::default();
        let now = Instant::now();
        let mut sup = 0;
        let mut written = Vec::new();
        for i in 0..5 {
            let d = entry("Deny", "ingress#0", "");
            written.extend(c.stage(
                stage_rec("ingress", "a/web", d, i),
                now,
                2,
                |_| false,
                &mut sup,
            ));
        }
        assert_eq!((written.len(), sup), (2, 3));
        let d = entry("Deny", "ingress#0", "");
        let later = c.stage(
            stage_rec("ingress", "a/web", d, 9),
            now + Duration::from_secs(1),
            2,
            |_| false,
            &mut sup,
        );
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].suppressed, 3, "the next record carries the count");
    }

    #[test]
    fn a_differing_staged_verdict_is_carried_in_its_stage() {
        let mut c = Connections::default();
        let now = Instant::now();
        let mut sup = 0;
        // The would-record carries the mark's enforced decision, as its
        // connection stage does.
        let mut would = stage_rec("ingress", "a/web", entry("Allow", "ingress#0", ""), 7);
        would.entry = Some(entry("would deny", "ingress#0", ""));
        c.staged(&would);
        let allow = entry("Allow", "ingress#0", "");
        let out = c.stage(
            stage_rec("ingress", "a/web", allow, 7),
            now,
            10,
            |_| false,
            &mut sup,
        );
        assert_eq!(out.len(), 1);
        let staged = out[0].stages[0].staged.as_ref().map(|e| e.action.as_str());
        assert_eq!(staged, Some("would deny"));
        let other = entry("Allow", "ingress#0", "");
        let out = c.stage(
            stage_rec("ingress", "a/web", other, 8),
            now,
            10,
            |_| false,
            &mut sup,
        );
        assert!(out[0].stages[0].staged.is_none(), "only its own flow's");
        // Another stage's staged verdict (an unlogged host endpoint stage of
        // the same flow, decided by another rule) is not carried.
        let mut would = stage_rec("forward-ingress", "", entry("Allow", "ingress#3", ""), 9);
        would.entry = Some(entry("would deny", "ingress#0", ""));
        c.staged(&would);
        let allow = entry("Allow", "ingress#0", "");
        let out = c.stage(
            stage_rec("ingress", "a/web", allow, 9),
            now,
            10,
            |_| false,
            &mut sup,
        );
        assert!(
            out[0].stages[0].staged.is_none(),
            "not this stage's: {:?}",
            out[0].stages[0]
        );
    }

    #[test]
    fn host_endpoint_stages_are_records_of_their_own_and_leave_pairs_alone() {
        let mut c = Connections::default();
        let now = Instant::now();
        let mut sup = 0;
        // A pod-to-pod connection that also crosses the all-interfaces host
        // endpoint's forward stages: 3 records (forward-ingress, the paired
        // egress + ingress, forward-egress).
        let fwd = entry("Allow", "forwarded: no policy decided", "");
        let mut out = c.stage(
            stage_rec("forward-ingress", "host endpoint all", fwd.clone(), 3),
            now,
            10,
            |_| true,
            &mut sup,
        );
        assert_eq!(out.len(), 1, "a host stage is written at once");
        let allow = entry("Allow", "egress#0", "");
        out.extend(c.stage(
            stage_rec("egress", "a/client", allow, 3),
            now,
            10,
            |_| true,
            &mut sup,
        ));
        let allow = entry("Allow", "ingress#0", "");
        out.extend(c.stage(
            stage_rec("ingress", "a/web", allow, 3),
            now,
            10,
            |_| true,
            &mut sup,
        ));
        out.extend(c.stage(
            stage_rec("forward-egress", "host endpoint all", fwd, 3),
            now,
            10,
            |_| true,
            &mut sup,
        ));
        let stages: Vec<Vec<&str>> = out
            .iter()
            .map(|r| r.stages.iter().map(|s| s.stage.as_str()).collect())
            .collect();
        assert_eq!(
            stages,
            [
                vec!["forward-ingress"],
                vec!["egress", "ingress"],
                vec!["forward-egress"]
            ]
        );
        // preDNAT where no policy decided: the record's verdict is a pass.
        let pass = entry("Pass", "no policy decided", "");
        let out = c.stage(
            stage_rec("prednat", "host endpoint h", pass, 4),
            now,
            10,
            |_| true,
            &mut sup,
        );
        assert_eq!(out[0].verdict(), "pass");
        assert!(
            out[0]
                .syslog("n")
                .contains(" prednat=\"Pass by no policy decided\" ")
        );
    }
}
