//! Campaigns on the demo shop (issue 20): the rules' shares, consent, the segment, each
//! person's own traits in their message, the same people on every run, templates that
//! fail never sent, caps across campaigns. Expected values come from the demo's own CSV
//! files, read here, not from the code under test.

use std::collections::{BTreeMap, BTreeSet};

use super::Env;

/// The demo's profiles as the CSV has them: id → column → value.
/// tests/smtp_sink.py (aiosmtpd through the test Python) writing each message it
/// receives to `received`; extra `args` (`--tls DIR`, `--auth USER:PASSWORD`); `quiet`
/// drops its stderr (refused handshakes print traces). It stops when dropped: its stdin
/// closes and it is waited for, so `received` is complete after the drop.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
}

impl SmtpSink {
    fn start(received: &std::path::Path, args: &[&str], quiet: bool) -> SmtpSink {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(super::server::test_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/smtp_sink.py"
            ))
            .arg(received)
            .args(args)
            .stdin(Stdio::piped())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let port = port.trim().parse().expect("the sink's port");
        SmtpSink { child, port }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn profiles_csv(env: &Env) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(env.data().join("demo").join("profiles.csv")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let row: BTreeMap<String, String> = header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect();
            (row["id"].clone(), row)
        })
        .collect()
}

fn messages(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// |observed - p| within 4 standard deviations of a binomial share over n.
fn within_4_sd(what: &str, k: u64, n: u64, p: f64) {
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    let got = k as f64 / n as f64;
    assert!(
        (got - p).abs() <= 4.0 * sd,
        "{what}: {k}/{n} = {got}, setting {p} (sd {sd})"
    );
}

#[test]
fn campaigns_follow_the_workspace_rules_on_the_demo_shop() {
    let env = Env::new();
    let data = env.data();
    std::fs::remove_dir_all(&data).unwrap();
    env.ok(&[
        "demo",
        data.to_str().unwrap(),
        "--customers",
        "5000",
        "--seed",
        "7",
    ]);
    // The test's own rules, in place of the demo's (its [activation] tables end the file).
    let mut config = std::fs::read_to_string(data.join("microseg.toml")).unwrap();
    if let Some(at) = config.find("[activation]") {
        config.truncate(at);
    }
    config.push_str(
        "\n[activation]\nglobal_control = 0.1\nexploration = 0.1\ncaps = { email = \"1/7d\" }\n\
         [activation.exploration_message.email]\nsubject = \"News for {{ first_name }}\"\ntext = \"What is new\"\n",
    );
    std::fs::write(data.join("microseg.toml"), config).unwrap();
    // The demo's own campaigns are archived: this test's campaigns stand alone.
    env.ok(&["campaign", "archive", "mtb_mailing"]);
    env.ok(&["campaign", "archive", "winter_gloves"]);
    // The demo queued (and delivered) its winter messages: count from here.
    let queued_by_demo = env.count("outbox");
    let csv = profiles_csv(&env);
    let campaign = |name: &str, segment: &str, text: &str| {
        serde_json::json!({
            "name": name, "segment": segment, "channel": "email", "holdout": 0.2,
            "offer": {"kind": "discount", "value": 0.15, "valid_for": "48h", "code": "unique"},
            "variants": [
                {"name": "a", "weight": 3.0, "message": {"subject": "{{ first_name }}, for you", "text": text}},
                {"name": "b", "weight": 1.0, "message": {"subject": "Hi {{ first_name }}", "text": text}}
            ]
        })
        .to_string()
    };
    // Refused at create: a template that does not parse names its field and line.
    let broken = env.write(
        "broken.json",
        campaign("broken", "age > 0", "line one\n{{ city ").as_bytes(),
    );
    let err = env.fails(&["campaign", "create", "--file", &broken]);
    assert!(err.contains("variants[0].message.text: line 2"), "{err}");
    let women = env.write(
        "women.json",
        campaign(
            "women",
            r#"gender = "f""#,
            "In {{ city }}: code {{ offer.code }}",
        )
        .as_bytes(),
    );
    env.ok(&["campaign", "create", "--file", &women]);
    let dry = env.dir.path().join("dry.ndjson");
    // As of the demo's instant, so offers' validity and the audience do not move.
    let run = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["campaign", "run"];
        all.extend_from_slice(args);
        all.extend(["--as-of", "2026-11-01", "--json"]);
        env.json(&all)
    };
    let counts = run(&["women", "--dry-run", "--out", dry.to_str().unwrap()]);
    let n = |k: &str| counts[k].as_u64().unwrap();
    let women_ids: BTreeSet<&String> = csv.keys().filter(|id| csv[*id]["gender"] == "f").collect();
    assert_eq!(n("targeted"), women_ids.len() as u64);
    within_4_sd("global control", n("global_control"), n("targeted"), 0.1);
    within_4_sd(
        "holdout",
        n("holdout"),
        n("targeted") - n("global_control"),
        0.2,
    );
    let sent = messages(&dry);
    assert_eq!(sent.len() as u64, n("queued"));
    let explored = sent
        .iter()
        .filter(|m| m["variant"] == "exploration")
        .count() as u64;
    assert_eq!(explored, n("exploration"));
    within_4_sd("exploration", explored, n("queued"), 0.1);
    let a = sent.iter().filter(|m| m["variant"] == "a").count() as u64;
    within_4_sd("variant a (3:1)", a, n("queued") - explored, 0.75);
    for m in &sent {
        let id = m["profile"].as_str().unwrap();
        let row = &csv[id];
        assert_eq!(row["gender"], "f", "{id} is outside the segment");
        assert_eq!(row["consent_email"], "true", "{id} has no consent");
        let subject = m["content"]["subject"].as_str().unwrap();
        assert!(subject.contains(&row["first_name"]), "{id}: {subject}");
        if m["variant"] != "exploration" {
            let text = m["content"]["text"].as_str().unwrap();
            assert!(
                text.starts_with(&format!("In {}:", row["city"])),
                "{id}: {text}"
            );
            assert!(text.ends_with(m["offer"]["code"].as_str().unwrap()));
        }
    }
    let no_consent = women_ids
        .iter()
        .filter(|id| csv[**id]["consent_email"] != "true")
        .count() as u64;
    assert!(n("no_consent") <= no_consent && n("no_consent") > 0);
    // The same people, the same messages, on every run.
    let again = env.dir.path().join("again.ndjson");
    run(&["women", "--dry-run", "--out", again.to_str().unwrap()]);
    let same = std::fs::read_to_string(&dry).unwrap() == std::fs::read_to_string(&again).unwrap();
    assert!(
        same,
        "a second dry run chose other people or wrote other messages"
    );
    // `decide` names the winner for a treated member, with the message the run rendered,
    // and gives a reason to a non-member.
    let treated = &sent[0];
    let id = treated["profile"].as_str().unwrap();
    let decision = env.json(&[
        "decide",
        id,
        "--channel",
        "email",
        "--as-of",
        "2026-11-01",
        "--json",
    ]);
    assert_eq!(decision["winner"]["campaign"], "women", "{decision}");
    assert_eq!(decision["winner"]["variant"], treated["variant"]);
    assert_eq!(decision["winner"]["content"], treated["content"]);
    let man = csv.keys().find(|id| csv[*id]["gender"] == "m").unwrap();
    let decision = env.json(&[
        "decide",
        man,
        "--channel",
        "email",
        "--as-of",
        "2026-11-01",
        "--json",
    ]);
    assert_eq!(decision["winner"], serde_json::Value::Null);
    let women = decision["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["campaign"] == "women")
        .unwrap()
        .clone();
    assert_eq!(women["reason"], "not in segment", "{decision}");
    let err = env.fails(&["decide", "nobody", "--channel", "email"]);
    assert!(err.contains("nobody"), "{err}");
    // `campaign preview` renders the person's own message and counts nowhere.
    let preview = env.json(&[
        "campaign",
        "preview",
        "women",
        "--profile",
        id,
        "--as-of",
        "2026-11-01",
        "--json",
    ]);
    assert_eq!(
        preview["message"]["content"], treated["content"],
        "{preview}"
    );
    assert_eq!(preview["blocked_by"], serde_json::Value::Null);
    let preview = env.json(&[
        "campaign",
        "preview",
        "women",
        "--profile",
        man,
        "--as-of",
        "2026-11-01",
        "--json",
    ]);
    assert_eq!(preview["blocked_by"], "not in segment");
    assert_eq!(
        env.count("outbox"),
        queued_by_demo,
        "previews and decisions queue nothing"
    );
    // A variable some people lack (`last_order_at`: who never ordered has none): they get
    // nothing (counted), the others their message. Buyers from the demo's events file.
    let mut events = csv::Reader::from_path(env.data().join("demo").join("events.csv")).unwrap();
    let buyers: BTreeSet<String> = events
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[2] == "order_completed" && &r[1] < "2026-11-01")
        .map(|r| r[0].to_string())
        .collect();
    let phone = env.write(
        "last_order.json",
        campaign(
            "phone",
            r#"gender = "f""#,
            "Your last order: {{ last_order_at }}",
        )
        .as_bytes(),
    );
    env.ok(&["campaign", "create", "--file", &phone]);
    let out = env.dir.path().join("phone.ndjson");
    let counts = run(&["phone", "--dry-run", "--out", out.to_str().unwrap()]);
    assert!(counts["render_failed"].as_u64().unwrap() > 0, "{counts}");
    for m in messages(&out) {
        if m["variant"] != "exploration" {
            let id = m["profile"].as_str().unwrap();
            assert!(buyers.contains(id), "{id} got a message without an order");
            let text = m["content"]["text"].as_str().unwrap();
            assert!(!text.ends_with(": "), "{id}: {text}");
        }
    }
    // Queued for real; a second campaign inside the e-mail cap (1 a week) reaches nobody
    // the first reached.
    let first = env.dir.path().join("first.ndjson");
    let queued = run(&["women", "--out", first.to_str().unwrap()]);
    assert_eq!(queued["queued"], counts_of(&dry));
    let everyone = env.write(
        "everyone.json",
        campaign("everyone", "age > 0", "Hello from {{ city }}").as_bytes(),
    );
    env.ok(&["campaign", "create", "--file", &everyone]);
    let second = env.dir.path().join("second.ndjson");
    let counts = run(&["everyone", "--out", second.to_str().unwrap()]);
    let reached: BTreeSet<String> = messages(&first)
        .iter()
        .map(|m| m["profile"].as_str().unwrap().to_string())
        .collect();
    let also: Vec<String> = messages(&second)
        .iter()
        .map(|m| m["profile"].as_str().unwrap().to_string())
        .filter(|id| reached.contains(id))
        .collect();
    assert!(
        also.is_empty(),
        "{} people got both: {:?}",
        also.len(),
        &also[..also.len().min(3)]
    );
    assert!(counts["capped"].as_u64().unwrap() > 0, "{counts}");
    // Running the first again queues nothing new (idempotency keys).
    let rerun = run(&["women"]);
    assert_eq!(
        (rerun["queued"].as_u64(), rerun["already_queued"].as_u64()),
        (Some(0), Some(reached.len() as u64))
    );
    // A paused campaign does not run.
    env.ok(&["campaign", "pause", "women"]);
    let err = env.fails(&["campaign", "run", "women", "--dry-run"]);
    assert!(err.contains("paused"), "{err}");
}

