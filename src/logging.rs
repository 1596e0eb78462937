//! Logged packets, NFLOG backend: a reader in the node's network namespace
//! receives the packets that `log group N` rules hand to user space, looks
//! up what their prefix id stands for (policy, tier, rule, or the implicit
//! drop), and a writer sends one RFC 5424 message each to syslog (a unix
//! socket such as /dev/log, or UDP/TCP), and optionally a JSON line to a
//! file. The queue between them is bounded: when syslog is slow, messages
//! are dropped and counted, and enforcement is never slowed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigMode, PacketNla, ULogMessage, config_request,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};

use crate::compile::ir::LogEntry;

mod connections;
pub use connections::Connections;

/// Records waiting for the writer; beyond this, new ones are dropped.
/// (1.6 s of connection records at 20,000/s: writer stalls on a busy
/// machine are absorbed; at most ~10 MB.)
pub const QUEUE: usize = 32_768;

/// What the reader needs to explain a packet: the compiled log index and
/// which endpoint each interface belongs to. Updated on every compile.
#[derive(Debug, Default, Clone)]
pub struct LogContext {
    pub index: BTreeMap<String, LogEntry>,
    /// Interface name → `namespace/pod` (or host endpoint name).
    pub endpoints: BTreeMap<String, String>,
    /// Connection records per endpoint and second (0: the default, 100).
    pub connection_rate: u32,
}

pub type SharedContext = Arc<RwLock<LogContext>>;

/// Counters, exported as metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub received: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    /// Connection records held back by the per-endpoint rate limit.
    pub suppressed: AtomicU64,
    /// Times the kernel dropped NFLOG messages because the reader's socket
    /// buffer was full (ENOBUFS; each time one or more messages).
    pub overruns: AtomicU64,
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A unix datagram socket (`/dev/log`).
    Unix(PathBuf),
    Udp(SocketAddr),
    /// Octet-counted frames (RFC 6587) over TCP.
    Tcp(SocketAddr),
    None,
}

impl std::str::FromStr for Sink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr = |a: &str| a.parse::<SocketAddr>().map_err(|e| format!("`{a}`: {e}"));
        match s.split_once(':') {
            Some(("unix", p)) => Ok(Sink::Unix(PathBuf::from(p))),
            Some(("udp", a)) => Ok(Sink::Udp(addr(a)?)),
            Some(("tcp", a)) => Ok(Sink::Tcp(addr(a)?)),
            _ if s == "none" => Ok(Sink::None),
            _ => Err(format!(
                "syslog destination `{s}`: use unix:PATH, udp:HOST:PORT, tcp:HOST:PORT or none"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub group: u16,
    pub sink: Sink,
    pub json: Option<PathBuf>,
    pub hostname: String,
    /// Read packets logged in this network namespace (default: current).
    pub netns: Option<PathBuf>,
}

/// One logged packet, explained.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: SystemTime,
    pub id: String,
    pub entry: Option<LogEntry>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub in_if: String,
    pub out_if: String,
    pub endpoint: String,
    /// For a staged "would deny" / "would allow" record: the enforced
    /// decision it differs from (from the packet mark's id).
    pub enforced: Option<LogEntry>,
    /// For a connection record: each stage that decided, in packet order.
    pub stages: Vec<Stage>,
    /// Connection records of this endpoint suppressed since its last one.
    pub suppressed: u64,
    /// `time` is the packet's own NFLOG timestamp (else the read time).
    pub packet_time: bool,
}

/// One stage of a connection: which endpoint's chain decided, how, and
/// the staged verdict there when it differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// `egress`, `ingress`, a host endpoint's stage (`host-ingress`,
    /// `host-egress`, `forward-ingress`, `forward-egress`, `prednat`,
    /// `untracked-ingress`, `untracked-egress`), or the dispatch drop
    /// (`unknown workload interface`).
    pub stage: String,
    pub endpoint: String,
    /// The deciding rule (action Allow or Deny).
    pub decision: LogEntry,
    pub staged: Option<LogEntry>,
}

impl Stage {
    /// `Allow by np/ns/p ingress#0`, with the selecting policies of an end of tier.
    fn describe(&self) -> String {
        let mut s = format!("{} by {}", self.decision.action, describe(&self.decision));
        if !self.decision.selected.is_empty() {
            s.push_str(&format!(" (selected by {})", self.decision.selected));
        }
        s
    }

