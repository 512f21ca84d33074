//! A seeded, reproducible synthetic bicycle shop: customers with demographic, geographic
//! and psychographic traits, and their sessions, page views, carts and orders over two
//! years. Behaviour depends on the traits (pros visit and spend more, mountain bikers in
//! the Alps read the winter-accessories pages in winter, high incomes convert better), so
//! segments differ for real.
//!
//! Each customer draws from its own random stream derived from `(seed, index)`: customer
//! 17 is the same whether 1,000 or 1,000,000 customers are generated. No I/O: the caller
//! receives each customer with its events and writes them where it likes.

mod rng;

use microseg_core::time::{civil_from_days, Timestamp, DAY_MS};

pub use rng::Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// Number of customers.
    pub customers: usize,
    /// Random seed.
    pub seed: u64,
    /// The end of the history (exclusive); events happen in the two years before it.
    pub end: Timestamp,
}

/// The end of the demo's history, and the demo's as-of instant: 2026-11-01T00:00:00Z.
pub const DEMO_END: Timestamp = Timestamp(1_793_491_200_000);

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            customers: 50_000,
            seed: 42,
            end: DEMO_END,
        }
    }
}

/// One customer's traits.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// External id, `c0000001`.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Phone number in international format.
    pub phone: String,
    /// First name.
    pub first_name: &'static str,
    /// Age in years.
    pub age: u32,
    /// `f`, `m` or `x`.
    pub gender: &'static str,
    /// Country name.
    pub country: &'static str,
    /// City name.
    pub city: &'static str,
    /// `low`, `middle`, `upper_middle`, `high`.
    pub income_band: &'static str,
    /// `mountain`, `road` or `city`.
    pub discipline: &'static str,
    /// `beginner`, `amateur` or `pro`.
    pub skill: &'static str,
    /// Interests (a string set).
    pub interests: Vec<&'static str>,
    /// Consent to e-mail.
    pub consent_email: bool,
    /// Consent to SMS.
    pub consent_sms: bool,
    /// Consent to push.
    pub consent_push: bool,
    /// When the customer signed up.
    pub signup_at: Timestamp,
}

/// One event of a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: Timestamp,
    /// `page_viewed`, `product_added` or `order_completed`.
    pub name: &'static str,
    /// Page path of a page view.
    pub path: Option<&'static str>,
    /// Product category.
    pub category: Option<&'static str>,
    /// Unit price of a product added or ordered.
    pub price: Option<f64>,
    /// Items ordered.
    pub items: Option<u32>,
    /// Order revenue.
    pub revenue: Option<f64>,
}

struct City {
    name: &'static str,
    weight: f64,
    alpine: bool,
    flat: bool,
}

struct Country {
    name: &'static str,
    weight: f64,
    phone: &'static str,
    cities: &'static [City],
}

const fn city(name: &'static str, weight: f64, alpine: bool, flat: bool) -> City {
    City {
        name,
        weight,
        alpine,
        flat,
    }
}

const COUNTRIES: &[Country] = &[
    Country {
        name: "Germany",
        weight: 0.35,
        phone: "+49 151",
        cities: &[
            city("Berlin", 0.3, false, true),
            city("Munich", 0.25, true, false),
            city("Hamburg", 0.2, false, true),
            city("Freiburg", 0.25, true, false),
        ],
    },
    Country {
        name: "Hungary",
        weight: 0.2,
        phone: "+36 30",
        cities: &[
            city("Budapest", 0.6, false, false),
            city("Debrecen", 0.15, false, true),
            city("Szeged", 0.13, false, true),
            city("Pécs", 0.12, false, false),
        ],
    },
    Country {
        name: "Austria",
        weight: 0.15,
        phone: "+43 664",
        cities: &[
            city("Vienna", 0.55, false, false),
            city("Graz", 0.2, true, false),
            city("Innsbruck", 0.15, true, false),
            city("Salzburg", 0.1, true, false),
        ],
    },
    Country {
        name: "Netherlands",
        weight: 0.15,
        phone: "+31 6",
        cities: &[
            city("Amsterdam", 0.45, false, true),
            city("Utrecht", 0.3, false, true),
            city("Rotterdam", 0.25, false, true),
        ],
    },
    Country {
        name: "Switzerland",
        weight: 0.15,
        phone: "+41 79",
        cities: &[
            city("Zurich", 0.5, true, false),
            city("Bern", 0.25, true, false),
            city("Lugano", 0.25, true, false),
        ],
    },
];

