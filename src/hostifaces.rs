//! The node's interfaces and their addresses, read by rtnetlink inside a
//! network namespace, and followed as they change.
//!
//! This module owns talking RTM_GETLINK / RTM_GETADDR to the kernel and
//! turning the answers into an [`InterfaceAddrs`] map (interface name → its
//! IPv4 and IPv6 addresses, sorted; an interface without addresses maps to
//! an empty list). It is what binds a HostEndpoint that has only
//! `expectedIPs` to the interfaces holding those addresses.
//!
//! - [`read`] dumps the map once.
//! - [`watch`] subscribes to the RTMGRP_LINK, RTMGRP_IPV4_IFADDR and
//!   RTMGRP_IPV6_IFADDR multicast groups *before* the first dump (so no
//!   change can fall between the two), sends that first map, and then, after
//!   every burst of notifications has been quiet for `debounce`, dumps again
//!   and sends the fresh full map if it differs from the last one sent. A
//!   notification is only a hint: the map always comes from a full dump, so
//!   a lost notification (socket overrun, ENOBUFS) costs nothing but a dump.
//!   The returned [`Watch`] stops the thread when dropped.
//!
//! Which host endpoint binds to which interface is the compiler's business
//! (`compile::host_bindings`); this module only says what the node has.
//!
//! Both work on a [`Target`]: the current namespace, or a named one that a
//! dedicated thread enters with setns, so the process itself stays put.
//! Every receive waits at most [`POLL`]; every dump is bounded in time.
//!
//! ```no_run
//! use std::time::Duration;
//! use tortie::hostifaces;
//! use tortie::nft::Target;
//!
//! let target = Target::named("node1");
//! let (tx, rx) = std::sync::mpsc::channel();
//! // Returns once subscribed; the current map is already on `rx`.
//! let _watch = hostifaces::watch(&target, Duration::from_millis(100), tx)?;
//! for map in rx {
//!     println!("interfaces now: {map:?}");
//! }
//! # Ok::<(), hostifaces::HostIfacesError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::nft::Target;

/// Interface name → its addresses (both families, sorted, no duplicates).
pub type InterfaceAddrs = BTreeMap<String, Vec<IpAddr>>;

/// How long one receive waits before the watcher checks for a stop.
pub const POLL: Duration = Duration::from_millis(200);
/// How long one dump may take before it counts as failed.
const DUMP_DEADLINE: Duration = Duration::from_secs(5);
/// Interrupted dumps (NLM_F_DUMP_INTR) are redone at most this often.
const DUMP_TRIES: usize = 3;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// Why interfaces could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostIfacesError {
    #[error(
        "cannot enter network namespace {}: {reason}; check that it exists (`ip netns list`)",
        path.display()
    )]
    Netns { path: PathBuf, reason: String },
    #[error("rtnetlink socket ({what}): {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rtnetlink {what} dump: the kernel answered error {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("rtnetlink {what} dump: cannot decode the kernel's answer: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("rtnetlink {what} dump: no complete answer within {DUMP_DEADLINE:?}")]
    Timeout { what: &'static str },
    #[error("the interface reader thread: {0}")]
    Thread(String),
}

fn socket_err(what: &'static str) -> impl FnOnce(std::io::Error) -> HostIfacesError {
    move |source| HostIfacesError::Socket { what, source }
}

/// Moves the calling thread into `target`'s network namespace.
fn enter(target: &Target) -> Result<(), HostIfacesError> {
    target.enter_thread().map_err(|e| match e {
        crate::nft::NftError::Netns { path, reason } => HostIfacesError::Netns { path, reason },
        other => HostIfacesError::Thread(other.to_string()),
    })
}

/// What a dump has gathered so far: links by index, addresses by index.
#[derive(Debug, Default)]
struct Tables {
    links: BTreeMap<u32, String>,
    addrs: BTreeMap<u32, BTreeSet<IpAddr>>,
}

