//! Property tests over what anyone can send or an admin can feed (issue 19): the Segment
//! JSON a write key posts, files given to the importers, and conditions saved as
//! segments. Each runs a bounded number of cases in `./test`; for a longer run:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test -p microseg-store --release fuzz_
//! ```
//!
//! A failure proptest finds is shrunk and written to `proptest-regressions/fuzz.txt`
//! (committed), so it is run first ever after; a crash fixed becomes a named test too.

use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

use crate::import::{EventImport, EventName, FileOptions, NoProgress, ProfileImport};
use crate::tracking::{parse_request, Call};
use crate::{Store, Workspace};

/// Keys of the Segment spec and a few others, so generated calls get past the first
/// checks often.
const KEYS: [&str; 16] = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "properties",
    "traits",
    "timestamp",
    "originalTimestamp",
    "messageId",
    "batch",
    "previousId",
    "groupId",
    "name",
    "writeKey",
    "context",
    "revenue",
];

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e300f64..1e300).prop_map(|x| json!(x)),
        "\\PC{0,12}".prop_map(Json::String),
        prop_oneof![
            Just("track"),
            Just("identify"),
            Just("alias"),
            Just("page"),
            Just("2024-01-31T10:00:00Z"),
            Just("2099-01-01T00:00:00+25:00"),
            Just("u1"),
        ]
        .prop_map(|s| Json::String(s.into())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
                        1 => "\\PC{0,8}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Json::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_call() -> impl Strategy<Value = Option<Call>> {
    prop_oneof![
        Just(None),
        Just(Some(Call::Track)),
        Just(Some(Call::Identify)),
        Just(Some(Call::Page)),
        Just(Some(Call::Screen)),
        Just(Some(Call::Group)),
        Just(Some(Call::Alias)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any JSON, and any bytes, give a request or an error naming where; never a panic,
    /// and every accepted message names a person.
    #[test]
    fn fuzz_tracking_requests_are_read_or_refused(
        call in arb_call(),
        body in arb_json(),
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut bytes = serde_json::to_vec(&body).unwrap();
        if let Some((at, byte)) = flip {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
        }
        match parse_request(call, &bytes) {
            Ok(request) => {
                for m in &request.messages {
                    prop_assert!(m.user_id.is_some() || m.anonymous_id.is_some());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// Pieces of CSV and NDJSON lines, odd ones included: quotes, separators, line breaks,
/// invalid UTF-8, very long fields, dates with bad offsets.
fn arb_field() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9]{0,6}".prop_map(String::into_bytes),
        1 => Just(b"2024-01-31T10:00:00Z".to_vec()),
        1 => Just(b"2024-01-31T10:00:00+25:00".to_vec()),
        1 => Just(b"\"quoted, \"\" field\"".to_vec()),
        1 => Just(b"\"unterminated".to_vec()),
        1 => Just(b"caf\xe9".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(vec![b'x'; 5000]),
        1 => Just(b"{\"a\":".to_vec()),
        1 => Just(b"-1e999".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn arb_file() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::collection::vec(arb_field(), 0..7), 0..12).prop_map(|rows| {
        let mut out = b"user,time,event,price\n".to_vec();
        for row in rows {
            out.extend(row.join(&b","[..]));
            out.push(b'\n');
        }
        out
    })
}

fn arb_ndjson() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(arb_json(), 0..8).prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend(serde_json::to_vec(&l).unwrap());
            out.push(b'\n');
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A file of anything imports (every row stored or rejected with its line) or is
    /// refused whole; never a panic, and the workspace stays readable after.
    #[test]
    fn fuzz_imports_store_or_reject_every_row(csv in arb_file(), ndjson in arb_ndjson()) {
        let dir = tempfile::tempdir().unwrap();
        let (ws, _) = Workspace::init(&dir.path().join("ws")).unwrap();
        for (name, content) in [("e.csv", &csv), ("e.ndjson", &ndjson)] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let mut store = Store::open(&ws).unwrap();
            let events = store.import_events(
                &ws,
                &EventImport {
                    file: FileOptions::new(&path),
                    profile_column: "user".into(),
                    time_column: "time".into(),
                    time_format: microseg_core::time::TimeFormat::Auto,
                    name: EventName::Column("event".into()),
                    revenue_column: Some("price".into()),
                },
                &NoProgress,
            );
            if let Ok(s) = &events {
                prop_assert_eq!(s.rows, s.imported + s.rejected);
            }
            let mut file = FileOptions::new(&path);
            file.force = true;
            let profiles = store.import_profiles(
                &ws,
                &ProfileImport {
                    file,
                    id_column: "user".into(),
                    types: Default::default(),
                    skip_columns: Vec::new(),
                },
                &NoProgress,
            );
            if let Ok(s) = &profiles {
                prop_assert_eq!(s.rows, s.imported + s.rejected);
            }
        }
        // Whatever went in reads back.
        let store = Store::open(&ws).unwrap();
        let mut tables = crate::Tables::open(&ws, &store, microseg_core::Timestamp(i64::MAX / 2)).unwrap();
        tables.metrics().unwrap();
    }
}

/// `and`, `or` and `not` over `inner`, to any depth.
fn boolean(inner: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(inner.clone(), 2..4).prop_map(|v| format!("({})", v.join(" and "))),
        prop::collection::vec(inner.clone(), 2..4).prop_map(|v| format!("({})", v.join(" or "))),
        inner.prop_map(|c| format!("not {c}")),
    ]
}

/// Conditions of every shape, up to the depth limit and past it: tests of traits and
/// arithmetic, odd names, and behaviour with `where` filters that nest themselves.
fn arb_deep_condition() -> impl Strategy<Value = String> {
    let property = prop_oneof![
        Just("p > 1".to_string()),
        Just("a + b * (c - 1) / 2 >= 3".to_string()),
        Just("`odd \\ \" name` = \"x\"".to_string()),
        Just("p starts_with \"/w\"".to_string()),
    ]
    .prop_recursive(24, 200, 3, boolean);
    let leaf = prop_oneof![
        Just("age > 1".to_string()),
        // Chains around the limit, of each kind of node.
        (0..40usize).prop_map(|n| format!("{}age > 1", "not ".repeat(n))),
        (0..40usize).prop_map(|n| format!("age{} > 1", " + 1".repeat(n))),
        (0..40usize).prop_map(|n| format!("{}age > 1{}", "(".repeat(n), ")".repeat(n))),
        Just("e then not f within 3d".to_string()),
        Just("in_segment(\"base\")".to_string()),
        property.clone(),
        property.prop_map(|p| format!("did(e where {p}) within 7d")),
    ];
    leaf.prop_recursive(24, 400, 3, boolean)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever parses can be saved and is read back the same; what does not parse is
    /// refused before anything is saved; the store stays readable either way.
    #[test]
    fn fuzz_saved_segments_read_back(text in arb_deep_condition()) {
        let dir = tempfile::tempdir().unwrap();
        let (ws, _) = Workspace::init(&dir.path().join("ws")).unwrap();
        let mut store = Store::open(&ws).unwrap();
        let base = microseg_core::condition::parse("age > 0").unwrap();
        store.save_segment("base", &base, None, false).unwrap();
        match microseg_core::condition::parse(&text) {
            Err(e) => prop_assert!(e.to_string().contains("line 1"), "{}", e),
            Ok(condition) => {
            store.save_segment("s", &condition, Some("d"), false).unwrap();
            let back = store.segments().unwrap();
            prop_assert_eq!(back.len(), 2);
            prop_assert_eq!(&back[1].condition, &condition);
            prop_assert!(store.unreadable_segments().unwrap().is_empty());
            }
        }
        // The workspace reads whatever happened.
        prop_assert!(!store.segments().unwrap().is_empty());
    }
}
