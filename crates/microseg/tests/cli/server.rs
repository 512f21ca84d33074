//! The HTTP server end to end: every ingestion endpoint with good and bad payloads,
//! changes as server-sent events, `kill -9` after acknowledged batches, and Segment's own
//! Python library pointed at the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::Env;

/// A running `microseg serve` (killed when dropped).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    pub(crate) fn key(&self, kind: &str) -> String {
        self.json(&["key", "create", kind])["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub(crate) fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// `microseg serve` on a free port with more options.
    pub(crate) fn serve_with(&self, options: &[&str]) -> Server {
        self.serve_logging(options, Stdio::null())
    }

    /// `microseg serve` with its log (stderr) sent to `log`.
    pub(crate) fn serve_logging(&self, options: &[&str], log: impl Into<Stdio>) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(options);
        let mut child = self
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start microseg serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        Server { child, addr }
    }
}

/// One HTTP/1.1 request; returns (status, body).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = try_http(addr, method, path, headers, body).unwrap();
    (status, body)
}

/// One HTTP/1.1 request; returns (status, head, body), or the I/O error.
pub(crate) fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_string(), body.to_string()))
}

/// A management call with the admin token; returns the status and the JSON body (`null`
/// when there is none).
pub(crate) fn admin_call(
    addr: &str,
    bearer: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (s, b) = http(
        addr,
        method,
        path,
        &[("Authorization", bearer)],
        body.as_bytes(),
    );
    (
        s,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    )
}

