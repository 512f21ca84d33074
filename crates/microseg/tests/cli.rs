//! End-to-end tests of the real `microseg` binary: a temp workspace, a cleared
//! environment, fixed `--as-of` instants.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

/// A temp workspace and a way to run `microseg` on it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        env.ok(&["init"]);
        env
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_microseg"));
        cmd.env_clear()
            .env("MICROSEG_DATA", self.data())
            .current_dir(self.dir.path())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run microseg")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "microseg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "microseg {args:?} should fail");
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("one JSON document")
    }

    fn write(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write fixture");
        path.display().to_string()
    }

    fn store(&self) -> Connection {
        Connection::open(self.data().join("store.sqlite")).expect("open store")
    }

    fn count(&self, table: &str) -> i64 {
        self.store()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }
}

fn test_data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
        .display()
        .to_string()
}

fn import_cdnow(env: &Env) -> serde_json::Value {
    env.json(&[
        "import",
        "events",
        &test_data("CDNOW_master.txt"),
        "--delimiter",
        "whitespace",
        "--profile",
        "customer_id",
        "--time",
        "date",
        "--time-format",
        "%Y%m%d",
        "--event",
        "order_completed",
        "--revenue",
        "dollar_value",
        "--json",
    ])
}

/// Orders, revenue, recency and RFM of every CDNOW customer, computed independently of
/// microseg's metrics code: the raw file parsed here and the issue's SQL definitions
/// (NTILE window functions) run by SQLite.
#[test]
fn cdnow_metrics_match_independent_sql_for_every_customer() {
    let env = Env::new();
    let summary = import_cdnow(&env);
    assert_eq!(summary["rows"], 69_659);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["new_profiles"], 23_570);
    let out = env.dir.path().join("metrics.csv");
    env.ok(&[
        "metrics",
        "--as-of",
        "1998-07-01",
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
    ]);

    let sql = Connection::open_in_memory().unwrap();
    sql.execute_batch("CREATE TABLE p(cust TEXT, day TEXT, dollars REAL)")
        .unwrap();
    let raw = std::fs::read_to_string(test_data("CDNOW_master.txt")).unwrap();
    let mut previous = String::new();
    {
        let mut insert = sql.prepare("INSERT INTO p VALUES (?1, ?2, ?3)").unwrap();
        for line in raw.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // RFM ties break by external id in byte order: `cust` is TEXT, so SQLite's
            // ORDER BY cust is the same order.
            assert!(f[0] >= previous.as_str());
            previous = f[0].to_string();
            let day = format!("{}-{}-{}", &f[1][..4], &f[1][4..6], &f[1][6..]);
            insert
                .execute(rusqlite::params![f[0], day, f[3].parse::<f64>().unwrap()])
                .unwrap();
        }
    }
    let mut stmt = sql
        .prepare(
            "WITH o AS (
               SELECT cust, count(*) AS orders, sum(dollars) AS revenue,
                      count(DISTINCT day) AS days,
                      CAST(julianday('1998-07-01') - julianday(max(day)) AS INTEGER) AS recency,
                      CAST(julianday('1998-07-01') - julianday(min(day)) AS INTEGER) AS tenure
               FROM p GROUP BY cust)
             SELECT cust, orders, revenue, days, recency, tenure,
                    6 - NTILE(5) OVER (ORDER BY recency, cust),
                    NTILE(5) OVER (ORDER BY orders, cust),
                    NTILE(5) OVER (ORDER BY revenue, cust)
             FROM o ORDER BY cust",
        )
        .unwrap();
    type Expected = (String, i64, f64, i64, i64, i64, i64, i64, i64);
    let expected: Vec<Expected> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(expected.len(), 23_570);

    let mut reader = csv::Reader::from_path(&out).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "id",
            "visits",
            "orders",
            "revenue",
            "aov",
            "first_seen",
            "last_seen",
            "last_order_at",
            "recency_days",
            "tenure_days",
            "rfm_r",
            "rfm_f",
            "rfm_m",
            "rfm"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), expected.len());
    for (row, e) in rows.iter().zip(&expected) {
        let int = |i: usize| row[i].parse::<i64>().unwrap();
        assert_eq!(row[0], e.0);
        assert_eq!(
            int(1),
            e.3,
            "visits of {}: one per distinct purchase day",
            e.0
        );
        assert_eq!(int(2), e.1, "orders of {}", e.0);
        let revenue: f64 = row[3].parse().unwrap();
        assert!((revenue - e.2).abs() < 1e-6, "revenue of {}", e.0);
        assert_eq!(int(8), e.4, "recency_days of {}", e.0);
        assert_eq!(int(9), e.5, "tenure_days of {}", e.0);
        assert_eq!(
            (int(10), int(11), int(12)),
            (e.6, e.7, e.8),
            "rfm of {}",
            e.0
        );
        assert_eq!(row[13], format!("{}{}{}", e.6, e.7, e.8));
    }
}

