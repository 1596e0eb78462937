//! tortie's own nf_tables netlink socket: changes that need no rule sent
//! as one batch (BatchBegin carrying the generation id the change was
//! planned against; NEWSET for each new set, as nft declares it; one
//! NEWSETELEM / DELSETELEM per element text; DELRULE / DELSET / DELCHAIN
//! for objects nothing refers to; BatchEnd), and the ruleset generation id
//! (GETGEN). The kernel refuses a batch whose
//! generation id is stale (another program committed since), so a
//! concurrent writer is detected and never overwritten silently.
//!
//! The socket lives as long as its `NftKernel`; for a named network
//! namespace it is opened by a thread that entered the namespace (a netlink
//! socket stays bound to the namespace it was created in), so the process
//! itself never moves.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, ListAttribute, NfTablesMessage, RuleAttribute,
    RuleMessage, SetAttribute, SetElementAttribute, SetElementFlags, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nftables::GenMessage, none::ControlMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::NftError;
use super::elements::{ElementBatch, PACKED, Removals, encode, is_interval};
use super::exec::Target;
use super::rules::{self, Attrs, Op};
use crate::compile::ir::{Set, SetType, TABLE_NAME};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u8 = 16;
const NFNL_BATCH_GENID: u16 = 1;
/// Socket buffers large enough for a batch of `MAX_BATCH` elements and the
/// kernel's answers.
const BUFFER_BYTES: usize = 16 << 20;
/// Room left in the send buffer beyond a batch's bytes.
const SEND_SLACK: usize = 1 << 16;
/// Larger element changes go through nft (one transaction either way).
pub const MAX_BATCH: usize = 20_000;

/// What one message of a batch was about, to name it in errors.
#[derive(Debug, Clone)]
enum Sent {
    Element {
        set: String,
        element: String,
        add: bool,
    },
    /// e.g. "create set S", "delete chain C".
    Object(String),
}

impl Sent {
    fn refused(&self, reason: String) -> NftError {
        match self.clone() {
            Sent::Element { set, element, add } => NftError::Element {
                set,
                element,
                add,
                reason,
            },
            Sent::Object(what) => NftError::Object { what, reason },
        }
    }
}

/// An encoded batch: the BatchBegin's sequence number, the bytes, and
/// what each element message (by sequence number) was about.
type Encoded = (u32, Vec<u8>, Vec<(u32, Sent)>);

/// A long-lived NETLINK_NETFILTER socket in one network namespace.
#[derive(Debug)]
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    /// The send buffer asked for: a batch is one `sendmsg`, so it must
    /// fit (a first load's sets are tens of MB at XL).
    send_buffer: usize,
}

fn sock_err(what: &'static str) -> impl FnOnce(std::io::Error) -> NftError {
    move |e| NftError::Netlink {
        what,
        reason: e.to_string(),
    }
}

