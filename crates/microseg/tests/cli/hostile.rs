//! Hostile input, as an attacker with a write key or a careless admin would send it
//! (issue 19's probes and others like them): nothing crashes, nothing bricks the
//! workspace, errors say what and where.

use super::server::{admin_call, http};
use super::Env;

/// Conditions that nest by every kind of node: 20,000 chained operators aborted the
/// server (stack overflow), 128 were saved and then made every command fail.
fn hostile_conditions() -> Vec<String> {
    vec![
        format!("age{} > 1", " + age".repeat(20_000)),
        format!("age{} > 1", " * 2".repeat(128)),
        format!("age{} > 1", " - 1".repeat(128)),
        format!("{}age = 1", "not ".repeat(5_000)),
        format!("{}age = 1{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!(
            "{}age = 1{}",
            "(age = 2 and (age = 3 or ".repeat(40),
            "))".repeat(40)
        ),
        format!(
            "did(e where {}x = 1{})",
            "(x = 1 or ".repeat(100),
            ")".repeat(100)
        ),
        vec!["age = 1"; 11_000].join(" or "),
    ]
}

#[test]
fn hostile_conditions_are_refused_and_never_brick_the_workspace() {
    let env = Env::new();
    let file = env.write("p.csv", b"id,age\na,30\nb,41\nc,19\n");
    env.ok(&["import", "profiles", &file]);
    env.ok(&["segment", "create", "adults", "age >= 21"]);
    for text in hostile_conditions() {
        for args in [
            vec!["segment", "create", "evil", text.as_str()],
            vec!["segment", "size", text.as_str()],
        ] {
            let out = env.run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{}...: {stderr}", &text[..30]);
            assert!(
                stderr.contains("levels of nesting") || stderr.contains("parts in one condition"),
                "{stderr}"
            );
        }
    }
    // A description too long to show in a table is refused; one at the limit is listed.
    let long = "d".repeat(70_000);
    let err = env.fails(&[
        "segment",
        "create",
        "wordy",
        "age > 1",
        "--description",
        &long,
    ]);
    assert!(err.contains("at most 2000 characters"), "{err}");
    let limit = "d".repeat(2_000);
    env.ok(&[
        "segment",
        "create",
        "wordy",
        "age > 1",
        "--description",
        &limit,
    ]);
    // Only the good segments were saved, and every command still works.
    let list = env.json(&["segment", "list", "--json"]);
    let names: Vec<&str> = list["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["adults", "wordy"]);
    let table = env.ok(&["segment", "list"]);
    assert!(table.contains("adults"), "{table}");
}

/// A definition saved by an older version (or edited by hand) that no longer reads back
/// is listed with its error and skipped: the other segments, `serve` and the API work,
/// and `segment delete` repairs it.
#[test]
fn an_unreadable_saved_segment_is_skipped_and_can_be_deleted() {
    let env = Env::new();
    let file = env.write("p.csv", b"id,age\na,30\nb,41\nc,19\n");
    env.ok(&["import", "profiles", &file]);
    env.ok(&["segment", "create", "adults", "age >= 21"]);
    env.ok(&["segment", "create", "young", "age < 21"]);
    env.ok(&[
        "segment",
        "create",
        "old_adults",
        r#"in_segment("adults") and age > 40"#,
    ]);
    // What the old version saved for 128 chained `+`: JSON deeper than a reader allows.
    let mut deep = String::from(r#""age""#);
    for _ in 0..128 {
        deep = format!(r#"{{"op":"add","left":{deep},"right":1.0}}"#);
    }
    let deep = format!(
        r#"{{"type":"compare","left":{deep},"op":"gt","right":{{"kind":"int","value":1}}}}"#
    );
    let store = env.store();
    for (name, json) in [("adults", deep.as_str()), ("young", "{not json")] {
        store
            .execute(
                "UPDATE segments SET definition = ?1 WHERE name = ?2",
                [json, name],
            )
            .unwrap();
    }
    drop(store);
    let list = env.json(&["segment", "list", "--json"]);
    let rows = list["segments"].as_array().unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert!(
        row("adults")["error"]
            .as_str()
            .unwrap()
            .contains("unreadable"),
        "{list}"
    );
    assert!(
        row("young")["error"]
            .as_str()
            .unwrap()
            .contains("unreadable"),
        "{list}"
    );
    // The segment that refers to an unreadable one has an error of its own, not the list.
    assert!(
        row("old_adults")["error"]
            .as_str()
            .unwrap()
            .contains("adults"),
        "{list}"
    );
    let table = env.ok(&["segment", "list"]);
    assert!(table.contains("unreadable"), "{table}");
    assert!(env
        .ok(&["segment", "size", "age > 20"])
        .starts_with("2 of 3"));
    // The server starts and answers.
    let admin = format!("Bearer {}", env.key("admin"));
    {
        let server = env.serve();
        let (status, body) = admin_call(&server.addr, &admin, "GET", "/v1/segments", "");
        assert_eq!(status, 200, "{body}");
        let listed = body["segments"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{body}");
        // Deleting the one still used is refused; the unreadable one can be replaced.
        let (status, body) = admin_call(&server.addr, &admin, "DELETE", "/v1/segments/adults", "");
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("used by old_adults"),
            "{body}"
        );
        let (status, body) = admin_call(
            &server.addr,
            &admin,
            "PUT",
            "/v1/segments/adults",
            r#"{"condition": "age >= 21"}"#,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["size"], 2, "{body}");
        let (status, _) = admin_call(&server.addr, &admin, "DELETE", "/v1/segments/young", "");
        assert_eq!(status, 204);
        let (status, _) = admin_call(&server.addr, &admin, "DELETE", "/v1/segments/young", "");
        assert_eq!(status, 404);
        let (status, body) = admin_call(&server.addr, &admin, "GET", "/v1/segments/old_adults", "");
        assert_eq!((status, body["size"].as_u64()), (200, Some(1)), "{body}");
        // Hostile conditions over the API: a JSON 400 each, and the server lives on.
        for text in hostile_conditions() {
            let body = serde_json::json!({"name": "evil", "condition": text}).to_string();
            let (status, answer) = admin_call(&server.addr, &admin, "POST", "/v1/segments", &body);
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["code"], "invalid_request", "{answer}");
        }
        let (status, _) = http(&server.addr, "GET", "/healthz", &[], b"");
        assert_eq!(status, 200);
    }
    let err = env.fails(&["segment", "delete", "nope"]);
    assert!(err.contains("no segment named 'nope'"), "{err}");
    env.ok(&["segment", "delete", "old_adults"]);
    env.ok(&["segment", "delete", "adults"]);
    let list = env.json(&["segment", "list", "--json"]);
    assert_eq!(list["segments"].as_array().unwrap().len(), 0, "{list}");
    // A name used again goes on with its history of versions.
    let again = env.json(&["segment", "create", "adults", "age >= 18", "--json"]);
    assert_eq!(again["version"], 3, "{again}");
}

/// The log says what was dropped and why, never the value: a mistyped trait holding an
/// e-mail address used to be written to the log at WARN.
#[test]
fn logs_never_hold_trait_or_property_values() {
    let env = Env::new();
    let write = env.key("write");
    let log_path = env.dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = env.serve_logging(&[], log);
    let auth = super::server::basic(&write);
    let secret = "jane.doe@example.com";
    let calls = [
        r#"{"type": "identify", "userId": "u1", "traits": {"age": 31}}"#.to_string(),
        format!(r#"{{"type": "identify", "userId": "u1", "traits": {{"age": "{secret}"}}}}"#),
        format!(r#"{{"type": "identify", "userId": "u1", "traits": {{"tags": [1, "{secret}"]}}}}"#),
        format!(
            r#"{{"type": "track", "userId": "u1", "event": "x", "properties": {{"email": "{secret}"}}}}"#
        ),
    ];
    for call in &calls {
        let body = format!(r#"{{"batch": [{call}]}}"#);
        let (status, answer) = http(
            &server.addr,
            "POST",
            "/v1/batch",
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    }
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("age: a string is not integer"), "{log}");
    assert!(!log.contains(secret), "{log}");
}

/// Polls a tracking call with `key` until it answers `status`; returns how long that took
/// (at most `within`, or the test fails).
fn answers_within(
    addr: &str,
    key: &str,
    status: u16,
    within: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    let auth = super::server::basic(key);
    let body = br#"{"type": "track", "userId": "k", "event": "x"}"#;
    loop {
        let (got, answer) = http(addr, "POST", "/v1/track", &[("Authorization", &auth)], body);
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {got} ({answer}) after {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Revocation and rotation take effect in a running server within a second, and a key
/// deleted from the store stops working too (it used to work until a restart).
#[test]
fn keys_are_revoked_and_rotated_in_a_running_server() {
    let env = Env::new();
    let created = env.json(&["key", "create", "write", "--name", "website"]);
    let (old_id, old) = (
        created["id"].as_i64().unwrap(),
        created["key"].as_str().unwrap().to_string(),
    );
    let admin = env.json(&["key", "create", "admin"]);
    let bearer = format!("Bearer {}", admin["key"].as_str().unwrap());
    let server = env.serve();
    let second = std::time::Duration::from_secs(1);
    answers_within(&server.addr, &old, 200, second);
    // Rotation: the new key works at once, the old one until the grace ends.
    let rotated = env.json(&["key", "rotate", &old_id.to_string(), "--grace", "3s"]);
    assert_eq!(
        (rotated["kind"].as_str(), rotated["replaces"].as_i64()),
        (Some("write"), Some(old_id))
    );
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    answers_within(&server.addr, &new, 200, second);
    answers_within(&server.addr, &old, 200, second);
    let listed = env.json(&["key", "list", "--json"]);
    let old_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old_id)
        .unwrap()
        .clone();
    assert_eq!(
        (old_row["valid"].as_bool(), old_row["replaced_by"].clone()),
        (Some(true), rotated["id"].clone())
    );
    assert_eq!(old_row["name"], "website");
    answers_within(&server.addr, &old, 401, std::time::Duration::from_secs(5));
    // Revocation: refused within a second.
    let new_id = rotated["id"].as_i64().unwrap().to_string();
    env.ok(&["key", "revoke", &new_id]);
    let took = answers_within(&server.addr, &new, 401, second);
    eprintln!("revocation took effect in {took:?}");
    let err = env.fails(&["key", "rotate", &new_id]);
    assert!(err.contains("no longer valid"), "{err}");
    let err = env.fails(&["key", "revoke", "999"]);
    assert!(err.contains("no key 999"), "{err}");
    // A key deleted from the store by hand.
    let third = env.key("write");
    answers_within(&server.addr, &third, 200, second);
    env.store()
        .execute("DELETE FROM api_keys WHERE kind = 'write'", [])
        .unwrap();
    answers_within(&server.addr, &third, 401, second);
    // An admin token revoked.
    let (status, _) = admin_call(&server.addr, &bearer, "GET", "/v1/segments", "");
    assert_eq!(status, 200);
    env.ok(&["key", "revoke", &admin["id"].to_string()]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, body) = admin_call(&server.addr, &bearer, "GET", "/v1/segments", "");
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
}

impl Env {
    /// Appends `toml` to the workspace's `microseg.toml` (its tables replace the
    /// default ones of the same name).
    pub(crate) fn configure(&self, toml: &str) {
        let path = self.data().join("microseg.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        // Later tables of the same name would be a TOML error: replace the defaults.
        for table in ["[server]", "[limits]", "[webhooks]"] {
            if toml.contains(table) {
                if let Some(start) = text.find(table) {
                    let end = text[start + 1..]
                        .find("\n[")
                        .map_or(text.len(), |e| start + 1 + e + 1);
                    text.replace_range(start..end, "");
                }
            }
        }
        text.push_str(toml);
        std::fs::write(&path, text).unwrap();
    }
}

fn post_batch(addr: &str, auth: &str, calls: &[String]) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"batch": [{}]}}"#, calls.join(","));
    let (status, answer) = http(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", auth)],
        body.as_bytes(),
    );
    (
        status,
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null),
    )
}

fn metric(addr: &str, bearer: &str, line: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", &[("Authorization", bearer)], b"");
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {text}"))
}

/// What a write key can make the workspace hold is bounded: new trait and event names
/// past `[limits]` are refused with 422 and counted, events dated far in the future are
/// refused, and a key sending faster than its rate gets 429 with `Retry-After`.
#[test]
fn a_write_key_cannot_grow_the_workspace_without_bound() {
    let env = Env::new();
    env.configure(
        "[limits]\ntraits = 20\nevent_names = 10\nfuture_minutes = 60\n\
         [server]\nkey_requests_per_second = 1000.0\nkey_burst = 1000\n",
    );
    let auth = super::server::basic(&env.key("write"));
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    let identify = |user: &str, names: std::ops::Range<usize>| {
        let traits: Vec<String> = names.map(|i| format!(r#""t{i}": {i}"#)).collect();
        format!(
            r#"{{"type": "identify", "userId": "{user}", "traits": {{{}}}}}"#,
            traits.join(",")
        )
    };
    // 15 new names fit; 10 more would make 25: refused whole, naming the limit.
    assert_eq!(
        post_batch(&server.addr, &auth, &[identify("a", 0..15)]).0,
        200
    );
    let (status, answer) = post_batch(&server.addr, &auth, &[identify("b", 10..25)]);
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("limit_reached")),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("holds 15 trait names and this request adds 10: at most 20"),
        "{message}"
    );
    // Known names and nulls still work; the probe of thousands of new names is refused.
    assert_eq!(
        post_batch(
            &server.addr,
            &auth,
            &[
                identify("b", 0..15),
                r#"{"type": "identify", "userId": "b", "traits": {"new_but_null": null}}"#.into()
            ]
        )
        .0,
        200
    );
    for round in 0..20 {
        let (status, _) = post_batch(
            &server.addr,
            &auth,
            &[identify("c", 1000 + round * 100..1100 + round * 100)],
        );
        assert_eq!(status, 422);
    }
    assert_eq!(
        metric(
            &server.addr,
            &bearer,
            r#"microseg_limit_refusals_total{limit="traits"}"#
        ),
        21
    );
    // Within one request too: names repeated count once, and one request is refused while
    // the rest of its commit is stored.
    let track = |user: &str, event: &str| {
        format!(r#"{{"type": "track", "userId": "{user}", "event": "{event}"}}"#)
    };
    let events: Vec<String> = (0..10)
        .map(|i| track("a", &format!("e{}", i % 10)))
        .collect();
    assert_eq!(post_batch(&server.addr, &auth, &events).0, 200);
    let (status, answer) = post_batch(
        &server.addr,
        &auth,
        &[track("a", "e0"), track("a", "one_too_many")],
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("[limits] event_names"),
        "{answer}"
    );
    assert_eq!(
        metric(
            &server.addr,
            &bearer,
            r#"microseg_limit_refusals_total{limit="event_names"}"#
        ),
        1
    );
    // Events from 2099 are refused; one within the horizon is taken.
    let dated = |t: &str| {
        format!(r#"{{"type": "track", "userId": "a", "event": "e1", "timestamp": "{t}"}}"#)
    };
    let (status, answer) = post_batch(
        &server.addr,
        &auth,
        &[dated("2024-01-01T00:00:00Z"), dated("2099-01-01T00:00:00Z")],
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("batch[1].timestamp: 2099-01-01"),
        "{answer}"
    );
    assert_eq!(
        metric(
            &server.addr,
            &bearer,
            r#"microseg_limit_refusals_total{limit="future_minutes"}"#
        ),
        1
    );
    let soon = microseg_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 30 * 60_000,
    );
    assert_eq!(
        post_batch(&server.addr, &auth, &[dated(&soon.to_string())]).0,
        200
    );
    // Nothing refused was stored.
    let store = env.store();
    let traits: i64 = store
        .query_row("SELECT count(*) FROM trait_types", [], |r| r.get(0))
        .unwrap();
    let names: i64 = store
        .query_row("SELECT count(*) FROM event_names", [], |r| r.get(0))
        .unwrap();
    assert_eq!((traits, names), (15, 10));
}

#[test]
fn a_key_sending_past_its_rate_is_told_when_to_retry() {
    let env = Env::new();
    env.configure("[server]\nkey_requests_per_second = 1.0\nkey_burst = 5\n");
    let auth = super::server::basic(&env.key("write"));
    let other = super::server::basic(&env.key("write"));
    let server = env.serve();
    let body = br#"{"type": "track", "userId": "a", "event": "x"}"#;
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let (status, head, _) = super::server::try_http(
            &server.addr,
            "POST",
            "/v1/track",
            &[("Authorization", &auth)],
            body,
        )
        .unwrap();
        if status == 429 {
            retry = head
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: ").map(str::to_string));
        }
        statuses.push(status);
    }
    // The burst of 5 passes; at one per second the next ones (sent within a second) wait.
    assert_eq!(&statuses[..5], [200; 5]);
    assert!(
        statuses[5..].iter().filter(|&&s| s == 429).count() >= 2,
        "{statuses:?}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    // Another key has its own bucket.
    let (status, _) = http(
        &server.addr,
        "POST",
        "/v1/track",
        &[("Authorization", &other)],
        body,
    );
    assert_eq!(status, 200);
}

/// A client that sends nothing, or its headers a byte at a time, is cut off after the
/// header timeout; `/metrics` and `/openapi.json` need the admin token unless opened.
#[test]
fn slow_and_idle_connections_are_closed_and_operations_are_private() {
    use std::io::{Read, Write};
    let env = Env::new();
    env.configure("[server]\nheader_timeout_seconds = 1\n");
    let server = env.serve();
    let started = std::time::Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for s in idle.iter_mut().chain(std::iter::once(&mut slow)) {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        // Closed by the server: the read ends (hyper answers a timed-out request with
        // nothing, or a 408) well before the 5 s read timeout.
        let _ = s.read_to_end(&mut buf);
        assert!(
            buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
            "{buf:?}"
        );
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // Served as before for everyone else.
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    for path in ["/metrics", "/openapi.json"] {
        let (status, body) = http(&server.addr, "GET", path, &[], b"");
        assert_eq!(status, 401, "{path}: {body}");
    }
    drop(server);
    env.configure("[server]\npublic_metrics = true\n");
    let server = env.serve();
    for path in ["/metrics", "/openapi.json"] {
        assert_eq!(http(&server.addr, "GET", path, &[], b"").0, 200, "{path}");
    }
}

/// Imports obey the same limits: a one-row CSV with 100,000 columns (which took 150 s and
/// 12.9 GB to size a segment on) is refused at once, and so is a file with more event
/// names than the workspace may hold; nothing of either is stored.
#[test]
fn imports_cannot_add_names_past_the_limits() {
    let env = Env::new();
    env.configure("[limits]\ntraits = 500\nevent_names = 10\n");
    let header: Vec<String> = std::iter::once("id".to_string())
        .chain((0..100_000).map(|i| format!("c{i}")))
        .collect();
    let row: Vec<String> = std::iter::once("u1".to_string())
        .chain((0..100_000).map(|i| i.to_string()))
        .collect();
    let wide = env.write(
        "wide.csv",
        format!("{}\n{}\n", header.join(","), row.join(",")).as_bytes(),
    );
    let started = std::time::Instant::now();
    let out = env.run(&["import", "profiles", &wide]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("100000 new columns would make 100000 trait names; at most 500"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.count("profiles"), 0);
    // Within the limit, fine.
    let narrow = env.write("narrow.csv", b"id,age\nu1,30\n");
    env.ok(&["import", "profiles", &narrow]);
    let mut csv = String::from("user_id,time,event\n");
    for i in 0..20 {
        csv.push_str(&format!("u1,2024-01-01T10:00:00Z,e{i}\n"));
    }
    let events = env.write("events.csv", csv.as_bytes());
    let args = import_events(&events);
    let out = env.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("more than 10 event names"), "{stderr}");
    assert_eq!((env.count("events"), env.count("event_names")), (0, 0));
}

/// `microseg import events FILE` for a `user_id,time,event,...` file.
fn import_events(file: &str) -> Vec<&str> {
    vec![
        "import",
        "events",
        file,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--name",
        "event",
    ]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Webhook URLs cannot smuggle requests or reach the machine's own network, and a
/// receiver answering without end is read no further than its status line.
#[test]
fn webhooks_cannot_be_turned_against_the_network_or_the_server() {
    let env = Env::new();
    let bearer = format!("Bearer {}", env.key("admin"));
    env.ok(&["segment", "create", "everyone", "did(x)"]);
    {
        let server = env.serve();
        let refused = [
            ("http://127.0.0.1:9000/hook", "loopback"),
            ("http://localhost:9000/hook", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
            ("http://[::1]:9000/", "loopback"),
            ("http://10.0.0.7/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://0.0.0.0:9000/", "this network"),
            ("http://2130706433:9000/", "127.0.0.1"),
            (
                "http://example.com/a\r\nX-Injected: 1\r\n\r\nGET /admin HTTP/1.1",
                "is not allowed",
            ),
            ("http://example.com/a b", "is not allowed"),
            ("http://user@example.com/", "user info"),
            ("http://example.com:99999/", "not a port"),
        ];
        for (url, why) in refused {
            let body = serde_json::json!({ "url": url }).to_string();
            let (status, answer) = admin_call(&server.addr, &bearer, "POST", "/v1/webhooks", &body);
            assert_eq!(status, 400, "{url:?}: {answer}");
            let message = answer["message"].as_str().unwrap();
            assert!(
                message.starts_with("url: ") && message.contains(why),
                "{url:?}: {message}"
            );
        }
        let (_, listed) = admin_call(&server.addr, &bearer, "GET", "/v1/webhooks", "");
        assert_eq!(listed["webhooks"].as_array().unwrap().len(), 0);
    }
    // Allowed on purpose: a receiver that answers 200 and then 300 MB.
    env.configure("[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            std::thread::spawn(move || {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 314572800\r\n\r\n");
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..300 {
                    if conn.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let write = super::server::basic(&env.key("write"));
    let server = env.serve();
    let body = serde_json::json!({ "url": format!("http://127.0.0.1:{port}/hook") }).to_string();
    let (status, answer) = admin_call(&server.addr, &bearer, "POST", "/v1/webhooks", &body);
    assert_eq!(status, 201, "{answer}");
    let before = rss_kib(server.child.id());
    for i in 0..5 {
        let call = format!(r#"{{"userId": "u{i}", "event": "x"}}"#);
        let (status, _) = http(
            &server.addr,
            "POST",
            "/v1/track",
            &[("Authorization", &write)],
            call.as_bytes(),
        );
        assert_eq!(status, 200);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let delivered = (0..100)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            metric(&server.addr, &bearer, "microseg_webhook_deliveries_total")
        })
        .find(|&n| n >= 2)
        .expect("deliveries counted");
    let after = rss_kib(server.child.id());
    eprintln!("deliveries {delivered}; RSS {before} KiB -> {after} KiB");
    assert!(
        after < before + 50 * 1024,
        "RSS {before} KiB -> {after} KiB"
    );
    assert_eq!(
        metric(&server.addr, &bearer, "microseg_webhook_failures_total"),
        0
    );
}

/// Every file of the workspace, with its bytes.
fn workspace_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `profile delete` erases a person everywhere: after it, not one byte of their id,
/// traits, other identities or event properties is in any file of the workspace (store,
/// log, snapshots), and they are in no segment; the others are untouched.
#[test]
fn an_erased_person_is_nowhere_in_the_workspace_files() {
    let env = Env::new();
    let secrets = [
        "jane.doe@example.com",
        "+36301234567",
        "JANE-SECRET-PROPERTY",
        "jane-anon-77",
    ];
    let profiles = env.write(
        "p.csv",
        b"id,email,phone,age\njane.doe@example.com,jane.doe@example.com,+36301234567,41\nbob,bob@example.com,+3610000000,35\n",
    );
    env.ok(&["import", "profiles", &profiles]);
    let events = env.write(
        "e.csv",
        b"user_id,time,event,note\njane.doe@example.com,2024-01-01T10:00:00Z,order_completed,JANE-SECRET-PROPERTY\nbob,2024-01-02T10:00:00Z,order_completed,bob's note\njane.doe@example.com,2024-01-03T10:00:00Z,page_viewed,\njane.doe@example.com,yesterday,page_viewed,rejected with her id\nbob,yesterday,page_viewed,bob rejected\n",
    );
    let import = import_events(&events);
    env.ok(&import);
    // An anonymous visit of hers, linked through the server, and snapshots built.
    let write = super::server::basic(&env.key("write"));
    {
        let server = env.serve();
        let call = br#"{"batch": [{"type": "track", "anonymousId": "jane-anon-77", "event": "page_viewed", "properties": {"note": "JANE-SECRET-PROPERTY"}}, {"type": "identify", "anonymousId": "jane-anon-77", "userId": "jane.doe@example.com", "traits": {"city": "Szeged"}}]}"#;
        let (status, body) = http(
            &server.addr,
            "POST",
            "/v1/batch",
            &[("Authorization", &write)],
            call,
        );
        assert_eq!(status, 200, "{body}");
        // The workspace is the server's while it runs.
        let out = env.run(&["profile", "delete", "jane.doe@example.com"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("in use by microseg serve"), "{stderr}");
        let out = env.run(&import);
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use by microseg serve"));
    }
    env.ok(&["segment", "create", "buyers", "did(order_completed)"]);
    env.ok(&["segment", "create", "quiet", "not did(page_viewed)"]);
    assert!(env.ok(&["segment", "size", "buyers"]).starts_with("2 of 2"));
    let before = workspace_files(&env.data());
    assert!(
        before.iter().any(|(_, b)| holds(b, secrets[2])),
        "the test has data to erase"
    );
    assert!(
        before
            .iter()
            .any(|(p, b)| p.starts_with(env.data().join("logs")) && holds(b, secrets[0])),
        "a rejected row of hers is in the logs"
    );
    assert!(before
        .iter()
        .any(|(p, _)| p.extension().is_some_and(|e| e == "snap")));
    let erased = env.json(&["profile", "delete", "jane.doe@example.com", "--json"]);
    assert_eq!(
        (
            erased["profiles"].as_u64(),
            erased["events"].as_u64(),
            erased["identities"].as_u64()
        ),
        (Some(2), Some(3), Some(2)),
        "her profile and the anonymous one merged into it; 2 imported events and 1 tracked; \
         her id as the import recorded it and the anonymous id: {erased}"
    );
    for (path, bytes) in workspace_files(&env.data()) {
        for secret in secrets {
            assert!(
                !holds(&bytes, secret),
                "{secret} still in {}",
                path.display()
            );
        }
    }
    // The import's rejects file lost her line and kept Bob's.
    let rejects = workspace_files(&env.data().join("logs"));
    assert!(rejects.iter().any(|(_, b)| holds(b, "bob rejected")));
    // In no segment, not even "everyone else"; Bob as before.
    assert!(env.ok(&["segment", "size", "buyers"]).starts_with("1 of 1"));
    // Bob never viewed a page; her tombstone, without events, is not counted either.
    assert!(env.ok(&["segment", "size", "quiet"]).starts_with("1 of 1"));
    assert!(env
        .ok(&["segment", "size", "age > 0"])
        .starts_with("1 of 1"));
    let out = env.run(&["profile", "show", "jane.doe@example.com"]);
    assert_eq!(out.status.code(), Some(4));
    let out = env.run(&["profile", "delete", "jane.doe@example.com"]);
    assert_eq!(out.status.code(), Some(4));
    // The server starts on the erased workspace, and she can come back as somebody new.
    let server = env.serve();
    let (status, _) = http(
        &server.addr,
        "POST",
        "/v1/identify",
        &[("Authorization", &write)],
        br#"{"userId": "jane.doe@example.com", "traits": {"age": 42}}"#,
    );
    assert_eq!(status, 200);
}

/// `DELETE /v1/profiles/{id}` on a running server: the person leaves every segment at
/// once without a change published, what a failing webhook still held for them is never
/// delivered, nothing of them is logged, and once the server has stopped no workspace
/// file holds their id or values.
#[test]
fn the_server_erases_a_person_everywhere() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    let secret_id = "jane.doe@example.com";
    let secret_value = "JANE-SECRET-PROPERTY";
    env.ok(&["segment", "create", "buyers", "did(order_completed)"]);
    env.configure("[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n");
    // A receiver that fails until told to accept, and keeps what it accepted.
    let accept = Arc::new(AtomicBool::new(false));
    let (got, delivered) = std::sync::mpsc::channel::<String>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    {
        let accept = accept.clone();
        std::thread::spawn(move || {
            use std::io::{BufRead, Read, Write};
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let (mut head, mut line) = (String::new(), String::new());
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    head.push_str(&line);
                    line.clear();
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let ok = accept.load(Ordering::SeqCst);
                let status = if ok {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                if ok {
                    let _ = got.send(String::from_utf8_lossy(&body).to_string());
                }
            }
        });
    }
    let write = super::server::basic(&env.key("write"));
    let bearer = format!("Bearer {}", env.key("admin"));
    let log_path = env.dir.path().join("serve.log");
    let server = env.serve_logging(&[], std::fs::File::create(&log_path).unwrap());
    let hook = serde_json::json!({ "url": format!("http://127.0.0.1:{port}/hook") }).to_string();
    assert_eq!(
        admin_call(&server.addr, &bearer, "POST", "/v1/webhooks", &hook).0,
        201
    );
    let calls = format!(
        r#"{{"batch": [
            {{"type": "identify", "userId": "{secret_id}", "traits": {{"email": "{secret_id}", "age": 41}}}},
            {{"type": "track", "userId": "{secret_id}", "event": "order_completed", "properties": {{"note": "{secret_value}"}}}},
            {{"type": "track", "anonymousId": "anon-9", "userId": "{secret_id}", "event": "page_viewed"}},
            {{"type": "track", "userId": "bob", "event": "order_completed"}}
        ]}}"#
    );
    let (status, answer) = http(
        &server.addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &write)],
        calls.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let members = |addr: &str| {
        let (_, m) = admin_call(addr, &bearer, "GET", "/v1/segments/buyers/members", "");
        let mut list: Vec<String> = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        list.sort();
        list
    };
    let started = std::time::Instant::now();
    while members(&server.addr).len() < 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The webhook is failing, so both "entered" changes wait in its buffer.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let path = format!("/v1/profiles/{secret_id}");
    let (status, erased) = admin_call(&server.addr, &bearer, "DELETE", &path, "");
    assert_eq!(status, 200, "{erased}");
    assert_eq!(
        (
            erased["profiles"].as_u64(),
            erased["events"].as_u64(),
            erased["identities"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "one profile, her two events, her anonymous id: {erased}"
    );
    assert_eq!(members(&server.addr), ["bob"]);
    assert_eq!(admin_call(&server.addr, &bearer, "GET", &path, "").0, 404);
    assert_eq!(
        admin_call(&server.addr, &bearer, "DELETE", &path, "").0,
        404
    );
    // The webhook recovers: Bob's change arrives, hers never does.
    accept.store(true, Ordering::SeqCst);
    let body = delivered
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a delivery");
    assert!(body.contains("\"bob\""), "{body}");
    assert!(!body.contains(secret_id), "{body}");
    // She can come back as somebody new; the segment follows.
    let again = format!(r#"{{"userId": "{secret_id}", "event": "page_viewed"}}"#);
    assert_eq!(
        http(
            &server.addr,
            "POST",
            "/v1/track",
            &[("Authorization", &write)],
            again.as_bytes()
        )
        .0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(members(&server.addr), ["bob"]);
    let (status, _) = admin_call(&server.addr, &bearer, "DELETE", &path, "");
    assert_eq!(status, 200);
    // Stopped as an operator stops it (SIGTERM): SQLite folds the log into the file.
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut server = server;
    let stopped = server.child.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
    for (file, bytes) in workspace_files(&env.data()) {
        for secret in [secret_id, secret_value, "anon-9"] {
            assert!(
                !holds(&bytes, secret),
                "{secret} still in {}",
                file.display()
            );
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("person erased"), "{log}");
    assert!(
        !log.contains(secret_id) && !log.contains(secret_value),
        "{log}"
    );
}

/// Retention: `prune` deletes the events older than the setting (or `--days`), the
/// server does it when it starts, and what is left is what segments see.
#[test]
fn retention_deletes_old_events() {
    let env = Env::new();
    let day = 86_400_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = |days_ago: i64| microseg_core::Timestamp(now - days_ago * day).to_string();
    let csv = format!(
        "user_id,time,event\na,{},order_completed\na,{},page_viewed\nb,{},order_completed\nc,{},order_completed\n",
        at(400),
        at(5),
        at(100),
        at(2)
    );
    let file = env.write("e.csv", csv.as_bytes());
    env.ok(&import_events(&file));
    assert!(env
        .ok(&["segment", "size", "did(order_completed)"])
        .starts_with("3 of 3"));
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(2), "no setting, no --days");
    let pruned = env.json(&["prune", "--days", "365", "--json"]);
    assert_eq!(pruned["deleted"], 1, "{pruned}");
    assert!(env
        .ok(&["segment", "size", "did(order_completed)"])
        .starts_with("2 of 3"));
    env.configure("[limits]\nretention_days = 30\n");
    {
        let _server = env.serve();
    }
    assert_eq!(
        env.count("events"),
        2,
        "the server pruned b's order at start"
    );
    assert!(env
        .ok(&["segment", "size", "did(order_completed)"])
        .starts_with("1 of 3"));
    // While it runs, too: an event 40 days old sent now is gone within a pass.
    let auth = super::server::basic(&env.key("write"));
    let server = env.serve_with(&["--retention-every", "1s"]);
    let old = format!(
        r#"{{"userId": "d", "event": "x", "timestamp": "{}"}}"#,
        at(40)
    );
    let (status, _) = http(
        &server.addr,
        "POST",
        "/v1/track",
        &[("Authorization", &auth)],
        old.as_bytes(),
    );
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    while env.count("events") > 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not pruned"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(server);
}

/// A write key cannot fuse two known customers through `alias` (an anonymous visitor is
/// still merged into the customer), and a time with an impossible offset is refused.
#[test]
fn alias_cannot_merge_two_customers_and_offsets_are_checked() {
    let env = Env::new();
    let auth = super::server::basic(&env.key("write"));
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    let send = |calls: &[&str]| {
        let calls: Vec<String> = calls.iter().map(|c| c.to_string()).collect();
        post_batch(&server.addr, &auth, &calls)
    };
    let track = |who: &str| format!(r#"{{"type": "track", "userId": "{who}", "event": "x"}}"#);
    assert_eq!(send(&[&track("u1"), &track("u2")]).0, 200);
    let (status, answer) = send(&[r#"{"type": "alias", "previousId": "u1", "userId": "u2"}"#]);
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("limit_reached")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("two known customers"),
        "{answer}"
    );
    // Both made in the same request: skipped at the write, counted.
    let (status, _) = send(&[
        &track("u3"),
        &track("u4"),
        r#"{"type": "alias", "previousId": "u3", "userId": "u4"}"#,
    ]);
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &server.addr,
            &bearer,
            r#"microseg_limit_refusals_total{limit="alias_merges_customers"}"#
        ),
        2
    );
    // An anonymous visitor is merged as before.
    let anon = r#"{"type": "track", "anonymousId": "a1", "event": "x"}"#;
    assert_eq!(
        send(&[
            anon,
            r#"{"type": "alias", "previousId": "a1", "userId": "u1"}"#
        ])
        .0,
        200
    );
    drop(server);
    let merged: Vec<String> = env
        .store()
        .prepare("SELECT external_id FROM profiles WHERE merged_into IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(merged, ["anonymous:a1"]);
    let server = env.serve();
    let late = r#"{"type": "track", "userId": "u1", "event": "x", "timestamp": "2024-01-01T00:00:00+25:00"}"#;
    let (status, answer) = post_batch(&server.addr, &auth, &[late.to_string()]);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("batch[0].timestamp"),
        "{answer}"
    );
}

/// Bodies that cannot be read get the documented JSON errors: a broken chunked body is a
/// 400 (it used to be called too large), an oversized one a 413.
#[test]
fn broken_bodies_get_the_documented_json_errors() {
    use std::io::{Read, Write};
    let env = Env::new();
    let auth = super::server::basic(&env.key("write"));
    let server = env.serve();
    let raw = |request: Vec<u8>| {
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        s.write_all(&request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let broken = raw(format!(
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
    ).into_bytes());
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    assert!(broken.contains(r#""code":"invalid_request""#), "{broken}");
    let body = vec![b' '; 600_000];
    let mut request = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend(body);
    let large = raw(request);
    assert!(large.starts_with("HTTP/1.1 413"), "{large}");
    assert!(large.contains(r#""code":"payload_too_large""#), "{large}");
}