    fn key(&self, suffix: &str) -> &'static str {
        const KEYS: [(&str, [&str; 3]); 9] = [
            ("egress", ["egress", "egress_endpoint", "egress_staged"]),
            ("ingress", ["ingress", "ingress_endpoint", "ingress_staged"]),
            (
                "host-ingress",
                [
                    "host_ingress",
                    "host_ingress_endpoint",
                    "host_ingress_staged",
                ],
            ),
            (
                "host-egress",
                ["host_egress", "host_egress_endpoint", "host_egress_staged"],
            ),
            (
                "forward-ingress",
                [
                    "forward_ingress",
                    "forward_ingress_endpoint",
                    "forward_ingress_staged",
                ],
            ),
            (
                "forward-egress",
                [
                    "forward_egress",
                    "forward_egress_endpoint",
                    "forward_egress_staged",
                ],
            ),
            ("prednat", ["prednat", "prednat_endpoint", "prednat_staged"]),
            (
                "untracked-ingress",
                [
                    "untracked_ingress",
                    "untracked_ingress_endpoint",
                    "untracked_ingress_staged",
                ],
            ),
            (
                "untracked-egress",
                [
                    "untracked_egress",
                    "untracked_egress_endpoint",
                    "untracked_egress_staged",
                ],
            ),
        ];
        let keys = KEYS.iter().find(|(stage, _)| *stage == self.stage).map_or(
            ["dispatch", "dispatch_endpoint", "dispatch_staged"],
            |(_, k)| *k,
        );
        match suffix {
            "" => keys[0],
            "endpoint" => keys[1],
            _ => keys[2],
        }
    }
}

/// A rule or implicit decision as a reader names it:
/// `np/ns/name ingress#0`, `profile/kns.ns ingress#0`, `end of tier (tier t)`.
fn describe(e: &LogEntry) -> String {
    let who = if e.name.is_empty() {
        format!(
            "{} {}",
            e.rule,
            if e.tier.is_empty() {
                String::new()
            } else {
                format!("(tier {})", e.tier)
            }
        )
    } else if e.namespace.is_empty() {
        format!("{}/{} {}", e.kind, e.name, e.rule)
    } else {
        format!("{}/{}/{} {}", e.kind, e.namespace, e.name, e.rule)
    };
    who.trim().to_string()
}

fn is_staged(e: &LogEntry) -> bool {
    e.action.starts_with("would ")
}

/// Source, destination, protocol and (for TCP/UDP/SCTP) ports of a packet.
pub type PacketSummary = (IpAddr, IpAddr, u8, Option<(u16, u16)>);

/// Parses the IP header at the start of `p`.
pub fn parse_ip(p: &[u8]) -> Option<PacketSummary> {
    let version = p.first()? >> 4;
    let (src, dst, proto, l4) = match version {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), p[9], p.get(ihl..))
        }
        6 if p.len() >= 40 => {
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                p[6],
                p.get(40..),
            )
        }
        _ => return None,
    };
    let ports = match (proto, l4) {
        (6 | 17 | 132 | 136, Some(l)) if l.len() >= 4 => Some((
            u16::from_be_bytes([l[0], l[1]]),
            u16::from_be_bytes([l[2], l[3]]),
        )),
        _ => None,
    };
    Some((src, dst, proto, ports))
}

fn proto_name(p: u8) -> String {
    crate::ipproto::name(p).map_or_else(|| p.to_string(), str::to_string)
}

