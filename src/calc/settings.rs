//! Dataplane settings: Felix's defaults, overridden by the `default`
//! FelixConfiguration and then by `node.<nodename>`.

use std::time::Duration;

use ipnet::IpNet;

use crate::model::types::{FelixConfigurationSpec, ProtoPort, Protocol};
use crate::model::{parse_duration, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointToHostAction {
    Drop,
    Return,
    Accept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    Drop,
    Reject,
}

/// A failsafe port: protocol, port and an optional peer network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsafePort {
    pub protocol: Protocol,
    pub port: u16,
    pub net: Option<IpNet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub endpoint_to_host: EndpointToHostAction,
    pub deny: DenyAction,
    pub failsafe_in: Vec<FailsafePort>,
    pub failsafe_out: Vec<FailsafePort>,
    pub log_prefix: String,
    /// `(count, unit)` e.g. `(10, "second")`.
    pub log_rate: Option<(u32, String)>,
    pub log_burst: u32,
    pub interface_prefixes: Vec<String>,
    pub conntrack_invalid_drop: bool,
    pub refresh_interval: Duration,
    /// Where Log actions (and logged drops) go.
    pub log_backend: LogBackend,
    /// Also log the implicit drops (FelixConfiguration `logDropped`).
    pub log_dropped: bool,
    /// FelixConfiguration `logSeverityScreen`: the agent's own log level.
    pub log_severity: Option<String>,
    /// Connection logs for every local workload (FelixConfiguration
    /// `connectionLogsEnabled`, `tortie run --connection-logs`).
    pub connection_logs: bool,
    /// Connection records per endpoint and second.
    pub connection_logs_rate: u32,
}

/// Where logged packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogBackend {
    /// `log prefix "…: " level info`: the kernel log, as Calico does.
    Kernel,
    /// `log group N`: read by tortie over netlink and sent to syslog.
    Nflog { group: u16 },
}

fn ports(spec: &[(&str, u16)]) -> Vec<FailsafePort> {
    spec.iter()
        .map(|(p, n)| FailsafePort {
            protocol: Protocol::from_name(p).expect("known protocol"),
            port: *n,
            net: None,
        })
        .collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            endpoint_to_host: EndpointToHostAction::Drop,
            deny: DenyAction::Drop,
            failsafe_in: ports(&[
                ("TCP", 22),
                ("UDP", 68),
                ("TCP", 179),
                ("TCP", 2379),
                ("TCP", 2380),
                ("TCP", 5473),
                ("TCP", 6443),
                ("TCP", 6666),
                ("TCP", 6667),
            ]),
            failsafe_out: ports(&[
                ("UDP", 53),
                ("UDP", 67),
                ("TCP", 179),
                ("TCP", 2379),
                ("TCP", 2380),
                ("TCP", 5473),
                ("TCP", 6443),
                ("TCP", 6666),
                ("TCP", 6667),
            ]),
            log_prefix: "calico-packet".into(),
            log_rate: None,
            log_burst: 5,
            interface_prefixes: vec!["cali".into()],
            conntrack_invalid_drop: true,
            refresh_interval: Duration::from_secs(90),
            log_backend: LogBackend::Kernel,
            log_dropped: false,
            log_severity: None,
            connection_logs: false,
            connection_logs_rate: 100,
        }
    }
}

fn convert_ports(list: &[ProtoPort]) -> Vec<FailsafePort> {
    list.iter()
        .filter_map(|p| {
            Some(FailsafePort {
                protocol: Protocol::from_name(&p.protocol.to_ascii_uppercase())?,
                port: u16::try_from(p.port).ok()?,
                net: p.net.as_deref().and_then(validate::parse_net),
            })
        })
        .collect()
}

impl Settings {
    /// Applies `default`, then the node's own configuration, then the
    /// environment's (`FELIX_*`, see [`felix_env`]): Felix's precedence.
    pub fn from_config(
        default: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
        env: Option<&FelixConfigurationSpec>,
    ) -> Settings {
        let mut s = Settings::default();
        for spec in [default, node, env].into_iter().flatten() {
            s.apply(spec);
        }
        s
    }

    fn apply(&mut self, spec: &FelixConfigurationSpec) {
        if let Some(a) = &spec.default_endpoint_to_host_action {
            self.endpoint_to_host = match a.to_ascii_lowercase().as_str() {
                "accept" => EndpointToHostAction::Accept,
                "return" => EndpointToHostAction::Return,
                _ => EndpointToHostAction::Drop,
            };
        }
        if let Some(a) = spec
            .nftables_filter_deny_action
            .as_ref()
            .or(spec.iptables_filter_deny_action.as_ref())
        {
            self.deny = if a.eq_ignore_ascii_case("reject") {
                DenyAction::Reject
            } else {
                DenyAction::Drop
            };
        }
        if let Some(p) = &spec.failsafe_inbound_host_ports {
            self.failsafe_in = convert_ports(p);
        }
        if let Some(p) = &spec.failsafe_outbound_host_ports {
            self.failsafe_out = convert_ports(p);
        }
        if let Some(p) = &spec.log_prefix {
            self.log_prefix = p.clone();
        }
        if let Some(r) = spec
            .log_action_rate_limit
            .as_deref()
            .and_then(validate::parse_rate)
        {
            self.log_rate = Some((r.0, r.1.to_string()));
        }
        if let Some(b) = spec.log_action_rate_limit_burst {
            self.log_burst = u32::try_from(b).unwrap_or(5);
        }
        if let Some(p) = &spec.interface_prefix {
            self.interface_prefixes = p.split(',').map(str::to_string).collect();
        }
        if let Some(d) = spec.log_dropped {
            self.log_dropped = d;
        }
        if let Some(c) = spec.connection_logs_enabled {
            self.connection_logs = c;
        }
        if let Some(r) = spec.connection_logs_per_endpoint_rate {
            self.connection_logs_rate = u32::try_from(r.max(1)).unwrap_or(u32::MAX);
        }
        if let Some(s) = &spec.log_severity_screen {
            self.log_severity = Some(s.clone());
        }
        if let Some(d) = spec.disable_conntrack_invalid_check {
            self.conntrack_invalid_drop = !d;
        }
        if let Some(d) = spec
            .nftables_refresh_interval
            .as_deref()
            .and_then(parse_duration)
        {
            self.refresh_interval = d;
        }
    }
}

