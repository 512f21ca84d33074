//! `clv`, `cluster`, `discover` and `experiment` end to end.

use super::{import_cdnow, test_data, Env};

fn import_cdnow_sample(env: &Env) {
    env.ok(&[
        "import",
        "events",
        &test_data("CDNOW_sample.txt"),
        "--delimiter",
        "whitespace",
        "--columns",
        "master_id,customer_id,date,cds,amount",
        "--profile",
        "customer_id",
        "--time",
        "date",
        "--time-format",
        "%Y%m%d",
        "--event",
        "order_completed",
        "--revenue",
        "amount",
    ]);
}

fn round(x: &serde_json::Value, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x.as_f64().expect("a number") * scale).round() / scale
}

/// The published estimates, from the paper's CDNOW sample through the command line.
#[test]
fn clv_fit_reproduces_the_published_cdnow_estimates() {
    let env = Env::new();
    import_cdnow_sample(&env);
    let fit = env.json(&[
        "clv",
        "fit",
        "--calibration-end",
        "1997-09-30",
        "--unit",
        "week",
        "--as-of",
        "1998-06-30",
        "--json",
    ]);
    // The timings docs/cli.md lists (bench/models.py reads `bgnbd`).
    for step in ["load", "fit", "bgnbd"] {
        assert!(fit["seconds"][step].as_f64().is_some(), "{step}: {fit}");
    }
    // Fader, Hardie and Lee (2005), "Counting your customers the easy way", Marketing
    // Science 24(2): r = 0.243, α = 4.414, a = 0.793, b = 2.426, LL = -9582.4.
    let bg = &fit["bgnbd"];
    assert_eq!(
        [
            round(&bg["r"], 3),
            round(&bg["alpha"], 3),
            round(&bg["a"], 3),
            round(&bg["b"], 3)
        ],
        [0.243, 4.414, 0.793, 2.426],
        "{fit}"
    );
    assert_eq!(round(&bg["log_likelihood"], 1), -9582.4);
    // Fader and Hardie, note 025 ("The Gamma-Gamma model of monetary value"): p = 6.25,
    // q = 3.74, γ = 15.44 on the 946 repeat buyers.
    let gg = &fit["gamma_gamma"];
    assert_eq!(
        [
            round(&gg["p"], 2),
            round(&gg["q"], 2),
            round(&gg["gamma"], 2)
        ],
        [6.25, 3.74, 15.44],
        "{fit}"
    );
    assert_eq!(
        (fit["customers"].as_u64(), fit["repeat_buyers"].as_u64()),
        (Some(2357), Some(946))
    );
    // 1,411 of the 2,357 made no repeat purchase in the 39 weeks (the paper's figure 2).
    assert_eq!(fit["diagnostics"]["repeat_purchases"][0]["actual"], 1411);

    // The predictions are metrics: customers who bought often but went silent.
    let lapsed = env.json(&[
        "segment",
        "size",
        "p_alive < 0.2 and orders >= 3",
        "--as-of",
        "1998-06-30",
        "--json",
    ]);
    let csv = env.ok(&["clv", "predict", "--as-of", "1998-06-30", "--format", "csv"]);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("id,repeat_purchases,t_x,t,p_alive,predicted_orders,expected_aov,clv_12m")
    );
    let low: usize = rows
        .filter(|r| r.split(',').nth(4).unwrap().parse::<f64>().unwrap() < 0.2)
        .count();
    env.ok(&["segment", "create", "lapsing", "p_alive < 0.2"]);
    let members = env.ok(&[
        "segment",
        "members",
        "lapsing",
        "--as-of",
        "1998-06-30",
        "--format",
        "csv",
    ]);
    assert_eq!(
        members.lines().count() - 1,
        low,
        "segment and predict agree"
    );
    assert!(
        lapsed["size"].as_u64().unwrap() > 0 && (lapsed["size"].as_u64().unwrap() as usize) < low
    );
}