fn sd_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// `2026-11-21T15:04:05.123Z`
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Record {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let e = self.entry.clone().unwrap_or_default();
        let direction = if e.rule.starts_with("egress") {
            "egress"
        } else if e.rule.starts_with("ingress") {
            "ingress"
        } else {
            ""
        };
        let mut f = vec![
            (
                "action",
                if e.action.is_empty() {
                    "Log".to_string()
                } else {
                    e.action.clone()
                },
            ),
            ("kind", e.kind.clone()),
            ("namespace", e.namespace.clone()),
            ("policy", e.name.clone()),
            ("tier", e.tier.clone()),
            ("rule", e.rule.clone()),
            ("direction", direction.to_string()),
            ("proto", proto_name(self.proto)),
        ];
        if let Some(s) = self.src {
            f.push(("src", s.to_string()));
        }
        if let Some(p) = self.sport {
            f.push(("sport", p.to_string()));
        }
        if let Some(d) = self.dst {
            f.push(("dst", d.to_string()));
        }
        if let Some(p) = self.dport {
            f.push(("dport", p.to_string()));
        }
        f.push(("in", self.in_if.clone()));
        f.push(("out", self.out_if.clone()));
        // The compiler knows whose chain dropped; otherwise the interface says.
        let endpoint = if e.endpoint.is_empty() {
            self.endpoint.clone()
        } else {
            e.endpoint.clone()
        };
        f.push(("endpoint", endpoint));
        if !self.stages.is_empty() {
            f.push(("verdict", self.verdict().to_string()));
        }
        for st in &self.stages {
            f.push((st.key(""), st.describe()));
            f.push((st.key("endpoint"), st.endpoint.clone()));
            if let Some(s) = &st.staged {
                f.push((st.key("staged"), format!("{} by {}", s.action, describe(s))));
            }
        }
        if self.suppressed > 0 {
            f.push(("suppressed", self.suppressed.to_string()));
        }
        if !self.stages.is_empty() {
            let source = if self.packet_time { "packet" } else { "read" };
            f.push(("time_source", source.to_string()));
        }
        if let Some(en) = &self.enforced {
            f.push(("enforced_action", en.action.clone()));
            f.push(("enforced_rule", describe(en)));
        }
        f.push(("id", self.id.clone()));
        if !self.stages.is_empty() {
            // The stages say what decided; the stage entry's rule is not a rule.
            f.retain(|(k, _)| !matches!(*k, "rule" | "direction" | "endpoint"));
        }
        f.retain(|(_, v)| !v.is_empty());
        f
    }

    /// A connection record's verdict: its last stage's (`pass` when that
    /// is a preDNAT or untracked stage where no policy decided).
    pub fn verdict(&self) -> &'static str {
        match self.stages.last().map(|s| s.decision.action.as_str()) {
            Some("Allow") => "allow",
            Some("Pass") => "pass",
            _ => "deny",
        }
    }

    fn summary(&self) -> String {
        let e = self.entry.clone().unwrap_or_default();
        if !self.stages.is_empty() {
            let stages: Vec<String> = self
                .stages
                .iter()
                .map(|s| format!("{} {}: {}", s.stage, s.endpoint, s.describe()))
                .collect();
            return format!(
                "connection {}: {} {} -> {}; {}",
                self.verdict(),
                proto_name(self.proto),
                host_port(self.src, self.sport),
                host_port(self.dst, self.dport),
                stages.join("; ")
            );
        }
        let mut who = describe(&e);
        if let Some(en) = &self.enforced {
            who = format!("{who} (enforced: {} by {})", en.action, describe(en));
        }
        let hp = host_port;
        let verb = if e.action == "Drop" {
            "dropped"
        } else if is_staged(&e) {
            e.action.as_str()
        } else {
            "logged"
        };
        format!(
            "{verb} by {}: {} {} -> {}",
            who.trim(),
            proto_name(self.proto),
            hp(self.src, self.sport),
            hp(self.dst, self.dport)
        )
    }

    /// The RFC 5424 message.
    pub fn syslog(&self, hostname: &str) -> String {
        let connection = !self.stages.is_empty();
        let drop = self.entry.as_ref().is_some_and(|e| e.action == "Drop")
            || (connection && self.verdict() == "deny");
        let staged = self.entry.as_ref().is_some_and(is_staged);
        // Facility local0 (16); warning for drops, notice for staged
        // verdicts, informational for Log.
        let pri = 16 * 8
            + if drop {
                4
            } else if staged {
                5
            } else {
                6
            };
        let msgid = if connection {
            "CONN"
        } else if drop {
            "DROP"
        } else if staged {
            "STAGED"
        } else {
            "LOG"
        };
        let sd: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", sd_escape(v)))
            .collect();
        format!(
            "<{pri}>1 {} {hostname} tortie {} {} [tortie@32473 {}] {}",
            rfc3339(self.time),
            std::process::id(),
            msgid,
            sd.join(" "),
            self.summary()
        )
    }

    pub fn json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("time".into(), rfc3339(self.time).into());
        for (k, v) in self.fields() {
            m.insert(k.into(), v.into());
        }
        serde_json::Value::Object(m).to_string()
    }
}

fn host_port(a: Option<IpAddr>, p: Option<u16>) -> String {
    match (a, p) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        _ => "?".into(),
    }
}