const FEMALE: &[&str] = &[
    "anna", "eva", "julia", "sophie", "lena", "emma", "zsofia", "lotte", "laura", "nora",
];
const MALE: &[&str] = &[
    "peter", "jan", "lukas", "mate", "felix", "daan", "max", "bence", "tobias", "marco",
];
const NEUTRAL: &[&str] = &["alex", "robin", "kim", "sam"];

const INTERESTS: &[(&str, &[&str])] = &[
    (
        "mountain",
        &["mountain_biking", "outdoor", "camping", "hiking"],
    ),
    ("road", &["road_cycling", "triathlon", "fitness", "racing"]),
    ("city", &["commuting", "sustainability", "urban"]),
];
const GENERAL_INTERESTS: &[&str] = &["travel", "photography", "running", "tech", "coffee"];

/// Pages: path, category, and whether it is a winter page.
const PAGES: &[(&str, &str)] = &[
    ("/", "home"),
    ("/bikes/mountain", "bikes"),
    ("/bikes/road", "bikes"),
    ("/bikes/city", "bikes"),
    ("/components", "components"),
    ("/apparel/jerseys", "apparel"),
    ("/accessories/lights", "accessories"),
    ("/winter/gloves", "winter_accessories"),
    ("/winter/jackets", "winter_accessories"),
    ("/nutrition", "nutrition"),
];

fn pick<'a, T>(rng: &mut Rng, items: &'a [T], weight: impl Fn(&T) -> f64) -> &'a T {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.f64() * total;
    for item in items {
        x -= weight(item);
        if x < 0.0 {
            return item;
        }
    }
    items.last().expect("non-empty")
}

fn month_of(t: i64) -> u32 {
    civil_from_days(t.div_euclid(DAY_MS)).1
}

fn is_winter(month: u32) -> bool {
    matches!(month, 11 | 12 | 1 | 2)
}

/// Generates the shop, calling `emit` once per customer, in id order, with the customer's
/// events in time order.
pub fn generate(config: &ShopConfig, mut emit: impl FnMut(&Customer, &[Event])) {
    let mut events = Vec::new();
    for index in 0..config.customers {
        let mut rng = Rng::for_stream(config.seed, index as u64);
        let customer = customer(&mut rng, index, config.end);
        events.clear();
        behave(&mut rng, &customer, config.end, &mut events);
        emit(&customer, &events);
    }
}

