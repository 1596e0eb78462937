//! Helpers for the host-endpoint tests: hand-built TCP segments sent and
//! caught with raw sockets (for packets conntrack calls invalid), and
//! applying a ruleset with the `tortie apply --netns` command itself.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tortie::sandbox::Netns;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Internet checksum (RFC 1071) over `parts`, concatenated.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A bare 20-byte TCP header with SYN and ACK set (an answer to a SYN that
/// this path never saw), checksummed for `src` → `dst`.
fn syn_ack_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    h[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = TCP_SYN | TCP_ACK;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    let sum = checksum(&[&pseudo, &h]);
    h[16..18].copy_from_slice(&sum.to_be_bytes());
    h
}

fn raw_tcp_socket() -> i32 {
    // SAFETY: plain syscall; the fd is closed by the caller.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    fd
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

/// Sends `count` SYN-ACK segments from inside `from` (whose address is
/// `src`) to `dst`, 20 ms apart.
pub fn send_syn_acks(from: &Netns, src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), count: u32) {
    let seg = syn_ack_segment(src, dst, ports.0, ports.1);
    from.enter(move || {
        let fd = raw_tcp_socket();
        let sa = sockaddr(dst);
        for _ in 0..count {
            // SAFETY: valid fd, buffer and address for the duration of the call.
            let n = unsafe {
                libc::sendto(
                    fd,
                    seg.as_ptr().cast(),
                    seg.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(n, 20, "sendto: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    })
    .join()
    .expect("sender thread");
}

/// Whether one received IPv4 packet is a TCP SYN-ACK with these ports.
fn is_syn_ack(pkt: &[u8], sport: u16, dport: u16) -> bool {
    let Some(&vihl) = pkt.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let Some(t) = pkt.get(ihl..ihl + 14) else {
        return false;
    };
    u16::from_be_bytes([t[0], t[1]]) == sport
        && u16::from_be_bytes([t[2], t[3]]) == dport
        && t[13] & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
}

/// Starts listening inside `ns` for a SYN-ACK with these ports; the
/// returned receiver yields whether one arrived within `window`.
pub fn catch_syn_ack(ns: &Netns, ports: (u16, u16), window: Duration) -> mpsc::Receiver<bool> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let _ = ns.enter(move || {
        let fd = raw_tcp_socket();
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let _ = ready_tx.send(());
        let start = Instant::now();
        let mut seen = false;
        let mut buf = [0u8; 2048];
        while !seen && start.elapsed() < window {
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                seen = is_syn_ack(&buf[..n as usize], ports.0, ports.1);
            }
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        let _ = tx.send(seen);
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("capture ready");
    rx
}

/// `tortie apply --netns NS --node NODE -f FILE`: the command a user runs,
/// a new process each time (so it plans against what the kernel holds).
/// Returns the command's stderr on failure.
pub fn cli_apply(netns: &Netns, node: &str, yaml_file: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tortie"))
        .args(["apply", "--netns", &netns.name, "--node", node, "-f"])
        .arg(yaml_file)
        .output()
        .map_err(|e| format!("cannot run tortie: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