/// The packet's NFLOG timestamp.
fn packet_time(ts: &netlink_packet_netfilter::nflog::TimeStamp) -> SystemTime {
    use netlink_packet_core::Nla as _;
    let mut b = [0u8; 16];
    ts.emit_value(&mut b);
    let sec = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    let usec = u64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
    UNIX_EPOCH + Duration::from_secs(sec) + Duration::from_micros(usec)
}

fn ifname(index: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn send_config(
    socket: &Socket,
    family: NetfilterProtoFamily,
    group: u16,
    cmds: Vec<netlink_packet_netfilter::nflog::ConfigNla>,
) -> std::io::Result<()> {
    let msg = config_request(family, group, cmds);
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf[..]);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Packets the kernel batches into one NFLOG message at most.
const NFLOG_QTHRESH: u32 = 64;
/// How long the kernel holds a partial NFLOG batch.
const NFLOG_FLUSH: Duration = Duration::from_millis(10);

/// Opens and binds the NFLOG group in the current network namespace.
fn open_group(group: u16) -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
        send_config(&socket, family, 0, vec![ConfigCmd::PfBind.into()])?;
    }
    send_config(
        &socket,
        NetfilterProtoFamily::IPv4,
        group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(128).into(),
            // The kernel holds up to 100 packets or 1 s before it sends a
            // batch; flush after 10 ms (or 64 packets under load) instead.
            netlink_packet_netfilter::nflog::ConfigNla::QThresh(NFLOG_QTHRESH),
            netlink_packet_netfilter::nflog::Timeout::from(NFLOG_FLUSH).into(),
        ],
    )?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: setting a receive timeout on our own socket.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    // Room for bursts of logged packets (connection logs): 16 MiB, beyond
    // rmem_max when we may (CAP_NET_ADMIN), else what the kernel allows.
    let size: libc::c_int = 16 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: an int option on our own socket.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r == 0 {
            break;
        }
    }
    Ok(socket)
}