fn customer(rng: &mut Rng, index: usize, end: Timestamp) -> Customer {
    let country = pick(rng, COUNTRIES, |c| c.weight);
    let city = pick(rng, country.cities, |c| c.weight);
    let discipline = *pick(rng, &["mountain", "road", "city"], |d| match (*d, city) {
        ("mountain", c) if c.alpine => 0.55,
        ("city", c) if c.flat => 0.55,
        ("mountain", c) if c.flat => 0.15,
        ("city", c) if c.alpine => 0.15,
        _ => 0.33,
    });
    let gender = *pick(rng, &["f", "m", "x"], |g| match (*g, discipline) {
        ("x", _) => 0.02,
        ("f", "mountain") => 0.33,
        ("f", "city") => 0.5,
        ("f", _) => 0.4,
        _ => 0.6,
    });
    let skill = *pick(rng, &["beginner", "amateur", "pro"], |s| {
        match (*s, discipline) {
            ("pro", "city") => 0.03,
            ("pro", _) => 0.15,
            ("beginner", "city") => 0.6,
            ("beginner", _) => 0.4,
            _ => 0.42,
        }
    });
    let (mean_age, sd_age) = match skill {
        "pro" => (31.0, 7.0),
        "amateur" => (39.0, 11.0),
        _ => (35.0, 13.0),
    };
    let age = (mean_age + sd_age * rng.normal()).clamp(16.0, 80.0) as u32;
    let income_band = *pick(rng, &["low", "middle", "upper_middle", "high"], |b| {
        let older = age >= 35;
        match (*b, older) {
            ("low", true) => 0.15,
            ("low", false) => 0.35,
            ("middle", _) => 0.4,
            ("upper_middle", true) => 0.3,
            ("upper_middle", false) => 0.18,
            ("high", true) => 0.15,
            _ => 0.07,
        }
    });
    let first_name = *match gender {
        "f" => pick(rng, FEMALE, |_| 1.0),
        "m" => pick(rng, MALE, |_| 1.0),
        _ => pick(rng, NEUTRAL, |_| 1.0),
    };
    let mut interests: Vec<&'static str> = Vec::new();
    let own = INTERESTS
        .iter()
        .find(|(d, _)| *d == discipline)
        .map_or(&[][..], |(_, i)| *i);
    for &i in own {
        if rng.f64() < 0.55 {
            interests.push(i);
        }
    }
    for &i in GENERAL_INTERESTS {
        if rng.f64() < 0.18 {
            interests.push(i);
        }
    }
    interests.sort_unstable();
    let two_years = 730 * DAY_MS;
    // Earlier signups are more common (the shop grew); at least one day of history.
    let signup_offset = (rng.f64().powf(0.7) * (two_years - DAY_MS) as f64) as i64;
    let number = rng.below(10_000_000);
    Customer {
        id: format!("c{:07}", index + 1),
        email: format!("{first_name}.{}@example.com", index + 1),
        phone: format!(
            "{} {:03} {:04}",
            country.phone,
            number / 10_000,
            number % 10_000
        ),
        first_name,
        age,
        gender,
        country: country.name,
        city: city.name,
        income_band,
        discipline,
        skill,
        interests,
        consent_email: rng.f64() < 0.7,
        consent_sms: rng.f64() < 0.35,
        consent_push: rng.f64() < 0.45,
        signup_at: Timestamp(end.0 - two_years + signup_offset),
    }
}

fn behave(rng: &mut Rng, c: &Customer, end: Timestamp, out: &mut Vec<Event>) {
    let alpine = COUNTRIES
        .iter()
        .flat_map(|k| k.cities)
        .any(|k| k.name == c.city && k.alpine);
    let per_month = match c.skill {
        "pro" => 2.2,
        "amateur" => 1.3,
        _ => 0.7,
    } * match c.discipline {
        "road" => 1.15,
        "city" => 0.75,
        _ => 1.0,
    } * (0.6 * rng.normal()).exp()
        * 0.85;
    let income = match c.income_band {
        "low" => 0.7,
        "middle" => 1.0,
        "upper_middle" => 1.15,
        _ => 1.3,
    };
    // Customers drop out: active for an exponential time, mean 14 months.
    let active_ms = (-rng.f64().max(1e-12).ln() * 14.0 * 30.0 * DAY_MS as f64) as i64;
    let start = c.signup_at.0;
    let stop = (start + active_ms).min(end.0 - 1);
    let months = (stop - start) as f64 / (30.0 * DAY_MS as f64);
    let sessions = rng.poisson(per_month * months.max(0.05));
    let mut starts: Vec<i64> = (0..sessions)
        .filter_map(|_| {
            let t = start + (rng.f64() * (stop - start).max(1) as f64) as i64;
            // Seasonality: mountain and road riding peak from April to September.
            let month = month_of(t);
            let summer = (4..=9).contains(&month);
            let keep = match (c.discipline, summer) {
                ("city", _) => 1.0,
                (_, true) => 1.0,
                _ => 0.6,
            };
            (rng.f64() < keep).then_some(t)
        })
        .collect();
    starts.sort_unstable();
    starts.insert(0, start);
    for s in starts {
        session(rng, c, s, end, alpine, income, out);
    }
    out.sort_by_key(|e| e.time);
}