/// Raises a socket buffer to `bytes` (forcing it past the sysctl cap
/// where allowed, as tortie runs with CAP_NET_ADMIN).
fn buffer(sock: &Socket, force: libc::c_int, plain: libc::c_int, bytes: usize) {
    let size = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

fn open_here() -> Result<NlSocket, NftError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(sock_err("open"))?;
    sock.bind_auto().map_err(sock_err("bind"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    // Error answers carry only the header of the refused message.
    let _ = sock.set_cap_ack(true);
    let _ = sock.set_ext_ack(true);
    buffer(&sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, BUFFER_BYTES);
    buffer(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, BUFFER_BYTES);
    Ok(NlSocket {
        sock,
        seq: 0,
        send_buffer: BUFFER_BYTES,
    })
}

fn nf_header(family: NetfilterProtoFamily, res_id: u16) -> NetfilterHeader {
    NetfilterHeader::new(family, 0, res_id)
}

fn errno_text(code: i32) -> String {
    std::io::Error::from_raw_os_error(code.abs()).to_string()
}

impl NlSocket {
    /// Opens a socket in `target` (from a short-lived thread for a netns).
    pub fn open(target: &Target) -> Result<NlSocket, NftError> {
        if *target == Target::Current {
            return open_here();
        }
        let target = target.clone();
        std::thread::Builder::new()
            .name("tortie-nfnl".into())
            .spawn(move || {
                target.enter_thread()?;
                open_here()
            })
            .map_err(sock_err("thread"))?
            .join()
            .map_err(|_| NftError::Netlink {
                what: "thread",
                reason: "the socket thread panicked".into(),
            })?
    }

    /// Sends one batch in one `sendmsg` (the kernel handles it as one
    /// transaction), growing the send buffer first when it is too small.
    fn send_batch(&mut self, out: &[u8]) -> Result<(), NftError> {
        if out.len() + SEND_SLACK > self.send_buffer {
            let want = out.len() + SEND_SLACK;
            buffer(&self.sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, want);
            self.send_buffer = want;
        }
        self.sock.send(out, 0).map_err(sock_err("send"))?;
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn message(&mut self, flags: u16, inner: NetfilterMessage) -> (u32, Vec<u8>) {
        let seq = self.next_seq();
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        m.header.flags = flags;
        m.header.sequence_number = seq;
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        (seq, buf)
    }

    /// The ruleset's generation id now.
    pub fn genid(&mut self, deadline: Duration) -> Result<u32, NftError> {
        let get = NetfilterMessage::new(
            nf_header(NetfilterProtoFamily::Unspec, 0),
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        let (seq, buf) = self.message(NLM_F_REQUEST | NLM_F_ACK, get);
        self.sock.send(&buf, 0).map_err(sock_err("send"))?;
        let mut id = None;
        let mut acked = false;
        self.receive(deadline, |m| {
            if m.header.sequence_number != seq {
                return Ok(false);
            }
            match m.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewGen(g)),
                    ..
                }) => {
                    id = g.attributes.iter().find_map(|a| match a {
                        netlink_packet_netfilter::nftables::GenAttribute::Id(i) => Some(*i),
                        _ => None,
                    });
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NftError::Netlink {
                        what: "generation id",
                        reason: errno_text(e.raw_code()),
                    });
                }
                NetlinkPayload::Error(_) => acked = true,
                _ => {}
            }
            Ok(acked)
        })?;
        id.ok_or(NftError::Netlink {
            what: "generation id",
            reason: "the kernel's answer carried no generation id".into(),
        })
    }

    /// Reads answers until `f` says it has seen the last one it needs.
    fn receive(
        &mut self,
        deadline: Duration,
        mut f: impl FnMut(NetlinkMessage<NetfilterMessage>) -> Result<bool, NftError>,
    ) -> Result<(), NftError> {
        let start = Instant::now();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            if left.is_zero() || !readable(&self.sock, left)? {
                return Err(NftError::Timeout {
                    what: "netlink batch",
                    after: deadline,
                });
            }
            buf.clear();
            self.sock.recv(&mut buf, 0).map_err(sock_err("receive"))?;
            let mut at = 0;
            while at + 16 <= buf.len() {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                if len < 16 || at + len > buf.len() {
                    break;
                }
                let m = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[at..at + len])
                    .map_err(|e| NftError::Netlink {
                        what: "decode",
                        reason: e.to_string(),
                    })?;
                if f(m)? {
                    return Ok(());
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Sends `batch` as one transaction planned against generation `genid`;
    /// returns the generation id after the commit.
    pub fn apply(
        &mut self,
        batch: &ElementBatch,
        genid: u32,
        deadline: Duration,
    ) -> Result<u32, NftError> {
        let (begin_seq, out, sent) = self.encode(batch, genid)?;
        self.send_batch(&out)?;
        self.acks(begin_seq, genid, &sent, deadline)?;
        Ok(genid.wrapping_add(1).max(1))
    }

    /// The batch as bytes: BatchBegin (with `genid`), new sets with their
    /// elements, every removal, every addition, deletions, BatchEnd; with
    /// the sequence number of the BatchBegin and what each message was
    /// about.
    fn encode(&mut self, batch: &ElementBatch, genid: u32) -> Result<Encoded, NftError> {
        let (begin_seq, mut out) = self.batch_begin(genid);
        let mut sent: Vec<(u32, Sent)> = Vec::new();
        if batch.table {
            let what = Sent::Object(format!("create table inet {TABLE_NAME}"));
            self.push(&mut out, &mut sent, NLM_F_CREATE, new_table(), what);
        }
        for (id, set) in batch.create.iter().enumerate() {
            let what = Sent::Object(format!("create set {}", set.name));
            self.push(
                &mut out,
                &mut sent,
                NLM_F_CREATE,
                new_set(set, id as u32 + 1),
                what,
            );
            self.push_packed(&mut out, &mut sent, set)?;
        }
        for add in [false, true] {
            for s in &batch.sets {
                let texts = if add { &s.added } else { &s.removed };
                let texts: Vec<&String> = texts.iter().collect();
                self.push_elements(&mut out, &mut sent, &s.set, s.ty, &texts, add)?;
            }
        }
        for (msg, what) in removals(&batch.remove) {
            self.push(&mut out, &mut sent, 0, msg, Sent::Object(what));
        }
        self.batch_end(&mut out);
        Ok((begin_seq, out, sent))
    }

    /// Appends the BatchEnd message that closes a batch.
    fn batch_end(&mut self, out: &mut Vec<u8>) {
        let end = NetfilterMessage::new(
            nf_header(NetfilterProtoFamily::Unspec, NFNL_SUBSYS_NFTABLES),
            ControlMessage::BatchEnd,
        );
        let (_, bytes) = self.message(NLM_F_REQUEST, end);
        out.extend_from_slice(&bytes);
    }

    /// Appends one acknowledged message of the batch.
    fn push(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        extra_flags: u16,
        msg: NetfilterMessage,
        what: Sent,
    ) {
        let (seq, bytes) = self.message(NLM_F_REQUEST | NLM_F_ACK | extra_flags, msg);
        out.extend_from_slice(&bytes);
        sent.push((seq, what));
    }

    /// Appends one NEWSETELEM / DELSETELEM per element text.
    fn push_elements(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        set: &str,
        ty: SetType,
        texts: &[&String],
        add: bool,
    ) -> Result<(), NftError> {
        for t in texts {
            let what = Sent::Element {
                set: set.to_string(),
                element: t.to_string(),
                add,
            };
            let keys = encode(ty, t).map_err(|reason| what.refused(reason))?;
            let msg = element_message(set, keys, is_interval(ty), add);
            self.push(out, sent, if add { NLM_F_CREATE } else { 0 }, msg, what);
        }
        Ok(())
    }

    /// Appends a new set's elements, `PACKED` to a NEWSETELEM message
    /// (an error names the set and the message's first and last element).
    fn push_packed(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        set: &Set,
    ) -> Result<(), NftError> {
        let texts: Vec<&String> = set.elements.iter().collect();
        for chunk in texts.chunks(PACKED) {
            let mut list = Vec::with_capacity(chunk.len() * 2);
            for t in chunk {
                let keys = encode(set.ty, t).map_err(|reason| NftError::Element {
                    set: set.name.clone(),
                    element: t.to_string(),
                    add: true,
                    reason,
                })?;
                push_keys(&mut list, keys, is_interval(set.ty));
            }
            let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
            let what = Sent::Object(format!(
                "add {} elements ({first} … {last}) to new set {}",
                chunk.len(),
                set.name
            ));
            let msg = elements_message(&set.name, list, true);
            self.push(out, sent, NLM_F_CREATE, msg, what);
        }
        Ok(())
    }

    fn batch_begin(&mut self, genid: u32) -> (u32, Vec<u8>) {
        let begin = NetfilterMessage::new(
            nf_header(NetfilterProtoFamily::Unspec, NFNL_SUBSYS_NFTABLES),
            ControlMessage::Other {
                message_type: NFNL_MSG_BATCH_BEGIN,
                attributes: vec![DefaultNla::new(
                    NFNL_BATCH_GENID,
                    genid.to_be_bytes().to_vec(),
                )],
            },
        );
        self.message(NLM_F_REQUEST, begin)
    }

    /// Reads one answer per element message (and batch-level errors).
    fn acks(
        &mut self,
        begin_seq: u32,
        genid: u32,
        sent: &[(u32, Sent)],
        deadline: Duration,
    ) -> Result<(), NftError> {
        let Some(&(first, _)) = sent.first() else {
            return Ok(());
        };
        let mut answered = 0;
        let mut first_error: Option<NftError> = None;
        let mut batch_error: Option<i32> = None;
        self.receive(deadline, |m| {
            let seq = m.header.sequence_number;
            let NetlinkPayload::Error(e) = m.payload else {
                return Ok(false);
            };
            if seq == begin_seq {
                batch_error = Some(e.raw_code());
                // A stale generation id ends the batch at once.
                return Ok(e.raw_code() == -libc::ERESTART || answered == sent.len());
            }
            let Some(idx) = seq.checked_sub(first).map(|i| i as usize) else {
                return Ok(false);
            };
            let Some((_, what)) = sent.get(idx) else {
                return Ok(false);
            };
            answered += 1;
            if e.code.is_some() && first_error.is_none() {
                first_error = Some(what.refused(errno_text(e.raw_code())));
            }
            Ok(answered == sent.len())
        })?;
        if let Some(e) = first_error {
            return Err(e);
        }
        match batch_error {
            Some(c) if c == -libc::ERESTART => Err(NftError::Conflict {
                expected: genid,
                reason: "another program changed the ruleset since tortie last read or wrote it"
                    .into(),
            }),
            Some(c) if c != 0 => Err(NftError::Netlink {
                what: "commit",
                reason: errno_text(c),
            }),
            _ => Ok(()),
        }
    }
}

const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NLM_F_APPEND: u16 = 0x800;

impl NlSocket {
    /// Sends a plan's change step (`ops`, rules encoded as nft encodes
    /// them) as one transaction planned against generation `genid`;
    /// returns the generation id after the commit. A rule without a
    /// netlink encoding fails with `NftError::Unencodable` before anything
    /// is sent.
    pub fn apply_ops(
        &mut self,
        ops: &[Op],
        genid: u32,
        deadline: Duration,
    ) -> Result<u32, NftError> {
        let (begin_seq, out, sent) = self.encode_ops(ops, genid)?;
        self.send_batch(&out)?;
        self.acks(begin_seq, genid, &sent, deadline)?;
        Ok(genid.wrapping_add(1).max(1))
    }

    /// The ops as one batch: BatchBegin (with `genid`), one message per
    /// chain, flush, element and rule (anonymous sets just before the rule
    /// that uses them), BatchEnd.
    fn encode_ops(&mut self, ops: &[Op], genid: u32) -> Result<Encoded, NftError> {
        let (begin_seq, mut out) = self.batch_begin(genid);
        let mut sent: Vec<(u32, Sent)> = Vec::new();
        let mut next_id = 1u32;
        for op in ops {
            self.push_op(&mut out, &mut sent, op, &mut next_id)?;
        }
        self.batch_end(&mut out);
        Ok((begin_seq, out, sent))
    }

    /// Appends the messages of one op; `next_id` is the next free
    /// batch-local set id.
    fn push_op(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        op: &Op,
        next_id: &mut u32,
    ) -> Result<(), NftError> {
        let named = |kind: u16, name: &str| {
            let mut a = Attrs::default();
            a.str(1, TABLE_NAME).str(kind, name);
            a
        };
        match op {
            Op::NewChain(c) => {
                let what = format!("create chain {c}");
                self.push_raw(
                    out,
                    sent,
                    (NFT_MSG_NEWCHAIN, NLM_F_CREATE),
                    &named(3, c),
                    what,
                );
            }
            Op::FlushChain(c) => {
                let what = format!("flush chain {c}");
                self.push_raw(out, sent, (NFT_MSG_DELRULE, 0), &named(2, c), what);
            }
            Op::FlushSet(s) => {
                let what = format!("flush set {s}");
                self.push_raw(out, sent, (NFT_MSG_DELSETELEM, 0), &named(2, s), what);
            }
            Op::Elements {
                set,
                ty,
                elements,
                add,
            } => {
                let texts: Vec<&String> = elements.iter().collect();
                self.push_elements(out, sent, set, *ty, &texts, *add)?;
            }
            Op::MapElements { map, elements } => {
                let a = map_elements(map, elements)?;
                let what = format!("add elements to map {map}");
                self.push_raw(out, sent, (NFT_MSG_NEWSETELEM, NLM_F_CREATE), &a, what);
            }
            Op::AddRule { chain, rule } => self.push_rule(out, sent, chain, rule, next_id)?,
        }
        Ok(())
    }

    /// Appends one rule, its anonymous sets (declared and filled) first.
    fn push_rule(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        chain: &str,
        rule: &crate::compile::ir::Rule,
        next_id: &mut u32,
    ) -> Result<(), NftError> {
        let enc = rules::encode(rule, chain)?;
        for (i, anon) in enc.anon.iter().enumerate() {
            let id = *next_id + i as u32;
            let what = format!("create an anonymous set for a rule of chain {chain}");
            let a = anon.set_attributes(TABLE_NAME, id);
            self.push_raw(out, sent, (NFT_MSG_NEWSET, NLM_F_CREATE), &a, what.clone());
            let a = anon.element_attributes(TABLE_NAME, id);
            self.push_raw(out, sent, (NFT_MSG_NEWSETELEM, NLM_F_CREATE), &a, what);
        }
        let a = enc.attributes(TABLE_NAME, chain, *next_id);
        *next_id += enc.anon.len() as u32;
        let what = format!("add rule `{}` to chain {chain}", rule.render(chain));
        let kind = (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        self.push_raw(out, sent, kind, &a, what);
        Ok(())
    }

    /// Appends one acknowledged nf_tables message (inet family) of `attrs`.
    fn push_raw(
        &mut self,
        out: &mut Vec<u8>,
        sent: &mut Vec<(u32, Sent)>,
        (msg_type, extra_flags): (u8, u16),
        attrs: &Attrs,
        what: String,
    ) {
        let seq = self.next_seq();
        let flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        let len = 16 + 4 + attrs.0.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg_type as u16).to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[1, 0, 0, 0]); // nfgenmsg: inet, version 0
        out.extend_from_slice(&attrs.0);
        sent.push((seq, Sent::Object(what)));
    }
}