impl Tables {
    fn absorb(&mut self, msg: RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewLink(link) => {
                if let Some(name) = link_name(&link) {
                    self.links.insert(link.header.index, name);
                }
            }
            RouteNetlinkMessage::NewAddress(addr) => {
                if let Some(ip) = address_of(&addr) {
                    self.addrs.entry(addr.header.index).or_default().insert(ip);
                }
            }
            _ => {}
        }
    }

    /// The map by name; addresses of an index with no link are dropped
    /// (the link went away between the two dumps).
    fn into_map(mut self) -> InterfaceAddrs {
        self.links
            .into_iter()
            .map(|(index, name)| {
                let ips = self.addrs.remove(&index).unwrap_or_default();
                (name, ips.into_iter().collect())
            })
            .collect()
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The interface's own address: IFA_LOCAL where present (on a
/// point-to-point IPv4 link IFA_ADDRESS is the peer), else IFA_ADDRESS.
fn address_of(addr: &AddressMessage) -> Option<IpAddr> {
    let local = addr.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// What one datagram of a dump said.
#[derive(Debug, Default)]
struct Datagram {
    messages: Vec<RouteNetlinkMessage>,
    done: bool,
    interrupted: bool,
}

/// Parses one datagram of dump answers for sequence number `seq`
/// (messages for other sequence numbers are ignored).
fn parse_datagram(
    mut bytes: &[u8],
    seq: u32,
    what: &'static str,
) -> Result<Datagram, HostIfacesError> {
    let mut out = Datagram::default();
    while bytes.len() >= 16 {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
            HostIfacesError::Decode {
                what,
                reason: e.to_string(),
            }
        })?;
        let len = (msg.header.length as usize).max(16);
        // Messages are padded to 4 bytes.
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        if msg.header.sequence_number != seq {
            continue;
        }
        out.interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
        match msg.payload {
            NetlinkPayload::Done(_) => out.done = true,
            NetlinkPayload::Error(e) => match e.code {
                Some(code) => {
                    return Err(HostIfacesError::Kernel {
                        what,
                        errno: -code.get(),
                    });
                }
                None => out.done = true,
            },
            NetlinkPayload::InnerMessage(m) => out.messages.push(m),
            _ => {}
        }
    }
    Ok(out)
}

/// Waits until `sock` is readable, at most `timeout`; false on timeout.
fn wait_readable(sock: &Socket, timeout: Duration) -> Result<bool, HostIfacesError> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(socket_err("poll")(e));
    }
    Ok(rc > 0)
}

/// A socket for dump requests, in the calling thread's namespace.
fn dump_socket() -> Result<Socket, HostIfacesError> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(socket_err("open"))?;
    sock.bind_auto().map_err(socket_err("bind"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(socket_err("connect"))?;
    Ok(sock)
}

/// One dump request; feeds every answer into `tables`. Redone when the
/// kernel says the dump was interrupted by a change.
fn dump(
    sock: &Socket,
    seq: &mut u32,
    request: RouteNetlinkMessage,
    what: &'static str,
    tables: &mut Tables,
) -> Result<(), HostIfacesError> {
    for _ in 0..DUMP_TRIES {
        *seq = seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(request.clone()),
        );
        packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
        packet.header.sequence_number = *seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        sock.send(&buf, 0).map_err(socket_err("send"))?;
        let mut got = Vec::new();
        let interrupted = receive_dump(sock, *seq, what, &mut got)?;
        if !interrupted {
            got.into_iter().for_each(|m| tables.absorb(m));
            return Ok(());
        }
    }
    Err(HostIfacesError::Timeout { what })
}

/// Receives a dump's datagrams until Done; true if it was interrupted.
fn receive_dump(
    sock: &Socket,
    seq: u32,
    what: &'static str,
    into: &mut Vec<RouteNetlinkMessage>,
) -> Result<bool, HostIfacesError> {
    let deadline = Instant::now() + DUMP_DEADLINE;
    let mut interrupted = false;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_readable(sock, left)? {
            return Err(HostIfacesError::Timeout { what });
        }
        buf.clear();
        sock.recv(&mut buf, 0).map_err(socket_err("receive"))?;
        let d = parse_datagram(&buf, seq, what)?;
        interrupted |= d.interrupted;
        into.extend(d.messages);
        if d.done {
            return Ok(interrupted);
        }
    }
}

