//! Campaigns on the demo shop (issue 20): the rules' shares, consent, the segment, each
//! person's own traits in their message, the same people on every run, templates that
//! fail never sent, caps across campaigns. Expected values come from the demo's own CSV
//! files, read here, not from the code under test.

use std::collections::{BTreeMap, BTreeSet};

use super::Env;

/// The demo's profiles as the CSV has them: id → column → value.
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
        0,
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