fn counts_of(path: &std::path::Path) -> serde_json::Value {
    serde_json::json!(messages(path).len())
}

/// Quiet hours hold a message until they end in the person's own time zone (hand
/// computed: Budapest is UTC+1 in December, Los Angeles UTC-8), and `decide` says so.
#[test]
fn quiet_hours_hold_messages_in_each_persons_time_zone() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,timezone,consent_email\nbp,Anna,Europe/Budapest,true\nla,Bob,America/Los_Angeles,true\nutc,Cem,,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[activation]\nquiet_hours = \"21:00-08:00\"\n");
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "first_name exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let out = env.dir.path().join("m.ndjson");
    let counts = env.json(&[
        "campaign",
        "run",
        "hello",
        "--as-of",
        "2026-12-02T21:30:00Z",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        (
            counts["queued"].as_u64(),
            counts["quiet_hours_held"].as_u64()
        ),
        (Some(3), Some(2))
    );
    let due: BTreeMap<String, String> = messages(&out)
        .iter()
        .map(|m| {
            (
                m["profile"].as_str().unwrap().to_string(),
                m["due_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(due["bp"], "2026-12-03T07:00:00Z");
    assert_eq!(due["la"], "2026-12-02T21:30:00Z");
    assert_eq!(due["utc"], "2026-12-03T08:00:00Z");
    let decision = env.json(&[
        "decide",
        "bp",
        "--channel",
        "email",
        "--as-of",
        "2026-12-02T21:30:00Z",
        "--json",
    ]);
    assert_eq!(
        decision["candidates"][0]["reason"], "quiet hours",
        "{decision}"
    );
    let decision = env.json(&[
        "decide",
        "bp",
        "--channel",
        "email",
        "--as-of",
        "2026-12-03T09:00:00Z",
        "--json",
    ]);
    assert_eq!(decision["winner"]["campaign"], "hello", "{decision}");
}

/// The suppression list: an address added in any case or spacing keeps its person out,
/// `decide` says why, and the list holds only hashes.
#[test]
fn suppressed_addresses_are_never_contacted() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,email,consent_email\na,anna@example.com,true\nb,bob@example.com,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "email exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let added = env.json(&[
        "suppress",
        "add",
        "email",
        "  Anna@Example.COM ",
        "--reason",
        "complaint",
        "--json",
    ]);
    assert_eq!(added["added"], true);
    let out = env.dir.path().join("m.ndjson");
    let counts = env.json(&[
        "campaign",
        "run",
        "hello",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        (counts["suppressed"].as_u64(), counts["queued"].as_u64()),
        (Some(1), Some(1))
    );
    let to: Vec<String> = messages(&out)
        .iter()
        .map(|m| m["profile"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(to, ["b"]);
    let decision = env.json(&["decide", "a", "--channel", "email", "--json"]);
    assert_eq!(
        decision["candidates"][0]["reason"], "suppressed",
        "{decision}"
    );
    let stored: Vec<String> = env
        .store()
        .prepare("SELECT address_sha256 FROM suppressions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // printf 'anna@example.com' | sha256sum
    assert_eq!(
        stored,
        ["f7d54c22dda5b1780276601cd005909b70543fc4a6ba72d735b4cb9bbb611f01"]
    );
    env.ok(&["suppress", "remove", "email", "anna@example.com"]);
    let counts = env.json(&["campaign", "run", "hello", "--dry-run", "--json"]);
    assert_eq!(counts["queued"], 2);
}

/// The same operations over the management API.
#[test]
fn campaigns_over_the_management_api() {
    use super::server::admin_call;
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,consent_email\na,Anna,true\nb,Bob,false\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    let call = |method: &str, path: &str, body: &str| {
        admin_call(&server.addr, &bearer, method, path, body)
    };
    let campaign = r#"{"name": "hello", "segment": "first_name exists", "channel": "email",
        "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#;
    let (status, body) = call("POST", "/v1/campaigns", campaign);
    assert_eq!((status, body["version"].as_i64()), (201, Some(1)), "{body}");
    let (status, body) = call(
        "POST",
        "/v1/campaigns",
        &campaign.replace("{{ first_name }}", "{{ first_name "),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("variants[0].message.subject: line 1"),
        "{body}"
    );
    let (status, body) = call(
        "PUT",
        "/v1/campaigns/hello",
        &campaign.replace("Hi", "Hello"),
    );
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let (_, list) = call("GET", "/v1/campaigns", "");
    assert_eq!(
        list["campaigns"][0]["campaign"]["variants"][0]["message"]["subject"],
        "Hello {{ first_name }}"
    );
    let (status, preview) = call("GET", "/v1/campaigns/hello/preview?profile=a", "");
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["message"]["content"]["subject"], "Hello Anna");
    let (_, preview) = call("GET", "/v1/campaigns/hello/preview?profile=b", "");
    assert_eq!(preview["blocked_by"], "no consent");
    let (status, counts) = call("POST", "/v1/campaigns/hello/run?dry_run=true", "");
    assert_eq!(
        (
            status,
            counts["queued"].as_u64(),
            counts["no_consent"].as_u64()
        ),
        (200, Some(1), Some(1)),
        "{counts}"
    );
    let (status, body) = call("POST", "/v1/campaigns/hello/pause", "");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("paused")),
        "{body}"
    );
    let (status, body) = call("POST", "/v1/campaigns/hello/run", "");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("paused"),
        "{body}"
    );
    assert_eq!(call("POST", "/v1/campaigns/hello/resume", "").0, 200);
    let (status, counts) = call("POST", "/v1/campaigns/hello/run", "");
    assert_eq!(
        (status, counts["queued"].as_u64()),
        (200, Some(1)),
        "{counts}"
    );
    // A test send needs the channel's settings; without them it says which.
    let (status, body) = call(
        "POST",
        "/v1/campaigns/hello/test?profile=a&to=t@example.com",
        "",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("[channels.email] in microseg.toml: missing"),
        "{body}"
    );
    assert_eq!(call("POST", "/v1/campaigns/hello/explode", "").0, 404);
    assert_eq!(call("GET", "/v1/campaigns/nope", "").0, 404);
}

/// Arbitration in a run: people a higher-priority campaign of the channel reaches are
/// left to it (its own holdout and consent taken into account); equal priorities do not
/// outrank each other.
#[test]
fn a_higher_priority_campaign_keeps_its_people() {
    let env = Env::new();
    let mut csv = String::from("id,first_name,vip,consent_email\n");
    for i in 0..40 {
        csv.push_str(&format!("p{i:02},N{i},{},{}\n", i < 20, i % 10 != 0));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&[
        "import",
        "profiles",
        &file,
        "--type",
        "vip=bool",
        "--type",
        "consent_email=bool",
    ]);
    let campaign = |name: &str, segment: &str, priority: i64| {
        let body = format!(
            r#"{{"name": "{name}", "segment": "{segment}", "channel": "email", "priority": {priority},
                 "variants": [{{"name": "a", "message": {{"subject": "Hi", "text": "x"}}}}]}}"#
        );
        let path = env.write(&format!("{name}.json"), body.as_bytes());
        env.ok(&["campaign", "create", "--file", &path]);
    };
    campaign("vip_offer", "vip = true", 10);
    campaign("everyone", "first_name exists", 1);
    let out = env.dir.path().join("m.ndjson");
    let counts = env.json(&[
        "campaign",
        "run",
        "everyone",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    // The 20 VIPs of which 2 (p00, p10) have no consent: vip_offer reaches 18, left to
    // it. The other 22 are everyone's, and 4 of all 40 (p00, p10, p20, p30) have no
    // consent: 40 - 18 - 4 = 18 queued.
    assert_eq!(counts["lower_priority"], 18, "{counts}");
    assert_eq!(counts["no_consent"], 4, "{counts}");
    assert_eq!(counts["queued"], 18, "{counts}");
    for m in messages(&out) {
        let id = m["profile"].as_str().unwrap();
        assert!(id >= "p20", "{id} is a VIP reached by the higher campaign");
    }
    let counts = env.json(&["campaign", "run", "vip_offer", "--dry-run", "--json"]);
    assert_eq!(
        (counts["lower_priority"].as_u64(), counts["queued"].as_u64()),
        (Some(0), Some(18))
    );
    // Paused, it outranks nobody; at equal priority neither outranks the other.
    env.ok(&["campaign", "pause", "vip_offer"]);
    let counts = env.json(&["campaign", "run", "everyone", "--dry-run", "--json"]);
    assert_eq!(
        (counts["lower_priority"].as_u64(), counts["queued"].as_u64()),
        (Some(0), Some(36))
    );
    env.ok(&["campaign", "resume", "vip_offer"]);
    campaign("rival", "first_name exists", 1);
    let counts = env.json(&["campaign", "run", "everyone", "--dry-run", "--json"]);
    assert_eq!(counts["lower_priority"], 18, "{counts}");
}

/// Calls `f` until it says done (or `seconds` pass); returns its last value.
fn poll<T>(seconds: u64, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let (done, value) = f();
        if done || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `GET /v1/decide` on a running server: the winner follows the event that just arrived
/// (live membership), a higher priority wins, consent and the fallback content hold, the
/// write key and CORS are enforced, each decision with a winner is recorded as a
/// `decision_served` event, and a campaign created while serving takes part within
/// seconds. The expected winners follow from the two campaigns' definitions by hand.
#[test]
fn decisions_over_http_follow_live_membership() {
    use super::server::{admin_call, basic, http, try_http};
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,consent_web\na,Anna,true\nb,Bob,true\nc,Cleo,false\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_web=bool"]);
    let config = env.data().join("microseg.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut text = text.replace(
        "cors_origins = []",
        "cors_origins = [\"https://shop.example\"]",
    );
    text.push_str("\n[activation.fallback]\nhome_hero = \"Welcome, {{ first_name }}\"\n");
    std::fs::write(&config, text).unwrap();
    let web = |name: &str, segment: &str, priority: i64, content: &str| {
        let body = serde_json::json!({
            "name": name, "segment": segment, "channel": "web", "priority": priority,
            "variants": [{"name": "a", "message": {"placement": "home_hero", "content": content}}],
        });
        env.write(&format!("{name}.json"), body.to_string().as_bytes())
    };
    let everyone = web("everyone", "first_name exists", 1, "Hello {{ first_name }}");
    let winter = web(
        "winter",
        r#"count(page_viewed where category = "winter", within 30d) >= 1"#,
        10,
        "{{ first_name }}, winter gloves are back",
    );
    env.ok(&["campaign", "create", "--file", &everyone]);
    env.ok(&["campaign", "create", "--file", &winter]);
    let key = env.key("write");
    let auth = basic(&key);
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    // Anna's decisions won by `everyone`, to count her exposures against.
    let anna_everyone = std::cell::Cell::new(0usize);
    let decide = |query: &str| -> (u16, serde_json::Value) {
        let (s, b) = http(
            &server.addr,
            "GET",
            &format!("/v1/decide?{query}"),
            &[("Authorization", &auth)],
            b"",
        );
        let d = serde_json::from_str(&b).unwrap_or(serde_json::Value::Null);
        if query.starts_with("profile=a&") && d["winner"]["campaign"] == "everyone" {
            anna_everyone.set(anna_everyone.get() + 1);
        }
        (s, d)
    };
    let reason = |d: &serde_json::Value, campaign: &str| -> String {
        d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["campaign"] == campaign)
            .map(|c| c["reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no candidate {campaign}: {d}"))
    };

    // Anna has not viewed a winter page: the only campaign she is in wins.
    let (status, d) = decide("profile=a&placement=home_hero");
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["winner"]["campaign"], "everyone", "{d}");
    assert_eq!(d["winner"]["content"]["content"], "Hello Anna", "{d}");
    assert_eq!(reason(&d, "winter"), "not in segment");

    // She views one; once it is committed, the next decision reflects it.
    let page = r#"{"userId": "a", "name": "gloves", "properties": {"category": "winter"}}"#;
    let (status, body) = http(
        &server.addr,
        "POST",
        "/v1/page",
        &[("Authorization", &auth)],
        page.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let d = poll(10, || {
        let (_, d) = decide("profile=a&placement=home_hero");
        (d["winner"]["campaign"] == "winter", d)
    });
    assert_eq!(d["winner"]["campaign"], "winter", "{d}");
    assert_eq!(
        d["winner"]["content"]["content"],
        "Anna, winter gloves are back"
    );
    assert_eq!(reason(&d, "everyone"), "lower priority");

    // Cleo has not consented to web personalisation: nobody wins, she gets the fallback.
    let (_, d) = decide("profile=c&placement=home_hero");
    assert_eq!(d["winner"], serde_json::Value::Null, "{d}");
    assert_eq!(reason(&d, "everyone"), "no consent");
    assert_eq!(d["fallback"], "Welcome, Cleo");

    // Refusals.
    assert_eq!(decide("profile=nobody&placement=home_hero").0, 404);
    assert_eq!(decide("profile=a&channel=fax").0, 400);
    assert_eq!(decide("profile=a").0, 400);
    let (status, _) = http(
        &server.addr,
        "GET",
        "/v1/decide?profile=a&channel=web",
        &[],
        b"",
    );
    assert_eq!(status, 401);

    // CORS: the configured origin is allowed, another is not.
    let (status, head, _) = try_http(
        &server.addr,
        "OPTIONS",
        "/v1/decide",
        &[("Origin", "https://shop.example")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 204);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://shop.example"),
        "{head}"
    );
    let (_, head, _) = try_http(
        &server.addr,
        "GET",
        "/v1/decide?profile=b&placement=home_hero",
        &[("Origin", "https://evil.example"), ("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );

    // A campaign created while serving, with its own condition, takes part within seconds.
    let late = serde_json::json!({
        "name": "late", "segment": "first_name = \"Bob\"", "channel": "web", "priority": 50,
        "variants": [{"name": "a", "message": {"placement": "home_hero", "content": "Bob!"}}],
    });
    let (status, body) = admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/campaigns",
        &late.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let d = poll(20, || {
        let (_, d) = decide("profile=b&placement=home_hero");
        (d["winner"]["campaign"] == "late", d)
    });
    assert_eq!(d["winner"]["campaign"], "late", "{d}");
    // Its own audience is not a segment anyone sees.
    let (_, segments) = admin_call(&server.addr, &bearer, "GET", "/v1/segments", "");
    assert_eq!(
        segments["segments"].as_array().unwrap().len(),
        0,
        "{segments}"
    );

    // Every decision with a winner was recorded for Anna: the `everyone` ones, then the
    // `winter` ones (the polling asked until it saw it at least once).
    let served = poll(10, || {
        let (_, profile) = admin_call(
            &server.addr,
            &bearer,
            "GET",
            "/v1/profiles/a?events=1000",
            "",
        );
        let served: Vec<serde_json::Value> = profile["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "decision_served")
            .cloned()
            .collect();
        let done = served
            .iter()
            .any(|e| e["properties"]["campaign"] == "winter");
        (done, served)
    });
    let everyone_served = served
        .iter()
        .filter(|e| e["properties"]["campaign"] == "everyone")
        .count();
    // One exposure per decision she was served (the polling may have asked again before
    // her page view was applied).
    assert_eq!(everyone_served, anna_everyone.get(), "{served:?}");
    assert!(everyone_served >= 1);
    let first_winter = served
        .iter()
        .find(|e| e["properties"]["campaign"] == "winter")
        .expect("a winter exposure");
    assert_eq!(first_winter["properties"]["variant"], "a");
    assert_eq!(first_winter["properties"]["placement"], "home_hero");
}

/// Offer codes from a pool file: each person queued gets the next unused code once and
/// keeps it on later runs; when the pool runs dry the rest are counted `no_code`, not
/// sent without a code; `decide` shows a person's code; an erased person's code is not
/// given again. The pool and the expected assignments are written here by hand.
#[test]
fn pool_codes_are_given_once_per_person() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,consent_email\na,Anna,true\nb,Bob,true\nc,Cem,true\nd,Dora,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let campaign = |pool: &str| {
        serde_json::json!({
            "name": "codes", "segment": "first_name exists", "channel": "email",
            "offer": {"kind": "discount", "value": 0.1, "code": "pool", "pool": pool},
            "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}",
                                                    "text": "Code {{ offer.code }}"}}],
        })
        .to_string()
    };
    // A pool file with a code twice is refused, naming the line.
    env.write("bad.txt", b"X1\nX2\nX1\n");
    let bad = env.write("bad.json", campaign("bad.txt").as_bytes());
    let err = env.fails(&["campaign", "create", "--file", &bad]);
    assert!(
        err.contains("offer.pool: line 3: 'X1' appears twice"),
        "{err}"
    );
    // `code: pool` without a file is refused.
    let no_file = env.write(
        "nofile.json",
        campaign("x").replace(r#","pool":"x""#, "").as_bytes(),
    );
    let err = env.fails(&["campaign", "create", "--file", &no_file]);
    assert!(err.contains("offer.pool: missing"), "{err}");

    env.write("codes.txt", b"X1\n\n  X2  \nX3\n");
    let good = env.write("codes.json", campaign("codes.txt").as_bytes());
    env.ok(&["campaign", "create", "--file", &good]);
    let out = env.dir.path().join("m.ndjson");
    let out_s = out.to_str().unwrap();
    let by_person = |path: &std::path::Path| -> BTreeMap<String, String> {
        messages(path)
            .iter()
            .map(|m| {
                assert_eq!(
                    m["content"]["text"],
                    format!("Code {}", m["offer"]["code"].as_str().unwrap())
                );
                (
                    m["profile"].as_str().unwrap().to_string(),
                    m["offer"]["code"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // A dry run shows the codes a run would give (in the pool's order) and gives none.
    let dry = env.json(&[
        "campaign",
        "run",
        "codes",
        "--dry-run",
        "--out",
        out_s,
        "--json",
    ]);
    assert_eq!(
        (dry["queued"].as_u64(), dry["no_code"].as_u64()),
        (Some(3), Some(1)),
        "{dry}"
    );
    let planned = by_person(&out);
    let real = env.json(&["campaign", "run", "codes", "--out", out_s, "--json"]);
    assert_eq!(
        (real["queued"].as_u64(), real["no_code"].as_u64()),
        (Some(3), Some(1)),
        "{real}"
    );
    let given = by_person(&out);
    assert_eq!(given, planned);
    let codes: BTreeSet<&str> = given.values().map(String::as_str).collect();
    assert_eq!(codes, BTreeSet::from(["X1", "X2", "X3"]));

    // decide shows a person's own code; the one without a code cannot win yet.
    let (who, code) = given.iter().next().unwrap();
    let d = env.json(&[
        "decide",
        who,
        "--channel",
        "email",
        "--json",
        "--as-of",
        "2026-11-01T12:00:00Z",
    ]);
    assert_eq!(d["winner"]["offer"]["code"], code.as_str(), "{d}");
    let left_out = ["a", "b", "c", "d"]
        .into_iter()
        .find(|p| !given.contains_key(*p))
        .unwrap();
    let d = env.json(&[
        "decide",
        left_out,
        "--channel",
        "email",
        "--json",
        "--as-of",
        "2026-11-01T12:00:00Z",
    ]);
    assert!(
        d["candidates"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no code yet"),
        "{d}"
    );

    // More codes: a new version runs again; the three keep theirs, the fourth gets X4.
    env.write("codes.txt", b"X1\nX2\nX3\nX4\nX5\n");
    env.ok(&["campaign", "edit", "--file", &good]);
    let again = env.json(&["campaign", "run", "codes", "--out", out_s, "--json"]);
    assert_eq!(
        (again["queued"].as_u64(), again["no_code"].as_u64()),
        (Some(4), Some(0)),
        "{again}"
    );
    let now = by_person(&out);
    for (p, code) in &given {
        assert_eq!(&now[p], code);
    }
    assert_eq!(now[left_out], "X4");

    // Erasing a person keeps their code given (it may be in use), tied to nobody.
    env.ok(&["profile", "delete", who]);
    let store = rusqlite::Connection::open(env.data().join("store.sqlite")).unwrap();
    let (profile, assigned): (Option<i64>, Option<i64>) = store
        .query_row(
            "SELECT profile_id, assigned_at FROM offer_codes WHERE campaign = 'codes' AND code = ?1",
            [code],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(profile, None);
    assert!(assigned.is_some());
}

/// Test sends: `campaign preview --send-to` hands the person's message to a real SMTP
/// server (aiosmtpd, parsed by Python's e-mail package) and a webhook message to an HTTP
/// receiver, marked as tests, with the idempotency key as Message-ID / header; nothing is
/// queued or counted. A bad address is refused (exit 3), a relay that is down is an I/O
/// failure (exit 5).
#[test]
fn test_sends_reach_a_real_smtp_server_and_count_nowhere() {
    use std::io::{Read, Write};
    let env = Env::new();
    let file = env.write(
        "p.csv",
        "id,first_name,consent_email\na,Zoë,true\n".as_bytes(),
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let received = env.dir.path().join("smtp.ndjson");
    let sink = SmtpSink::start(&received, &[], false);
    let port = sink.port;
    // A receiver for the webhook campaign: answers one request 200, hands it back.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let got_hook = std::thread::spawn(move || {
        let (mut s, _) = hook.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(req).unwrap()
    });
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[channels.email]\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"shop@example.com\"\n\
         \n[channels.webhook]\nurl = \"http://{hook_addr}/hook\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "first_name exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}",
                                                    "text": "Hello {{ first_name }},\n.\nsee you"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let sent = env.json(&[
        "campaign",
        "preview",
        "hello",
        "--profile",
        "a",
        "--send-to",
        "tester@example.com",
        "--json",
    ]);
    assert_eq!(sent["to"], "tester@example.com", "{sent}");
    let key = sent["idempotency_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("hello.test-"), "{key}");
    let first = poll(10, || {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let line = text.lines().next().map(str::to_string);
        (line.is_some(), line)
    });
    let mail: serde_json::Value =
        serde_json::from_str(&first.expect("a message reached the SMTP server")).unwrap();
    assert_eq!(mail["mail_from"], "shop@example.com");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["tester@example.com"]));
    assert_eq!(mail["subject"], "[test] Hi Zoë");
    assert_eq!(mail["message_id"], format!("<{key}@example.com>"));
    // base64 keeps the text exactly, the lone "." line included.
    assert_eq!(mail["text"], "Hello Zoë,\n.\nsee you");

    // Nothing queued: a real run still reaches her, and the outbox held nothing before.
    let store = rusqlite::Connection::open(env.data().join("store.sqlite")).unwrap();
    let queued: i64 = store
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0);

    // Refusals: a bad address (3), a relay that is not there (5).
    let out = env
        .cmd(&[
            "campaign",
            "preview",
            "hello",
            "--profile",
            "a",
            "--send-to",
            "a b@example.com",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sink);
    let out = env
        .cmd(&[
            "campaign",
            "preview",
            "hello",
            "--profile",
            "a",
            "--send-to",
            "t@example.com",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A webhook campaign's test goes to the configured URL with its key and `test: true`.
    let hook_campaign = env.write(
        "h.json",
        br#"{"name": "ping", "segment": "first_name exists", "channel": "webhook",
             "variants": [{"name": "a", "message": {"body": "{{ first_name }} is back"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &hook_campaign]);
    let sent = env.json(&[
        "campaign",
        "preview",
        "ping",
        "--profile",
        "a",
        "--send-to",
        "-",
        "--json",
    ]);
    let request = got_hook.join().unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
    assert!(
        head.contains(&format!(
            "Idempotency-Key: {}",
            sent["idempotency_key"].as_str().unwrap()
        )),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["test"], true);
    assert_eq!(body["content"]["body"], "Zoë is back");
    assert_eq!(body["campaign"], "ping");
}

/// The expected audience, computed apart from microseg: Python's hashlib for the salted
/// buckets and the SHA-256 hashes, and the platforms' normalisation rules written again
/// from their guides (Meta: lower-cased e-mail, phone digits with country code; Google:
/// also Gmail dots removed, phone E.164 with `+`).
const AUDIENCE_PY: &str = r#"
import hashlib, json, re, sys
people, platform, gc, holdout, campaign = json.loads(sys.stdin.read())
def bucket(salt, pid):
    d = hashlib.sha256(salt.encode() + b"\x1f" + pid.encode()).digest()
    return (int.from_bytes(d[:8], "big") >> 11) / 2**53
def email(e):
    e = (e or "").strip().lower()
    if "@" not in e: return None
    local, domain = e.split("@", 1)
    if platform == "google" and domain in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
    return local + "@" + domain
def phone(p):
    p = (p or "").strip()
    digits = re.sub(r"\D", "", p)
    if p.startswith("+"): pass
    elif digits.startswith("00"): digits = digits[2:]
    else: return None
    digits = digits.lstrip("0")
    return ("+" + digits if platform == "google" else digits) if 8 <= len(digits) <= 15 else None
sha = lambda v: hashlib.sha256(v.encode()).hexdigest() if v else ""
rows = []
for pid, e, p in people:
    if bucket("microseg/global-control", pid) < gc: continue
    if bucket("microseg/holdout/" + campaign, pid) < holdout: continue
    row = [sha(email(e)), sha(phone(p))]
    if row != ["", ""]: rows.append(row)
print(json.dumps(sorted(rows)))
"#;

fn expected_audience(people: &[(&str, &str, &str)], platform: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new(super::server::test_python())
        .args(["-c", AUDIENCE_PY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!([people, platform, 0.25, 0.3, "vipmail"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn csv_rows(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_string).collect())
        .collect();
    rows.sort();
    (header, rows)
}

/// `export audience` for Meta and Google: exactly the members' normalised, hashed e-mails
/// and phones, without the global control and the campaign's holdout (expected rows from
/// Python, above); a diff after people leave the segment lists just them.
#[test]
fn ad_audiences_are_normalised_hashed_and_diffed() {
    let env = Env::new();
    // id, email, phone: Gmail dots and case, spaces, 00-prefixed and national phones.
    let people: Vec<(&str, &str, &str)> = vec![
        ("p01", " Anna.Kiss@GMail.com ", "+36 30 123 4567"),
        ("p02", "bob@example.com", "0049 151 4374878"),
        ("p03", "", "030 123 4567"),
        ("p04", "c.d@googlemail.com", ""),
        ("p05", "Eve@Example.org", "+1 (415) 555-0100"),
        ("p06", "f.g.h@gmail.com", "+44 20 7946 0018"),
        ("p07", "ivan@example.com", "+36 1 234 5678"),
        ("p08", "J.K@EXAMPLE.COM", "0036301112222"),
        ("p09", "lena@example.net", "+49 30 1234567"),
        ("p10", "m.n@gmail.com", "+33 1 23 45 67 89"),
        ("p11", "otto@example.com", "+36 30 999 8888"),
        ("p12", "pia@example.com", "+36 30 777 6666"),
    ];
    let mut csv = String::from("id,email,phone,vip\n");
    for (i, (id, e, p)) in people.iter().enumerate() {
        csv.push_str(&format!("{id},\"{e}\",{p},{}\n", i < 10));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&[
        "import",
        "profiles",
        &file,
        "--type",
        "vip=bool",
        "--type",
        "phone=string",
    ]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[activation]\nglobal_control = 0.25\n");
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "vipmail", "segment": "vip = true", "channel": "email", "holdout": 0.3,
             "variants": [{"name": "a", "message": {"subject": "Hi", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    env.ok(&["segment", "create", "vips", "vip = true"]);
    let vips = &people[..10];
    for platform in ["google", "meta"] {
        let out = env.dir.path().join(format!("{platform}.csv"));
        let counts = env.json(&[
            "export",
            "audience",
            "vips",
            "--format",
            platform,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        let (header, rows) = csv_rows(&out);
        let want_header = if platform == "google" {
            ["Email", "Phone"]
        } else {
            ["email", "phone"]
        };
        assert_eq!(header, want_header);
        assert_eq!(
            rows,
            expected_audience(vips, platform),
            "{platform}: {counts}"
        );
        assert_eq!(counts["members"], 10, "{counts}");
        // The rules took some out and left most in (the test exercises both).
        let kept_out =
            counts["global_control"].as_u64().unwrap() + counts["holdout"].as_u64().unwrap();
        assert!(kept_out >= 1 && rows.len() >= 4, "{counts}");
    }
    // A plain list, and who left since: two members leave the segment, one joins.
    let out = env.dir.path().join("list.csv");
    let first = env.json(&[
        "export",
        "audience",
        "vips",
        "--traits",
        "email",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let (header, listed) = csv_rows(&out);
    assert_eq!(header, ["id", "email"]);
    let listed: Vec<String> = listed.into_iter().map(|r| r[0].clone()).collect();
    let change = env.write("change.csv", b"id,vip\np01,false\np02,false\np11,true\n");
    env.ok(&["import", "profiles", &change, "--type", "vip=bool"]);
    let number = first["export"].as_i64().unwrap().to_string();
    let diff = env.json(&[
        "export",
        "audience",
        "vips",
        "--diff-since",
        &number,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let ids = |name: &str| -> Vec<String> {
        csv_rows(&env.dir.path().join(name))
            .1
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let removed: Vec<String> = ["p01", "p02"]
        .iter()
        .filter(|p| listed.contains(&p.to_string()))
        .map(|p| p.to_string())
        .collect();
    assert_eq!(ids("list.removed.csv"), removed, "{diff}");
    // p11 joins unless the rules keep it out (decided by Python above for p11 alone).
    let p11_out = expected_audience(&[people[10]], "meta").is_empty();
    let added: Vec<String> = if p11_out { vec![] } else { vec!["p11".into()] };
    assert_eq!(ids("list.added.csv"), added, "{diff}");
    assert_eq!(diff["removed"].as_u64(), Some(removed.len() as u64));

    // Parquet: the same rows as the CSV, read back by DuckDB.
    let csv_out = env.dir.path().join("now.csv");
    let pq_out = env.dir.path().join("now.parquet");
    for (format, path) in [("csv", &csv_out), ("parquet", &pq_out)] {
        env.ok(&[
            "export",
            "audience",
            "vips",
            "--format",
            format,
            "--traits",
            "email,vip",
            "--out",
            path.to_str().unwrap(),
        ]);
    }
    let read = std::process::Command::new(super::server::test_python())
        .args([
            "-c",
            "import duckdb, json, sys; print(json.dumps(duckdb.sql(\"select id, email, vip from read_parquet('\" + sys.argv[1] + \"') order by id\").fetchall()))",
            pq_out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let from_parquet: Vec<Vec<String>> = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(from_parquet, csv_rows(&csv_out).1);
    assert!(!from_parquet.is_empty());
}

/// Delivery through a real SMTP server (aiosmtpd) while `microseg deliver` is killed with
/// SIGKILL ten times: no message lost, every one with its idempotency key as Message-ID,
/// duplicates only from the batches in flight at each kill (at most 16 each: 4 at once ×
/// 4), and the outbox all sent at the end.
#[test]
fn deliver_survives_kill_9_with_a_real_smtp_server() {
    let env = Env::new();
    let mut csv = String::from("id,first_name,email,consent_email\n");
    for i in 0..300 {
        csv.push_str(&format!("u{i:03},N{i},u{i}@example.com,true\n"));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let received = env.dir.path().join("smtp.ndjson");
    let sink = SmtpSink::start(&received, &[], false);
    let port = sink.port;
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[channels.email]\nsmtp = \"smtp://127.0.0.1:{}\"\nfrom = \"shop@example.com\"\nrate = \"300/s\"\nunsubscribe_url = \"https://shop.example/u\"\n",
        port
    ));
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "first_name exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let out = env.dir.path().join("queued.ndjson");
    let run = env.json(&[
        "campaign",
        "run",
        "hello",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run["queued"], 300, "{run}");
    let keys: BTreeSet<String> = messages(&out)
        .iter()
        .map(|m| m["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    let mut kills = 0;
    for i in 0..10u64 {
        let mut child = env.cmd(&["deliver"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + (i * 37) % 90));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    let last = env.json(&["deliver", "--json"]);
    assert_eq!(last["pending"], 0, "{last}");
    let got = poll(10, || {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let m: serde_json::Value = serde_json::from_str(l).unwrap();
                m["message_id"].as_str().unwrap().to_string()
            })
            .collect();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        (distinct.len() >= keys.len(), ids)
    });
    drop(sink);
    let want: BTreeSet<String> = keys.iter().map(|k| format!("<{k}@example.com>")).collect();
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(distinct, want, "every message arrived, under its own key");
    let duplicates = got.len() - distinct.len();
    assert!(kills >= 5, "the passes were killed mid-way ({kills} times)");
    assert!(
        duplicates <= kills * 16,
        "{duplicates} duplicates after {kills} kills"
    );
    let store = rusqlite::Connection::open(env.data().join("store.sqlite")).unwrap();
    let sent: i64 = store
        .query_row(
            "SELECT count(*) FROM outbox WHERE status = 'sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sent, 300);
    eprintln!("{kills} kills, {duplicates} duplicates");
}

/// A local HTTP receiver for the delivery tests: answers `/ok…` 200 and anything else
/// 500, and keeps every request (head and body) it got.
fn http_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    body.len() >= len
                });
                if complete || n == 0 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let ok = text.starts_with("POST /ok");
            keep.lock().unwrap().push(text);
            let status = if ok {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    });
    (addr, got)
}

/// Delivery's other paths: an SMS gateway gets the JSON its body template makes (values
/// escaped) with its auth header; a webhook answering 500 is retried, then dead after the
/// last allowed attempt, each attempt in the delivery log; a person who withdrew consent
/// after the run is cancelled, never sent.
#[test]
fn delivery_retries_gives_up_and_cancels() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        "id,first_name,phone,consent_sms,consent_webhook\na,\"Ann \"\"A\"\"\",+36 30 111 2222,true,true\nb,Bob,+36 30 333 4444,true,true\n".as_bytes(),
    );
    env.ok(&[
        "import",
        "profiles",
        &file,
        "--type",
        "consent_sms=bool",
        "--type",
        "consent_webhook=bool",
        "--type",
        "phone=string",
    ]);
    let (addr, got) = http_receiver();
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[channels.sms]\nurl = \"http://{addr}/ok/sms\"\nauth_header = \"Bearer gw-token\"\n\
         body = '{{\"to\": {{{{ to }}}}, \"message\": {{{{ text }}}}}}'\n\
         \n[channels.webhook]\nurl = \"http://{addr}/fail\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let sms = env.write(
        "s.json",
        br#"{"name": "texts", "segment": "first_name exists", "channel": "sms",
             "variants": [{"name": "a", "message": {"text": "Hi {{ first_name }}"}}]}"#,
    );
    let hook = env.write(
        "h.json",
        br#"{"name": "hooks", "segment": "first_name exists", "channel": "webhook",
             "variants": [{"name": "a", "message": {"body": "{{ first_name }}"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &sms]);
    env.ok(&["campaign", "create", "--file", &hook]);
    env.ok(&["campaign", "run", "texts"]);
    env.ok(&["campaign", "run", "hooks"]);
    // Bob withdraws consent for SMS after the run.
    let change = env.write("c.csv", b"id,consent_sms\nb,false\n");
    env.ok(&["import", "profiles", &change, "--type", "consent_sms=bool"]);

    let first = env.json(&[
        "deliver",
        "--json",
        "--max-attempts",
        "2",
        "--retry-seconds",
        "0",
    ]);
    assert_eq!(
        (
            first["sent"].as_u64(),
            first["failed"].as_u64(),
            first["cancelled"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{first}"
    );
    let second = env.json(&[
        "deliver",
        "--json",
        "--max-attempts",
        "2",
        "--retry-seconds",
        "0",
    ]);
    assert_eq!(
        (
            second["sent"].as_u64(),
            second["dead"].as_u64(),
            second["pending"].as_u64()
        ),
        (Some(0), Some(2), Some(0)),
        "{second}"
    );
    let requests = got.lock().unwrap().clone();
    let sms_requests: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("POST /ok/sms"))
        .collect();
    assert_eq!(sms_requests.len(), 1, "{requests:?}");
    let (head, body) = sms_requests[0].split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Authorization: Bearer gw-token"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"to": "+36 30 111 2222", "message": "Hi Ann \"A\""})
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("POST /fail"))
            .count(),
        4
    );
    let store = rusqlite::Connection::open(env.data().join("store.sqlite")).unwrap();
    let log: Vec<(String, String)> = store
        .prepare(
            "SELECT o.campaign || '/' || p.external_id, group_concat(d.outcome, ',')
             FROM deliveries d JOIN outbox o ON o.id = d.outbox_id JOIN profiles p ON p.id = o.profile_id
             GROUP BY o.id ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        log,
        [
            ("hooks/a".to_string(), "retry,dead".to_string()),
            ("hooks/b".to_string(), "retry,dead".to_string()),
            ("texts/a".to_string(), "sent".to_string()),
            ("texts/b".to_string(), "cancelled".to_string()),
        ]
    );
    // The message handed over became the person's event.
    let sent: Vec<(String, String)> = store
        .prepare(
            "SELECT p.external_id, e.properties FROM events_named e JOIN profiles p ON p.id = e.profile_id
             WHERE e.name = 'message_sent'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "a");
    let props: serde_json::Value = serde_json::from_str(&sent[0].1).unwrap();
    assert_eq!(
        props,
        serde_json::json!({"campaign": "texts", "variant": "a", "channel": "sms"})
    );
}

/// Triggered campaigns on a running server: a person entering the segment by an event
/// gets the message once (a second event does not send again), a person who does not
/// enter gets nothing, and "viewed, then no order within 2 s" fires at the deadline, not
/// before; `serve` delivers what the triggers queue (to a file sink here).
#[test]
fn triggers_fire_as_people_enter_and_serve_delivers() {
    use super::server::{basic, http};
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,email,consent_email\na,Anna,a@example.com,true\nb,Bob,b@example.com,true\nc,Cem,c@example.com,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[channels.email]\nfile = \"sent.ndjson\"\n");
    std::fs::write(&config, text).unwrap();
    env.ok(&[
        "segment",
        "create",
        "winter_viewers",
        r#"count(page_viewed where category = "winter", within 30d) >= 1"#,
    ]);
    env.ok(&[
        "segment",
        "create",
        "viewed_no_order",
        r#"page_viewed where category = "bikes" then not order_completed within 2s, within 1d"#,
    ]);
    let triggers = [
        (
            "gloves",
            "winter_viewers",
            serde_json::json!({"on_enter": "winter_viewers"}),
        ),
        (
            "nudge",
            "viewed_no_order",
            serde_json::json!({"on_enter": "viewed_no_order"}),
        ),
        (
            "welcome",
            "first_name exists",
            serde_json::json!({"event": "Signed Up"}),
        ),
    ];
    for (name, segment, trigger) in triggers {
        let body = serde_json::json!({
            "name": name, "segment": segment, "channel": "email",
            "trigger": trigger,
            "variants": [{"name": "a", "message": {"subject": format!("{name} for {{{{ first_name }}}}"), "text": "x"}}],
        });
        let f = env.write(&format!("{name}.json"), body.to_string().as_bytes());
        env.ok(&["campaign", "create", "--file", &f]);
    }
    let auth = basic(&env.key("write"));
    let server = env.serve();
    let page = |user: &str, category: &str| {
        let body = format!(
            r#"{{"userId": "{user}", "name": "p", "properties": {{"category": "{category}"}}}}"#
        );
        let (status, reply) = http(
            &server.addr,
            "POST",
            "/v1/page",
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{reply}");
    };
    let sent = || -> Vec<(String, String)> {
        std::fs::read_to_string(env.data().join("sent.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let m: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    m["campaign"].as_str().unwrap().to_string(),
                    m["content"]["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    page("a", "winter");
    let got = poll(10, || {
        let s = sent();
        (!s.is_empty(), s)
    });
    assert_eq!(got, [("gloves".to_string(), "gloves for Anna".to_string())]);
    // Again: Anna is in the segment already, nobody entered: nothing new.
    page("a", "winter");
    // Bob views a bike page: the nudge waits for the 2-second deadline.
    let viewed = std::time::Instant::now();
    page("b", "bikes");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(sent().len(), 1, "nothing before the deadline: {:?}", sent());
    let got = poll(10, || {
        let s = sent();
        (s.len() >= 2, s)
    });
    let waited = viewed.elapsed();
    assert_eq!(got[1], ("nudge".to_string(), "nudge for Bob".to_string()));
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    // Cem viewed nothing: no message; and nothing else came.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sent().len(), 2, "{:?}", sent());
    // An event trigger: Cem signs up (twice the same day: one message).
    for _ in 0..2 {
        let body = r#"{"userId": "c", "event": "Signed Up"}"#;
        let (status, reply) = http(
            &server.addr,
            "POST",
            "/v1/track",
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{reply}");
    }
    let got = poll(10, || {
        let s = sent();
        (s.len() >= 3, s)
    });
    assert_eq!(
        got[2],
        ("welcome".to_string(), "welcome for Cem".to_string())
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sent().len(), 3, "{:?}", sent());
}

/// The expected campaign report, computed apart from microseg: arms from Python's
/// hashlib (all 200 consented, no global control), outcomes from the orders written
/// here, Welch's test from scipy, and the money by hand.
const REPORT_PY: &str = r#"
import hashlib, json, sys
from scipy import stats
ids, t0, orders, window, holdout, cpm, discount = json.loads(sys.stdin.read())
def bucket(salt, pid):
    d = hashlib.sha256(salt.encode() + b"\x1f" + pid.encode()).digest()
    return (int.from_bytes(d[:8], "big") >> 11) / 2**53
arm = {i: ("holdout" if bucket("microseg/holdout/promo", i) < holdout else "treated") for i in ids}
conv = {i: 0 for i in ids}; rev = {i: 0.0 for i in ids}
for i, t, r in orders:
    if t0 <= t <= t0 + window:
        conv[i] = 1; rev[i] += r
out = {}
for a in ("treated", "holdout"):
    m = [i for i in ids if arm[i] == a]
    out[a] = {"n": len(m), "conversion": sum(conv[i] for i in m) / len(m),
              "revenue": sum(rev[i] for i in m) / len(m)}
t = [rev[i] for i in ids if arm[i] == "treated"]; h = [rev[i] for i in ids if arm[i] == "holdout"]
out["revenue_p"] = float(stats.ttest_ind(t, h, equal_var=False).pvalue)
nt = out["treated"]["n"]
out["incremental_revenue"] = (out["treated"]["revenue"] - out["holdout"]["revenue"]) * nt
cost = nt * cpm + discount * sum(t)
out["cost"] = cost
out["roi"] = (out["incremental_revenue"] - cost) / cost
added = (out["treated"]["conversion"] - out["holdout"]["conversion"]) * nt
out["cac"] = cost / added if added > 0 else None
print(json.dumps(out))
"#;

/// `campaign report`: the arms, conversion and revenue within the window, Welch's p for
/// revenue, cost with the discounts, incremental revenue and ROI equal an independent
/// computation (above) on known orders: inside the window, after it, and before the
/// campaign.
#[test]
fn campaign_report_matches_an_independent_computation() {
    use std::io::Write;
    let env = Env::new();
    let ids: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let mut csv = String::from("id,first_name,email,consent_email\n");
    for id in &ids {
        csv.push_str(&format!("{id},N,{id}@example.com,true\n"));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[channels.email]\nfile = \"sent.ndjson\"\n");
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "promo", "segment": "first_name exists", "channel": "email", "holdout": 0.3,
             "cost_per_message": 0.01, "offer": {"kind": "discount", "value": 0.1},
             "variants": [{"name": "a", "message": {"subject": "Hi", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let t0 = 1_780_272_000_000_i64; // 2026-06-01T00:00:00Z
    let run = env.json(&[
        "campaign",
        "run",
        "promo",
        "--as-of",
        "2026-06-01T00:00:00Z",
        "--json",
    ]);
    env.ok(&["deliver"]);
    // Orders: every 3rd person 2 days after (inside), every 5th 10 days after (outside),
    // every 7th the day before (outside); revenue varies with the person.
    let day = 86_400_000_i64;
    let mut orders: Vec<(String, i64, f64)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            orders.push((id.clone(), t0 + 2 * day, 20.0 + (i % 11) as f64 * 7.5));
        }
        if i % 5 == 0 {
            orders.push((id.clone(), t0 + 10 * day, 99.0));
        }
        if i % 7 == 0 {
            orders.push((id.clone(), t0 - day, 55.0));
        }
    }
    let mut events = String::from("user_id,event,time,revenue\n");
    for (id, t, r) in &orders {
        events.push_str(&format!(
            "{id},order_completed,{},{r}\n",
            microseg_core::Timestamp(*t)
        ));
    }
    let ev = env.write("orders.csv", events.as_bytes());
    env.ok(&[
        "import",
        "events",
        &ev,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--name",
        "event",
        "--revenue",
        "revenue",
    ]);
    let report = env.json(&[
        "campaign",
        "report",
        "promo",
        "--as-of",
        "2026-07-01T00:00:00Z",
        "--json",
    ]);
    let mut child = std::process::Command::new(super::server::test_python())
        .args(["-c", REPORT_PY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!([ids, t0, orders, 7 * day, 0.3, 0.01, 0.1]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let close = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{what}: {a} vs {b}\n{report}"
        );
    };
    assert_eq!(report["control"], "holdout");
    let arms = report["arms"].as_array().unwrap();
    for a in arms {
        let name = a["arm"].as_str().unwrap();
        assert_eq!(a["n"], want[name]["n"], "{report}");
        close(
            &a["outcomes"]["conversion"]["value"],
            &want[name]["conversion"],
            "conversion",
        );
        close(
            &a["outcomes"]["revenue"]["value"],
            &want[name]["revenue"],
            "revenue",
        );
    }
    let treated = arms.iter().find(|a| a["arm"] == "treated").unwrap();
    close(
        &treated["outcomes"]["revenue"]["p_value"],
        &want["revenue_p"],
        "Welch p",
    );
    assert_eq!(report["sent"], run["queued"]);
    assert_eq!(report["sent"], want["treated"]["n"]);
    close(&report["cost"], &want["cost"], "cost");
    close(
        &report["incremental_revenue"],
        &want["incremental_revenue"],
        "incremental revenue",
    );
    close(&report["roi"], &want["roi"], "roi");
    assert_eq!(report["delivered"], serde_json::Value::Null);
    // Cost per added conversion; no CLV model fitted here, so no predicted value.
    match want["cac"].as_f64() {
        Some(_) => close(&report["acquisition"]["cac"], &want["cac"], "cac"),
        None => assert_eq!(report["acquisition"]["cac"], serde_json::Value::Null),
    }
    assert_eq!(report["acquisition"]["ltv_12m"], serde_json::Value::Null);
    // Saved as an experiment, it feeds the uplift discovery like any experiment.
    env.ok(&[
        "campaign",
        "report",
        "promo",
        "--as-of",
        "2026-07-01T00:00:00Z",
        "--save-experiment",
        "promo_test",
    ]);
    let saved = env.json(&["experiment", "report", "promo_test", "--json"]);
    assert_eq!(saved["arms"], report["arms"]);
    let found = env.json(&[
        "experiment",
        "discover",
        "promo_test",
        "--arm",
        "treated",
        "--outcome",
        "conversion",
        "--json",
    ]);
    assert!(found["segments"].is_array(), "{found}");
}

/// Scheduled campaigns on a running server: one `at` a past instant and one `every` 7
/// days each run once when the server starts (their messages delivered to the file sink),
/// and not again in the same slot; schedules that do not read are refused at create.
#[test]
fn schedules_run_once_per_slot_on_serve() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,email,consent_email\na,Anna,a@example.com,true\nb,Bob,b@example.com,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[channels.email]\nfile = \"sent.ndjson\"\n");
    std::fs::write(&config, text).unwrap();
    let campaign = |name: &str, schedule: serde_json::Value| {
        let body = serde_json::json!({
            "name": name, "segment": "first_name exists", "channel": "email",
            "schedule": schedule,
            "variants": [{"name": "a", "message": {"subject": name, "text": "x"}}],
        });
        env.write(&format!("{name}.json"), body.to_string().as_bytes())
    };
    let bad = campaign("bad", serde_json::json!({"every": "10s"}));
    let err = env.fails(&["campaign", "create", "--file", &bad]);
    assert!(err.contains("schedule.every: at least 1m"), "{err}");
    let bad = campaign("bad", serde_json::json!({"hourly": true}));
    assert!(env
        .fails(&["campaign", "create", "--file", &bad])
        .contains("schedule:"));
    let once = campaign("once", serde_json::json!({"at": "2026-01-01T00:00:00Z"}));
    let weekly = campaign("weekly", serde_json::json!({"every": "7d"}));
    env.ok(&["campaign", "create", "--file", &once]);
    env.ok(&["campaign", "create", "--file", &weekly]);
    let _server = env.serve();
    let subjects = || -> Vec<String> {
        let mut s: Vec<String> = std::fs::read_to_string(env.data().join("sent.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let m: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}:{}",
                    m["content"]["subject"].as_str().unwrap(),
                    m["profile"].as_str().unwrap()
                )
            })
            .collect();
        s.sort();
        s
    };
    let got = poll(15, || {
        let s = subjects();
        (s.len() >= 4, s)
    });
    assert_eq!(got, ["once:a", "once:b", "weekly:a", "weekly:b"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(subjects().len(), 4, "{:?}", subjects());
}

/// Unsubscribes and bounces on a running server: a marketing e-mail delivered through a
/// real SMTP server carries RFC 8058's one-click headers and a visible link; a GET of the
/// link changes nothing, its POST (no login) sets consent to false at once, a forged
/// token is refused; a hard bounce suppresses the address. A dry run then counts both.
#[test]
fn one_click_unsubscribe_and_bounces() {
    use super::server::{admin_call, http};
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,email,consent_email\na,Anna,a@example.com,true\nb,Bob,b@example.com,true\nc,Cem,c@example.com,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let received = env.dir.path().join("smtp.ndjson");
    let sink = SmtpSink::start(&received, &[], false);
    let port = sink.port;
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[channels.email]\nsmtp = \"smtp://127.0.0.1:{}\"\nfrom = \"shop@example.com\"\nunsubscribe_url = \"https://shop.example/u\"\n",
        port
    ));
    std::fs::write(&config, text).unwrap();
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "first_name exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "News"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    env.ok(&["campaign", "run", "hello"]);
    let bearer = format!("Bearer {}", env.key("admin"));
    let server = env.serve();
    let mails = poll(15, || {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let mails: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (mails.len() >= 3, mails)
    });
    drop(sink);
    let anna = mails
        .iter()
        .find(|m| m["rcpt_tos"][0] == "a@example.com")
        .expect("Anna's e-mail");
    assert_eq!(anna["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    let header = anna["list_unsubscribe"].as_str().unwrap();
    let url = header.trim_matches(|c| c == '<' || c == '>');
    assert!(url.starts_with("https://shop.example/u?t="), "{header}");
    assert!(anna["text"]
        .as_str()
        .unwrap()
        .ends_with(&format!("Unsubscribe: {url}")));
    let token = url.split("t=").nth(1).unwrap();
    let path = format!("/v1/unsubscribe?t={token}");
    let consent = || -> serde_json::Value {
        admin_call(&server.addr, &bearer, "GET", "/v1/profiles/a", "").1["traits"]["consent_email"]
            .clone()
    };
    // A GET (a mail scanner following the link) changes nothing.
    let (status, page) = http(&server.addr, "GET", &path, &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("<form method=post"), "{page}");
    assert_eq!(consent(), true);
    // A forged token: another person's id with Anna's signature.
    let forged = format!(
        "/v1/unsubscribe?t={}",
        token.replacen(token.split('.').next().unwrap(), "999", 1)
    );
    assert_eq!(http(&server.addr, "POST", &forged, &[], b"").0, 400);
    // The one-click POST.
    let (status, body) = http(
        &server.addr,
        "POST",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 200, "{body}");
    // Committed before the answer; the live state follows within moments.
    let now = poll(5, || {
        let c = consent();
        (c == false, c)
    });
    assert_eq!(now, false);
    // A hard bounce of Bob's address.
    let (status, r) = admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/message-events",
        r#"{"type": "hard_bounce", "channel": "email", "address": " B@Example.com"}"#,
    );
    assert_eq!(
        (status, r["suppressed"].as_bool()),
        (200, Some(true)),
        "{r}"
    );
    // The provider's webhook: Anna's message delivered and opened (by its key).
    let anna_key = anna["message_id"]
        .as_str()
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>');
    let anna_key = anna_key.split('@').next().unwrap();
    for kind in ["delivered", "opened"] {
        let (status, r) = admin_call(
            &server.addr,
            &bearer,
            "POST",
            "/v1/message-events",
            &format!(r#"{{"type": "{kind}", "idempotency_key": "{anna_key}"}}"#),
        );
        let want = format!("message_{kind}");
        assert_eq!(
            (status, r["event"].as_str()),
            (200, Some(want.as_str())),
            "{r}"
        );
    }
    let (status, _) = admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/message-events",
        r#"{"type": "delivered", "idempotency_key": "hello.nope"}"#,
    );
    assert_eq!(status, 404);
    let (_, profile) = admin_call(&server.addr, &bearer, "GET", "/v1/profiles/a?events=10", "");
    let names: Vec<&str> = profile["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for name in ["message_sent", "message_delivered", "message_opened"] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    let (_, counts) = admin_call(
        &server.addr,
        &bearer,
        "POST",
        "/v1/campaigns/hello/run?dry_run=true",
        "",
    );
    assert_eq!(
        (counts["no_consent"].as_u64(), counts["suppressed"].as_u64()),
        (Some(1), Some(1)),
        "{counts}"
    );
}

/// Variants chosen by results (Thompson sampling in batches): a first wave with no
/// results splits evenly; after variant `a` converts far better among people whose window
/// has closed (orders written here), the next wave goes all to `a` (learning stopped), and
/// the run reports the records it used, equal to the test's own count.
#[test]
fn results_choose_the_variants() {
    let env = Env::new();
    let mut csv = String::from("id,first_name,wave,consent_email\n");
    for i in 0..400 {
        csv.push_str(&format!("u{i:03},N,{},true\n", 1 + i / 200));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&[
        "import",
        "profiles",
        &file,
        "--type",
        "consent_email=bool",
        "--type",
        "wave=integer",
    ]);
    let campaign = |wave: u32| {
        serde_json::json!({
            "name": "ab", "segment": format!("wave = {wave}"), "channel": "email",
            "choose": {"method": "thompson", "window": "7d", "min_per_variant": 50},
            "variants": [
                {"name": "a", "message": {"subject": "A", "text": "x"}},
                {"name": "b", "message": {"subject": "B", "text": "x"}},
            ],
        })
        .to_string()
    };
    let f = env.write("ab.json", campaign(1).as_bytes());
    env.ok(&["campaign", "create", "--file", &f]);
    let out = env.dir.path().join("m.ndjson");
    let first = env.json(&[
        "campaign",
        "run",
        "ab",
        "--as-of",
        "2026-06-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(first["choice"]["n"], serde_json::json!([0, 0]), "{first}");
    let shares = first["choice"]["shares"].as_array().unwrap();
    assert!((shares[0].as_f64().unwrap() - 0.5).abs() < 0.02, "{first}");
    let got: Vec<(String, String)> = messages(&out)
        .iter()
        .map(|m| {
            (
                m["profile"].as_str().unwrap().to_string(),
                m["variant"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let a = got.iter().filter(|(_, v)| v == "a").count() as u64;
    within_4_sd("variant a in the first wave", a, 200, 0.5);
    // Orders two days later: 3 in 5 of variant a's people, 1 in 20 of b's.
    let t0 = 1_780_272_000_000_i64 + 2 * 86_400_000;
    let mut events = String::from("user_id,event,time,revenue\n");
    let mut want = [[0u64; 2]; 2]; // [variant][n, conversions]
    for (i, (id, v)) in got.iter().enumerate() {
        let (slot, buys) = if v == "a" {
            (0, i % 5 < 3)
        } else {
            (1, i % 20 == 0)
        };
        want[slot][0] += 1;
        if buys {
            want[slot][1] += 1;
            events.push_str(&format!(
                "{id},order_completed,{},30\n",
                microseg_core::Timestamp(t0)
            ));
        }
    }
    let ev = env.write("orders.csv", events.as_bytes());
    env.ok(&[
        "import",
        "events",
        &ev,
        "--profile",
        "user_id",
        "--time",
        "time",
        "--name",
        "event",
        "--revenue",
        "revenue",
    ]);
    let f = env.write("ab.json", campaign(2).as_bytes());
    env.ok(&["campaign", "edit", "--file", &f]);
    let second = env.json(&[
        "campaign",
        "run",
        "ab",
        "--as-of",
        "2026-06-11T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        second["choice"]["n"],
        serde_json::json!([want[0][0], want[1][0]]),
        "{second}"
    );
    assert_eq!(
        second["choice"]["conversions"],
        serde_json::json!([want[0][1], want[1][1]]),
        "{second}"
    );
    assert_eq!(second["choice"]["stopped"], true, "{second}");
    assert_eq!(second["queued"], 200);
    assert!(messages(&out).iter().all(|m| m["variant"] == "a"));
}

/// E-mail over STARTTLS with a login, to a relay (aiosmtpd) that requires both and whose
/// certificate comes from a private authority given as `ca_file`: the message arrives;
/// without the authority the certificate is refused, with a wrong password the login is,
/// both as I/O failures (exit 5) that name the relay.
#[test]
fn e_mail_goes_over_starttls_with_a_login() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,email,consent_email\na,Anna,a@example.com,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let received = env.dir.path().join("smtp.ndjson");
    let tls = env.dir.path().join("tls");
    let sink = SmtpSink::start(
        &received,
        &["--tls", tls.to_str().unwrap(), "--auth", "shop:s3cret"],
        true,
    );
    let port = sink.port;
    let config = env.data().join("microseg.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    let write_config = |ca: bool| {
        let mut text = base.clone();
        text.push_str(&format!(
            "\n[channels.email]\nsmtp = \"smtp+starttls://127.0.0.1:{port}\"\nfrom = \"shop@example.com\"\n\
             username = \"shop\"\npassword_env = \"MICROSEG_TEST_SMTP_PASSWORD\"\n"
        ));
        if ca {
            text.push_str(&format!("ca_file = \"{}\"\n", tls.join("ca.pem").display()));
        }
        std::fs::write(&config, text).unwrap();
    };
    let campaign = env.write(
        "c.json",
        br#"{"name": "hello", "segment": "first_name exists", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let send = |password: &str| {
        env.cmd(&[
            "campaign",
            "preview",
            "hello",
            "--profile",
            "a",
            "--send-to",
            "t@example.com",
        ])
        .env("MICROSEG_TEST_SMTP_PASSWORD", password)
        .output()
        .unwrap()
    };
    write_config(true);
    let ok = send("s3cret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mail = poll(10, || {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let line = text.lines().next().map(str::to_string);
        (line.is_some(), line)
    });
    let mail: serde_json::Value = serde_json::from_str(&mail.expect("a message arrived")).unwrap();
    assert_eq!(mail["subject"], "[test] Hi Anna");
    let wrong = send("nope");
    assert_eq!(
        wrong.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    write_config(false);
    let untrusted = send("s3cret");
    assert_eq!(
        untrusted.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains(&format!("127.0.0.1:{port}")));
    drop(sink);
}

/// A triggered campaign's sends equal the people who entered its segment, minus its
/// holdout and the rules (here: consent), and its report's arms are those people: 30 of 40
/// enter by a batch of page views; who is held out comes from Python's hashlib.
#[test]
fn trigger_sends_equal_the_entries_minus_holdout_and_rules() {
    use super::server::{basic, http};
    use std::io::Write;
    let env = Env::new();
    let ids: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    let mut csv = String::from("id,first_name,email,consent_email\n");
    for (i, id) in ids.iter().enumerate() {
        csv.push_str(&format!("{id},N{i},{id}@example.com,{}\n", i % 5 != 0));
    }
    let file = env.write("p.csv", csv.as_bytes());
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    let config = env.data().join("microseg.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[channels.email]\nfile = \"sent.ndjson\"\n");
    std::fs::write(&config, text).unwrap();
    env.ok(&[
        "segment",
        "create",
        "viewers",
        r#"count(page_viewed where category = "winter", within 30d) >= 1"#,
    ]);
    let campaign = env.write(
        "c.json",
        br#"{"name": "trig", "segment": "viewers", "channel": "email", "holdout": 0.25,
             "trigger": {"on_enter": "viewers"},
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let auth = basic(&env.key("write"));
    let server = env.serve();
    let entered = &ids[..30];
    let batch: Vec<serde_json::Value> = entered
        .iter()
        .map(|id| serde_json::json!({"type": "page", "userId": id, "name": "g", "properties": {"category": "winter"}}))
        .collect();
    let body = serde_json::json!({ "batch": batch }).to_string();
    let (status, reply) = http(
        &server.addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    // Who should get it: entered, consented (every 5th did not), not in the holdout.
    let py = r#"
import hashlib, json, sys
ids = json.loads(sys.stdin.read())
def bucket(salt, pid):
    d = hashlib.sha256(salt.encode() + b"\x1f" + pid.encode()).digest()
    return (int.from_bytes(d[:8], "big") >> 11) / 2**53
print(json.dumps([i for i in ids if bucket("microseg/holdout/trig", i) < 0.25]))
"#;
    let mut child = std::process::Command::new(super::server::test_python())
        .args(["-c", py])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::json!(entered).to_string().as_bytes())
        .unwrap();
    let held: Vec<String> =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    let consented = |id: &String| id[1..].parse::<usize>().unwrap() % 5 != 0;
    let want: BTreeSet<String> = entered
        .iter()
        .filter(|id| consented(id) && !held.contains(id))
        .cloned()
        .collect();
    let sent = || -> BTreeSet<String> {
        std::fs::read_to_string(env.data().join("sent.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["profile"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let got = poll(15, || {
        let s = sent();
        (s.len() >= want.len(), s)
    });
    assert_eq!(got, want);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sent(), want, "nothing more");
    drop(server);
    let report = env.json(&["campaign", "report", "trig", "--json"]);
    let n = |arm: &str| {
        report["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == arm)
            .map(|a| a["n"].as_u64().unwrap())
    };
    let held_reachable = held.iter().filter(|id| consented(id)).count() as u64;
    assert_eq!(n("treated"), Some(want.len() as u64), "{report}");
    assert_eq!(n("holdout"), Some(held_reachable), "{report}");
}

/// `campaign run --entered-since T` fires a trigger campaign for who entered its segment
/// between T and --as-of, not for who was in it before: hand-placed page views decide who
/// entered when. The keys are a trigger's, so a second firing of the same day sends nothing.
#[test]
fn a_trigger_fires_in_batch_for_who_entered_since() {
    let env = Env::new();
    let file = env.write(
        "p.csv",
        b"id,first_name,consent_email\nold,Olga,true\nnew,Nina,true\nnone,Ned,true\n",
    );
    env.ok(&["import", "profiles", &file, "--type", "consent_email=bool"]);
    // Olga viewed on 10-20 (in the segment before the 25th), Nina on 10-28, Ned never.
    let events = env.write(
        "e.csv",
        b"user_id,event,time,category\nold,page_viewed,2026-10-20T12:00:00Z,winter\nnew,page_viewed,2026-10-28T12:00:00Z,winter\n",
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
    env.ok(&[
        "segment",
        "create",
        "viewers",
        r#"count(page_viewed where category = "winter", within 30d) >= 1"#,
    ]);
    let campaign = env.write(
        "c.json",
        br#"{"name": "trig", "segment": "viewers", "channel": "email",
             "trigger": {"on_enter": "viewers"},
             "variants": [{"name": "a", "message": {"subject": "Hi {{ first_name }}", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &campaign]);
    let out = env.dir.path().join("m.ndjson");
    let fire = || {
        env.json(&[
            "campaign",
            "run",
            "trig",
            "--entered-since",
            "2026-10-25T00:00:00Z",
            "--as-of",
            "2026-11-01T10:00:00Z",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
    };
    let first = fire();
    assert_eq!(
        (first["targeted"].as_u64(), first["queued"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    let who: Vec<String> = messages(&out)
        .iter()
        .map(|m| m["profile"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(who, ["new"]);
    let again = fire();
    assert_eq!(again["queued"], 0, "{again}");
    assert_eq!(again["already_queued"], 1, "{again}");
    // A campaign without an on_enter trigger cannot be fired this way.
    let plain = env.write(
        "p.json",
        br#"{"name": "plain", "segment": "viewers", "channel": "email",
             "variants": [{"name": "a", "message": {"subject": "Hi", "text": "x"}}]}"#,
    );
    env.ok(&["campaign", "create", "--file", &plain]);
    let err = env.fails(&["campaign", "run", "plain", "--entered-since", "2026-10-25"]);
    assert!(err.contains("no {\"on_enter\": SEGMENT} trigger"), "{err}");
}