fn session(
    rng: &mut Rng,
    c: &Customer,
    start: i64,
    end: Timestamp,
    alpine: bool,
    income: f64,
    out: &mut Vec<Event>,
) {
    let winter = is_winter(month_of(start));
    let mut t = start;
    let pages = 1 + rng.geometric(0.3).min(12);
    let mut cart: Option<(&'static str, f64)> = None;
    for _ in 0..pages {
        if t >= end.0 {
            return;
        }
        let &(path, category) = pick(rng, PAGES, |&(path, cat)| match cat {
            "bikes" if path.ends_with(c.discipline) => 3.0,
            "bikes" => 0.4,
            "winter_accessories" if winter && c.discipline != "city" => {
                if alpine {
                    3.5
                } else {
                    2.0
                }
            }
            "winter_accessories" if winter => 1.0,
            "winter_accessories" => 0.15,
            "components" if c.skill != "beginner" => 1.8,
            "nutrition" if c.discipline == "road" => 1.2,
            _ => 1.0,
        });
        out.push(Event {
            time: Timestamp(t),
            name: "page_viewed",
            path: Some(path),
            category: Some(category),
            price: None,
            items: None,
            revenue: None,
        });
        let add = match c.skill {
            "pro" => 0.16,
            "amateur" => 0.12,
            _ => 0.08,
        };
        if category != "home" && rng.f64() < add {
            let price = price(rng, category, c.skill);
            t += 20_000 + rng.below(60_000) as i64;
            out.push(Event {
                time: Timestamp(t),
                name: "product_added",
                path: None,
                category: Some(category),
                price: Some(price),
                items: None,
                revenue: None,
            });
            cart = Some((category, price));
        }
        t += 30_000 + rng.below(240_000) as i64;
    }
    if let Some((category, price)) = cart {
        // Winter gear converts less often than it is browsed: the 3-day follow-up matters.
        let base = if category == "winter_accessories" {
            0.3
        } else {
            0.45
        };
        if rng.f64() < (base * income).min(0.95) && t < end.0 {
            let items = 1 + rng.geometric(0.7).min(3);
            out.push(Event {
                time: Timestamp(t),
                name: "order_completed",
                path: None,
                category: Some(category),
                price: Some(price),
                items: Some(items),
                revenue: Some((price * items as f64 * 100.0).round() / 100.0),
            });
        }
    }
}

fn price(rng: &mut Rng, category: &str, skill: &str) -> f64 {
    let (median, spread) = match (category, skill) {
        ("bikes", "pro") => (3800.0, 0.35),
        ("bikes", "amateur") => (1500.0, 0.35),
        ("bikes", _) => (650.0, 0.3),
        ("components", _) => (120.0, 0.7),
        ("apparel", _) => (70.0, 0.4),
        ("winter_accessories", _) => (55.0, 0.4),
        ("nutrition", _) => (25.0, 0.3),
        _ => (35.0, 0.5),
    };
    ((median * (spread * rng.normal()).exp()) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(customers: usize, seed: u64) -> Vec<(Customer, Vec<Event>)> {
        let mut all = Vec::new();
        let config = ShopConfig {
            customers,
            seed,
            end: DEMO_END,
        };
        generate(&config, |c, e| all.push((c.clone(), e.to_vec())));
        all
    }

    #[test]
    fn demo_end_is_2026_11_01() {
        assert_eq!(DEMO_END.to_string(), "2026-11-01T00:00:00Z");
    }

    #[test]
    fn same_seed_same_shop_and_customers_independent_of_count() {
        let a = shop(300, 7);
        let b = shop(300, 7);
        assert_eq!(a, b);
        let c = shop(100, 7);
        assert_eq!(&a[..100], &c[..]);
        assert_ne!(shop(10, 8)[..10], a[..10]);
    }

    #[test]
    fn events_are_ordered_and_before_the_end() {
        for (c, events) in shop(500, 1) {
            assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
            assert!(events
                .iter()
                .all(|e| e.time < DEMO_END && e.time >= c.signup_at));
            for e in events.iter().filter(|e| e.name == "order_completed") {
                assert!(e.revenue.unwrap() > 0.0);
            }
        }
    }

    #[test]
    fn behaviour_depends_on_traits() {
        // Pros order more than beginners, and winter pages are read mostly in winter.
        let all = shop(4000, 3);
        let orders_per = |skill: &str| {
            let group: Vec<_> = all.iter().filter(|(c, _)| c.skill == skill).collect();
            let orders: usize = group
                .iter()
                .map(|(_, e)| e.iter().filter(|e| e.name == "order_completed").count())
                .sum();
            orders as f64 / group.len() as f64
        };
        assert!(orders_per("pro") > 1.5 * orders_per("beginner"));
        let winter_views: Vec<bool> = all
            .iter()
            .flat_map(|(_, e)| e.iter())
            .filter(|e| e.category == Some("winter_accessories") && e.name == "page_viewed")
            .map(|e| is_winter(month_of(e.time.0)))
            .collect();
        let share = winter_views.iter().filter(|w| **w).count() as f64 / winter_views.len() as f64;
        assert!(share > 0.6, "winter share {share}");
    }
}

/// One customer's row in the simulated past e-mail campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailTestRow {
    /// The customer's external id.
    pub id: String,
    /// `discount_email`, `new_season_email` or `no_email` (the control).
    pub arm: &'static str,
    /// Visited the shop within two weeks.
    pub visit: bool,
    /// Ordered within two weeks.
    pub conversion: bool,
    /// Spend within two weeks.
    pub spend: f64,
}

/// The arms of [`email_test`], control last.
pub const EMAIL_TEST_ARMS: [&str; 3] = ["discount_email", "new_season_email", "no_email"];

/// A past e-mail campaign over `customer` (who had made `orders` orders before it), with
/// effects that differ by segment, as the demo's experiment: customers with 3 or more
/// orders buy as often with or without a discount (they would buy anyway); beginners and
/// amateurs respond to the discount; pros respond to the new-season e-mail and slightly
/// less to the discount than without any e-mail (it cheapens the brand for them).
/// Seeded by the customer id, so the same shop always gives the same experiment.
pub fn email_test(seed: u64, customer: &Customer, orders: u32) -> EmailTestRow {
    let hash = customer.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::for_stream(seed ^ 0xe3a1_1000, hash);
    let arm = EMAIL_TEST_ARMS[rng.below(3) as usize];
    let loyal = orders >= 3;
    // Two-week conversion without an e-mail, then the effect of each e-mail.
    let base = if loyal { 0.20 } else { 0.04 };
    let effect = match (arm, loyal, customer.skill) {
        ("no_email", ..) => 0.0,
        (_, true, _) => 0.0,
        ("discount_email", false, "pro") => -0.025,
        ("discount_email", false, "beginner") => 0.05,
        ("discount_email", false, _) => 0.07,
        ("new_season_email", false, "pro") => 0.05,
        (_, false, _) => 0.01,
    };
    let conversion = rng.f64() < base + effect;
    let visit = conversion || rng.f64() < if arm == "no_email" { 0.15 } else { 0.25 };
    let spend = if conversion {
        let discount = if arm == "discount_email" { 0.8 } else { 1.0 };
        (80.0 * (0.5 * rng.normal()).exp() * discount * 100.0).round() / 100.0
    } else {
        0.0
    };
    EmailTestRow {
        id: customer.id.clone(),
        arm,
        visit,
        conversion,
        spend,
    }
}

/// Whether a person reached (or held out) by the demo's winter-gloves campaign at
/// `start_ms` orders within the next week, and when and for how much: a seeded draw with
/// effects that differ by segment, as in [`email_test`]: customers with 3 or more orders
/// buy as often with the discount as without (they would buy anyway), pros do not care
/// for it, amateurs and beginners respond. The revenue is the list price (before the
/// discount).
pub fn winter_order(
    seed: u64,
    id: &str,
    skill: &str,
    orders_before: u32,
    treated: bool,
    start_ms: i64,
) -> Option<(i64, f64)> {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::for_stream(seed ^ 0x5717_e400, hash);
    let loyal = orders_before >= 3;
    let base = if loyal { 0.20 } else { 0.05 };
    let effect = match (treated, loyal, skill) {
        (false, ..) | (true, true, _) | (true, false, "pro") => 0.0,
        (true, false, "beginner") => 0.10,
        (true, false, _) => 0.14,
    };
    if rng.f64() >= base + effect {
        return None;
    }
    let day = 86_400_000.0;
    let at = start_ms + ((0.3 + rng.f64() * 5.5) * day) as i64;
    let revenue = (45.0 * (0.3 * rng.normal()).exp() * 100.0).round() / 100.0;
    Some((at, revenue))
}