fn read_loop(
    socket: Socket,
    ctx: SharedContext,
    stats: Arc<LogStats>,
    tx: SyncSender<Record>,
    stop: Arc<AtomicBool>,
) {
    let _stamps = enable_timestamps();
    let mut buf = vec![0u8; 1 << 16];
    let mut conns = Connections::default();
    while !stop.load(Ordering::Relaxed) {
        let size = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let n = stats.overruns.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        overruns = n,
                        "the kernel dropped logged packets: the NFLOG reader fell behind (tortie_logged_packets_total{{result=\"overrun\"}})"
                    );
                }
                continue;
            }
            Err(_) => {
                // Timeout: write connection stages that waited long enough.
                let rate = ctx.read().map(|c| c.connection_rate).unwrap_or(0);
                let mut suppressed = 0;
                let done = conns.expire(Instant::now(), effective_rate(rate), &mut suppressed);
                stats.suppressed.fetch_add(suppressed, Ordering::Relaxed);
                if !send_all(&tx, &stats, done) {
                    return;
                }
                continue;
            }
        };
        let mut offset = 0;
        while offset < size {
            let Ok(msg) = <NetlinkMessage<NetfilterMessage>>::deserialize(&buf[offset..size])
            else {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = &msg.payload
            {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let done = explain(nlas, &ctx, &mut conns, &stats);
                if !send_all(&tx, &stats, done) {
                    return;
                }
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn effective_rate(rate: u32) -> u32 {
    if rate == 0 { 100 } else { rate }
}

/// Queues records for the writer; false when the writer is gone.
fn send_all(tx: &SyncSender<Record>, stats: &LogStats, records: Vec<Record>) -> bool {
    for rec in records {
        match tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

/// The packet's attributes as a record.
fn record_of(nlas: &[PacketNla]) -> (Record, u32) {
    let mut rec = Record {
        time: SystemTime::now(),
        id: String::new(),
        entry: None,
        src: None,
        dst: None,
        proto: 0,
        sport: None,
        dport: None,
        in_if: String::new(),
        out_if: String::new(),
        endpoint: String::new(),
        enforced: None,
        stages: Vec::new(),
        suppressed: 0,
        packet_time: false,
    };
    let mut mark = 0;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => {
                rec.id = p
                    .to_string_lossy()
                    .trim_start_matches("tortie:")
                    .to_string()
            }
            PacketNla::IfIndexInDev(i) => rec.in_if = ifname(*i),
            PacketNla::Mark(m) => mark = *m,
            PacketNla::Timestamp(ts) => {
                rec.time = packet_time(ts);
                rec.packet_time = true;
            }
            PacketNla::IfIndexOutDev(i) => rec.out_if = ifname(*i),
            PacketNla::Payload(p) => {
                if let Some((s, d, proto, ports)) = parse_ip(p) {
                    rec.src = Some(s);
                    rec.dst = Some(d);
                    rec.proto = proto;
                    rec.sport = ports.map(|p| p.0);
                    rec.dport = ports.map(|p| p.1);
                }
            }
            _ => {}
        }
    }
    (rec, mark)
}

/// Explains one logged packet: its record, or the connection records it
/// completes.
fn explain(
    nlas: &[PacketNla],
    ctx: &SharedContext,
    conns: &mut Connections,
    stats: &LogStats,
) -> Vec<Record> {
    let (mut rec, mark) = record_of(nlas);
    let Ok(c) = ctx.read() else {
        return vec![rec];
    };
    rec.entry = c.index.get(&rec.id).cloned();
    let action = rec
        .entry
        .as_ref()
        .map(|e| e.action.clone())
        .unwrap_or_default();
    if action.starts_with("would ") || action == "Connection" {
        rec.enforced =
            crate::compile::staged::mark_key(mark).and_then(|k| c.index.get(&k).cloned());
    }
    let ingress = rec
        .entry
        .as_ref()
        .is_some_and(|e| e.rule.starts_with("ingress"));
    let iface = if ingress { &rec.out_if } else { &rec.in_if };
    rec.endpoint = c
        .endpoints
        .get(iface)
        .or_else(|| c.endpoints.get(&rec.out_if))
        .or_else(|| c.endpoints.get(&rec.in_if))
        .cloned()
        .unwrap_or_default();
    if action == "Connection" {
        let local_out = c
            .endpoints
            .get(&rec.out_if)
            .is_some_and(|e| e.starts_with("workload"));
        let rate = effective_rate(c.connection_rate);
        drop(c);
        let mut suppressed = 0;
        let out = conns.stage(rec, Instant::now(), rate, |_| local_out, &mut suppressed);
        stats.suppressed.fetch_add(suppressed, Ordering::Relaxed);
        return out;
    }
    if action.starts_with("would ") {
        conns.staged(&rec);
    }
    vec![rec]
}

/// Asks the kernel to timestamp received packets (a socket with
/// SO_TIMESTAMP turns it on), so NFLOG carries each packet's own time.
fn enable_timestamps() -> Option<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    (r == 0).then_some(s)
}

enum Writer {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket, SocketAddr),
    Tcp(Option<TcpStream>, SocketAddr),
    None,
}

impl Writer {
    fn new(sink: &Sink) -> std::io::Result<Writer> {
        Ok(match sink {
            Sink::Unix(p) => Writer::Unix(UnixDatagram::unbound()?, p.clone()),
            Sink::Udp(a) => Writer::Udp(
                UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?,
                *a,
            ),
            Sink::Tcp(a) => Writer::Tcp(None, *a),
            Sink::None => Writer::None,
        })
    }

    fn send(&mut self, msg: &str) -> std::io::Result<()> {
        match self {
            Writer::Unix(s, p) => s.send_to(msg.as_bytes(), &*p).map(|_| ()),
            Writer::Udp(s, a) => s.send_to(msg.as_bytes(), *a).map(|_| ()),
            Writer::Tcp(conn, a) => {
                if conn.is_none() {
                    *conn = Some(TcpStream::connect_timeout(a, Duration::from_secs(2))?);
                }
                let framed = format!("{} {msg}", msg.len());
                let r = conn
                    .as_mut()
                    .expect("connected")
                    .write_all(framed.as_bytes());
                if r.is_err() {
                    *conn = None;
                }
                r
            }
            Writer::None => Ok(()),
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Unix(p) => write!(f, "unix:{}", p.display()),
            Sink::Udp(a) => write!(f, "udp:{a}"),
            Sink::Tcp(a) => write!(f, "tcp:{a}"),
            Sink::None => f.write_str("none"),
        }
    }
}

/// How often a destination that keeps failing is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Reports a failing log destination: the first failure at once, then at
/// most once per [`REPORT_EVERY`] with the count of records lost since,
/// and once more when it works again.
#[derive(Debug, Default)]
pub struct FailureReport {
    last: Option<Instant>,
    lost: u64,
    failing: bool,
}

impl FailureReport {
    /// A failed write at `now`; the line to log, when one is due.
    pub fn failed(&mut self, now: Instant, dest: &str, error: &str) -> Option<String> {
        self.lost += 1;
        let due = !self.failing
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= REPORT_EVERY);
        self.failing = true;
        if !due {
            return None;
        }
        self.last = Some(now);
        let lost = std::mem::take(&mut self.lost);
        Some(format!(
            "cannot write logged packets to {dest}: {error}; {lost} record(s) lost so far (counted in tortie_logged_packets_total{{result=\"error\"}}; reported again at most every {}s)",
            REPORT_EVERY.as_secs()
        ))
    }

    /// A successful write; the line to log when it ends a failure.
    pub fn succeeded(&mut self, dest: &str) -> Option<String> {
        if !std::mem::take(&mut self.failing) {
            return None;
        }
        let lost = std::mem::take(&mut self.lost);
        Some(format!(
            "logged packets reach {dest} again ({lost} more record(s) were lost)"
        ))
    }
}