#[test]
fn corrupted_event_rows_are_reported_and_good_rows_kept() {
    let env = Env::new();
    let mut csv = b"user_id,time,event,revenue,path\n".to_vec();
    csv.extend_from_slice(b"u1,2024-01-01T10:00:00Z,page_viewed,,/winter/gloves\n"); // line 2 ok
    csv.extend_from_slice(b",2024-01-01T10:00:00Z,page_viewed,,/\n"); // 3: no profile
    csv.extend_from_slice(b"u2,yesterday,page_viewed,,/\n"); // 4: bad time
    csv.extend_from_slice(b"u2,2024-01-02,order_completed,12.50,\n"); // 5 ok
    csv.extend_from_slice(b"u3,2024-01-02,order_completed,lots,\n"); // 6: bad revenue
    csv.extend_from_slice(b"u3,2024-01-02,page_viewed\n"); // 7: too few fields
    csv.extend_from_slice(b"u4,2024-01-03,page_viewed,,/caf\xe9\n"); // 8: invalid UTF-8
    csv.extend_from_slice(b"u4,2024-01-03,,,/\n"); // 9: no event name
    csv.extend_from_slice(b"u5,2024-01-04T08:00:00+02:00,order_completed,3,\n"); // 10 ok
    let file = env.write("events.csv", &csv);
    let summary = env.json(&[
        "import",
        "events",
        &file,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--name",
        "event",
        "--revenue",
        "revenue",
        "--json",
    ]);
    assert_eq!(summary["rows"], 9);
    assert_eq!(summary["imported"], 3);
    assert_eq!(summary["rejected"], 6);
    assert_eq!(env.count("events"), 3);
    let rejects = summary["rejects_file"].as_str().unwrap();
    assert!(rejects.starts_with(env.data().join("logs").to_str().unwrap()));
    let mut reader = csv::Reader::from_path(rejects).unwrap();
    let got: Vec<(u64, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[1].to_string())
        })
        .collect();
    let lines: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(lines, [3, 4, 6, 7, 8, 9]);
    assert!(
        got[0].1.contains("missing profile id (column 'user_id')"),
        "{got:?}"
    );
    assert!(got[1].1.contains("'yesterday' is not a time"), "{got:?}");
    assert!(
        got[2].1.contains("expected a number, found 'lots'"),
        "{got:?}"
    );
    assert!(got[3].1.contains("expected 5 fields, found 3"), "{got:?}");
    assert!(got[4].1.contains("invalid UTF-8"), "{got:?}");
    assert!(got[5].1.contains("missing event name"), "{got:?}");
    // The offset was applied: 08:00+02:00 is 06:00Z.
    let shown = env.json(&["profile", "show", "u5", "--as-of", "2024-02-01", "--json"]);
    assert_eq!(shown["events"][0]["time"], "2024-01-04T06:00:00Z");
    assert_eq!(shown["metrics"]["revenue"], 3.0);
    let gloves = env.json(&["profile", "show", "u1", "--as-of", "2024-02-01", "--json"]);
    assert_eq!(gloves["events"][0]["properties"]["path"], "/winter/gloves");
}