/// NEWSETELEM attributes adding `interface : verdict` elements to `map`.
fn map_elements(map: &str, elements: &[(String, String)]) -> Result<Attrs, NftError> {
    let refused = |reason: String| NftError::Object {
        what: format!("add elements to map {map}"),
        reason,
    };
    let mut parsed = Vec::new();
    for (name, verdict) in elements {
        let (code, chain) = match crate::trace::nft::Verdict::parse(verdict) {
            Some(crate::trace::nft::Verdict::Goto(c)) => (-4, c),
            Some(crate::trace::nft::Verdict::Jump(c)) => (-3, c),
            _ => {
                return Err(refused(format!(
                    "verdict `{verdict}` of `{name}` is not a goto or jump"
                )));
            }
        };
        if name.is_empty() || name.len() > 15 {
            return Err(refused(format!("`{name}` is not an interface name")));
        }
        let mut key = name.as_bytes().to_vec();
        key.resize(16, 0);
        parsed.push((key, code, chain));
    }
    let mut a = Attrs::default();
    a.str(1, TABLE_NAME).str(2, map);
    a.nest(3, |list| {
        for (key, code, chain) in &parsed {
            list.nest(1, |e| {
                e.value(1, key).verdict(2, *code, Some(chain));
            });
        }
    });
    Ok(a)
}