fn write_loop(rx: Receiver<Record>, opts: LogOptions, stats: Arc<LogStats>) {
    let dest = opts.sink.to_string();
    let mut report = FailureReport::default();
    let mut writer = match Writer::new(&opts.sink) {
        Ok(w) => w,
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(destination = %dest, error = %e, "cannot open the syslog destination");
            Writer::None
        }
    };
    if let Sink::Unix(p) = &opts.sink
        && !p.exists()
    {
        // Said at start, not only when the first denied packet is lost.
        let why =
            "no such socket (mount the host's /dev/log, or use --syslog none with --log-json)";
        if let Some(line) = report.failed(Instant::now(), &dest, why) {
            tracing::error!(destination = %dest, "{line}");
        }
        report.lost = 0;
    }
    let mut json = opts.json.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    for rec in rx {
        let sent = writer.send(&rec.syslog(&opts.hostname));
        let send_error = sent
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let ok = sent.is_ok();
        if let Some(f) = json.as_mut() {
            let _ = writeln!(f, "{}", rec.json());
        }
        if ok {
            stats.written.fetch_add(1, Ordering::Relaxed);
            if let Some(line) = report.succeeded(&dest) {
                tracing::info!(destination = %dest, "{line}");
            }
        } else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(line) = report.failed(Instant::now(), &dest, &send_error) {
                tracing::error!(destination = %dest, "{line}");
            }
        }
    }
}

