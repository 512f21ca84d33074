//! The web console and the HTML report in a real browser: headless Chromium driven by
//! playwright-core (tests/console/console.mjs and report.mjs), on the demo shop, with
//! what to expect counted here from the demo's own CSV files.
//!
//! `./test` installs Chromium and playwright-core (tests/console/chromium.sh) and sets
//! MICROSEG_PLAYWRIGHT; without it these tests fail saying so. Screenshots and the printed
//! report are kept in target/tmp/console/.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Env;

fn playwright() -> String {
    std::env::var("MICROSEG_PLAYWRIGHT").unwrap_or_else(|_| {
        panic!(
            "MICROSEG_PLAYWRIGHT is not set: run the tests with ./test, which installs Chromium \
             and playwright-core (tests/console/chromium.sh) and points it at them"
        )
    })
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/console")
        .join(name)
}

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a Node script; its checks print as they pass, the first failure fails the test.
fn node(script: &Path, args: &[&str], vars: &[(&str, String)]) {
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .env("MICROSEG_PLAYWRIGHT", playwright())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run node (./test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
}

#[test]
fn the_console_works_in_a_browser_and_the_report_opens_offline() {
    let env = Env::new();
    let data = env.data();
    std::fs::remove_dir_all(&data).unwrap();
    // 12,000 customers: the smallest round shop whose uplift test saves `buys_anyway`, which
    // the winter campaign excludes (below it the demo skips that campaign).
    let demo = env.ok(&["demo", data.to_str().unwrap(), "--customers", "12000"]);
    let report = data.join("demo").join("report.html");
    assert!(
        demo.contains(&format!("Report: {}", report.display())),
        "the demo says where its report is:\n{demo}"
    );

    // What to expect, from the CSV the demo imported.
    let mut reader = csv::Reader::from_path(data.join("demo").join("profiles.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (id, email, gender, discipline, skill) = (
        col("id"),
        col("email"),
        col("gender"),
        col("discipline"),
        col("skill"),
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mtb = rows
        .iter()
        .filter(|r| &r[discipline] == "mountain" && &r[skill] == "amateur")
        .count();
    let person = rows
        .iter()
        .find(|r| &r[gender] == "f" && &r[discipline] == "mountain" && &r[skill] == "amateur")
        .expect("the demo has female amateur mountain bikers");

    let admin = env.key("admin");
    let write = env.key("write");
    let server = env.serve();
    // A dimension with a value per person: the tree shows the 30 largest children and
    // counts the rest, it does not send 12,000 nodes.
    let (status, tree) = super::server::admin_call(
        &server.addr,
        &format!("Bearer {admin}"),
        "GET",
        "/v1/console/explore?by=email",
        "",
    );
    assert_eq!(status, 200, "{tree}");
    let root = &tree["tree"];
    assert_eq!(root["size"], rows.len());
    assert_eq!(root["children"].as_array().unwrap().len(), 30);
    assert_eq!(root["more"], rows.len() - 30);
    // A discovery request is bounded: no support under 20, at most 16 dimensions.
    let bearer = format!("Bearer {admin}");
    let (status, found) = super::server::admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/console/discover",
        r#"{"target": "orders >= 2", "dims": ["skill"], "min_support": 1}"#,
    );
    assert_eq!(
        (status, &found["min_support"]),
        (200, &serde_json::json!(20))
    );
    let many: Vec<String> = (0..17).map(|i| format!("d{i}")).collect();
    let (status, refused) = super::server::admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/console/discover",
        &serde_json::json!({"target": "orders >= 2", "dims": many}).to_string(),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("at most 16 dimensions"),
        "{refused}"
    );
    // Out-of-range numbers are refused, not quietly bent into range.
    for (method, path, body, says) in [
        (
            "POST",
            "/v1/console/discover",
            r#"{"target": "orders >= 2", "max_depth": 9}"#,
            "max_depth 9: give 1 to 3",
        ),
        (
            "GET",
            "/v1/console/personas?k=1000000000",
            "",
            "k 1000000000: give 2 to 8",
        ),
    ] {
        let (status, refused) =
            super::server::admin_call(&server.addr, &bearer, method, path, body);
        assert_eq!(status, 400, "{path}: {refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(says),
            "{refused}"
        );
    }
    let out = artefacts();
    node(
        &script("console.mjs"),
        &[],
        &[
            ("BASE", format!("http://{}", server.addr)),
            ("TOKEN", admin),
            ("WRITE_KEY", write),
            ("OUT", out.display().to_string()),
            ("PROFILES", rows.len().to_string()),
            ("MTB_SIZE", mtb.to_string()),
            ("PROFILE", person[id].to_string()),
            ("PROFILE_EMAIL", person[email].to_string()),
            ("PROFILE_IN_FEMALE_MTB", "1".into()),
            ("CAMPAIGN", "winter_gloves".into()),
        ],
    );
    drop(server);
    node(
        &script("report.mjs"),
        &[report.to_str().unwrap(), out.to_str().unwrap()],
        &[],
    );
}