/// `s` as a NUL-terminated attribute value.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One message of a dump: its attributes (after the nfgenmsg header).
#[derive(Debug)]
pub struct Raw {
    pub payload: Vec<u8>,
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;

impl NlSocket {
    /// One nf_tables request (`dump`: every object matching `attrs`) in the
    /// inet family; its answers. A dump interrupted by a commit is an error
    /// (`what: "interrupted"`).
    pub fn dump(
        &mut self,
        msg_type: u8,
        attrs: &[(u16, Vec<u8>)],
        dump: bool,
        deadline: Duration,
    ) -> Result<Vec<Raw>, NftError> {
        let seq = self.next_seq();
        let mut body = vec![1u8, 0, 0, 0]; // nfgenmsg: inet, version 0
        for (kind, v) in attrs {
            let len = (4 + v.len()) as u16;
            body.extend_from_slice(&len.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize((body.len() + 3) & !3, 0);
        }
        let flags = NLM_F_REQUEST | if dump { 0x300 } else { NLM_F_ACK };
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg_type as u16).to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        self.sock.send(&msg, 0).map_err(sock_err("send"))?;
        self.answers(seq, deadline)
    }

    /// Reads the answers to request `seq` until DONE or an ack.
    fn answers(&mut self, seq: u32, deadline: Duration) -> Result<Vec<Raw>, NftError> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            if left.is_zero() || !readable(&self.sock, left)? {
                return Err(NftError::Timeout {
                    what: "netlink dump",
                    after: deadline,
                });
            }
            buf.clear();
            self.sock.recv(&mut buf, 0).map_err(sock_err("receive"))?;
            let mut at = 0;
            while at + 16 <= buf.len() {
                let h = &buf[at..at + 16];
                let len = u32::from_ne_bytes(h[0..4].try_into().expect("4")) as usize;
                let kind = u16::from_ne_bytes([h[4], h[5]]);
                let flags = u16::from_ne_bytes([h[6], h[7]]);
                let mseq = u32::from_ne_bytes(h[8..12].try_into().expect("4"));
                if len < 16 || at + len > buf.len() {
                    break;
                }
                let payload = &buf[at + 16..at + len];
                at += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    return Err(NftError::Netlink {
                        what: "interrupted",
                        reason: "the table changed during the dump".into(),
                    });
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|c| i32::from_ne_bytes(c.try_into().expect("4")))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NftError::Netlink {
                            what: "dump",
                            reason: errno_text(code),
                        });
                    }
                    _ => out.push(Raw {
                        payload: payload.get(4..).unwrap_or(&[]).to_vec(),
                    }),
                }
            }
        }
    }
}

