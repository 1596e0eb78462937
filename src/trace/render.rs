//! `tortie trace` output: readable text, or one JSON object (the schema in
//! docs/trace.md).

use std::fmt::Write as _;

use super::{PolicyTrace, Stage, Trace};

fn proto_name(p: u8) -> String {
    crate::ipproto::name(p).map_or_else(|| format!("protocol {p}"), str::to_string)
}

/// The first line: the packet as the node sees it.
fn packet_line(t: &Trace) -> String {
    packet_text("packet", &t.packet, &t.ct_state.to_uppercase())
}

fn packet_text(what: &str, p: &super::Packet, state: &str) -> String {
    let at = |a: std::net::IpAddr, port: Option<u16>| match (a, port) {
        (std::net::IpAddr::V6(a), Some(n)) => format!("[{a}]:{n}"),
        (a, Some(n)) => format!("{a}:{n}"),
        (a, None) => a.to_string(),
    };
    let mut s = format!(
        "{what}: {} {} -> {}",
        proto_name(p.proto),
        at(p.saddr, p.sport),
        at(p.daddr, p.dport)
    );
    if let Some((ty, code)) = p.icmp {
        let _ = write!(s, " type {ty} code {code}");
    }
    let iface = |i: &Option<String>| i.clone().unwrap_or_else(|| "(host)".into());
    let _ = write!(
        s,
        ", in {} out {}, conntrack state {state}",
        iface(&p.iif),
        iface(&p.oif)
    );
    s
}

fn policy_line(p: &PolicyTrace) -> String {
    let id = match (p.kind.as_str(), p.namespace.is_empty()) {
        ("failsafe", _) => format!("failsafe {}", p.name),
        ("profile", _) => format!("profile {}", p.name),
        (k, true) => format!("{k}/{}", p.name),
        (k, false) => format!("{k}/{}/{}", p.namespace, p.name),
    };
    let mut s = match (&p.rule, &p.action) {
        (Some(r), Some(a)) => format!("{id}: rule {r} {a}"),
        _ => format!("{id}: no rule matched"),
    };
    if !p.logged.is_empty() {
        let l: Vec<String> = p.logged.iter().map(|i| i.to_string()).collect();
        let _ = write!(s, " (logged by rule {})", l.join(", "));
    }
    s
}

fn stage_text(out: &mut String, s: &Stage) {
    let _ = writeln!(out, "{} {}: {}", s.stage, s.endpoint, s.verdict);
    if let Some(r) = &s.reason {
        let _ = writeln!(out, "  {r}");
    }
    for t in &s.tiers {
        let label = match t.tier.as_str() {
            "failsafe" => "failsafes".to_string(),
            "profiles" => "profiles".to_string(),
            name => format!("tier {name}"),
        };
        let _ = writeln!(out, "  {label}: {}", t.outcome);
        for p in &t.policies {
            let _ = writeln!(out, "    {}", policy_line(p));
        }
    }
}

/// The trace as text.
pub fn text(t: &Trace) -> String {
    let mut out = packet_line(t);
    out.push('\n');
    if t.stages.is_empty() {
        out.push_str("no policy stage applies to this path\n");
    }
    for (i, s) in t.stages.iter().enumerate() {
        if let Some((reply, state, at)) = &t.reply
            && *at == i
        {
            let line = packet_text("reply", reply, &state.to_uppercase());
            let _ = writeln!(out, "{line}");
        }
        stage_text(&mut out, s);
    }
    if let Some((reply, state, at)) = &t.reply
        && *at == t.stages.len()
    {
        let line = packet_text("reply", reply, &state.to_uppercase());
        let _ = writeln!(out, "{line}: no policy stage");
    }
    let _ = writeln!(out, "verdict: {}", t.verdict);
    out
}

/// The trace as one pretty-printed JSON object.
pub fn json(t: &Trace) -> String {
    let mut s = serde_json::to_string_pretty(t).expect("a trace serialises");
    s.push('\n');
    s
}
