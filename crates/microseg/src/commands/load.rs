//! `microseg bench ingest`: a load generator for a running `microseg serve`.
//!
//! Worker threads post Segment `/v1/batch` requests of generated events (product views,
//! orders, pages, identifies over a fixed set of users) on keep-alive connections for a
//! bounded time. A probe thread sends one `Probe` event for a fresh user every
//! `1 / --probes` seconds while a reader follows `/v1/changes`; the time from the probe's
//! 200 (accepted: committed) to its `entered` change on the stream is the latency the
//! issue's target names. bench/load.py starts the server, runs this and a storage peer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use microseg_core::Timestamp;
use microseg_synth::Rng;
use serde_json::json;

use super::print_json;

/// Post batches of generated events to a running server for a bounded time; measure
/// durable throughput and the latency from an accepted event to its `entered` change.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The server (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: String,
    /// A write key (`microseg key create write`).
    #[arg(long)]
    write_key: String,
    /// An admin token, for following `/v1/changes` (`microseg key create admin`).
    #[arg(long)]
    admin_key: String,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Connections posting batches at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Distinct users the events belong to.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Users are the demo shop's customers (`c0000001` ...) instead of `u0`, `u1`, ...
    #[arg(long)]
    demo_users: bool,
    /// Probe events per second (each for a fresh user, for the latency measurement).
    #[arg(long, default_value_t = 20.0)]
    probes: f64,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// One keep-alive HTTP/1.1 connection (just enough of the protocol for this tool).
struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    fn open(host: &str) -> Result<Conn> {
        let stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            host: host.to_string(),
        })
    }

    /// Sends one request; returns the status and the body.
    fn post(&mut self, path: &str, auth: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        self.answer()
    }

    /// Sends one GET; returns the status and the body.
    fn get(&mut self, path: &str, auth: &str) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\r\n",
            self.host
        );
        self.reader.get_mut().write_all(head.as_bytes())?;
        self.answer()
    }

    fn answer(&mut self) -> Result<(u16, Vec<u8>)> {
        let (status, headers) = read_head(&mut self.reader)?;
        let length: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .context("response without Content-Length")?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

/// Reads a status line and headers.
fn read_head(reader: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, headers));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn basic(key: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    format!("Basic {encoded}")
}

fn now_ms() -> i64 {
    microseg_server::now().0
}

const CATEGORIES: [&str; 6] = ["bikes", "helmets", "apparel", "parts", "lights", "sale"];

/// Who the generated events are about.
#[derive(Clone, Copy)]
struct Users {
    count: u64,
    demo: bool,
}

impl Users {
    fn id(self, rng: &mut Rng) -> String {
        let n = rng.below(self.count);
        if self.demo {
            format!("c{:07}", n + 1)
        } else {
            format!("u{n}")
        }
    }
}