/// Dumps links and addresses in the calling thread's namespace.
fn read_here(sock: &Socket, seq: &mut u32) -> Result<InterfaceAddrs, HostIfacesError> {
    let mut tables = Tables::default();
    let links = RouteNetlinkMessage::GetLink(LinkMessage::default());
    dump(sock, seq, links, "link", &mut tables)?;
    let addrs = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    dump(sock, seq, addrs, "address", &mut tables)?;
    Ok(tables.into_map())
}

/// Reads the interfaces and addresses of `target` once.
pub fn read(target: &Target) -> Result<InterfaceAddrs, HostIfacesError> {
    let target = target.clone();
    std::thread::Builder::new()
        .name("tortie-ifaces".into())
        .spawn(move || {
            enter(&target)?;
            read_here(&dump_socket()?, &mut 0)
        })
        .map_err(|e| HostIfacesError::Thread(e.to_string()))?
        .join()
        .map_err(|_| HostIfacesError::Thread("it panicked".into()))?
}

/// A running interface watcher; dropping it stops the thread (within
/// [`POLL`]).
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Follows `target`'s interfaces: sends the current map on `out` before
/// returning, then a fresh full map after each change (quiet for
/// `debounce`). The thread ends when the `Watch` is dropped or `out`'s
/// receiver goes away. Errors setting up (namespace, socket, first dump)
/// are returned; a later failed dump is logged and retried.
pub fn watch(
    target: &Target,
    debounce: Duration,
    out: mpsc::Sender<InterfaceAddrs>,
) -> Result<Watch, HostIfacesError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), HostIfacesError>>(1);
    let target = target.clone();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tortie-ifaces-watch".into())
        .spawn(move || {
            let setup = subscribe(&target).and_then(|(events, dumps)| {
                let mut seq = 0;
                let first = read_here(&dumps, &mut seq)?;
                Ok((events, dumps, seq, first))
            });
            match setup {
                Ok((events, dumps, seq, first)) => {
                    let _ = ready_tx.send(Ok(()));
                    let mut w = Watcher {
                        events,
                        dumps,
                        seq,
                        debounce,
                        last: first.clone(),
                    };
                    if out.send(first).is_ok() {
                        w.run(&flag, &out);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| HostIfacesError::Thread(e.to_string()))?;
    let watch = Watch {
        stop,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(watch),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HostIfacesError::Thread("it ended while starting".into())),
    }
}

/// Enters `target` and opens the multicast socket and the dump socket.
fn subscribe(target: &Target) -> Result<(Socket, Socket), HostIfacesError> {
    enter(target)?;
    let mut events = Socket::new(NETLINK_ROUTE).map_err(socket_err("open"))?;
    let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    events
        .bind(&SocketAddr::new(0, groups))
        .map_err(socket_err("subscribe"))?;
    Ok((events, dump_socket()?))
}

/// The watcher thread's state.
struct Watcher {
    events: Socket,
    dumps: Socket,
    seq: u32,
    debounce: Duration,
    last: InterfaceAddrs,
}

impl Watcher {
    fn run(&mut self, stop: &AtomicBool, out: &mpsc::Sender<InterfaceAddrs>) {
        // When set: the first unhandled notification, and the instant to
        // dump (the end of the quiet time, never later than MAX_DELAY
        // after the first notification of a burst).
        let mut pending: Option<(Instant, Instant)> = None;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        while !stop.load(Ordering::Relaxed) {
            let wait = pending.map_or(POLL, |(_, due)| {
                due.saturating_duration_since(Instant::now()).min(POLL)
            });
            match wait_readable(&self.events, wait) {
                Ok(true) => {
                    buf.clear();
                    // Any notification (or ENOBUFS: some were lost) means
                    // "dump again once things are quiet".
                    let _ = self.events.recv(&mut buf, libc::MSG_DONTWAIT);
                    let now = Instant::now();
                    let first = pending.map_or(now, |(f, _)| f);
                    let due = (now + self.debounce).min(first + self.max_delay());
                    pending = Some((first, due));
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    log_failure(&e);
                    std::thread::sleep(POLL);
                }
            }
            if pending.is_some_and(|(_, due)| Instant::now() >= due) {
                match self.refresh(out) {
                    Ok(true) => pending = None,
                    Ok(false) => return,
                    Err(e) => {
                        log_failure(&e);
                        let now = Instant::now();
                        pending = Some((now, now + RETRY));
                    }
                }
            }
        }
    }

    /// The longest a burst may delay a dump.
    fn max_delay(&self) -> Duration {
        (self.debounce * 4).max(Duration::from_secs(1))
    }

    /// Dumps and sends the map if it changed; Ok(false) once nobody listens.
    fn refresh(&mut self, out: &mpsc::Sender<InterfaceAddrs>) -> Result<bool, HostIfacesError> {
        let map = read_here(&self.dumps, &mut self.seq)?;
        if map == self.last {
            return Ok(true);
        }
        self.last = map.clone();
        Ok(out.send(map).is_ok())
    }
}

/// How soon a failed dump is tried again.
const RETRY: Duration = Duration::from_secs(1);

fn log_failure(e: &HostIfacesError) {
    tracing::warn!(error = %e, "cannot read the node's interfaces; retrying");
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn encode(seq: u32, flags: u16, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), payload);
        m.header.sequence_number = seq;
        m.finalize();
        m.header.flags |= flags;
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn link(index: u32, name: &str) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(l).into()
    }

    fn addr(index: u32, attrs: Vec<AddressAttribute>) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut a = AddressMessage::default();
        a.header.index = index;
        a.attributes = attrs;
        RouteNetlinkMessage::NewAddress(a).into()
    }

    fn gather(datagrams: &[Vec<u8>], seq: u32) -> (InterfaceAddrs, bool) {
        let mut t = Tables::default();
        let mut done = false;
        for d in datagrams {
            let p = parse_datagram(d, seq, "test").unwrap();
            done |= p.done;
            p.messages.into_iter().for_each(|m| t.absorb(m));
        }
        (t.into_map(), done)
    }

    #[test]
    fn a_dump_becomes_a_map_by_name_with_sorted_addresses() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let v6: IpAddr = "fd74:6f72::1".parse().unwrap();
        let peer = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9));
        let local = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 1));
        let mut one = encode(7, 0, link(1, "lo"));
        one.extend(encode(7, 0, link(2, "eth0")));
        one.extend(encode(7, 0, link(3, "ptp0")));
        let mut two = encode(7, 0, addr(2, vec![AddressAttribute::Address(v6)]));
        two.extend(encode(7, 0, addr(2, vec![AddressAttribute::Address(v4)])));
        // A duplicate, an address of a link that went away, another sequence.
        two.extend(encode(7, 0, addr(2, vec![AddressAttribute::Address(v4)])));
        two.extend(encode(7, 0, addr(9, vec![AddressAttribute::Address(v4)])));
        two.extend(encode(8, 0, link(4, "stale")));
        // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer.
        two.extend(encode(
            7,
            0,
            addr(
                3,
                vec![
                    AddressAttribute::Address(peer),
                    AddressAttribute::Local(local),
                ],
            ),
        ));
        let (map, done) = gather(&[one.clone(), two.clone()], 7);
        assert!(!done, "no Done message yet");
        let want: InterfaceAddrs = [
            ("eth0".to_string(), vec![v4, v6]),
            ("lo".to_string(), vec![]),
            ("ptp0".to_string(), vec![local]),
        ]
        .into_iter()
        .collect();
        assert_eq!(map, want);
        let end = encode(7, 0, NetlinkPayload::Done(DoneMessage::default()));
        assert!(gather(&[one, two, end], 7).1, "Done ends the dump");
    }

    #[test]
    fn kernel_errors_and_interrupted_dumps_are_reported() {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-libc::EPERM);
        let err = parse_datagram(&encode(3, 0, NetlinkPayload::Error(e)), 3, "link").unwrap_err();
        assert!(matches!(err, HostIfacesError::Kernel { errno, .. } if errno == libc::EPERM));
        assert!(err.to_string().contains("rtnetlink link dump"), "{err}");
        let intr = parse_datagram(&encode(3, NLM_F_DUMP_INTR, link(1, "lo")), 3, "link").unwrap();
        assert!(intr.interrupted);
        let bad = parse_datagram(&[0xff; 20], 3, "address").unwrap_err();
        assert!(matches!(bad, HostIfacesError::Decode { .. }), "{bad}");
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let t = Target::Netns(PathBuf::from("/var/run/netns/tortie-no-such-netns"));
        let e = read(&t).unwrap_err();
        assert!(e.to_string().contains("tortie-no-such-netns"), "{e}");
        assert!(e.to_string().contains("ip netns list"), "{e}");
    }

    fn addrs_of(map: &InterfaceAddrs, name: &str) -> Vec<IpAddr> {
        map.get(name).cloned().unwrap_or_default()
    }

    /// Waits (at most `bound`) for a map that satisfies `ok`; returns it
    /// and how long it took.
    fn wait_for(
        rx: &mpsc::Receiver<InterfaceAddrs>,
        bound: Duration,
        ok: impl Fn(&InterfaceAddrs) -> bool,
    ) -> Option<(InterfaceAddrs, Duration)> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Ok(m) = rx.recv_timeout(Duration::from_millis(20))
                && ok(&m)
            {
                return Some((m, start.elapsed()));
            }
        }
        None
    }

    /// Root: a throwaway namespace with a veth pair; the map is read,
    /// then address and link changes arrive within 2 s.
    #[test]
    fn reads_and_follows_a_namespace_s_interfaces() {
        let ns = crate::sandbox::Netns::new("ifaces");
        ns.ip(&[
            "link", "add", "ttd0", "type", "veth", "peer", "name", "ttp0",
        ]);
        ns.ip(&["link", "set", "ttd0", "up"]);
        ns.ip(&["link", "set", "ttp0", "up"]);
        ns.ip(&["addr", "add", "198.18.7.1/24", "dev", "ttd0"]);
        ns.ip(&["addr", "add", "fd74:6f72::7:1/64", "dev", "ttd0", "nodad"]);
        let a1: IpAddr = "198.18.7.1".parse().unwrap();
        let a6: IpAddr = "fd74:6f72::7:1".parse().unwrap();
        let map = read(&ns.target()).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["lo", "ttd0", "ttp0"],
            "{map:?}"
        );
        let got = addrs_of(&map, "ttd0");
        assert!(got.contains(&a1) && got.contains(&a6), "{map:?}");
        assert!(
            addrs_of(&map, "lo").contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{map:?}"
        );
        assert!(!got.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));

        let (tx, rx) = mpsc::channel();
        let _watch = watch(&ns.target(), Duration::from_millis(50), tx).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(2)).expect("first map");
        assert_eq!(first, read(&ns.target()).unwrap());

        let a2: IpAddr = "198.18.7.2".parse().unwrap();
        ns.ip(&["addr", "add", "198.18.7.2/24", "dev", "ttd0"]);
        let (_, added) = wait_for(&rx, Duration::from_secs(2), |m| {
            addrs_of(m, "ttd0").contains(&a2)
        })
        .expect("an added address arrives within 2 s");
        ns.ip(&["addr", "del", "fd74:6f72::7:1/64", "dev", "ttd0"]);
        let (m, removed) = wait_for(&rx, Duration::from_secs(2), |m| {
            !addrs_of(m, "ttd0").contains(&a6)
        })
        .expect("a removed address arrives within 2 s");
        assert!(addrs_of(&m, "ttd0").contains(&a1), "{m:?}");
        ns.ip(&[
            "link", "add", "ttd1", "type", "veth", "peer", "name", "ttp1",
        ]);
        let (_, linked) = wait_for(&rx, Duration::from_secs(2), |m| {
            m.contains_key("ttd1") && m.contains_key("ttp1")
        })
        .expect("a new link arrives within 2 s");
        eprintln!("change delivered after: add {added:?}, remove {removed:?}, new link {linked:?}");
    }
}