/// Starts the reader (in `opts.netns`) and the writer. Fails if the NFLOG
/// group cannot be bound (needs CAP_NET_ADMIN).
pub fn spawn(
    opts: LogOptions,
    ctx: SharedContext,
    stats: Arc<LogStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let (tx, rx) = sync_channel::<Record>(QUEUE);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let netns = opts.netns.clone();
    let group = opts.group;
    let (s1, stop1) = (stats.clone(), stop.clone());
    std::thread::Builder::new()
        .name("tortie-nflog".into())
        .spawn(move || {
            if let Some(path) = netns {
                let entered = std::fs::File::open(&path).and_then(|f| {
                    // SAFETY: setns on a valid fd affects only this thread.
                    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
                if let Err(e) = entered {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            }
            match open_group(group) {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    read_loop(socket, ctx, s1, tx, stop1);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("NFLOG reader did not start")))?;
    std::thread::Builder::new()
        .name("tortie-syslog".into())
        .spawn(move || write_loop(rx, opts, stats))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_destination_is_reported_once_then_rate_limited_and_on_recovery() {
        let mut r = FailureReport::default();
        let t0 = Instant::now();
        let first = r
            .failed(t0, "unix:/dev/log", "No such file or directory")
            .unwrap();
        assert!(
            first.contains("unix:/dev/log") && first.contains("1 record(s) lost"),
            "{first}"
        );
        for i in 1..100 {
            assert_eq!(r.failed(t0 + Duration::from_secs(i % 59), "d", "e"), None);
        }
        let again = r.failed(t0 + REPORT_EVERY, "d", "e").unwrap();
        assert!(again.contains("100 record(s) lost"), "{again}");
        let back = r.succeeded("d").unwrap();
        assert!(back.contains("again"), "{back}");
        assert_eq!(r.succeeded("d"), None);
        // A new failure after recovery is reported at once.
        assert!(r.failed(t0 + REPORT_EVERY, "d", "e").is_some());
    }

    #[test]
    fn sinks_print_as_they_are_written() {
        for text in [
            "unix:/dev/log",
            "udp:127.0.0.1:514",
            "tcp:[::1]:601",
            "none",
        ] {
            let sink: Sink = text.parse().unwrap();
            assert_eq!(sink.to_string(), text);
        }
    }

    #[test]
    fn ip_headers_parse() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 4, 198, 18, 0, 2,
        ];
        v4.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        let (s, d, p, ports) = parse_ip(&v4).unwrap();
        assert_eq!(
            (s.to_string(), d.to_string(), p, ports),
            (
                "198.18.0.4".into(),
                "198.18.0.2".into(),
                6,
                Some((40000, 80))
            )
        );
        assert!(parse_ip(&[0x45, 0]).is_none());
    }

    #[test]
    fn messages_are_rfc5424_with_structured_data() {
        let rec = Record {
            time: UNIX_EPOCH + Duration::from_millis(1_795_273_524_123),
            id: "Tabc".into(),
            entry: Some(LogEntry {
                action: "Log".into(),
                kind: "np".into(),
                namespace: "default".into(),
                name: "log-denied-packets".into(),
                tier: "default".into(),
                rule: "ingress#0".into(),
                endpoint: String::new(),
                selected: String::new(),
            }),
            src: Some("198.18.0.4".parse().unwrap()),
            dst: Some("198.18.0.2".parse().unwrap()),
            proto: 6,
            sport: Some(40000),
            dport: Some(80),
            in_if: "cali1".into(),
            out_if: "cali2".into(),
            endpoint: "default/nginx".into(),
            enforced: None,
            stages: Vec::new(),
            suppressed: 0,
            packet_time: false,
        };
        let m = rec.syslog("node1");
        assert!(
            m.starts_with("<134>1 2026-11-21T15:05:24.123Z node1 tortie "),
            "{m}"
        );
        assert!(m.contains(" LOG [tortie@32473 action=\"Log\" kind=\"np\" namespace=\"default\" policy=\"log-denied-packets\" tier=\"default\" rule=\"ingress#0\" direction=\"ingress\" proto=\"tcp\" src=\"198.18.0.4\" sport=\"40000\" dst=\"198.18.0.2\" dport=\"80\" in=\"cali1\" out=\"cali2\" endpoint=\"default/nginx\" id=\"Tabc\"]"), "{m}");
        assert!(m.ends_with("logged by np/default/log-denied-packets ingress#0: tcp 198.18.0.4:40000 -> 198.18.0.2:80"), "{m}");
        let j: serde_json::Value = serde_json::from_str(&rec.json()).unwrap();
        assert_eq!(j["policy"], "log-denied-packets");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(sd_escape("a\"b]c\\"), "a\\\"b\\]c\\\\");
    }

    #[test]
    fn staged_records_name_both_rules() {
        let rule = |action: &str, kind: &str, name: &str| LogEntry {
            action: action.into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            tier: "default".into(),
            rule: "ingress#0".into(),
            endpoint: String::new(),
            selected: String::new(),
        };
        let rec = Record {
            time: UNIX_EPOCH,
            id: "Tabc".into(),
            entry: Some(rule("would deny", "snp", "allow-web")),
            src: Some("198.18.0.11".parse().unwrap()),
            dst: Some("198.18.0.10".parse().unwrap()),
            proto: 6,
            sport: Some(40000),
            dport: Some(80),
            in_if: "cali1".into(),
            out_if: "cali2".into(),
            endpoint: "shop/web".into(),
            enforced: Some(rule("Allow", "np", "allow-web")),
            stages: Vec::new(),
            suppressed: 0,
            packet_time: false,
        };
        let m = rec.syslog("node1");
        assert!(m.starts_with("<133>1 "), "{m}");
        assert!(
            m.contains(" STAGED [tortie@32473 action=\"would deny\" kind=\"snp\""),
            "{m}"
        );
        assert!(
            m.contains(" enforced_action=\"Allow\" enforced_rule=\"np/shop/allow-web ingress#0\""),
            "{m}"
        );
        assert!(m.ends_with("would deny by snp/shop/allow-web ingress#0 (enforced: Allow by np/shop/allow-web ingress#0): tcp 198.18.0.11:40000 -> 198.18.0.10:80"), "{m}");
        let j: serde_json::Value = serde_json::from_str(&rec.json()).unwrap();
        assert_eq!(j["enforced_rule"], "np/shop/allow-web ingress#0");
    }
}