pub(crate) fn basic(key: &str) -> String {
    // base64 of "key:" by hand (the test does not share the server's encoder).
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{key}:").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// A `/v1/batch` body of `size` track calls with message ids `{tag}-{i}`, spread over
/// `users` users.
fn track_batch(tag: &str, size: usize, users: usize) -> String {
    let calls: Vec<String> = (0..size)
        .map(|i| {
            format!(
                r#"{{"type":"track","userId":"u{}","event":"e","messageId":"{tag}-{i}","properties":{{"path":"/p/{i}"}}}}"#,
                i % users
            )
        })
        .collect();
    format!(r#"{{"batch":[{}]}}"#, calls.join(","))
}

#[test]
fn every_endpoint_accepts_the_spec_and_names_what_is_wrong() {
    let env = Env::new();
    let (write, admin) = (env.key("write"), env.key("admin"));
    env.ok(&[
        "segment",
        "create",
        "winter",
        r#"did(page_viewed where path starts_with "/winter") within 7d"#,
    ]);
    let server = env.serve();
    let auth = basic(&write);
    let bearer = format!("Bearer {admin}");
    // The change stream, opened before anything happens.
    let mut sse = TcpStream::connect(&server.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        sse,
        "GET /v1/changes HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let post = |path: &str, body: &str| {
        http(
            &server.addr,
            "POST",
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let good = [
        (
            "/v1/identify",
            r#"{"userId": "u1", "traits": {"plan": "pro", "age": 31, "address": {"city": "Graz"}}}"#,
        ),
        (
            "/v1/track",
            r#"{"userId": "u1", "event": "Order Completed", "properties": {"revenue": 42.5}, "messageId": "m-1", "timestamp": "2026-01-05T10:00:00.000+00:00"}"#,
        ),
        (
            "/v1/page",
            r#"{"anonymousId": "a1", "name": "Gloves", "category": "Winter", "properties": {"path": "/winter/gloves"}}"#,
        ),
        ("/v1/screen", r#"{"userId": "u1", "name": "Home"}"#),
        (
            "/v1/group",
            r#"{"userId": "u1", "groupId": "acme", "traits": {"employees": 50}}"#,
        ),
        (
            "/v1/identify",
            r#"{"anonymousId": "a1", "traits": {"source": "ad"}}"#,
        ),
        ("/v1/alias", r#"{"previousId": "a1", "userId": "u2"}"#),
    ];
    for (path, body) in good {
        assert_eq!(
            post(path, body),
            (200, r#"{"success":true}"#.to_string()),
            "{path}"
        );
    }
    // A retry of the same messageId is stored once.
    assert_eq!(post("/v1/track", good[1].1).0, 200);
    let bad = [
        ("/v1/track", r#"{"userId": "u1"}"#, 400, "event: missing"),
        (
            "/v1/track",
            r#"{"event": "x"}"#,
            400,
            "userId: missing: give userId or anonymousId",
        ),
        ("/v1/group", r#"{"userId": "u1"}"#, 400, "groupId: missing"),
        (
            "/v1/alias",
            r#"{"userId": "u1"}"#,
            400,
            "previousId: missing",
        ),
        (
            "/v1/identify",
            r#"{"userId": "u1", "traits": [1]}"#,
            400,
            "traits: must be an object",
        ),
        (
            "/v1/batch",
            r#"{"batch": [{"type": "track", "userId": "u", "event": "a"}, {"type": "track", "userId": "u"}]}"#,
            400,
            "batch[1].event: missing",
        ),
        ("/v1/page", "{oops", 400, "body: not valid JSON"),
    ];
    for (path, body, status, message) in bad {
        let (s, b) = post(path, body);
        assert_eq!(s, status, "{path} {body}: {b}");
        let json: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert!(
            json["message"].as_str().unwrap().starts_with(message),
            "{b}"
        );
        assert_eq!(json["code"], "invalid_request");
    }
    let (s, b) = http(
        &server.addr,
        "POST",
        "/v1/track",
        &[("Authorization", &basic("nope"))],
        br#"{"userId":"u","event":"x"}"#,
    );
    assert_eq!((s, b.contains("unknown write key")), (401, true));
    let (s, _) = http(
        &server.addr,
        "POST",
        "/v1/track",
        &[],
        br#"{"userId":"u","event":"x"}"#,
    );
    assert_eq!(s, 401);
    // The body's writeKey works too (Segment's libraries send both).
    let body = format!(
        r#"{{"writeKey": "{write}", "batch": [{{"type": "track", "userId": "u3", "event": "x"}}]}}"#
    );
    assert_eq!(
        http(&server.addr, "POST", "/v1/batch", &[], body.as_bytes()).0,
        200
    );
    // Gzipped bodies (Segment's libraries can compress), and a broken one.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"batch": [{"type": "track", "userId": "u3", "event": "zipped"}]}"#)
        .unwrap();
    let gzipped = gz.finish().unwrap();
    let zip_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Encoding", "gzip"),
    ];
    assert_eq!(
        http(&server.addr, "POST", "/v1/batch", &zip_headers, &gzipped).0,
        200
    );
    let (s, b) = http(
        &server.addr,
        "POST",
        "/v1/batch",
        &zip_headers,
        &gzipped[..gzipped.len() / 2],
    );
    assert_eq!((s, b.contains("bad gzip")), (400, true), "{b}");
    // Over Segment's limits: 32 KB per message, 500 KB per batch.
    let big = format!(
        r#"{{"userId": "u1", "event": "x", "properties": {{"pad": "{}"}}}}"#,
        "y".repeat(33 * 1024)
    );
    let (s, b) = post("/v1/track", &big);
    assert_eq!(s, 413, "{b}");
    let huge = format!(r#"{{"batch": [{}]}}"#, vec![r#"{"type":"track","userId":"u","event":"x","properties":{"pad":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}}"#; 5000].join(","));
    assert_eq!(post("/v1/batch", &huge).0, 413);

    // Stored: 2 tracks (one deduplicated), page, screen, x and zipped for u3 = 5 events;
    // profiles u1, anonymous:a1 (merged into u2), u2, u3.
    assert_eq!(env.count("events"), 5);
    let merged: i64 = env
        .store()
        .query_row(
            "SELECT count(*) FROM profiles WHERE merged_into IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(merged, 1);
    let (s, b) = http(
        &server.addr,
        "GET",
        "/v1/profiles/u1",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 200, "{b}");
    let p: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(p["traits"]["plan"], "pro");
    assert_eq!(p["traits"]["address.city"], "Graz");
    assert_eq!(p["traits"]["group_id"], "acme");
    assert_eq!(p["traits"]["group.employees"], 50);
    // The anonymous page view followed the alias: u2 is in the segment, a1 left it.
    let (_, b) = http(
        &server.addr,
        "GET",
        "/v1/segments/winter/members",
        &[("Authorization", &bearer)],
        b"",
    );
    let m: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(m["members"], serde_json::json!(["u2"]));
    // The batch evaluator reads the same store the same way: the merged profile's page
    // view is u2's, and the retired anonymous profile is in no segment.
    let batch = env.json(&["segment", "members", "winter", "--format", "json"]);
    assert_eq!(batch["members"], serde_json::json!(["u2"]));
    let winter = env.json(&["segment", "size", "winter", "--json"]);
    assert_eq!(winter["size"], 1, "{winter}");
    // The anonymous profile's traits followed it too.
    let (_, b) = http(
        &server.addr,
        "GET",
        "/v1/profiles/u2",
        &[("Authorization", &bearer)],
        b"",
    );
    let u2: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(u2["traits"]["source"], "ad", "{b}");
    let stored: String = env
        .store()
        .query_row(
            "SELECT traits FROM profiles WHERE external_id = 'u2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, r#"{"source":"ad"}"#);
    assert_eq!(http(&server.addr, "GET", "/v1/segments", &[], b"").0, 401);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\"profile\":\"u2\"") {
        let n = sse.read(&mut buf).expect("change stream");
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("event: entered\ndata: {\"kind\":\"entered\",\"segment\":\"winter\",\"profile\":\"anonymous:a1\""), "{seen}");
    assert!(seen.contains("event: exited"), "{seen}");
    let (_, metrics) = http(
        &server.addr,
        "GET",
        "/metrics",
        &[("Authorization", &bearer)],
        b"",
    );
    assert!(
        metrics.contains("microseg_duplicate_messages_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("microseg_rejected_requests_total{status=\"413\"} 2"),
        "{metrics}"
    );
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
}

/// Every refusal is a JSON error from the one table (docs/api.md, Errors), also those the
/// framework makes (a bad query string or path segment, an unknown path or method, a body
/// over the limit), and a failure of the server names no internals.
#[test]
fn every_refusal_is_a_json_error_with_its_code() {
    let env = Env::new();
    let admin = env.key("admin");
    let server = env.serve();
    let bearer = format!("Bearer {admin}");
    let auth = [("Authorization", bearer.as_str())];
    let cases: [(&str, &str, &[u8], u16, &str); 7] = [
        ("GET", "/v1/overlap", b"", 400, "invalid_request"),
        ("GET", "/v1/overlap?segments=a", b"", 400, "invalid_request"),
        (
            "DELETE",
            "/v1/webhooks/not-a-number",
            b"",
            400,
            "invalid_request",
        ),
        ("GET", "/v1/nothing-here", b"", 404, "not_found"),
        ("DELETE", "/v1/segments", b"", 405, "method_not_allowed"),
        ("POST", "/v1/segments", b"{not json", 400, "invalid_request"),
        ("GET", "/v1/segments/nope", b"", 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, b) = http(&server.addr, method, path, &auth, body);
        assert_eq!(s, status, "{method} {path}: {b}");
        let json: serde_json::Value =
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: {e}: {b}"));
        assert_eq!(json["code"], code, "{method} {path}: {b}");
        assert!(!json["message"].as_str().unwrap().is_empty());
    }
    // A management body over axum's 2 MB limit.
    let big = vec![b' '; 3 << 20];
    let (s, b) = http(&server.addr, "POST", "/v1/segments", &auth, &big);
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("payload_too_large"), "{b}");
    // Without a token, the same table.
    let (s, b) = http(&server.addr, "GET", "/v1/segments", &[], b"");
    assert_eq!((s, b.contains("\"unauthorized\"")), (401, true), "{b}");
}

#[test]
fn management_api_backfills_new_and_edited_segments_and_answers_queries() {
    let env = Env::new();
    let (write, admin) = (env.key("write"), env.key("admin"));
    let server = env.serve();
    let auth = basic(&write);
    let bearer = format!("Bearer {admin}");
    let call = |method: &str, path: &str, body: &str| {
        admin_call(&server.addr, &bearer, method, path, body)
    };
    // History before any segment exists (orders are `order_completed`, the default
    // order event of the metrics): u1 three orders (10 + 20 + 30), u2 one (5), u3 a
    // page view; u1 is on the pro plan. Times are the last hours, so inside 30 days.
    let now = microseg_server::now().0;
    let at = |hours: i64| microseg_core::Timestamp(now - hours * 3_600_000).to_string();
    let order = |user: &str, revenue: u32, hours: i64, id: &str| {
        format!(
            r#"{{"type":"track","userId":"{user}","event":"order_completed","messageId":"{id}","timestamp":"{}","properties":{{"revenue":{revenue}}}}}"#,
            at(hours)
        )
    };
    let batch = format!(
        r#"{{"batch":[{},{},{},{},{{"type":"page","userId":"u3","name":"Home","timestamp":"{}"}},{{"type":"identify","userId":"u1","traits":{{"plan":"pro"}}}}]}}"#,
        order("u1", 10, 5, "o1"),
        order("u1", 20, 4, "o2"),
        order("u1", 30, 3, "o3"),
        order("u2", 5, 2, "o4"),
        at(1)
    );
    let (s, b) = http(
        &server.addr,
        "POST",
        "/v1/batch",
        &[("Authorization", auth.as_str())],
        batch.as_bytes(),
    );
    assert_eq!(s, 200, "{b}");

    // Create: backfilled from the stored history; u1 exactly three orders (a commit
    // applied twice would make it four).
    let (s, r) = call(
        "POST",
        "/v1/segments",
        r#"{"name": "three", "condition": "count(order_completed, within 30d) = 3"}"#,
    );
    assert_eq!(s, 201, "{r}");
    assert_eq!(
        (r["size"].as_u64(), r["version"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["streaming"], true);
    let (s, r) = call(
        "POST",
        "/v1/segments",
        r#"{"name": "repeat", "condition": "count(order_completed, within 30d) >= 2", "description": "bought twice"}"#,
    );
    assert_eq!((s, r["size"].as_u64()), (201, Some(1)), "{r}");
    // Refusals name what is wrong.
    for (body, status, says) in [
        (
            r#"{"name": "repeat", "condition": "orders > 1"}"#,
            409,
            "already exists",
        ),
        (
            r#"{"name": "bad name!", "condition": "orders > 1"}"#,
            400,
            "segment name",
        ),
        (
            r#"{"name": "x", "condition": "orders >"}"#,
            400,
            "condition:",
        ),
        (
            r#"{"name": "x", "condition": "in_segment(\"nope\")"}"#,
            400,
            "nope",
        ),
        (
            r#"{"name": "x", "condition": "plan > 3"}"#,
            400,
            "condition:",
        ),
        (r#"{"condition": "orders > 1"}"#, 400, "name: missing"),
        (r#"{"name": "x", "cond": "orders > 1"}"#, 400, "body:"),
    ] {
        let (s, r) = call("POST", "/v1/segments", body);
        assert_eq!(s, status, "{body}: {r}");
        assert!(
            r["message"].as_str().unwrap_or_default().contains(says),
            "{body}: {r}"
        );
    }
    assert_eq!(
        http(&server.addr, "POST", "/v1/segments", &[], b"{}").0,
        401
    );
    // Edit: the next version, backfilled again.
    let (s, r) = call(
        "PUT",
        "/v1/segments/repeat",
        r#"{"condition": "count(order_completed, within 30d) >= 1"}"#,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["version"].as_i64(), r["size"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(r["description"], "bought twice");
    assert_eq!(
        call("PUT", "/v1/segments/nope", r#"{"condition": "orders > 1"}"#).0,
        404
    );
    let (s, r) = call("GET", "/v1/segments/repeat", "");
    assert_eq!(s, 200);
    assert_eq!(r["condition"], "count(order_completed, within 30d) >= 1");
    let (s, r) = call(
        "POST",
        "/v1/segments",
        r#"{"name": "pro", "condition": "plan = \"pro\""}"#,
    );
    assert_eq!((s, r["size"].as_u64()), (201, Some(1)), "{r}");
    let (_, list) = call("GET", "/v1/segments", "");
    let names: Vec<&str> = list["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pro", "repeat", "three"]);

    // Overlap: repeat = {u1, u2}, pro = {u1}: one in common, Jaccard 1/2.
    let (s, r) = call("GET", "/v1/overlap?segments=repeat,pro", "");
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["pairs"][0]["intersection"], 1);
    assert_eq!(r["pairs"][0]["jaccard"], 0.5);
    assert_eq!(call("GET", "/v1/overlap?segments=repeat", "").0, 400);

    // Explain agrees with membership, and shows what the leaf saw.
    let (s, r) = call("GET", "/v1/segments/three/explain?profile=u1", "");
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["member"].as_bool(), r["explanation"]["matched"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, r) = call("GET", "/v1/segments/three/explain?profile=u2", "");
    assert_eq!(
        (r["member"].as_bool(), r["explanation"]["matched"].as_bool()),
        (Some(false), Some(false)),
        "{r}"
    );
    assert!(
        r["explanation"]["saw"]
            .as_str()
            .unwrap_or_default()
            .contains('1'),
        "{r}"
    );
    assert_eq!(
        call("GET", "/v1/segments/three/explain?profile=nobody", "").0,
        404
    );

    // Profile: metrics by hand (3 orders, 60 revenue, 20 average), newest event first.
    let (s, p) = call("GET", "/v1/profiles/u1?events=2", "");
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["metrics"]["orders"], 3);
    assert_eq!(p["metrics"]["revenue"], 60.0);
    assert_eq!(p["metrics"]["aov"], 20.0);
    assert_eq!(p["segments"], serde_json::json!(["pro", "repeat", "three"]));
    let events = p["recent_events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["properties"]["revenue"], 30);
    assert_eq!(events[1]["properties"]["revenue"], 20);

    // Events after the rebuild still move memberships: u3 orders and joins `repeat`.
    let (s, _) = http(
        &server.addr,
        "POST",
        "/v1/batch",
        &[("Authorization", auth.as_str())],
        format!(r#"{{"batch":[{}]}}"#, order("u3", 7, 0, "o5")).as_bytes(),
    );
    assert_eq!(s, 200);
    let mut members = serde_json::Value::Null;
    for _ in 0..100 {
        members = call("GET", "/v1/segments/repeat/members", "").1["members"].clone();
        if members.as_array().is_some_and(|m| m.len() == 3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(members, serde_json::json!(["u1", "u2", "u3"]));
}

/// HMAC-SHA256 by RFC 2104, written here apart from the server's.
fn hmac(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = key.to_vec();
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), message].concat());
    let outer = Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn webhooks_are_retried_with_back_off_and_signed() {
    let env = Env::new();
    let (write, admin) = (env.key("write"), env.key("admin"));
    env.ok(&["segment", "create", "buyer", "did(order_completed)"]);
    // A receiver that fails twice with 500, then accepts; it keeps what it was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut head, mut line) = (String::new(), String::new());
            while reader.read_line(&mut line).unwrap() > 2 {
                head.push_str(&line);
                line.clear();
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n < 2 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            let _ = got.send((
                std::time::Instant::now(),
                head,
                String::from_utf8(body).unwrap(),
            ));
        }
    });
    // A receiver on this machine must be allowed: loopback is denied by default.
    env.configure("[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n");
    let server = env.serve();
    let bearer = format!("Bearer {admin}");
    let call = |method: &str, path: &str, body: &str| {
        admin_call(&server.addr, &bearer, method, path, body)
    };
    for (body, says) in [
        (r#"{"url": "https://example.com/x"}"#, "relay"),
        (
            r#"{"url": "http://127.0.0.1:1/x", "segments": ["nope"]}"#,
            "no segment 'nope'",
        ),
        (r#"{"uri": "http://127.0.0.1:1/x"}"#, "body:"),
    ] {
        let (s, r) = call("POST", "/v1/webhooks", body);
        assert_eq!(s, 400, "{body}: {r}");
        assert!(r["message"].as_str().unwrap().contains(says), "{r}");
    }
    let (s, hook) = call(
        "POST",
        "/v1/webhooks",
        &format!(r#"{{"url": "http://127.0.0.1:{port}/hook", "segments": ["buyer"]}}"#),
    );
    assert_eq!(s, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    let sent = std::time::Instant::now();
    let (s, b) = http(
        &server.addr,
        "POST",
        "/v1/track",
        &[("Authorization", basic(&write).as_str())],
        br#"{"userId": "u1", "event": "order_completed"}"#,
    );
    assert_eq!(s, 200, "{b}");
    // Three attempts: two refused, then delivered, at least 0.5 s and 1 s apart.
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            received
                .recv_timeout(Duration::from_secs(20))
                .expect("a delivery")
        })
        .collect();
    assert!(attempts[1].0 - attempts[0].0 >= Duration::from_millis(450));
    assert!(attempts[2].0 - attempts[1].0 >= Duration::from_millis(950));
    assert!(attempts[2].0 - sent < Duration::from_secs(10));
    let (_, head, body) = &attempts[2];
    let delivered: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(delivered["webhook"], hook["id"]);
    assert_eq!(delivered["changes"][0]["kind"], "entered");
    assert_eq!(delivered["changes"][0]["segment"], "buyer");
    assert_eq!(delivered["changes"][0]["profile"], "u1");
    // `t=SECONDS,sha256=HMAC(secret, "SECONDS." + body)`, SECONDS the time of sending.
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Microseg-Signature: "))
        .unwrap_or_else(|| panic!("{head}"));
    let (t, mac) = signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",sha256="))
        .unwrap_or_else(|| panic!("{signature}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - t.parse::<i64>().unwrap()).abs() < 60, "{signature}");
    assert_eq!(
        mac,
        hmac(secret.as_bytes(), format!("{t}.{body}").as_bytes())
    );
    assert_eq!(attempts[0].2, *body, "a retry sends the same batch");
    // The server counts the delivery once the receiver has closed the connection.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(
            &server.addr,
            "GET",
            "/metrics",
            &[("Authorization", &bearer)],
            b"",
        )
        .1;
        if metrics.contains("microseg_webhook_deliveries_total 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metrics.contains("microseg_webhook_deliveries_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("microseg_webhook_failures_total 2"),
        "{metrics}"
    );
    // Listed without its secret; deleted once.
    let (_, list) = call("GET", "/v1/webhooks", "");
    assert_eq!(
        list["webhooks"][0]["segments"],
        serde_json::json!(["buyer"])
    );
    assert!(list["webhooks"][0].get("secret").is_none());
    let path = format!("/v1/webhooks/{}", hook["id"]);
    assert_eq!(call("DELETE", &path, "").0, 204);
    assert_eq!(call("DELETE", &path, "").0, 404);
}

#[test]
fn kill_9_after_acknowledged_batches_loses_none() {
    let env = Env::new();
    let write = env.key("write");
    let server = env.serve();
    let auth = basic(&write);
    let mut acked = 0;
    for b in 0..40 {
        let body = track_batch(&format!("b{b}"), 100, 17);
        let (s, _) = http(
            &server.addr,
            "POST",
            "/v1/batch",
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(s, 200);
        acked += 100;
    }
    let mut server = server;
    // SIGKILL right after the last acknowledgement.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(env.count("events"), acked);
    // Restarted, the same batches resent (a client retry) are recognised as duplicates.
    let server = env.serve();
    let body = r#"{"batch":[{"type":"track","userId":"u1","event":"e","messageId":"b39-99"}]}"#;
    assert_eq!(
        http(
            &server.addr,
            "POST",
            "/v1/batch",
            &[("Authorization", &auth)],
            body.as_bytes()
        )
        .0,
        200
    );
    drop(server);
    assert_eq!(env.count("events"), acked);
}

/// The Python interpreter with the packages of tests/requirements.txt: `./test` makes that
/// environment and sets MICROSEG_PYTHON. Without it these tests fail saying so; they never
/// skip.
pub(crate) fn test_python() -> String {
    std::env::var("MICROSEG_PYTHON").unwrap_or_else(|_| {
        panic!(
            "MICROSEG_PYTHON is not set: run the tests with ./test, which creates the Python \
             environment they need (or point MICROSEG_PYTHON at a Python with the packages of \
             tests/requirements.txt)"
        )
    })
}

/// `/openapi.json` passes openapi-spec-validator 0.9 (installed by ./test), an
/// implementation of the OpenAPI 3.1 rules apart from ours.
#[test]
fn openapi_document_passes_an_independent_validator() {
    let env = Env::new();
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    let (s, doc) = http(
        &server.addr,
        "GET",
        "/openapi.json",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 200);
    let path = env.write("openapi.json", doc.as_bytes());
    let python = test_python();
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             d = json.load(open(sys.argv[1])); validate(d); print(d['openapi'], len(d['paths']))",
            &path,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with ./test)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("3.1.0 "), "{stdout}");
}

/// segment-analytics-python 2.4.0, unmodified, against the server (see
/// ../shared/recipes/segment-client.md). `./test` installs it in its virtual environment.
#[test]
fn segments_own_python_library_works_unmodified() {
    let python = test_python();
    let env = Env::new();
    let write = env.key("write");
    let admin = env.key("admin");
    env.ok(&[
        "segment",
        "create",
        "buyers",
        "count(order_completed) >= 1 and plan = \"pro\"",
    ]);
    let server = env.serve();
    let script = env.write(
        "client.py",
        br#"import sys
from segment.analytics import Client
errors = []
seg = Client(sys.argv[2], host=sys.argv[1], max_retries=1, on_error=lambda e, b: errors.append(str(e)))
seg.identify("u1", {"email": "u1@example.com", "plan": "pro"})
seg.track("u1", "order_completed", {"revenue": 42.5, "currency": "EUR"})
seg.track("u1", "Order Completed", {"order_id": "o2", "total": 30, "products": [{"sku": "g1"}]})
seg.track("u2", "Order Completed", {"order_id": "o3", "revenue": 20, "total": 25})
seg.page("u1", "Docs", "Pricing", {"url": "http://127.0.0.1/pricing"})
seg.track(anonymous_id="anon-123", event="Signed Up")
seg.alias("anon-123", "u1")
seg.group("u1", "acme", {"name": "Acme Inc", "employees": 50})
seg.flush()
seg.shutdown()
bad = Client("not-a-key", host=sys.argv[1], sync_mode=True)
try:
    bad.track("u9", "x")
    print("unexpected success")
except Exception as e:
    print("refused", getattr(e, "status", e))
print("errors", errors)
"#,
    );
    let out = std::process::Command::new(&python)
        .args([&script, &format!("http://{}", server.addr), &write])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with ./test)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused 401"), "{stdout}");
    assert!(stdout.contains("errors []"), "{stdout}");
    let names: Vec<String> = env
        .store()
        .prepare("SELECT name FROM events_named ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        [
            "order_completed",
            "Order Completed",
            "Order Completed",
            "page_viewed",
            "Signed Up"
        ]
    );
    let (_, b) = http(
        &server.addr,
        "GET",
        "/v1/profiles/u1",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    let p: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(p["segments"], serde_json::json!(["buyers"]), "{b}");
    assert_eq!(p["traits"]["group.name"], "Acme Inc");
    // Segment's `Order Completed` is an order without configuration, its `total` the
    // revenue when it has none: 42.5 + 30.
    assert_eq!(p["metrics"]["orders"], 2, "{b}");
    assert_eq!(p["metrics"]["revenue"], 72.5, "{b}");
    drop(server);
    let u2 = env.json(&["profile", "show", "u2", "--json"]);
    assert_eq!(u2["metrics"]["orders"], 1, "{u2}");
    assert_eq!(
        u2["metrics"]["revenue"], 20.0,
        "revenue wins over total: {u2}"
    );
    // The anonymous profile was merged into u1 by the alias.
    let merged: String = env
        .store()
        .query_row(
            "SELECT external_id FROM profiles WHERE merged_into IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(merged, "anonymous:anon-123");
}

/// The write-ahead log's checkpoint sequence number (bytes 12..16 of its header, bumped
/// each time SQLite starts the log over) and the file's size; (0, 0) before it exists.
fn wal_state(env: &Env) -> (u32, u64) {
    match std::fs::read(env.data().join("store.sqlite-wal")) {
        Ok(bytes) if bytes.len() >= 32 => (
            u32::from_be_bytes(bytes[12..16].try_into().unwrap()),
            bytes.len() as u64,
        ),
        _ => (0, 0),
    }
}

#[test]
fn the_write_ahead_log_starts_over_while_commits_follow_each_other() {
    // Without a hand-off between the checkpointer and the writer, SQLite never starts the
    // log over while a commit lands during every checkpoint, and the log grows by every
    // byte written.
    let env = Env::new();
    let write = env.key("write");
    let server = env.serve();
    let auth = basic(&write);
    let (sequence_before, _) = wal_state(&env);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (addr, auth) = (server.addr.clone(), auth.clone());
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while std::time::Instant::now() < until {
                    let body = track_batch(&format!("{c}-{sent}"), 500, 997);
                    let (s, _) = http(
                        &addr,
                        "POST",
                        "/v1/batch",
                        &[("Authorization", &auth)],
                        body.as_bytes(),
                    );
                    assert_eq!(s, 200);
                    sent += 500;
                }
                sent
            })
        })
        .collect();
    let mut largest = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        largest = largest.max(wal_state(&env).1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let (sequence_after, _) = wal_state(&env);
    drop(server);
    let written = env.count("events") as u64;
    assert_eq!(written, sent);
    let database = std::fs::metadata(env.data().join("store.sqlite"))
        .unwrap()
        .len();
    eprintln!(
        "{sent} events, log started over {} times, largest log {} KiB, database {} KiB",
        sequence_after.wrapping_sub(sequence_before),
        largest / 1024,
        database / 1024
    );
    assert!(
        sequence_after.wrapping_sub(sequence_before) >= 2,
        "the log never started over ({sequence_before} -> {sequence_after})"
    );
    assert!(
        largest < database.max(1 << 20),
        "the log ({largest} bytes) grew past the whole database ({database} bytes)"
    );
}

#[test]
fn a_full_queue_answers_503_and_sigterm_finishes_what_was_accepted() {
    // A queue of one request in front of the writer and 12 senders: some requests must be
    // refused with 503 and Retry-After, none of them stored; then SIGTERM while they keep
    // sending: the server stops by itself (exit status 0) with every acknowledged request
    // stored whole.
    let env = Env::new();
    let write = env.key("write");
    let mut server = env.serve_with(&["--queue", "1"]);
    let auth = basic(&write);
    let stop_at = std::time::Instant::now() + Duration::from_secs(4);
    let senders: Vec<_> = (0..12)
        .map(|c| {
            let (addr, auth) = (server.addr.clone(), auth.clone());
            std::thread::spawn(move || {
                // (acknowledged, refused with 503, ended without an answer)
                let (mut acked, mut refused, mut in_doubt) = (0u64, 0u64, 0u64);
                let mut n = 0;
                while std::time::Instant::now() < stop_at {
                    let body = track_batch(&format!("{c}-{n}"), 500, 500);
                    n += 1;
                    match try_http(
                        &addr,
                        "POST",
                        "/v1/batch",
                        &[("Authorization", &auth)],
                        body.as_bytes(),
                    ) {
                        Ok((200, _, _)) => acked += 1,
                        Ok((503, head, body)) if body.contains("overloaded") => {
                            assert!(
                                head.to_ascii_lowercase().contains("retry-after: 1"),
                                "{head}"
                            );
                            refused += 1;
                        }
                        // Stopping: new requests are refused or the port is closed.
                        Ok((503, _, _)) => break,
                        Ok((status, _, body)) => panic!("{status}: {body}"),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                        Err(_) => {
                            in_doubt += 1;
                            break;
                        }
                    }
                }
                (acked, refused, in_doubt)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "the server ended with {status}");
    let (mut acked, mut refused, mut in_doubt) = (0, 0, 0);
    for s in senders {
        let (a, r, d) = s.join().unwrap();
        (acked, refused, in_doubt) = (acked + a, refused + r, in_doubt + d);
    }
    let stored = env.count("events") as u64;
    eprintln!("{acked} acknowledged, {refused} refused, {in_doubt} without an answer, {stored} events stored");
    assert!(refused > 0, "no request was refused with the queue full");
    assert!(acked > 0);
    // Each request whole or not at all; every acknowledged one stored; a refused one never.
    assert_eq!(stored % 500, 0);
    assert!(
        stored >= acked * 500 && stored <= (acked + in_doubt) * 500,
        "{stored} events stored for {acked} acknowledged requests ({in_doubt} in doubt)"
    );
}
