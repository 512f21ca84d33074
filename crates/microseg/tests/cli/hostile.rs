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