#[test]
fn clv_refuses_data_that_cannot_support_a_fit() {
    let env = Env::new();
    let file = env.write(
        "few.csv",
        b"id,time,event,revenue\na,2024-01-01,order_completed,10\na,2024-02-01,order_completed,12\nb,2024-01-05,order_completed,8\n",
    );
    env.ok(&[
        "import",
        "events",
        &file,
        "--profile",
        "id",
        "--time",
        "time",
        "--revenue",
        "revenue",
    ]);
    let err = env.fails(&["clv", "fit", "--as-of", "2024-06-01"]);
    assert!(
        err.contains("cannot fit BG/NBD: 2 customers with orders and 1 repeat buyers"),
        "{err}"
    );
    let err = env.fails(&["segment", "size", "p_alive > 0.5", "--as-of", "2024-06-01"]);
    assert!(
        err.contains("fit it first with `microseg clv fit`"),
        "{err}"
    );
    let err = env.fails(&["clv", "predict"]);
    assert!(err.contains("no CLV model"), "{err}");
}

/// k-means on the CDNOW customers' recency, orders and revenue (as of 1998-07-01) against
/// scikit-learn 1.x: `KMeans(4, n_init=10, random_state=0)` on `StandardScaler` of the
/// `metrics --format csv` columns gave inertia 18109.2435 with cluster sizes 15973, 6902,
/// 683, 12; with ln(1 + x) of orders and revenue, 12816.9809 with 9288, 6366, 5136, 2780.
#[test]
fn cluster_matches_scikit_learn_on_cdnow_rfm() {
    let env = Env::new();
    import_cdnow(&env);
    for (log, inertia, sizes) in [
        (None, 18_109.243_516_589_617, [15973.0, 6902.0, 683.0, 12.0]),
        (
            Some("orders,revenue"),
            12_816.980_942_696_14,
            [9288.0, 6366.0, 5136.0, 2780.0],
        ),
    ] {
        let mut args = vec![
            "cluster",
            "--k",
            "4",
            "--features",
            "recency_days,orders,revenue",
            "--as-of",
            "1998-07-01",
            "--json",
        ];
        if let Some(l) = log {
            args.extend(["--log", l]);
        }
        let out = env.json(&args);
        let ours = out["inertia"].as_f64().unwrap();
        assert!(
            (ours / inertia - 1.0).abs() < 0.01,
            "{log:?}: inertia {ours} vs {inertia}"
        );
        let clusters = out["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 4);
        for (c, expected) in clusters.iter().zip(sizes) {
            let size = c["size"].as_f64().unwrap();
            assert!(
                (size - expected).abs() <= (0.01 * expected).max(0.0),
                "{log:?}: sizes {clusters:?} vs {sizes:?}"
            );
        }
    }
    // Saved personas are segments of exactly the clusters' sizes.
    let out = env.json(&[
        "cluster",
        "--k",
        "3",
        "--features",
        "orders,revenue",
        "--log",
        "orders,revenue",
        "--as-of",
        "1998-07-01",
        "--save-as",
        "persona",
        "--json",
    ]);
    for c in out["clusters"].as_array().unwrap() {
        let name = format!("persona_{}", c["cluster"]);
        let size = env.json(&["segment", "size", &name, "--as-of", "1998-07-01", "--json"]);
        assert_eq!(size["size"], c["size"], "{name}");
    }
    let auto = env.json(&[
        "cluster",
        "--k",
        "auto",
        "--features",
        "recency_days,orders",
        "--as-of",
        "1998-07-01",
        "--restarts",
        "2",
        "--json",
    ]);
    let best = auto["silhouette"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| {
            a["silhouette"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["silhouette"].as_f64().unwrap())
        })
        .unwrap()["k"]
        .clone();
    assert_eq!(auto["k"], best);
}

/// 1,200 profiles in a 2 × 3 design (200 per cell); 60% of red + large bought, 10% of
/// every other cell. By hand: base 220 / 1200; 5 items and 6 pairs tested at depth 2.
#[test]
fn discover_finds_the_planted_micro_segment() {
    let env = Env::new();
    let mut csv = String::from("id,color,size,bought,spend\n");
    for i in 0..1200 {
        let color = if i % 2 == 0 { "red" } else { "blue" };
        let size = ["s", "m", "l"][(i / 2) % 3];
        let rank = i / 6; // 0..200 within the cell
        let rate = if color == "red" && size == "l" {
            120
        } else {
            20
        };
        let bought = rank < rate;
        csv.push_str(&format!(
            "p{i},{color},{size},{bought},{}\n",
            if bought { 50 } else { 0 }
        ));
    }
    let file = env.write("shop.csv", csv.as_bytes());
    env.ok(&["import", "profiles", &file]);
    let out = env.json(&[
        "discover",
        "--target",
        "bought = true",
        "--dims",
        "color,size",
        "--max-depth",
        "2",
        "--min-support",
        "100",
        "--json",
    ]);
    assert!((out["base"].as_f64().unwrap() - 220.0 / 1200.0).abs() < 1e-12);
    assert_eq!(out["tested"], 11);
    let top = &out["segments"][0];
    assert_eq!(top["condition"], r#"color = "red" and size = "l""#);
    assert_eq!(
        (top["support"].as_u64(), top["value"].as_f64()),
        (Some(200), Some(0.6))
    );
    assert!((top["lift"].as_f64().unwrap() - 0.6 / (220.0 / 1200.0)).abs() < 1e-12);
    // Wilson by hand: (p + z²/2n ± z √(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964.
    let (p, n, z) = (0.6f64, 200.0f64, 1.959_963_984_540_054f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    assert!((top["ci_low"].as_f64().unwrap() - (centre - half)).abs() < 1e-12);
    assert!((top["ci_high"].as_f64().unwrap() - (centre + half)).abs() < 1e-12);
    assert_eq!(top["verdict"], "above");
    // Every survivor passed the FDR, and cells at 10% come out below the base.
    let segments = out["segments"].as_array().unwrap();
    assert!(segments
        .iter()
        .all(|s| s["q_value"].as_f64().unwrap() <= 0.05));
    assert!(segments
        .iter()
        .any(|s| s["condition"] == r#"color = "blue""# && s["verdict"] == "below"));
    // The printed conditions are ready for `segment create`.
    let condition = top["condition"].as_str().unwrap();
    env.ok(&["segment", "create", "planted", condition]);
    assert_eq!(
        env.json(&["segment", "size", "planted", "--json"])["size"],
        200
    );
    // A numeric trait named alone is a mean target: 50 per buyer, so the base mean is
    // 220 × 50 / 1200 and the best single item is size l, 140 buyers of 400.
    let mean = env.json(&[
        "discover",
        "--target",
        "spend",
        "--dims",
        "color,size",
        "--max-depth",
        "1",
        "--json",
    ]);
    assert_eq!(mean["kind"], "mean");
    assert!((mean["base"].as_f64().unwrap() - 220.0 * 50.0 / 1200.0).abs() < 1e-9);
    assert_eq!(mean["segments"][0]["condition"], r#"size = "l""#);
    assert!((mean["segments"][0]["value"].as_f64().unwrap() - 17.5).abs() < 1e-12);
    // The partition, by hand: size l against the rest has the larger split statistic
    // ((0.35 − 0.1)² / (0.35·0.65/400 + 0.1·0.9/800) = 91.7 against red's 58.3); inside l,
    // blue (0.1) against red (0.6), the same split either way round (blue is the first
    // value); outside l every cell is at 0.1, so no split.
    let split = env.json(&[
        "discover",
        "--target",
        "bought = true",
        "--dims",
        "color,size",
        "--partition",
        "--json",
    ]);
    let groups: Vec<(&str, u64, f64, &str)> = split["partition"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["condition"].as_str().unwrap(),
                g["support"].as_u64().unwrap(),
                g["value"].as_f64().unwrap(),
                g["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (r#"size = "l" and color = "blue""#, 200, 0.1, "below"),
            (r#"size = "l" and color = "red""#, 200, 0.6, "above"),
            (r#"not size = "l""#, 800, 0.1, "below"),
        ]
    );
    let err = env.fails(&["discover", "--target", "bought", "--dims", "color"]);
    assert!(
        err.contains("--target bought: 'bought' is bool: give a condition"),
        "{err}"
    );
    // Below the minimum support nothing is tested.
    let none = env.json(&[
        "discover",
        "--target",
        "bought = true",
        "--dims",
        "color,size",
        "--min-support",
        "1000",
        "--json",
    ]);
    assert_eq!(
        (
            none["tested"].as_u64(),
            none["segments"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

/// An e-mail test: 200 treated (arm A) and 200 controls; the e-mail works in the north
/// (60 of 100 visit vs 10 of 100) and does nothing in the south (20 vs 20).
fn email_experiment(env: &Env) {
    let mut csv = String::from("customer,region,arm,visit,spend\n");
    let mut id = 0;
    for (region, arm, visitors) in [
        ("north", "A", 60),
        ("north", "control", 10),
        ("south", "A", 20),
        ("south", "control", 20),
    ] {
        for i in 0..100 {
            let visit = i < visitors;
            let spend = if visit { "10" } else { "0" };
            csv.push_str(&format!("u{id},{region},{arm},{},{spend}\n", visit as u8));
            id += 1;
        }
    }
    csv.push_str("u999,north,,1,0\n"); // no arm: rejected
    let file = env.write("email.csv", csv.as_bytes());
    // A wrong control is found before anything is written.
    let err = env.fails(&[
        "experiment",
        "import",
        &file,
        "--id",
        "customer",
        "--arm",
        "arm",
        "--control",
        "none",
        "--outcomes",
        "visit,spend",
    ]);
    assert!(err.contains("--control 'none' is not an arm"), "{err}");
    assert_eq!(env.count("profiles"), 0);
    let out = env.json(&[
        "experiment",
        "import",
        &file,
        "--id",
        "customer",
        "--arm",
        "arm",
        "--control",
        "control",
        "--outcomes",
        "visit,spend",
        "--json",
    ]);
    assert_eq!(
        (out["name"].as_str(), out["members"].as_u64()),
        (Some("email"), Some(400))
    );
    assert_eq!(out["rejected"], 1);
    assert_eq!(out["rejects"][0]["line"], 402);
}

#[test]
fn experiment_report_matches_independent_statistics() {
    let env = Env::new();
    email_experiment(&env);
    let report = env.json(&["experiment", "report", "email", "--by", "region", "--json"]);
    assert_eq!(report["control"], "control");
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(arms[0]["arm"], "control");
    assert!(arms[0]["outcomes"]["visit"]["abs_lift"].is_null());
    let a = &arms[1];
    assert_eq!((a["arm"].as_str(), a["n"].as_u64()), (Some("A"), Some(200)));
    let visit = &a["outcomes"]["visit"];
    // Rates by hand: 80/200 vs 30/200. Newcombe's interval and the pooled z test as
    // statsmodels 0.14 computes them: confint_proportions_2indep(80, 200, 30, 200,
    // method="newcomb") = (0.16386838455481167, 0.3313688347035519);
    // proportions_ztest([80, 30], [200, 200]) p = 2.1568494115070915e-08.
    assert_eq!(visit["value"].as_f64(), Some(0.4));
    assert!((visit["abs_lift"].as_f64().unwrap() - 0.25).abs() < 1e-12);
    assert!((visit["rel_lift"].as_f64().unwrap() - (0.4 / 0.15 - 1.0)).abs() < 1e-12);
    assert!((visit["ci_low"].as_f64().unwrap() - 0.163_868_384_554_811_67).abs() < 1e-9);
    assert!((visit["ci_high"].as_f64().unwrap() - 0.331_368_834_703_551_9).abs() < 1e-9);
    assert!((visit["p_value"].as_f64().unwrap() / 2.156_849_411_507_091_5e-8 - 1.0).abs() < 1e-6);
    // Welch on spend, scipy.stats.ttest_ind(a, c, equal_var=False): t = 5.817519868033627,
    // p = 1.3096897232945725e-08, 95% interval (1.6549214959949912, 3.345078504005009).
    let spend = &a["outcomes"]["spend"];
    assert!((spend["abs_lift"].as_f64().unwrap() - 2.5).abs() < 1e-12);
    assert!((spend["ci_low"].as_f64().unwrap() - 1.654_921_495_994_991_2).abs() < 1e-9);
    assert!((spend["ci_high"].as_f64().unwrap() - 3.345_078_504_005_009).abs() < 1e-9);
    assert!((spend["p_value"].as_f64().unwrap() / 1.309_689_723_294_572_5e-8 - 1.0).abs() < 1e-6);
    // By region: north 60/100 vs 10/100, statsmodels Newcombe (0.37698, 0.60106).
    let by = report["by"].as_array().unwrap();
    let north = by.iter().find(|b| b["value"] == "north").unwrap();
    let v = &north["arms"][1]["outcomes"]["visit"];
    assert!((v["ci_low"].as_f64().unwrap() - 0.376_980_714_492_780_7).abs() < 1e-9);
    assert!((v["ci_high"].as_f64().unwrap() - 0.601_057_197_014_488_7).abs() < 1e-9);
}

#[test]
fn uplift_discovery_finds_where_the_email_works_and_where_it_does_nothing() {
    let env = Env::new();
    email_experiment(&env);
    let out = env.json(&[
        "experiment",
        "discover",
        "email",
        "--arm",
        "A",
        "--outcome",
        "visit",
        "--dims",
        "region",
        "--min-support",
        "50",
        "--save-exclusion",
        "visits_anyway",
        "--json",
    ]);
    assert!((out["base"].as_f64().unwrap() - 0.25).abs() < 1e-12);
    let segments = out["segments"].as_array().unwrap();
    let find = |c: &str| segments.iter().find(|s| s["condition"] == c).unwrap();
    let north = find(r#"region = "north""#);
    assert_eq!(
        (north["verdict"].as_str(), north["support"].as_u64()),
        (Some("works"), Some(200))
    );
    assert!((north["lift"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    let south = find(r#"region = "south""#);
    assert_eq!(south["verdict"], "no_effect");
    // statsmodels: Newcombe for 20/100 - 20/100 is ±0.11104317283691022.
    assert!((south["ci_high"].as_f64().unwrap() - 0.111_043_172_836_910_22).abs() < 1e-9);
    assert_eq!(south["control_value"].as_f64(), Some(0.2));
    assert_eq!(out["exclusion"]["condition"], r#"region = "south""#);
    assert_eq!(
        env.json(&["segment", "size", "visits_anyway", "--json"])["size"],
        200
    );
    let err = env.fails(&[
        "experiment",
        "discover",
        "email",
        "--arm",
        "control",
        "--outcome",
        "visit",
    ]);
    assert!(err.contains("is the control"), "{err}");
    let err = env.fails(&["experiment", "report", "nope"]);
    assert!(
        err.contains("no experiment 'nope' (experiments: email)"),
        "{err}"
    );
}

/// One generated experiment row: its dimensions, arm and outcome.
struct Row {
    dims: [(&'static str, String); 5],
    treated: bool,
    converted: bool,
}

/// 40,000 customers in a 50/50 e-mail test with planted heterogeneity: the e-mail lifts
/// conversion from 10% to 17% on the `basic` plan (40%, about 8,000 per arm) and does
/// nothing elsewhere; 120 `free` customers in club `velo` (60 per arm) convert 17 of 60
/// treated against 6 of 60 controls, a +18 pt effect that is chance-sized noise on so few
/// people. `tier` is nested in `plan` (`gold` and `silver` only on `premium`, `none`
/// exactly on the other plans), so `tier = "gold" and plan = "premium"` adds nobody to
/// `tier = "gold"`. Seeded splitmix64, so the same rows every run.
fn planted_experiment(env: &Env) -> Vec<Row> {
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut rows = Vec::new();
    let (mut club_treated, mut club_control) = (0, 0);
    for i in 0..40_000 {
        let treated = i % 2 == 0;
        let u = uniform();
        let plan = if u < 0.4 {
            "basic"
        } else if u < 0.8 {
            "free"
        } else {
            "premium"
        };
        let tier = match (plan, uniform() < 0.5) {
            ("premium", true) => "gold",
            ("premium", false) => "silver",
            _ => "none",
        };
        let region = ["north", "south", "east", "west"][(uniform() * 4.0) as usize];
        let channel = if uniform() < 0.5 { "web" } else { "app" };
        let in_club = plan == "free"
            && if treated {
                club_treated < 60
            } else {
                club_control < 60
            };
        let rate = if plan == "basic" && treated {
            0.17
        } else {
            0.10
        };
        let mut converted = uniform() < rate;
        if in_club {
            let seat = if treated {
                club_treated += 1;
                club_treated
            } else {
                club_control += 1;
                club_control
            };
            converted = seat <= if treated { 17 } else { 6 };
        }
        let club = if in_club { "velo" } else { "none" };
        rows.push(Row {
            dims: [
                ("plan", plan.into()),
                ("tier", tier.into()),
                ("region", region.into()),
                ("channel", channel.into()),
                ("club", club.into()),
            ],
            treated,
            converted,
        });
    }
    let mut csv = String::from("customer,plan,tier,region,channel,club,arm,conversion\n");
    for (i, r) in rows.iter().enumerate() {
        let dims: Vec<&str> = r.dims.iter().map(|(_, v)| v.as_str()).collect();
        csv.push_str(&format!(
            "u{i},{},{},{}\n",
            dims.join(","),
            if r.treated { "email" } else { "control" },
            r.converted as u8
        ));
    }
    let file = env.write("planted.csv", csv.as_bytes());
    env.ok(&[
        "experiment",
        "import",
        &file,
        "--name",
        "planted",
        "--id",
        "customer",
        "--arm",
        "arm",
        "--control",
        "control",
        "--outcomes",
        "conversion",
    ]);
    rows
}

/// Whether `row` meets `condition`, read by this test's own reading of the printed
/// conditions (`d = "v"` and `not d = "v"` joined by `and`; `null` is everyone), not by
/// microseg's evaluator.
fn meets(row: &Row, condition: &serde_json::Value) -> bool {
    let Some(text) = condition.as_str() else {
        return true;
    };
    text.split(" and ").all(|part| {
        let (negated, part) = match part.strip_prefix("not ") {
            Some(rest) => (true, rest),
            None => (false, part),
        };
        let (dim, value) = part.split_once(" = ").expect("d = \"v\"");
        let value = value.trim_matches('"');
        let (_, own) = row.dims.iter().find(|(d, _)| *d == dim).expect(dim);
        (own == value) != negated
    })
}

/// (treated, treated converting, control, control converting) among `rows` meeting `c`.
fn arms_of(rows: &[Row], c: &serde_json::Value) -> (f64, f64, f64, f64) {
    let mut n = (0.0, 0.0, 0.0, 0.0);
    for r in rows.iter().filter(|r| meets(r, c)) {
        if r.treated {
            n.0 += 1.0;
            n.1 += r.converted as u8 as f64;
        } else {
            n.2 += 1.0;
            n.3 += r.converted as u8 as f64;
        }
    }
    n
}

/// `experiment discover` of the planted experiment over its five dimensions, depth 3.
fn discover_planted(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "experiment",
        "discover",
        "planted",
        "--arm",
        "email",
        "--outcome",
        "conversion",
        "--dims",
        "plan,tier,region,channel,club",
        "--max-depth",
        "3",
        "--json",
    ];
    args.extend(extra);
    env.json(&args)
}

#[test]
fn uplift_discovery_ranks_the_responding_group_before_a_small_noisy_one() {
    let env = Env::new();
    let rows = planted_experiment(&env);
    let out = discover_planted(&env, &["--min-support", "100"]);
    let segments = out["segments"].as_array().unwrap();
    let conditions: Vec<&str> = segments
        .iter()
        .map(|s| s["condition"].as_str().unwrap())
        .collect();
    // Every finding's numbers are its members' counts (this test's own reading).
    for s in segments {
        let (t, tk, c, ck) = arms_of(&rows, &s["condition"]);
        assert_eq!(s["support"].as_f64(), Some(t + c), "{}", s["condition"]);
        let effect = tk / t - ck / c;
        assert!((s["lift"].as_f64().unwrap() - effect).abs() < 1e-12);
    }
    // The responding group comes first: its interval's lower end beats the club's, whose
    // +18 pt point estimate rests on 120 people.
    let top = &segments[0];
    assert!(
        conditions[0].contains(r#"plan = "basic""#) && top["support"].as_u64() >= Some(4_000),
        "top: {top}"
    );
    assert_eq!(top["verdict"], "works");
    let basic = conditions
        .iter()
        .position(|c| *c == r#"plan = "basic""#)
        .expect("plan = basic is found");
    let club = conditions
        .iter()
        .position(|c| *c == r#"club = "velo""#)
        .expect("the club is tested and listed");
    assert!((segments[club]["lift"].as_f64().unwrap() - (17.0 - 6.0) / 60.0).abs() < 1e-12);
    assert!(basic < club, "{conditions:?}");
    // Works findings are in the order of their intervals' lower ends.
    let lows: Vec<f64> = segments
        .iter()
        .filter(|s| s["verdict"] == "works")
        .map(|s| s["ci_low"].as_f64().unwrap())
        .collect();
    assert!(lows.windows(2).all(|w| w[0] >= w[1]), "{lows:?}");
    // No conjunction has the members of a shorter one it contains.
    for s in segments {
        let text = s["condition"].as_str().unwrap();
        let parts: Vec<&str> = text.split(" and ").collect();
        let size = |c: &str| {
            let (t, _, c2, _) = arms_of(&rows, &serde_json::Value::from(c));
            t + c2
        };
        for i in 0..parts.len() {
            if parts.len() < 2 {
                break;
            }
            let mut sub = parts.clone();
            sub.remove(i);
            assert_ne!(
                size(text),
                size(&sub.join(" and ")),
                "{text} repeats {sub:?}"
            );
        }
    }
    assert!(!conditions
        .iter()
        .any(|c| c.contains("tier = \"gold\"") && c.contains("plan = ")));
}

#[test]
fn a_partition_puts_everyone_in_one_group_with_its_own_effect() {
    let env = Env::new();
    let rows = planted_experiment(&env);
    let out = discover_planted(&env, &["--min-support", "500", "--partition"]);
    let groups = out["partition"]["groups"].as_array().unwrap();
    // Disjoint and covering: each row meets exactly one group's condition.
    for (i, r) in rows.iter().enumerate() {
        let n = groups.iter().filter(|g| meets(r, &g["condition"])).count();
        assert_eq!(n, 1, "row {i} is in {n} groups");
    }
    for g in groups {
        let (t, tk, c, ck) = arms_of(&rows, &g["condition"]);
        assert_eq!(g["support"].as_f64(), Some(t + c), "{g}");
        assert!(t + c >= 500.0);
        assert!((g["value"].as_f64().unwrap() - tk / t).abs() < 1e-12);
        assert!((g["control_value"].as_f64().unwrap() - ck / c).abs() < 1e-12);
        assert!((g["lift"].as_f64().unwrap() - (tk / t - ck / c)).abs() < 1e-12);
        let (low, high) = (
            g["ci_low"].as_f64().unwrap(),
            g["ci_high"].as_f64().unwrap(),
        );
        let expected = if low > 0.0 {
            "works"
        } else if high < 0.0 {
            "backfires"
        } else {
            "no_effect"
        };
        assert_eq!(g["verdict"], expected);
    }
    // The planted answer: send to the basic plan, nobody else. Every basic customer is in
    // a group that works and nobody else is (the club's noise is too small to split off).
    for r in &rows {
        let group = groups.iter().find(|g| meets(r, &g["condition"])).unwrap();
        let basic = r.dims[0].1 == "basic";
        assert_eq!(group["verdict"] == "works", basic, "{group}");
    }
    let err = env.fails(&[
        "experiment",
        "discover",
        "planted",
        "--arm",
        "email",
        "--outcome",
        "conversion",
        "--partition",
        "--max-depth",
        "4",
    ]);
    assert!(err.contains("a partition has at most 3 levels"), "{err}");
}