/// The FelixConfiguration parameters given as `FELIX_<PARAM>` environment
/// variables, read as Felix reads them: the name after `FELIX_` is the
/// parameter's name in any case (`FELIX_DEFAULTENDPOINTTOHOSTACTION`), the
/// value in Felix's environment syntax (`tcp:22,udp:68` or `none` for port
/// lists, seconds for intervals). As in Felix they take precedence over
/// FelixConfiguration resources. Returns the parameters and, for each
/// variable that was ignored, why.
pub fn felix_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> (FelixConfigurationSpec, Vec<String>) {
    let mut spec = FelixConfigurationSpec::default();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let Some(param) = name.strip_prefix("FELIX_") else {
            continue;
        };
        if let Err(e) = set_env_param(&mut spec, &param.to_ascii_lowercase(), value.trim()) {
            problems.push(format!("{name}: {e}"));
        }
    }
    (spec, problems)
}

fn one_of(value: &str, allowed: &[&str]) -> Result<String, String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .map(|a| a.to_string())
        .ok_or_else(|| format!("`{value}` is not one of {}", allowed.join(", ")))
}

fn set_env_param(spec: &mut FelixConfigurationSpec, param: &str, v: &str) -> Result<(), String> {
    let bool_of = |v: &str| match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not a boolean (true or false)")),
    };
    match param {
        "defaultendpointtohostaction" => {
            spec.default_endpoint_to_host_action = Some(one_of(v, &["Drop", "Return", "Accept"])?)
        }
        "failsafeinboundhostports" => spec.failsafe_inbound_host_ports = Some(env_ports(v)?),
        "failsafeoutboundhostports" => spec.failsafe_outbound_host_ports = Some(env_ports(v)?),
        "logprefix" => spec.log_prefix = Some(v.to_string()),
        "logseverityscreen" => {
            crate::obs::felix_severity(v)
                .ok_or_else(|| format!("`{v}` is not one of Debug, Info, Warning, Error, Fatal"))?;
            spec.log_severity_screen = Some(v.to_string())
        }
        "logactionratelimit" => {
            validate::parse_rate(v)
                .ok_or_else(|| format!("`{v}` is not a rate such as 10/second"))?;
            spec.log_action_rate_limit = Some(v.to_string())
        }
        "logactionratelimitburst" => {
            let n: i64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
            spec.log_action_rate_limit_burst = Some(n)
        }
        "interfaceprefix" => spec.interface_prefix = Some(v.to_string()),
        "nftablesrefreshinterval" => {
            let secs: f64 = v
                .parse()
                .map_err(|_| format!("`{v}` is not a number of seconds"))?;
            spec.nftables_refresh_interval = Some(format!("{}ms", (secs * 1000.0).round() as u64))
        }
        "nftablesfilterdenyaction" | "iptablesfilterdenyaction" => {
            spec.nftables_filter_deny_action = Some(one_of(v, &["Drop", "Reject"])?)
        }
        "disableconntrackinvalidcheck" => spec.disable_conntrack_invalid_check = Some(bool_of(v)?),
        _ => return Err("not a parameter tortie uses; ignored".into()),
    }
    Ok(())
}

/// Felix's environment form of a failsafe port list: `proto:port` or
/// `proto:net:port` (an IPv6 net in brackets), comma-separated; `none`.
fn env_ports(v: &str) -> Result<Vec<ProtoPort>, String> {
    if v.eq_ignore_ascii_case("none") || v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|item| {
            let item = item.trim();
            let (proto, rest) = item
                .split_once(':')
                .ok_or_else(|| format!("`{item}`: expected proto:port or proto:net:port"))?;
            let (net, port) = match rest.rsplit_once(':') {
                Some((net, port)) => (Some(net.trim_matches(['[', ']']).to_string()), port),
                None => (None, rest),
            };
            let protocol = one_of(proto, &["TCP", "UDP", "SCTP"])?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{item}`: `{port}` is not a port number"))?;
            if let Some(n) = &net
                && validate::parse_net(n).is_none()
            {
                return Err(format!("`{item}`: `{n}` is not a network"));
            }
            Ok(ProtoPort {
                protocol,
                port: i64::from(port),
                net,
            })
        })
        .collect()
}