/// One NEWSETELEM or DELSETELEM message for one element text.
fn element_message(
    set: &str,
    keys: super::elements::Keys,
    interval: bool,
    add: bool,
) -> NetfilterMessage {
    let mut elems = Vec::with_capacity(2);
    push_keys(&mut elems, keys, interval);
    elements_message(set, elems, add)
}

/// Appends one element's keys: the start, and for an interval set the end
/// flagged INTERVAL_END (none when the interval reaches the top).
fn push_keys(
    out: &mut Vec<ListAttribute<SetElementAttribute>>,
    keys: super::elements::Keys,
    interval: bool,
) {
    let key = |k: Vec<u8>| SetElementAttribute::Key(DataAttribute::Value(k));
    out.push(ListAttribute::Element(vec![key(keys.start)]));
    if interval && let Some(end) = keys.end {
        out.push(ListAttribute::Element(vec![
            key(end),
            SetElementAttribute::Flags(SetElementFlags::IntervalEnd),
        ]));
    }
}

/// One NEWTABLE for tortie's table, as `add table inet tortie` sends it.
fn new_table() -> NetfilterMessage {
    let inner = NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE_NAME.to_string())],
    });
    NetfilterMessage::new(nf_header(NetfilterProtoFamily::Inet, 0), inner)
}