/// One generated batch body of `n` events with message ids `prefix-seq`.
fn batch_body(rng: &mut Rng, users: Users, n: usize, prefix: &str, seq: &mut u64) -> Vec<u8> {
    let ts = Timestamp(now_ms()).to_string();
    let mut s = String::with_capacity(n * 220);
    s.push_str("{\"batch\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        *seq += 1;
        let user = users.id(rng);
        let category = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
        let roll = rng.below(100);
        let _ = if roll < 70 {
            write!(
                s,
                r#"{{"type":"track","event":"Product Viewed","userId":"{user}","messageId":"{prefix}-{seq}","timestamp":"{ts}","properties":{{"category":"{category}","price":{}.5}}}}"#,
                rng.below(200)
            )
        } else if roll < 80 {
            write!(
                s,
                r#"{{"type":"track","event":"Order Completed","userId":"{user}","messageId":"{prefix}-{seq}","timestamp":"{ts}","properties":{{"category":"{category}","revenue":{}.25}}}}"#,
                10 + rng.below(300)
            )
        } else if roll < 95 {
            write!(
                s,
                r#"{{"type":"page","name":"{category}","userId":"{user}","messageId":"{prefix}-{seq}","timestamp":"{ts}","properties":{{"path":"/c/{category}"}}}}"#
            )
        } else {
            write!(
                s,
                r#"{{"type":"identify","userId":"{user}","messageId":"{prefix}-{seq}","timestamp":"{ts}","traits":{{"plan":"{}","age":{}}}}}"#,
                if rng.below(2) == 0 { "free" } else { "pro" },
                18 + rng.below(60)
            )
        };
    }
    s.push_str("]}");
    s.into_bytes()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn summary(mut xs: Vec<f64>) -> serde_json::Value {
    xs.sort_by(f64::total_cmp);
    json!({
        "count": xs.len(),
        "p50": percentile(&xs, 0.5),
        "p90": percentile(&xs, 0.9),
        "p99": percentile(&xs, 0.99),
        "max": xs.last().copied().unwrap_or(f64::NAN),
    })
}

/// What the change reader saw.
#[derive(Default)]
struct Seen {
    /// Probe user → when its `entered` change arrived.
    probes: HashMap<String, Instant>,
    /// The server's own accepted→change latencies of event-caused changes.
    server_ms: Vec<f64>,
    changes: u64,
}

/// Follows `/v1/changes` (chunked server-sent events) until `stop`.
fn read_changes(
    host: &str,
    admin: &str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<()> {
    let stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reader = BufReader::new(stream);
    write!(
        reader.get_mut(),
        "GET /v1/changes HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let (status, _) = read_head(&mut reader)?;
    if status != 200 {
        bail!("/v1/changes answered {status}");
    }
    let _ = ready.send(());
    // Chunked transfer: size line, data, CRLF. Lines of the event stream may span chunks.
    let mut pending = Vec::new();
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
            continue;
        };
        let mut chunk = vec![0; size + 2];
        let mut read = 0;
        while read < chunk.len() {
            match reader.read(&mut chunk[read..]) {
                Ok(0) => bail!("change stream closed"),
                Ok(n) => read += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let arrived = Instant::now();
        pending.extend_from_slice(&chunk[..size]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = l.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(c) = serde_json::from_slice::<serde_json::Value>(data) else {
                continue;
            };
            let mut s = seen.lock().expect("seen lock");
            s.changes += 1;
            if let Some(ms) = c["latency_ms"].as_f64() {
                s.server_ms.push(ms);
            }
            if c["segment"] == "probed" && c["kind"] == "entered" {
                if let Some(p) = c["profile"].as_str() {
                    s.probes.insert(p.to_string(), arrived);
                }
            }
        }
    }
    Ok(())
}

pub fn ingest(args: IngestArgs) -> Result<()> {
    let auth = basic(&args.write_key);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (ready, is_ready) = std::sync::mpsc::channel();
    let reader = {
        let (host, admin, seen, stop) = (
            args.server.clone(),
            args.admin_key.clone(),
            seen.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || read_changes(&host, &admin, seen, stop, ready))
    };
    if is_ready.recv_timeout(Duration::from_secs(10)).is_err() {
        match reader.join().expect("reader thread") {
            Err(e) => bail!("could not follow /v1/changes on {}: {e:#}", args.server),
            Ok(()) => bail!("/v1/changes on {} ended at once", args.server),
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let acked = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let run = format!("{}", now_ms());
    let mut workers = Vec::new();
    for w in 0..args.connections {
        let (host, auth, acked, overloaded) = (
            args.server.clone(),
            auth.clone(),
            acked.clone(),
            overloaded.clone(),
        );
        let users = Users {
            count: args.users,
            demo: args.demo_users,
        };
        let (batch, seed) = (args.batch, args.seed);
        let prefix = format!("{run}-w{w}");
        workers.push(std::thread::spawn(move || -> Result<Vec<(f64, f64)>> {
            let mut conn = Conn::open(&host)?;
            let mut rng = Rng::new(seed.wrapping_mul(1000).wrapping_add(w as u64));
            let mut seq = 0;
            // (seconds since start at the 200, request milliseconds)
            let mut done = Vec::new();
            while Instant::now() < deadline {
                let body = batch_body(&mut rng, users, batch, &prefix, &mut seq);
                let sent = Instant::now();
                let (status, reply) = conn.post("/v1/batch", &auth, &body)?;
                match status {
                    200 => {
                        acked.fetch_add(batch as u64, Ordering::Relaxed);
                        let at = started.elapsed().as_secs_f64();
                        done.push((at, sent.elapsed().as_secs_f64() * 1000.0));
                    }
                    503 => {
                        overloaded.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => bail!(
                        "/v1/batch answered {status}: {}",
                        String::from_utf8_lossy(&reply)
                    ),
                }
            }
            Ok(done)
        }));
    }
    // Probes: one fresh user per probe; (user, sent, accepted).
    let mut probes: Vec<(String, Instant, Instant)> = Vec::new();
    {
        let mut conn = Conn::open(&args.server)?;
        let every = Duration::from_secs_f64(1.0 / args.probes.max(0.1));
        let mut next = Instant::now();
        let mut n = 0;
        while next < deadline {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            n += 1;
            let user = format!("probe-{run}-{n}");
            let body = format!(
                r#"{{"type":"track","event":"Probe","userId":"{user}","messageId":"{user}","timestamp":"{}"}}"#,
                Timestamp(now_ms())
            );
            let sent = Instant::now();
            let (status, reply) = conn.post("/v1/track", &auth, body.as_bytes())?;
            if status == 200 {
                probes.push((user, sent, Instant::now()));
            } else if status != 503 {
                bail!(
                    "/v1/track answered {status}: {}",
                    String::from_utf8_lossy(&reply)
                );
            }
            next += every;
        }
    }
    let mut requests = Vec::new();
    for w in workers {
        requests.extend(w.join().expect("worker thread")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Give the last probes' changes time to arrive.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("reader gone")
        .into_inner()
        .expect("seen lock");

    let mut accepted_to_entered = Vec::new();
    let mut sent_to_entered = Vec::new();
    let mut missing = 0;
    for (user, sent, accepted) in &probes {
        match seen.probes.get(user) {
            Some(at) => {
                accepted_to_entered
                    .push(at.saturating_duration_since(*accepted).as_secs_f64() * 1000.0);
                sent_to_entered.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            }
            None => missing += 1,
        }
    }
    // Events acknowledged per whole second of the run; the median second is reported.
    let seconds = elapsed.floor() as usize;
    let mut per_second = vec![0.0; seconds.max(1)];
    for (at, _) in &requests {
        if let Some(slot) = per_second.get_mut(*at as usize) {
            *slot += args.batch as f64;
        }
    }
    per_second.truncate(seconds.max(1));
    let mut sorted = per_second.clone();
    sorted.sort_by(f64::total_cmp);
    let total = acked.load(Ordering::Relaxed);
    let report = json!({
        "seconds": elapsed,
        "connections": args.connections,
        "batch": args.batch,
        "events_acknowledged": total,
        "events_per_second_mean": total as f64 / elapsed,
        "events_per_second_median_second": percentile(&sorted, 0.5),
        "events_per_second_min_second": sorted.first().copied().unwrap_or(0.0),
        "acknowledged_per_second": per_second,
        "overloaded_503": overloaded.load(Ordering::Relaxed),
        "request_ms": summary(requests.iter().map(|r| r.1).collect()),
        "probes": probes.len(),
        "probes_without_change": missing,
        "accepted_to_entered_ms": summary(accepted_to_entered),
        "sent_to_entered_ms": summary(sent_to_entered),
        "server_accepted_to_change_ms": summary(seen.server_ms),
        "changes_seen": seen.changes,
    });
    if args.json {
        print_json(&report)
    } else {
        println!(
            "{} events acknowledged in {:.1} s: {:.0} events/s (median second {:.0}), {} × 503",
            total,
            elapsed,
            total as f64 / elapsed,
            percentile(&sorted, 0.5),
            report["overloaded_503"]
        );
        println!(
            "probe accepted → entered: p50 {:.1} ms, p99 {:.1} ms ({} probes, {} without a change)",
            report["accepted_to_entered_ms"]["p50"]
                .as_f64()
                .unwrap_or(f64::NAN),
            report["accepted_to_entered_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::NAN),
            probes.len(),
            missing
        );
        Ok(())
    }
}

/// Ask a running server for decisions (`GET /v1/decide`) about random demo customers for a
/// bounded time, on keep-alive connections; report requests per second and latency.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The server (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: String,
    /// A write key (`microseg key create write`).
    #[arg(long)]
    write_key: String,
    /// How long to ask, in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Connections asking at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests per second across connections, paced; latency counts from each request's
    /// planned start (so a stall is not hidden). 0: as fast as answers come.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Customers asked about: the demo shop's `c0000001` up to this.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// What to ask for, cycled per request: `channel=email`, `placement=home_hero`, ...
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "channel=email,placement=home_hero"
    )]
    ask: Vec<String>,
    /// Seed of the customer choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn decide(args: DecideArgs) -> Result<()> {
    let auth = basic(&args.write_key);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let connections = args.connections.max(1);
    let mut workers = Vec::new();
    for w in 0..connections {
        let (host, auth, asks) = (args.server.clone(), auth.clone(), args.ask.clone());
        let (customers, seed) = (args.customers.max(1), args.seed);
        let every =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / args.rate));
        workers.push(std::thread::spawn(
            move || -> Result<(Vec<f64>, HashMap<u16, u64>, u64)> {
                let mut conn = Conn::open(&host)?;
                let mut rng = Rng::new(seed.wrapping_mul(7919).wrapping_add(w as u64));
                let mut latencies = Vec::new();
                let mut statuses: HashMap<u16, u64> = HashMap::new();
                let mut winners = 0;
                let mut planned = Instant::now();
                let mut n = 0usize;
                while planned < deadline {
                    if every.is_some() {
                        std::thread::sleep(planned.saturating_duration_since(Instant::now()));
                    } else {
                        planned = Instant::now();
                    }
                    let who = format!("c{:07}", rng.below(customers) + 1);
                    let ask = &asks[n % asks.len()];
                    n += 1;
                    let (status, body) =
                        conn.get(&format!("/v1/decide?profile={who}&{ask}"), &auth)?;
                    latencies.push(planned.elapsed().as_secs_f64() * 1000.0);
                    *statuses.entry(status).or_default() += 1;
                    if status == 200 && !body.starts_with(b"{\"profile\"") {
                        bail!("unexpected answer: {}", String::from_utf8_lossy(&body));
                    }
                    winners += u64::from(
                        status == 200 && !body.windows(13).any(|b| b == b"\"winner\":null"),
                    );
                    if let Some(every) = every {
                        planned += every;
                    }
                }
                Ok((latencies, statuses, winners))
            },
        ));
    }
    let mut latencies = Vec::new();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut winners = 0;
    for w in workers {
        let (l, s, won) = w.join().expect("worker thread")?;
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        winners += won;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = latencies.len();
    let report = json!({
        "seconds": elapsed,
        "connections": connections,
        "rate_asked": args.rate,
        "requests": requests,
        "requests_per_second": requests as f64 / elapsed,
        "with_a_winner": winners,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "latency_ms": summary(latencies),
    });
    if args.json {
        print_json(&report)
    } else {
        println!(
            "{requests} decisions in {elapsed:.1} s: {:.0} requests/s; p50 {:.2} ms, p99 {:.2} ms; {winners} with a winner; statuses {:?}",
            requests as f64 / elapsed,
            report["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            report["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            report["statuses"],
        );
        Ok(())
    }
}
