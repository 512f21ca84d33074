//! `clv`, `cluster`, `discover` and `experiment` end to end.

use super::{test_data, Env};

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
