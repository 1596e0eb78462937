//! A minimal HTTP/1.1 endpoint for `/metrics`, `/livez` and `/readyz` (also
//! as Felix's `/liveness` and `/readiness`)
//! (200, or 503 with the reason in the body).
//! One request per connection, bounded reads, no keep-alive: enough for
//! Prometheus scrapes and kubelet probes, with no extra dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::metrics::Metrics;

/// Starts serving on `addr`; returns the bound address (useful with port 0).
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("tortie-http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle(stream, &metrics);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
    Ok(bound)
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        // Felix's paths too, so probes written for calico-node keep working.
        "/livez" | "/liveness" => probe(metrics.liveness_at(Instant::now()), "ok"),
        "/readyz" | "/readiness" => probe(metrics.readiness_at(Instant::now()), "ready"),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn probe(state: Result<(), String>, ok: &str) -> (&'static str, &'static str, String) {
    match state {
        Ok(()) => ("200 OK", "text/plain", format!("{ok}\n")),
        Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
    }
}