/// One NEWSETELEM or DELSETELEM message carrying `elems`.
fn elements_message(
    set: &str,
    elems: Vec<ListAttribute<SetElementAttribute>>,
    add: bool,
) -> NetfilterMessage {
    let body = SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE_NAME.to_string()),
            SetElementList::Set(set.to_string()),
            SetElementList::Elements(elems),
        ],
    };
    let inner = if add {
        NfTablesMessage::NewSetElement(body)
    } else {
        NfTablesMessage::DeleteSetElement(body)
    };
    NetfilterMessage::new(nf_header(NetfilterProtoFamily::Inet, 0), inner)
}

/// nft's set user data: the key byte order (big-endian for addresses and
/// ports; none for concatenations, which also carry nft's description of
/// their fields), then the comment. The same bytes `nft` writes for the
/// declarations in `SetType::declaration`, so that `nft list` shows a set
/// tortie created over netlink exactly as one nft created.
fn set_userdata(set: &Set) -> Vec<u8> {
    let mut ud = match set.ty {
        SetType::Ipv4 | SetType::Ipv6 | SetType::Port => {
            let mut v = vec![0, 4];
            v.extend_from_slice(&2u32.to_ne_bytes());
            v
        }
        SetType::NamedPortV4 | SetType::NamedPortV6 => {
            let mut v = vec![0, 4];
            v.extend_from_slice(&0u32.to_ne_bytes());
            v.extend_from_slice(&[3, 8, 0, 4]);
            v.extend_from_slice(&13u32.to_ne_bytes());
            v.extend_from_slice(&[1, 0]);
            v
        }
    };
    if let Some(mut c) = crate::compile::ir::Ruleset::set_comment(set) {
        // nft keeps at most 127 bytes of a comment (and its NUL).
        while c.len() > 127 {
            c.pop();
        }
        let c = c.into_bytes();
        ud.push(7);
        ud.push((c.len() + 1) as u8);
        ud.extend_from_slice(&c);
        ud.push(0);
    }
    ud
}

/// nft's data type of a set's key (concatenations: 6 bits per field).
fn key_type(ty: SetType) -> (u32, u32) {
    const IPV4: u32 = 7;
    const IPV6: u32 = 8;
    const PROTO: u32 = 12;
    const SERVICE: u32 = 13;
    let concat = |addr: u32| (((addr << 6) | PROTO) << 6) | SERVICE;
    match ty {
        SetType::Ipv4 => (IPV4, 4),
        SetType::Ipv6 => (IPV6, 16),
        SetType::Port => (SERVICE, 2),
        SetType::NamedPortV4 => (concat(IPV4), 12),
        SetType::NamedPortV6 => (concat(IPV6), 24),
    }
}

/// NEWSET for `set` (batch-local id `id`), as nft declares it.
fn new_set(set: &Set, id: u32) -> NetfilterMessage {
    let (ty, len) = key_type(set.ty);
    let mut attributes = vec![
        SetAttribute::Table(TABLE_NAME.to_string()),
        SetAttribute::Name(set.name.clone()),
    ];
    if is_interval(set.ty) {
        attributes.push(SetAttribute::Flags(SetFlags::Interval));
    }
    attributes.extend([
        SetAttribute::KeyType(ty),
        SetAttribute::KeyLen(len),
        SetAttribute::Id(id),
        SetAttribute::UserData(set_userdata(set)),
    ]);
    let inner = NfTablesMessage::NewSet(SetMessage { attributes });
    NetfilterMessage::new(nf_header(NetfilterProtoFamily::Inet, 0), inner)
}