#[test]
fn profile_import_types_sets_rejects_and_upserts() {
    let env = Env::new();
    let file = env.write(
        "profiles.csv",
        b"id,age,score,vip,joined,interests,city,email\n\
          a,34,0.5,true,2024-01-31,road;coffee,Budapest,a@example.com\n\
          b,forty,1.5,false,2024-02-01,mtb,Vienna,\n\
          ,50,2,true,2024-02-01,,Graz,\n\
          c,51,,FALSE,2023-06-01T10:00:00Z,,Zurich,\n",
    );
    let summary = env.json(&[
        "import",
        "profiles",
        &file,
        "--type",
        "interests=string_set",
        "--type",
        "age=integer",
        "--json",
    ]);
    assert_eq!(summary["rows"], 4);
    assert_eq!(summary["imported"], 2);
    assert_eq!(summary["rejected"], 2);
    let a = env.json(&["profile", "show", "a", "--as-of", "2024-06-01", "--json"]);
    assert_eq!(a["traits"]["age"], 34);
    assert_eq!(a["traits"]["score"], 0.5);
    assert_eq!(a["traits"]["vip"], true);
    assert_eq!(a["traits"]["joined"], "2024-01-31T00:00:00Z");
    assert_eq!(
        a["traits"]["interests"],
        serde_json::json!(["coffee", "road"])
    );
    assert_eq!(a["identities"][0]["kind"], "email");
    let c = env.json(&["profile", "show", "c", "--as-of", "2024-06-01", "--json"]);
    assert_eq!(c["traits"]["vip"], false);
    assert!(c["traits"].get("score").is_none());
    assert_eq!(c["metrics"]["orders"], 0);
    assert_eq!(c["metrics"]["aov"], serde_json::Value::Null);
    let mut reader = csv::Reader::from_path(summary["rejects_file"].as_str().unwrap()).unwrap();
    let rejects: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(
        rejects,
        [
            [
                "3",
                "column 'age': expected integer, found 'forty'",
                "b,forty,1.5,false,2024-02-01,mtb,Vienna,"
            ],
            [
                "4",
                "missing id (column 'id')",
                ",50,2,true,2024-02-01,,Graz,"
            ]
        ]
    );

    // Re-import: city changes for a, age stays; the stored type rejects a non-integer.
    let again = env.write(
        "again.csv",
        b"id,city,age\na,Szeged,\nd,Pecs,3.5\ne,Bern,29\n",
    );
    let summary = env.json(&["import", "profiles", &again, "--json"]);
    assert_eq!(
        (summary["imported"].as_u64(), summary["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(summary["new_profiles"], 1);
    let a = env.json(&["profile", "show", "a", "--as-of", "2024-06-01", "--json"]);
    assert_eq!(a["traits"]["city"], "Szeged");
    assert_eq!(a["traits"]["age"], 34);
    assert_eq!(env.count("profiles"), 3);
}

#[test]
fn ndjson_and_parquet_imports() {
    let env = Env::new();
    let file = env.write(
        "people.ndjson",
        b"{\"id\": \"n1\", \"age\": 30, \"tags\": [\"a\", \"b\"], \"vip\": true}\n\
          not json\n\
          \n\
          {\"id\": 7, \"age\": 41.5, \"extra\": {\"nested\": 1}}\n",
    );
    let summary = env.json(&["import", "profiles", &file, "--json"]);
    assert_eq!(
        (summary["imported"].as_u64(), summary["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let n1 = env.json(&["profile", "show", "n1", "--as-of", "2024-06-01", "--json"]);
    assert_eq!(n1["traits"]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(n1["traits"]["age"], 30.0);
    let seven = env.json(&["profile", "show", "7", "--as-of", "2024-06-01", "--json"]);
    assert_eq!(seven["traits"]["extra"], "{\"nested\":1}");

    let events = env.write(
        "events.ndjson",
        b"{\"userId\": \"n1\", \"timestamp\": \"2024-01-01T10:00:00.250+00:00\", \"event\": \"order_completed\", \"revenue\": 10}\n\
          {\"userId\": \"n1\", \"event\": \"order_completed\"}\n",
    );
    let summary = env.json(&[
        "import",
        "events",
        &events,
        "--profile",
        "userId",
        "--time",
        "timestamp",
        "--name",
        "event",
        "--revenue",
        "revenue",
        "--json",
    ]);
    assert_eq!(
        (summary["imported"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(1))
    );

    let pq = Env::new();
    pq.ok(&["import", "profiles", &test_data("profiles.parquet")]);
    let p1 = pq.json(&["profile", "show", "p1", "--as-of", "2024-12-01", "--json"]);
    assert_eq!(p1["traits"]["age"], 34);
    assert_eq!(p1["traits"]["vip"], true);
    assert_eq!(p1["traits"]["joined"], "2024-01-31T10:00:00Z");
    assert_eq!(
        p1["traits"]["interests"],
        serde_json::json!(["coffee", "road"])
    );
    let summary = pq.json(&[
        "import",
        "events",
        &test_data("events.parquet"),
        "--profile",
        "user_id",
        "--time",
        "ts",
        "--name",
        "event",
        "--revenue",
        "revenue",
        "--json",
    ]);
    assert_eq!(
        (summary["imported"].as_u64(), summary["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    let p1 = pq.json(&["profile", "show", "p1", "--as-of", "2024-12-01", "--json"]);
    assert_eq!(p1["metrics"]["orders"], 1);
    assert_eq!(p1["metrics"]["revenue"], 120.5);
    assert_eq!(p1["metrics"]["last_seen"], "2024-02-01T09:05:00Z");
}

#[test]
fn unreadable_files_and_bad_options_fail_with_one_line_and_import_nothing() {
    let env = Env::new();
    let missing = env.fails(&["import", "profiles", "nope.csv"]);
    assert!(missing.starts_with("error: nope.csv: "), "{missing}");
    assert_eq!(missing.trim_end().lines().count(), 1);
    let file = env.write("e.csv", b"user,time\nu1,2024-01-01\n");
    let err = env.fails(&[
        "import",
        "events",
        &file,
        "--profile",
        "user_id",
        "--time",
        "time",
    ]);
    assert!(
        err.contains("no column 'user_id' (columns: user, time)"),
        "{err}"
    );
    let parquet = env.write("fake.parquet", b"not parquet at all");
    let err = env.fails(&["import", "profiles", &parquet]);
    assert!(err.contains("not a readable Parquet file"), "{err}");
    let err = env.fails(&["metrics", "--as-of", "1998-02-30"]);
    assert!(err.contains("--as-of"), "{err}");
    assert_eq!(
        env.count("events") + env.count("profiles") + env.count("imports"),
        0
    );
    let elsewhere = env.fails(&["--data", "/nonexistent/ws", "metrics"]);
    assert!(
        elsewhere.contains("no microseg workspace at /nonexistent/ws"),
        "{elsewhere}"
    );
}

/// `kill -9` in the middle of an import leaves the previous state or the whole import.
#[test]
fn kill_9_during_import_leaves_previous_state_or_whole_import() {
    let env = Env::new();
    let small = env.write(
        "small.csv",
        b"user_id,time,event\nx,2024-01-01,page_viewed\nx,2024-01-02,page_viewed\n",
    );
    env.ok(&[
        "import",
        "events",
        &small,
        "--profile",
        "user_id",
        "--time",
        "time",
    ]);
    let rows = 1_500_000;
    let mut big = String::from("user_id,time,event,path\n");
    for i in 0..rows {
        big.push_str(&format!(
            "u{},{},page_viewed,/p/{}\n",
            i % 5000,
            1_700_000_000 + i,
            i % 97
        ));
    }
    let big = env.write("big.csv", big.as_bytes());
    let import = [
        "import",
        "events",
        &big,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--time-format",
        "unix",
    ];
    let mut killed_mid_import = 0;
    for delay_ms in [150u64, 400, 700] {
        let mut child = env.cmd(&import).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let still_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let events = env.count("events");
        if still_running {
            killed_mid_import += 1;
        }
        assert!(
            events == 2 || (events - 2) % rows == 0,
            "after kill at {delay_ms} ms the store holds {events} events"
        );
        let imports = env.count("imports");
        assert_eq!(events, 2 + (imports - 1) * rows);
    }
    assert!(killed_mid_import > 0, "no kill landed mid-import");
    let before = env.count("events");
    env.ok(&import);
    assert_eq!(env.count("events"), before + rows);
}

#[test]
fn demo_is_reproducible_and_summarised() {
    let env = Env::new();
    let a = env.dir.path().join("a");
    let b = env.dir.path().join("b");
    let out = env.ok(&[
        "demo",
        a.to_str().unwrap(),
        "--customers",
        "400",
        "--seed",
        "5",
    ]);
    assert!(
        out.contains("Bicycle shop as of 2026-11-01T00:00:00Z"),
        "{out}"
    );
    assert!(out.contains("400 customers"), "{out}");
    assert!(out.contains("By discipline"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&[
        "demo",
        b.to_str().unwrap(),
        "--customers",
        "400",
        "--seed",
        "5",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["customers"], 400);
    let saved: Vec<&str> = json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(saved, ["female_amateur_mtb", "winter_no_order"]);
    assert!(
        out.contains("Drill-down: discipline, then skill, then gender"),
        "{out}"
    );
    let listed = env.json(&[
        "--data",
        a.to_str().unwrap(),
        "segment",
        "size",
        "female_amateur_mtb",
        "--as-of",
        "2026-11-01",
        "--json",
    ]);
    assert_eq!(
        listed["size"], json["segments"][0]["size"],
        "the demo's figure is the segment's size"
    );
    for file in ["profiles.csv", "events.csv"] {
        let x = std::fs::read(a.join("demo").join(file)).unwrap();
        let y = std::fs::read(b.join("demo").join(file)).unwrap();
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
    // A demo workspace is replaced by the next demo; a workspace with other data is not.
    env.ok(&["demo", a.to_str().unwrap(), "--customers", "10"]);
    let own = env.write(
        "own.csv",
        b"id,city
x,Budapest
",
    );
    env.ok(&["import", "profiles", &own]);
    let err = env.fails(&["demo", "--customers", "10"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(env.count("profiles"), 1);
    env.ok(&["demo", "--customers", "10", "--force"]);
    assert_eq!(env.count("profiles"), 10);
    let metrics = env.ok(&[
        "--data",
        a.to_str().unwrap(),
        "metrics",
        "--as-of",
        "2026-11-01",
        "--format",
        "csv",
    ]);
    assert_eq!(metrics.lines().count(), 11);
}

#[test]
fn help_reads_like_a_real_tool() {
    let env = Env::new();
    let help = env.ok(&["--help"]);
    for command in ["init", "import", "metrics", "profile", "demo", "--data"] {
        assert!(help.contains(command), "{help}");
    }
    let import = env.ok(&["import", "events", "--help"]);
    assert!(import.contains("--time-format"), "{import}");
    assert!(import.contains("CDNOW"), "{import}");
}

/// The columnar snapshots are reused, caught up after an import, and rebuilt when
/// damaged: the output never changes because of them.
#[test]
fn snapshots_never_change_answers() {
    let env = Env::new();
    let first = env.write("a.csv", b"user_id,time,event,revenue,path\nu1,2024-01-01,order_completed,5,\nu2,2024-01-02,page_viewed,,/winter\n");
    let import = |file: &str| {
        env.ok(&[
            "import",
            "events",
            file,
            "--profile",
            "user_id",
            "--time",
            "time",
            "--revenue",
            "revenue",
        ])
    };
    import(&first);
    let events = env.data().join("cache/events.snap");
    let profiles = env.data().join("cache/profiles.snap");
    assert!(
        events.is_file() && profiles.is_file(),
        "the import writes them"
    );
    let metrics = || env.ok(&["metrics", "--as-of", "2024-02-01", "--format", "csv"]);
    let viewers = || {
        env.json(&[
            "segment",
            "members",
            "--format",
            "json",
            "viewers",
            "--as-of",
            "2024-02-01",
        ])["members"]
            .clone()
    };
    let before = metrics();
    env.ok(&[
        "segment",
        "create",
        "viewers",
        r#"did(page_viewed where path = "/winter")"#,
    ]);
    let property = env.data().join("cache/property-70617468.snap");
    assert!(property.is_file(), "saving a segment keeps its property");
    assert_eq!(viewers(), serde_json::json!(["u2"]));
    assert_eq!(metrics(), before, "served from the snapshot");
    let second = env.write(
        "b.csv",
        b"user_id,time,event,revenue,path\nu2,2024-01-03,order_completed,7,\nu3,2024-01-04,page_viewed,,/winter\n",
    );
    import(&second);
    let after = metrics();
    assert!(
        after.contains("u2,2,1,7,7,"),
        "the new order is counted: {after}"
    );
    assert_eq!(
        viewers(),
        serde_json::json!(["u2", "u3"]),
        "the property caught up"
    );
    // A flipped bit in any snapshot is found by its checksum, and the snapshot rebuilt.
    for file in [&events, &profiles, &property] {
        let mut bytes = std::fs::read(file).unwrap();
        let at = bytes.len() - 9;
        bytes[at] ^= 0x40;
        std::fs::write(file, &bytes).unwrap();
        assert_eq!(metrics(), after, "a damaged {} is rebuilt", file.display());
        assert_eq!(viewers(), serde_json::json!(["u2", "u3"]));
    }
    // And so is a truncated or missing one.
    std::fs::write(&events, b"MSEGSNP1").unwrap();
    std::fs::remove_file(&profiles).unwrap();
    assert_eq!(metrics(), after);
    assert_eq!(viewers(), serde_json::json!(["u2", "u3"]));
}

/// Sessions, orders, revenue and first/last seen of every profile of a generated shop,
/// against the metric definitions written as SQL window functions, run by SQLite over the
/// store's rows (independent of microseg's metrics code).
#[test]
fn demo_shop_metrics_match_independent_sql() {
    let env = Env::new();
    let dir = env.dir.path().join("shop");
    env.ok(&[
        "demo",
        dir.to_str().unwrap(),
        "--customers",
        "1500",
        "--seed",
        "11",
    ]);
    let out = env.ok(&[
        "--data",
        dir.to_str().unwrap(),
        "metrics",
        "--as-of",
        "2026-06-01",
        "--format",
        "csv",
    ]);
    let as_of = 1_780_272_000_000_i64; // 2026-06-01T00:00:00Z
    let store = Connection::open(dir.join("store.sqlite")).unwrap();
    let mut stmt = store
        .prepare(
            "WITH e AS (
               SELECT profile_id, id, time, name, revenue,
                      CASE WHEN lag(time) OVER w IS NULL OR time - lag(time) OVER w > 1800000
                                OR name = 'session_started' THEN 1 ELSE 0 END AS new_session
               FROM events_named WHERE time <= ?1
               WINDOW w AS (PARTITION BY profile_id ORDER BY time, name = 'session_started' DESC, id))
             SELECT p.external_id, coalesce(sum(new_session), 0),
                    count(e.id) FILTER (WHERE name = 'order_completed'),
                    coalesce(sum(revenue) FILTER (WHERE name = 'order_completed'), 0),
                    min(e.time), max(e.time)
             FROM profiles p LEFT JOIN e ON e.profile_id = p.id
             GROUP BY p.id ORDER BY p.id",
        )
        .unwrap();
    // (external id, visits, orders, revenue, first seen, last seen)
    type Expected = (String, i64, i64, f64, Option<i64>, Option<i64>);
    let expected: Vec<Expected> = stmt
        .query_map([as_of], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1500);
    let time = |ms: Option<i64>| {
        ms.map(|ms| {
            let t = microseg_core::Timestamp(ms);
            t.to_string()
        })
        .unwrap_or_default()
    };
    let mut sessions = 0;
    for (row, e) in rows.iter().zip(&expected) {
        assert_eq!(row[0], e.0);
        assert_eq!(row[1].parse::<i64>().unwrap(), e.1, "visits of {}", e.0);
        assert_eq!(row[2].parse::<i64>().unwrap(), e.2, "orders of {}", e.0);
        assert!(
            (row[3].parse::<f64>().unwrap() - e.3).abs() < 1e-6,
            "revenue of {}",
            e.0
        );
        assert_eq!(row[5], time(e.4), "first_seen of {}", e.0);
        assert_eq!(row[6], time(e.5), "last_seen of {}", e.0);
        sessions += e.1;
    }
    assert!(sessions > 3000, "the shop has real sessions: {sessions}");
}

#[test]
fn config_declares_trait_types_and_bad_configs_are_named() {
    let env = Env::new();
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[traits.tags]\ntype = \"string_set\"\nseparators = \"/\"\n\n[traits.zip]\ntype = \"string\"\n");
    std::fs::write(&config, &text).unwrap();
    let file = env.write("p.csv", b"id,tags,zip\na,road/coffee/road,01234\nb,,99\n");
    env.ok(&["import", "profiles", &file]);
    let a = env.json(&["profile", "show", "a", "--as-of", "2024-01-01", "--json"]);
    assert_eq!(a["traits"]["tags"], serde_json::json!(["coffee", "road"]));
    assert_eq!(
        a["traits"]["zip"], "01234",
        "declared string, not an integer"
    );

    std::fs::write(&config, "[metrics]\norder_event = 3\n").unwrap();
    let err = env.fails(&["metrics"]);
    assert!(
        err.contains("microseg.toml: line 2, column 15: an event name or a list of event names"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_profile_repeated_in_one_file_is_merged_in_order() {
    let env = Env::new();
    let file = env.write(
        "dup.csv",
        b"id,city,age\na,Budapest,30\nb,Graz,\na,Vienna,\n",
    );
    let summary = env.json(&["import", "profiles", &file, "--json"]);
    assert_eq!(summary["imported"], 3);
    assert_eq!(summary["new_profiles"], 2);
    let a = env.json(&["profile", "show", "a", "--as-of", "2024-01-01", "--json"]);
    assert_eq!(a["traits"]["city"], "Vienna", "the later row wins");
    assert_eq!(
        a["traits"]["age"], 30,
        "an empty cell keeps the earlier value"
    );
    assert_eq!(env.count("profiles"), 2);
}

/// Imports leave WAL for a rollback journal only when alone; beside another open
/// connection they stay in WAL, and either way the store is in WAL afterwards.
#[test]
fn imports_work_beside_other_connections_and_leave_the_store_in_wal() {
    let env = Env::new();
    let file = env.write(
        "e.csv",
        b"user_id,time,event\na,2024-01-01,page_viewed\nb,2024-01-02,page_viewed\n",
    );
    let import = [
        "import",
        "events",
        file.as_str(),
        "--profile",
        "user_id",
        "--time",
        "time",
    ];
    let mode = |c: &Connection| -> String {
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    {
        let reader = env.store();
        assert_eq!(mode(&reader), "wal");
        let before: i64 = reader
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        env.ok(&import);
        let after: i64 = reader
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!((before, after), (0, 2));
    }
    // The same content again is refused (its events would count twice), unless forced.
    let out = env.run(&import);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the same content was imported before (import 1 of"),
        "{stderr}"
    );
    assert_eq!(env.count("events"), 2);
    let copy = env.write(
        "copy.csv",
        b"user_id,time,event
a,2024-01-01,page_viewed
b,2024-01-02,page_viewed
",
    );
    let renamed = env.run(&[
        "import",
        "events",
        &copy,
        "--profile",
        "user_id",
        "--time",
        "time",
    ]);
    assert_eq!(
        renamed.status.code(),
        Some(3),
        "a copy under another name too"
    );
    let mut forced = import.to_vec();
    forced.push("--force");
    env.ok(&forced);
    assert_eq!(env.count("events"), 4);
    assert_eq!(mode(&env.store()), "wal");
}

#[test]
fn segment_commands_create_version_list_show_size_and_members() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,city,age,tags\na,Budapest,25,road;coffee\nb,Vienna,34,road\nc,Budapest,40,\nd,,19,mtb\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "tags=string_set"]);
    let created = env.json(&[
        "segment",
        "create",
        "bp",
        r#"city = "Budapest""#,
        "--description",
        "capital",
        "--json",
    ]);
    assert_eq!(
        (created["version"].as_i64(), created["size"].as_u64()),
        (Some(1), Some(2))
    );
    env.ok(&[
        "segment",
        "create",
        "young_bp",
        r#"in_segment("bp") and age < 30"#,
    ]);
    let err = env.fails(&["segment", "create", "bp", "age > 1"]);
    assert!(err.contains("already exists (use --replace"), "{err}");
    let err = env.fails(&[
        "segment",
        "create",
        "bp",
        r#"in_segment("young_bp")"#,
        "--replace",
    ]);
    assert!(
        err.contains("segment reference cycle: bp -> young_bp -> bp"),
        "{err}"
    );
    let err = env.fails(&["segment", "create", "z", "age >"]);
    assert!(
        err.contains("condition: line 1, column 6: expected a value"),
        "{err}"
    );
    let err = env.fails(&["segment", "create", "z", r#"tags = "road""#]);
    assert!(
        err.contains("'tags' is string_set: test members with `has"),
        "{err}"
    );
    let v2 = env.json(&[
        "segment",
        "create",
        "bp",
        r#"city = "Budapest" or age > 30"#,
        "--replace",
        "--json",
    ]);
    assert_eq!(
        (v2["version"].as_i64(), v2["size"].as_u64()),
        (Some(2), Some(3))
    );

    let list = env.json(&["segment", "list", "--json", "--as-of", "2024-01-01"]);
    let names: Vec<&str> = list["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bp", "young_bp"]);
    assert_eq!(list["segments"][0]["size"], 3);
    assert_eq!(list["segments"][0]["description"], "capital");
    assert_eq!(
        list["segments"][1]["size"], 1,
        "young_bp follows bp's new version"
    );

    let show = env.json(&["segment", "show", "bp", "--json", "--as-of", "2024-01-01"]);
    assert_eq!(show["condition"], r#"city = "Budapest" or age > 30"#);
    assert_eq!(show["definition"]["type"], "or");
    let size = env.json(&[
        "segment",
        "size",
        r#"tags has "road" and not city = "Vienna""#,
        "--json",
        "--as-of",
        "2024-01-01",
    ]);
    assert_eq!(
        (size["size"].as_u64(), size["total"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(size["as_of"], "2024-01-01T00:00:00Z");
    assert_eq!(
        env.json(&["segment", "size", "young_bp", "--json"])["segment"],
        "young_bp"
    );

    let csv = env.ok(&["segment", "members", "bp", "--as-of", "2024-01-01"]);
    assert_eq!(csv, "id\na\nb\nc\n");
    let json = env.json(&["segment", "members", "bp", "--format", "json"]);
    assert_eq!(json["members"], serde_json::json!(["a", "b", "c"]));
    let err = env.fails(&["segment", "members", "nope"]);
    assert!(err.contains("no segment named 'nope'"), "{err}");

    // bp = {a, b, c}, young_bp = {a}: 1 in common, Jaccard 1/3.
    let overlap = env.json(&["segment", "overlap", "bp", "young_bp", "--json"]);
    assert_eq!(overlap["pairs"][0]["intersection"], 1);
    assert_eq!(overlap["pairs"][0]["jaccard"].as_f64(), Some(1.0 / 3.0));
    assert!(env
        .fails(&["segment", "overlap", "bp"])
        .contains("required"));

    let tree = env.json(&[
        "segment", "tree", "--by", "city,age", "--within", "bp", "--json",
    ]);
    let root = &tree["root"];
    assert_eq!(root["size"], 3);
    let first = &root["children"][0];
    assert_eq!(
        (first["value"].as_str(), first["size"].as_u64()),
        (Some("Budapest"), Some(2))
    );
    assert_eq!(first["share_of_parent"].as_f64(), Some(2.0 / 3.0));
    assert_eq!(
        first["children"][0]["condition"],
        r#"city = "Budapest" and age = 25"#
    );
    let leaf = first["children"][0]["condition"].as_str().unwrap();
    assert_eq!(env.json(&["segment", "size", leaf, "--json"])["size"], 1);
    let err = env.fails(&["segment", "tree", "--by", "nope"]);
    assert!(err.contains("unknown trait or metric 'nope'"), "{err}");

    // young_bp = in_segment("bp") and age < 30; c is in bp (Budapest) but 40.
    let e = env.json(&["segment", "explain", "young_bp", "c", "--json"]);
    assert_eq!(e["member"], false);
    let parts = &e["explanation"]["children"];
    assert_eq!(parts[0]["matched"], true);
    assert_eq!(
        parts[0]["children"][0]["condition"],
        r#"city = "Budapest" or age > 30"#
    );
    assert_eq!(
        (parts[1]["matched"].as_bool(), parts[1]["saw"].as_str()),
        (Some(false), Some("40"))
    );
    let text = env.ok(&["segment", "explain", "young_bp", "a"]);
    assert!(text.starts_with("a is in young_bp as of "), "{text}");
    assert!(text.contains("yes  age < 30   (saw 25)"), "{text}");
    assert!(env
        .fails(&["segment", "explain", "young_bp", "zz"])
        .contains("no profile with id 'zz'"));
}

/// Segment sizes on a generated shop against the same conditions written as SQL by hand
/// and run by SQLite over the store's rows (independent of the evaluator).
#[test]
fn segment_sizes_match_independent_sql_on_the_demo_shop() {
    let env = Env::new();
    let dir = env.dir.path().join("shop");
    let data = dir.to_str().unwrap();
    env.ok(&["demo", data, "--customers", "3000", "--seed", "3"]);
    let store = Connection::open(dir.join("store.sqlite")).unwrap();
    let as_of = "2026-02-01";
    let t = 1_769_904_000_000_i64; // 2026-02-01T00:00:00Z
    let day = 86_400_000_i64;
    let trait_of = |n: &str| format!("json_extract(p.traits, '$.{n}')");
    let cases: Vec<(&str, String)> = vec![
        (
            r#"gender = "f" and discipline = "mountain" and skill = "amateur""#,
            format!("SELECT count(*) FROM profiles p WHERE {} = 'f' AND {} = 'mountain' AND {} = 'amateur'",
                trait_of("gender"), trait_of("discipline"), trait_of("skill")),
        ),
        (
            r#"age between 25 and 34 and interests has "coffee""#,
            format!("SELECT count(*) FROM profiles p WHERE {} BETWEEN 25 AND 34 AND EXISTS
                     (SELECT 1 FROM json_each(p.traits, '$.interests') WHERE value = 'coffee')", trait_of("age")),
        ),
        (
            r#"city != "Budapest" and not consent_sms = true"#,
            format!("SELECT count(*) FROM profiles p WHERE {c} IS NOT NULL AND {c} != 'Budapest'
                     AND NOT coalesce({s} = 1, 0)", c = trait_of("city"), s = trait_of("consent_sms")),
        ),
        (
            r#"count(page_viewed where category = "winter_accessories", within 30d) >= 2"#,
            format!("SELECT count(*) FROM (SELECT profile_id FROM events_named WHERE name = 'page_viewed'
                     AND json_extract(properties, '$.category') = 'winter_accessories'
                     AND time BETWEEN {} AND {t} GROUP BY profile_id HAVING count(*) >= 2)", t - 30 * day),
        ),
        (
            "did(order_completed) within 90d and not did(page_viewed) within 7d",
            format!("SELECT count(DISTINCT profile_id) FROM events_named e WHERE name = 'order_completed'
                     AND time BETWEEN {} AND {t} AND NOT EXISTS (SELECT 1 FROM events_named v
                     WHERE v.profile_id = e.profile_id AND v.name = 'page_viewed' AND v.time BETWEEN {} AND {t})",
                t - 90 * day, t - 7 * day),
        ),
        (
            "sum(revenue of order_completed) > 2000 and orders >= 2",
            format!("SELECT count(*) FROM (SELECT profile_id FROM events_named WHERE name = 'order_completed'
                     AND time <= {t} GROUP BY profile_id HAVING sum(coalesce(revenue, 0)) > 2000 AND count(*) >= 2)"),
        ),
        (
            r#"page_viewed where category = "winter_accessories" then not order_completed within 3d"#,
            format!("WITH v AS (SELECT profile_id, time, id, row_number() OVER (PARTITION BY profile_id
                       ORDER BY time DESC, id DESC) AS k FROM events_named WHERE name = 'page_viewed'
                       AND json_extract(properties, '$.category') = 'winter_accessories' AND time <= {t})
                     SELECT count(*) FROM v WHERE k = 1 AND time + {d3} <= {t} AND NOT EXISTS
                       (SELECT 1 FROM events_named o WHERE o.profile_id = v.profile_id
                        AND o.name = 'order_completed' AND o.time <= v.time + {d3}
                        AND o.time > v.time)", d3 = 3 * day),
        ),
    ];
    for (condition, sql) in cases {
        let expected: i64 = store.query_row(&sql, [], |r| r.get(0)).unwrap();
        let got = env.json(&[
            "--data", data, "segment", "size", condition, "--as-of", as_of, "--json",
        ]);
        assert_eq!(got["size"].as_i64(), Some(expected), "{condition}");
        assert!(expected > 0, "the shop has members for {condition}");
    }
}

/// Reference: Python 3.11 `statistics.correlation` gives 0.8537198732636624 for a and b
/// below, and 0.8533103351879245 on b's average ranks [1, 2.5, 4.5, 2.5, 4.5, 6].
#[test]
fn correlate_matches_python_statistics() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,a,b\np1,1,2\np2,2,4\np3,3,5\np4,4,4\np5,5,5\np6,6,9\np7,7,\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "b=float"]);
    let c = env.json(&["correlate", "--metrics", "a,b", "--json"]);
    assert_eq!(c["metrics"], serde_json::json!(["a", "b"]));
    assert_eq!(c["n"], serde_json::json!([[7, 6], [6, 6]]));
    let p = c["pearson"][0][1].as_f64().unwrap();
    let s = c["spearman"][1][0].as_f64().unwrap();
    assert!((p - 0.8537198732636624).abs() < 1e-12, "{p}");
    assert!((s - 0.8533103351879245).abs() < 1e-12, "{s}");
    let err = env.fails(&["correlate", "--metrics", "a,id"]);
    assert!(err.contains("unknown trait or metric 'id'"), "{err}");
}

/// Builds the SQL layout of docs/sql.md from a workspace's store, with the recipe the docs
/// give for trying `segment sql` on a workspace.
fn sql_layout(store: &std::path::Path) -> Connection {
    let db = Connection::open_in_memory().unwrap();
    db.execute("ATTACH ?1 AS s", rusqlite::params![store.to_str().unwrap()])
        .unwrap();
    let mut columns = String::new();
    let types: Vec<(String, String)> = db
        .prepare("SELECT name, type FROM s.trait_types ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (name, ty) in types {
        let path = format!("'$.\"{name}\"'");
        let value = match ty.as_str() {
            "bool" => format!(
                "CASE json_type(traits, {path}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
            ),
            "timestamp" => format!(
                "CAST(round((julianday(json_extract(traits, {path})) - 2440587.5) * 86400000) AS INTEGER)"
            ),
            _ => format!("json_extract(traits, {path})"),
        };
        columns.push_str(&format!(", {value} AS \"{name}\""));
    }
    db.execute_batch(&format!(
        "CREATE TABLE profiles AS SELECT external_id AS id, (
             WITH RECURSIVE chain(id) AS (SELECT q.merged_into UNION
                 SELECT m.merged_into FROM chain c JOIN s.profiles m ON m.id = c.id
                 WHERE m.merged_into IS NOT NULL)
             SELECT v.external_id FROM chain c JOIN s.profiles v ON v.id = c.id
             WHERE v.merged_into IS NULL) AS merged_into{columns}
           FROM s.profiles q;
         CREATE INDEX profiles_merged ON profiles(merged_into);
         CREATE TABLE events AS SELECT p.external_id AS profile_id, e.time, n.name AS event,
                e.revenue, e.properties
           FROM s.events e JOIN s.profiles p ON p.id = e.profile_id
           JOIN s.event_names n ON n.id = e.name_id;
         CREATE INDEX events_by_profile ON events(profile_id, time);
         DETACH s;"
    ))
    .unwrap();
    db
}

/// Segments of the demo shop covering every kind of condition (traits, sets, metrics,
/// recency, a sequence with `then not`, `in_segment`, sums over a window), for the tests
/// that compare SQL on an engine with microseg's own members.
const SHOP_SEGMENTS: [(&str, &str); 7] = [
    ("fam", r#"gender = "f" and discipline = "mountain" and skill = "amateur""#),
    ("coffee", r#"age between 25 and 34 and interests has "coffee" and consent_sms = true"#),
    ("champions", "rfm_r >= 4 and rfm_f >= 4 and aov > 100"),
    ("lapsed", r#"last(order_completed) before 60d ago and signup_at < @2025-06-01"#),
    (
        "winter",
        r#"page_viewed where category = "winter_accessories" then not order_completed within 3d"#,
    ),
    ("fam_winter", r#"in_segment("fam") and not in_segment("winter") or visits >= 12"#),
    (
        "big_spenders",
        "sum(revenue of order_completed, within 180d) > 1500 and count(page_viewed, within 30d) >= 2",
    ),
];

/// The members of saved segment `name` at `as_of`, sorted.
fn members(env: &Env, data: &str, name: &str, as_of: &str) -> Vec<String> {
    let m = env.json(&[
        "--data", data, "segment", "members", name, "--as-of", as_of, "--format", "json",
    ]);
    let mut ids: Vec<String> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn segment_sql_on_the_documented_layout_returns_the_members() {
    let env = Env::new();
    let dir = env.dir.path().join("shop");
    let data = dir.to_str().unwrap();
    env.ok(&["demo", data, "--customers", "2000", "--seed", "11"]);
    for (name, condition) in SHOP_SEGMENTS {
        env.ok(&["--data", data, "segment", "create", name, condition]);
    }
    let layout = sql_layout(&dir.join("store.sqlite"));
    let mut nonempty = 0;
    for (name, _) in SHOP_SEGMENTS {
        let sql = env.json(&[
            "--data",
            data,
            "segment",
            "sql",
            name,
            "--as-of",
            "2026-09-01",
            "--json",
        ]);
        let sql = sql["sql"].as_str().unwrap();
        let mut from_sql: Vec<String> = layout
            .prepare(sql)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"))
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        from_sql.sort();
        let batch = members(&env, data, name, "2026-09-01");
        assert_eq!(batch, from_sql, "{name}");
        if !batch.is_empty() && batch.len() < 2000 {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 6, "only {nonempty} segments split the shop");
    // Plain output is the query with a semicolon; bad dialects and conditions are named.
    let text = env.ok(&["--data", data, "segment", "sql", "fam"]);
    assert!(text.starts_with("SELECT p.id FROM profiles p") && text.trim_end().ends_with(';'));
    let err = env.fails(&[
        "--data",
        data,
        "segment",
        "sql",
        "fam",
        "--dialect",
        "oracle",
    ]);
    assert!(err.contains("unknown SQL dialect 'oracle'"), "{err}");
    let err = env.fails(&["--data", data, "segment", "sql", "shoe_size > 40"]);
    assert!(err.contains("unknown trait or metric 'shoe_size'"), "{err}");
}

/// Models: lifetime value, personas, discovery, experiments.
#[path = "cli/models.rs"]
mod models;

#[path = "cli/server.rs"]
mod server;

#[path = "cli/hostile.rs"]
mod hostile;

#[path = "cli/campaigns.rs"]
mod campaigns;

/// One exit code per kind of failure (docs/cli.md): 2 usage, 3 bad input, 4 not found,
/// 5 store or I/O, each with one line on stderr.
#[test]
fn exit_codes_say_what_kind_of_failure() {
    let env = Env::new();
    let file = env.write("p.csv", b"id,age\na,30\nb,41\n");
    env.ok(&["import", "profiles", &file]);
    let missing = env.dir.path().join("nowhere").display().to_string();
    let cases: [(&[&str], i32); 8] = [
        (&["segment", "size"], 2),
        (&["cluster", "--k", "0", "--features", "age"], 2),
        (&["discover", "--target", "age > 30", "--fdr", "2"], 2),
        (&["segment", "size", "age >"], 3),
        (&["segment", "size", r#"age = "x""#], 3),
        (&["segment", "show", "nope"], 4),
        (&["--data", &missing, "segment", "list"], 4),
        (&["experiment", "report", "nope"], 4),
    ];
    for (args, code) in cases {
        let out = env.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error"), "{args:?}: {stderr}");
    }
    // A store that is not a database: a store failure.
    std::fs::write(
        env.data().join("store.sqlite"),
        b"not a database at all, not even close",
    )
    .unwrap();
    let _ = std::fs::remove_file(env.data().join("store.sqlite-wal"));
    let out = env.run(&["segment", "list"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[path = "cli/console.rs"]
mod console;

#[path = "cli/warehouse.rs"]
mod warehouse;
