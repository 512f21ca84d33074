//! `microseg warehouse` and `segment sql --dialect` on real engines: DuckDB over the
//! workspace's own Parquet export, PostgreSQL and Spark Connect (installed and started by
//! `./test`; the test fails saying so without them).

use super::*;

fn engine_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run ./test, which installs the DuckDB CLI and starts \
             PostgreSQL and Spark Connect (tests/warehouse/)"
        )
    })
}

/// The ids of a `warehouse run --out` file (header `id`, checked), sorted.
fn out_ids(path: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(r.headers().unwrap(), vec!["id"]);
    let mut ids: Vec<String> = r.records().map(|r| r.unwrap()[0].to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn warehouses_return_the_members_and_campaigns_use_them() {
    let duckdb = engine_var("MICROSEG_DUCKDB");
    let pg = engine_var("MICROSEG_POSTGRES_URL");
    let ca = engine_var("MICROSEG_POSTGRES_CA");
    let spark = engine_var("MICROSEG_SPARK_URL");
    let env = Env::new();
    let dir = env.dir.path().join("shop");
    let data = dir.to_str().unwrap();
    env.ok(&["demo", data, "--customers", "2000", "--seed", "11"]);
    for (name, condition) in SHOP_SEGMENTS {
        env.ok(&["--data", data, "segment", "create", name, condition]);
    }
    let mut config = std::fs::read_to_string(dir.join("microseg.toml")).unwrap();
    config.push_str(&format!(
        "\n[warehouse.postgres]\nurl = \"{pg}?sslmode=require\"\nschema = \"cli_test\"\n\
         ca_file = \"{ca}\"\n\
         [warehouse.duckdb]\nfile = \"w.duckdb\"\ncli = \"{duckdb}\"\n\
         [warehouse.spark]\nurl = \"{spark}\"\ndatabase = \"cli_test\"\n",
    ));
    std::fs::write(dir.join("microseg.toml"), config).unwrap();

    // The export, read by DuckDB itself: its SQL over the Parquet files == segment members.
    let lake = env.dir.path().join("lake");
    let export = env.json(&[
        "--data",
        data,
        "warehouse",
        "export",
        "--out",
        lake.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(export["profiles"], 2000, "{export}");
    assert!(export["events"].as_u64().unwrap() > 20_000, "{export}");
    let as_of = "2026-09-01";
    let mut split = 0;
    for (name, _) in SHOP_SEGMENTS {
        let sql = env.json(&[
            "--data",
            data,
            "segment",
            "sql",
            name,
            "--dialect",
            "duckdb",
            "--as-of",
            as_of,
            "--json",
        ]);
        assert_eq!(sql["dialect"], "duckdb");
        let script = format!(
            "CREATE VIEW profiles AS SELECT * FROM read_parquet('{0}/profiles.parquet');\n\
             CREATE VIEW events AS SELECT * FROM read_parquet('{0}/events.parquet');\n{1};\n",
            lake.display(),
            sql["sql"].as_str().unwrap()
        );
        let out = Command::new(&duckdb)
            .args([
                "-batch",
                "-bail",
                "-csv",
                "-noheader",
                ":memory:",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        got.sort();
        let want = members(&env, data, name, as_of);
        assert_eq!(got, want, "duckdb over the export: {name}");
        if !want.is_empty() && want.len() < 2000 {
            split += 1;
        }
    }
    assert!(split >= 6, "only {split} segments split the shop");

    // Each engine loaded, then every segment run there == segment members.
    for engine in ["duckdb", "postgres", "spark"] {
        let loaded = env.json(&[
            "--data",
            data,
            "warehouse",
            "load",
            "--engine",
            engine,
            "--json",
        ]);
        assert_eq!(loaded["profiles"], 2000, "{engine}: {loaded}");
        assert_eq!(loaded["events"], export["events"], "{engine}: {loaded}");
        let all = env.json(&[
            "--data",
            data,
            "warehouse",
            "run",
            "--all",
            "--engine",
            engine,
            "--as-of",
            as_of,
            "--json",
        ]);
        let runs = all["segments"].as_array().unwrap();
        // The demo's own segments and ours.
        assert!(runs.len() >= SHOP_SEGMENTS.len() + 5, "{all}");
        for run in runs {
            let name = run["segment"].as_str().unwrap();
            assert_eq!(run["engine"], engine);
            assert!(run["seconds"].as_f64().unwrap() >= 0.0);
            let want = members(&env, data, name, as_of);
            assert_eq!(run["size"], want.len(), "{engine}: {name}");
        }
        let out = env.dir.path().join(format!("{engine}.csv"));
        let one = env.json(&[
            "--data",
            data,
            "warehouse",
            "run",
            "fam_winter",
            "--engine",
            engine,
            "--as-of",
            as_of,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(
            one.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["engine", "seconds", "segment", "size"]
        );
        assert_eq!(
            out_ids(&out),
            members(&env, data, "fam_winter", as_of),
            "{engine}"
        );
    }

    // An analyst's PostgreSQL user that may only read the schema (no right to create
    // schemas or tables) runs segments over what was loaded.
    let mut admin = postgres::Client::connect(&format!("{pg}?sslmode=disable"), postgres::NoTls)
        .expect("the test PostgreSQL");
    admin
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cli_reader') \
             THEN CREATE ROLE cli_reader LOGIN; END IF; END $$; \
             GRANT USAGE ON SCHEMA cli_test TO cli_reader; \
             GRANT SELECT ON ALL TABLES IN SCHEMA cli_test TO cli_reader;",
        )
        .unwrap();
    let owner_config = std::fs::read_to_string(dir.join("microseg.toml")).unwrap();
    let reader_config = owner_config.replace("postgres://postgres@", "postgres://cli_reader@");
    assert_ne!(reader_config, owner_config);
    std::fs::write(dir.join("microseg.toml"), &reader_config).unwrap();
    let read = env.json(&[
        "--data",
        data,
        "warehouse",
        "run",
        "coffee",
        "--engine",
        "postgres",
        "--as-of",
        as_of,
        "--json",
    ]);
    assert_eq!(
        read["size"],
        members(&env, data, "coffee", as_of).len(),
        "{read}"
    );
    let err = env.fails(&["--data", data, "warehouse", "load", "--engine", "postgres"]);
    assert!(
        err.contains("postgres:")
            && (err.contains("permission denied") || err.contains("must be owner")),
        "{err}"
    );
    std::fs::write(dir.join("microseg.toml"), &owner_config).unwrap();

    // Data already in the database under its own names (a CRM's customers and activity,
    // timestamps and jsonb): views in the layout, in a schema of their own, are all
    // `warehouse run` needs (docs/scale.md, "Pointing microseg at an existing PostgreSQL").
    admin
        .batch_execute(
            "DROP SCHEMA IF EXISTS cli_crm CASCADE; CREATE SCHEMA cli_crm; \
             CREATE TABLE cli_crm.customers AS SELECT * FROM cli_test.profiles; \
             ALTER TABLE cli_crm.customers RENAME COLUMN id TO customer_id; \
             CREATE TABLE cli_crm.activity AS SELECT profile_id AS customer_id, \
               to_timestamp(time / 1000.0) AS happened_at, event AS action, \
               revenue AS amount, properties::jsonb AS props FROM cli_test.events; \
             CREATE VIEW cli_crm.profiles AS SELECT customer_id AS id, * FROM cli_crm.customers; \
             CREATE VIEW cli_crm.events AS SELECT customer_id AS profile_id, \
               round(extract(epoch FROM happened_at) * 1000)::bigint AS time, \
               action AS event, amount AS revenue, props::json AS properties \
               FROM cli_crm.activity;",
        )
        .unwrap();
    let crm_config = owner_config.replace("schema = \"cli_test\"", "schema = \"cli_crm\"");
    assert_ne!(crm_config, owner_config);
    std::fs::write(dir.join("microseg.toml"), &crm_config).unwrap();
    let out = env.dir.path().join("crm.csv");
    for (name, _) in SHOP_SEGMENTS {
        env.ok(&[
            "--data",
            data,
            "warehouse",
            "run",
            name,
            "--engine",
            "postgres",
            "--as-of",
            as_of,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            out_ids(&out),
            members(&env, data, name, as_of),
            "views: {name}"
        );
    }
    std::fs::write(dir.join("microseg.toml"), &owner_config).unwrap();

    // A campaign on a segment a warehouse ran targets the list it brought back (here as
    // of an earlier date than the campaign's run), until `warehouse forget`.
    let early = "2026-03-01";
    let imported = env.json(&[
        "--data",
        data,
        "warehouse",
        "run",
        "big_spenders",
        "--engine",
        "postgres",
        "--as-of",
        early,
        "--json",
    ]);
    let now_size = members(&env, data, "big_spenders", as_of).len();
    let early_size = imported["size"].as_u64().unwrap() as usize;
    assert_eq!(early_size, members(&env, data, "big_spenders", early).len());
    assert_ne!(early_size, now_size, "pick dates where the segment differs");
    let campaign = env.write(
        "big.json",
        br#"{"name": "big", "segment": "big_spenders", "channel": "email", "holdout": 0.0,
            "variants": [{"name": "a", "weight": 1.0,
                          "message": {"subject": "Hi", "text": "Thanks"}}]}"#,
    );
    env.ok(&["--data", data, "campaign", "create", "--file", &campaign]);
    let targeted = |env: &Env| {
        env.json(&[
            "--data",
            data,
            "campaign",
            "run",
            "big",
            "--dry-run",
            "--as-of",
            as_of,
            "--json",
        ])["targeted"]
            .as_u64()
            .unwrap() as usize
    };
    assert_eq!(targeted(&env), early_size);
    // A person erased after the run is no longer targeted through the list.
    let early_members = members(&env, data, "big_spenders", early);
    env.ok(&["--data", data, "profile", "delete", &early_members[0]]);
    let early_size = early_size - 1;
    let now_size = members(&env, data, "big_spenders", as_of).len();
    assert_eq!(targeted(&env), early_size);
    env.ok(&["--data", data, "warehouse", "forget", "big_spenders"]);
    assert_eq!(targeted(&env), now_size);
    // The engine still holds the erased person: a run is refused until a new load.
    let stale = [
        "--data",
        data,
        "warehouse",
        "run",
        "big_spenders",
        "--engine",
        "duckdb",
        "--as-of",
        early,
    ];
    let err = env.fails(&stale);
    assert!(
        err.contains("1 ids that are not profiles of this workspace")
            && err.contains("microseg warehouse load --engine duckdb"),
        "{err}"
    );
    env.ok(&["--data", data, "warehouse", "load", "--engine", "duckdb"]);
    // A changed segment drops its list: run it, change it, and the campaign evaluates it.
    env.ok(&[
        "--data",
        data,
        "warehouse",
        "run",
        "big_spenders",
        "--engine",
        "duckdb",
        "--as-of",
        early,
    ]);
    assert_eq!(targeted(&env), early_size);
    env.ok(&[
        "--data", data, "segment", "create", "big_spenders", "--replace",
        "sum(revenue of order_completed, within 180d) > 1500 and count(page_viewed, within 30d) >= 2",
    ]);
    assert_eq!(targeted(&env), now_size);

    // Failures name what and where.
    let err = env.fails(&[
        "--data",
        data,
        "warehouse",
        "run",
        "nope",
        "--engine",
        "duckdb",
    ]);
    assert!(err.contains("no saved segment 'nope'"), "{err}");
    let err = env.fails(&[
        "--data",
        data,
        "warehouse",
        "run",
        "fam",
        "--engine",
        "oracle",
    ]);
    assert!(err.contains("unknown warehouse engine 'oracle'"), "{err}");
    let bare = Env::new();
    let err = bare.fails(&["warehouse", "load", "--engine", "postgres"]);
    assert!(err.contains("no [warehouse.postgres] section"), "{err}");
    // TLS is required here and the server's self-signed certificate is not trusted
    // without `ca_file`: the handshake fails, nothing goes in clear.
    std::fs::write(
        bare.data().join("microseg.toml"),
        format!("[warehouse.postgres]\nurl = \"{pg}?sslmode=require\"\n"),
    )
    .unwrap();
    let err = bare.fails(&["warehouse", "load", "--engine", "postgres"]);
    assert!(
        err.contains("postgres: cannot connect") && err.contains("certificate"),
        "{err}"
    );
}

/// Trait names a write key could send cannot make a load fail: the layout's own column
/// names and names equal but for case are left out, odd names are quoted.
#[test]
fn hostile_trait_names_leave_loads_working() {
    let duckdb = engine_var("MICROSEG_DUCKDB");
    let pg = engine_var("MICROSEG_POSTGRES_URL");
    let env = Env::new();
    let csv = env.write(
        "p.csv",
        "id,age,Age,merged_into,ID,\"we\"\"ird\",sp ace,it's\nu1,30,31,x,y,1,a,b\nu2,40,41,x,y,2,c,d\n"
            .as_bytes(),
    );
    env.ok(&["import", "profiles", &csv]);
    let mut config = std::fs::read_to_string(env.data().join("microseg.toml")).unwrap();
    config.push_str(&format!(
        "\n[warehouse.postgres]\nurl = \"{pg}?sslmode=disable\"\nschema = \"cli_hostile\"\n\
         [warehouse.duckdb]\nfile = \"w.duckdb\"\ncli = \"{duckdb}\"\n"
    ));
    std::fs::write(env.data().join("microseg.toml"), config).unwrap();
    env.ok(&["segment", "create", "older", "Age >= 35 and `we\"ird` >= 2"]);
    for engine in ["duckdb", "postgres"] {
        let loaded = env.json(&["warehouse", "load", "--engine", engine, "--json"]);
        assert_eq!(loaded["profiles"], 2, "{engine}");
        let run = env.json(&["warehouse", "run", "older", "--engine", engine, "--json"]);
        assert_eq!(run["size"], 1, "{engine}");
    }
    let lake = env.dir.path().join("lake");
    env.ok(&["warehouse", "export", "--out", lake.to_str().unwrap()]);
    let out = Command::new(&duckdb)
        .args([
            "-batch",
            "-csv",
            "-noheader",
            ":memory:",
            "-c",
            &format!(
                "SELECT name FROM parquet_schema('{}/profiles.parquet') WHERE name <> 'schema'",
                lake.display()
            ),
        ])
        .output()
        .unwrap();
    let columns: Vec<String> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&out.stdout[..])
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(
        columns,
        ["id", "merged_into", "Age", "it's", "sp ace", "we\"ird"],
        "the layout's id and merged_into once, one of Age/age (the first in byte order)"
    );
    // A condition on a trait left out is refused when compiled, naming it and why.
    for (condition, name) in [("ID = \"y\"", "'ID'"), ("age > 1", "'age'")] {
        let err = env.fails(&["segment", "sql", condition, "--dialect", "duckdb"]);
        assert!(
            err.contains(name) && err.contains("not in the SQL layout"),
            "{err}"
        );
    }
}

/// Values a write key could send that PostgreSQL cannot hold (a NUL in text, `\u0000` in
/// JSON), in traits, string sets, event properties and ids: every engine still loads,
/// and returns microseg's own members, id by id (docs/warehouse.md, "Layout").
#[test]
fn hostile_values_leave_loads_working() {
    let duckdb = engine_var("MICROSEG_DUCKDB");
    let pg = engine_var("MICROSEG_POSTGRES_URL");
    let spark = engine_var("MICROSEG_SPARK_URL");
    let env = Env::new();
    let profiles = env.write(
        "p.ndjson",
        br#"{"id":"u1","name":"a\u0000b","tags":["x\u0000y","z"]}
{"id":"u2","name":"ok","tags":["z"]}
{"id":"n\u0000","name":"nul id","tags":["z"]}
{"id":"n\ufffd","name":"fffd id"}
{"id":"n\ufffd0","name":"looks encoded"}
"#,
    );
    env.ok(&["import", "profiles", &profiles]);
    let events = env.write(
        "e.ndjson",
        br#"{"user_id":"u1","time":"2026-01-01T00:00:00Z","event":"page_viewed","path":"a\u0000b"}
{"user_id":"u2","time":"2026-01-02T00:00:00Z","event":"page_viewed","path":"/b","note":"\\u0000"}
{"user_id":"n\u0000","time":"2026-01-03T00:00:00Z","event":"page_viewed","path":"/c"}
{"user_id":"n\ufffd0","time":"2026-01-04T00:00:00Z","event":"order_completed","revenue":5}
"#,
    );
    env.ok(&[
        "import",
        "events",
        &events,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--name",
        "event",
    ]);
    let mut config = std::fs::read_to_string(env.data().join("microseg.toml")).unwrap();
    config.push_str(&format!(
        "\n[warehouse.postgres]\nurl = \"{pg}?sslmode=disable\"\nschema = \"cli_hostile_values\"\n\
         [warehouse.duckdb]\nfile = \"w.duckdb\"\ncli = \"{duckdb}\"\n\
         [warehouse.spark]\nurl = \"{spark}\"\ndatabase = \"cli_hostile_values\"\n"
    ));
    std::fs::write(env.data().join("microseg.toml"), config).unwrap();
    // Each with the members microseg gives, written by hand from the data above.
    let segments = [
        ("name_a", r#"name contains "a""#, vec!["u1"]),
        ("tag_z", r#"tags has "z""#, vec!["n\0", "u1", "u2"]),
        (
            "path_a",
            r#"did(page_viewed where path contains "a")"#,
            vec!["u1"],
        ),
        (
            "path_slash",
            r#"did(page_viewed where path starts_with "/")"#,
            vec!["n\0", "u2"],
        ),
        (
            "note",
            r#"did(page_viewed where note = "\\u0000")"#,
            vec!["u2"],
        ),
        ("buyers", "orders >= 1", vec!["n\u{fffd}0"]),
    ];
    let as_of = "2026-02-01";
    for (name, condition, want) in &segments {
        env.ok(&["segment", "create", name, condition]);
        assert_eq!(
            members(&env, env.data().to_str().unwrap(), name, as_of),
            *want,
            "microseg: {name}"
        );
    }
    // Before any load, a run says what to do.
    let err = env.fails(&["warehouse", "run", "name_a", "--engine", "duckdb"]);
    assert!(
        err.contains("microseg warehouse load --engine duckdb"),
        "{err}"
    );
    for engine in ["duckdb", "postgres", "spark"] {
        let loaded = env.json(&["warehouse", "load", "--engine", engine, "--json"]);
        assert_eq!(loaded["profiles"], 5, "{engine}");
        assert_eq!(loaded["events"], 4, "{engine}");
        let out = env.dir.path().join("m.csv");
        for (name, _, want) in &segments {
            env.ok(&[
                "warehouse",
                "run",
                name,
                "--engine",
                engine,
                "--as-of",
                as_of,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert_eq!(out_ids(&out), *want, "{engine}: {name}");
        }
    }
}