/// The deletions of a cleanup, in order, with what each is about.
fn removals(r: &Removals) -> Vec<(NetfilterMessage, String)> {
    let table = || TABLE_NAME.to_string();
    let wrap = |m| NetfilterMessage::new(nf_header(NetfilterProtoFamily::Inet, 0), m);
    let set = |name: &String| SetMessage {
        attributes: vec![
            SetAttribute::Table(table()),
            SetAttribute::Name(name.clone()),
        ],
    };
    let mut out = Vec::new();
    for c in &r.flushed {
        let m = RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table()),
                RuleAttribute::Chain(c.clone()),
            ],
        };
        out.push((
            wrap(NfTablesMessage::DeleteRule(m)),
            format!("flush chain {c}"),
        ));
    }
    for m in &r.maps {
        out.push((
            wrap(NfTablesMessage::DeleteSet(set(m))),
            format!("delete map {m}"),
        ));
    }
    for c in &r.chains {
        let m = ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table()),
                ChainAttribute::Name(c.clone()),
            ],
        };
        out.push((
            wrap(NfTablesMessage::DeleteChain(m)),
            format!("delete chain {c}"),
        ));
    }
    for s in &r.sets {
        out.push((
            wrap(NfTablesMessage::DeleteSet(set(s))),
            format!("delete set {s}"),
        ));
    }
    out
}

/// Waits until `sock` is readable, at most `timeout`; false on timeout.
fn readable(sock: &Socket, timeout: Duration) -> Result<bool, NftError> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(sock_err("poll")(e));
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ir::SetType;
    use crate::nft::elements::SetElements;

    /// Splits a batch into its messages.
    fn messages(bytes: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(NetlinkMessage::deserialize(&bytes[at..at + len]).unwrap());
            at += (len + 3) & !3;
        }
        out
    }

    fn keys_of(m: &NetlinkMessage<NetfilterMessage>) -> (bool, Vec<(Vec<u8>, bool)>) {
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(msg),
            ..
        }) = &m.payload
        else {
            panic!("not an nftables message: {m:?}");
        };
        let (add, body) = match msg {
            NfTablesMessage::NewSetElement(b) => (true, b),
            NfTablesMessage::DeleteSetElement(b) => (false, b),
            other => panic!("{other:?}"),
        };
        let mut keys = Vec::new();
        for a in &body.attributes {
            if let SetElementList::Elements(list) = a {
                for l in list {
                    let ListAttribute::Element(attrs) = l else {
                        continue;
                    };
                    let mut key = Vec::new();
                    let mut end = false;
                    for at in attrs {
                        match at {
                            SetElementAttribute::Key(DataAttribute::Value(k)) => key = k.clone(),
                            SetElementAttribute::Flags(f) => {
                                end = f.contains(SetElementFlags::IntervalEnd)
                            }
                            _ => {}
                        }
                    }
                    keys.push((key, end));
                }
            }
        }
        (add, keys)
    }

    #[test]
    fn a_batch_carries_the_genid_then_removals_then_additions() {
        let mut sock = open_here_for_test();
        let batch = ElementBatch {
            table: false,
            create: Vec::new(),
            remove: Default::default(),
            sets: vec![
                SetElements {
                    set: "s4-a".into(),
                    ty: SetType::Ipv4,
                    removed: vec![],
                    added: vec!["198.18.0.0/24".into()],
                },
                SetElements {
                    set: "np4-b".into(),
                    ty: SetType::NamedPortV4,
                    removed: vec!["198.18.0.5 . 6 . 80".into()],
                    added: vec![],
                },
            ],
        };
        let (begin, bytes, sent) = sock.encode(&batch, 0x0102_0304).unwrap();
        let m = messages(&bytes);
        assert_eq!(m.len(), 4);
        // BatchBegin: subsystem nftables, the generation id attribute.
        assert_eq!(m[0].header.sequence_number, begin);
        assert_eq!(m[0].header.message_type, NFNL_MSG_BATCH_BEGIN as u16);
        let raw = &bytes[..m[0].header.length as usize];
        assert_eq!(&raw[18..20], &[0, 10], "res_id: NFNL_SUBSYS_NFTABLES");
        assert_eq!(&raw[20..24], &[8, 0, 1, 0], "NFNL_BATCH_GENID attribute");
        assert_eq!(&raw[24..28], &[1, 2, 3, 4], "the generation id, big-endian");
        // The removal first (one concatenated key), then the addition
        // (start, and end + 1 flagged INTERVAL_END).
        let (add, keys) = keys_of(&m[1]);
        assert!(!add);
        assert_eq!(
            keys,
            vec![(vec![198, 18, 0, 5, 6, 0, 0, 0, 0, 80, 0, 0], false)]
        );
        let (add, keys) = keys_of(&m[2]);
        assert!(add);
        assert!(m[2].header.flags & NLM_F_CREATE != 0 && m[2].header.flags & NLM_F_ACK != 0);
        assert_eq!(
            keys,
            vec![(vec![198, 18, 0, 0], false), (vec![198, 18, 1, 0], true)]
        );
        assert_eq!(m[3].header.message_type, 17, "BatchEnd");
        // Answers are matched to elements by sequence number.
        let names: Vec<_> = sent
            .iter()
            .map(|(q, s)| match s {
                Sent::Element { set, add, .. } => (*q, set.as_str(), *add),
                Sent::Object(o) => panic!("no object in this batch: {o}"),
            })
            .collect();
        let (s1, s2) = (m[1].header.sequence_number, m[2].header.sequence_number);
        assert_eq!(names, vec![(s1, "np4-b", false), (s2, "s4-a", true)]);
    }

    #[test]
    fn an_element_that_does_not_encode_fails_the_whole_batch_by_name() {
        let mut sock = open_here_for_test();
        let batch = ElementBatch {
            table: false,
            create: Vec::new(),
            remove: Default::default(),
            sets: vec![SetElements {
                set: "s4-a".into(),
                ty: SetType::Ipv4,
                removed: vec![],
                added: vec!["198.18.0.1".into(), "fd74::1".into()],
            }],
        };
        let err = sock.encode(&batch, 1).unwrap_err().to_string();
        assert!(
            err.contains("s4-a") && err.contains("fd74::1") && err.contains("add"),
            "{err}"
        );
    }

    /// (type, flags) of every message of a batch.
    fn kinds(bytes: &[u8]) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([bytes[at + 4], bytes[at + 5]]);
            let flags = u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]);
            out.push((kind, flags));
            at += (len + 3) & !3;
        }
        out
    }

    #[test]
    fn a_change_batch_sends_anonymous_sets_just_before_their_rule() {
        use crate::compile::ir::Rule;
        let mut sock = open_here_for_test();
        let rule = Rule::new(
            "meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, nd-neighbor-solicit }",
            "accept",
            "t",
        );
        let ops = vec![
            Op::FlushChain("c".into()),
            Op::AddRule {
                chain: "c".into(),
                rule,
            },
            Op::MapElements {
                map: "m".into(),
                elements: vec![("cali1".into(), "goto c".into())],
            },
        ];
        let (_, bytes, sent) = sock.encode_ops(&ops, 7).unwrap();
        let nft = |t: u8| (NFNL_SUBSYS_NFTABLES << 8) | t as u16;
        let k: Vec<u16> = kinds(&bytes).iter().map(|(t, _)| *t).collect();
        assert_eq!(
            k,
            vec![
                NFNL_MSG_BATCH_BEGIN as u16,
                nft(NFT_MSG_DELRULE),
                nft(NFT_MSG_NEWSET),
                nft(NFT_MSG_NEWSETELEM),
                nft(NFT_MSG_NEWRULE),
                nft(NFT_MSG_NEWSETELEM),
                17,
            ]
        );
        let rule_flags = kinds(&bytes)[4].1;
        assert!(rule_flags & NLM_F_APPEND != 0 && rule_flags & NLM_F_ACK != 0);
        assert_eq!(
            sent.len(),
            5,
            "every message but begin and end is acknowledged"
        );
        // An unknown verdict in a map element fails the batch by name.
        let bad = vec![Op::MapElements {
            map: "m".into(),
            elements: vec![("cali1".into(), "accept".into())],
        }];
        let err = sock.encode_ops(&bad, 7).unwrap_err().to_string();
        assert!(err.contains("map m") && err.contains("cali1"), "{err}");
    }

    /// A socket in this namespace (no root needed to open one; nothing is
    /// sent by these tests).
    fn open_here_for_test() -> NlSocket {
        open_here().expect("a netlink socket")
    }
}
