//! Parser and printer tests: the issue's examples, error messages, and property tests that
//! `parse(print(ast)) == ast` for random trees and that no input makes the parser panic.

use proptest::prelude::*;

use super::*;

fn p(text: &str) -> Condition {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("{text:?} does not parse: {e}"),
    }
}

fn name(n: &str) -> Operand {
    Operand::Name(n.into())
}

fn s(v: &str) -> Literal {
    Literal::Str(v.into())
}

fn ev(n: &str) -> EventFilter {
    EventFilter {
        name: n.into(),
        filter: None,
    }
}

const DAY: i64 = 86_400_000;

#[test]
fn the_issues_examples_parse_to_the_expected_trees() {
    assert_eq!(
        p(r#"gender = "f" and discipline in ("mountain") and skill = "amateur""#),
        Condition::And {
            all: vec![
                Condition::Compare {
                    left: name("gender"),
                    op: CompareOp::Eq,
                    right: s("f")
                },
                Condition::In {
                    operand: name("discipline"),
                    values: vec![s("mountain")],
                    negated: false
                },
                Condition::Compare {
                    left: name("skill"),
                    op: CompareOp::Eq,
                    right: s("amateur")
                },
            ]
        }
    );
    assert_eq!(
        p("orders >= 2 and revenue / orders > 50"),
        Condition::And {
            all: vec![
                Condition::Compare {
                    left: name("orders"),
                    op: CompareOp::Ge,
                    right: Literal::Int(2)
                },
                Condition::Compare {
                    left: Operand::Arith {
                        op: ArithOp::Div,
                        left: Box::new(name("revenue")),
                        right: Box::new(name("orders")),
                    },
                    op: CompareOp::Gt,
                    right: Literal::Int(50),
                },
            ]
        }
    );
    assert_eq!(
        p(r#"count(order_completed where category = "bikes", within 365d) >= 1"#),
        Condition::Count {
            event: EventFilter {
                name: "order_completed".into(),
                filter: Some(Box::new(Condition::Compare {
                    left: name("category"),
                    op: CompareOp::Eq,
                    right: s("bikes"),
                })),
            },
            window: Window::Within { ms: 365 * DAY },
            op: CompareOp::Ge,
            value: 1.0,
        }
    );
    assert_eq!(
        p(r#"page_viewed where category = "winter" then not order_completed within 3d"#),
        Condition::Sequence {
            first: EventFilter {
                name: "page_viewed".into(),
                filter: Some(Box::new(Condition::Compare {
                    left: name("category"),
                    op: CompareOp::Eq,
                    right: s("winter"),
                })),
            },
            then: ev("order_completed"),
            negated: true,
            within_ms: 3 * DAY,
            window: Window::All,
        }
    );
    assert_eq!(
        p("not did(order_completed) within 7d"),
        Condition::Not {
            not: Box::new(Condition::Did {
                event: ev("order_completed"),
                window: Window::Within { ms: 7 * DAY }
            })
        }
    );
    assert_eq!(
        p("last(order_completed) before 90d ago"),
        Condition::LastBefore {
            event: ev("order_completed"),
            ago_ms: 90 * DAY
        }
    );
    // Every form of the language parses, and prints back to the same tree.
    for text in [
        r#"age between 25 and 34 and city = "Budapest" and interests has "cycling""#,
        r#"did(page_viewed where path starts_with "/winter") within 7d and not did(order_completed) within 7d"#,
        r#"in_segment("cyclists") and not in_segment("vip")"#,
        "sum(revenue of order_completed, between @2024-01-01 and @2024-02-01) > 100",
        "avg(price of product_added) <= 20.5 or min(price of product_added) < 1 or max(items of order_completed) = 3",
        "first(order_completed) within 30d",
        r#""Order Completed" then "Review Written" within 12h, within 4w"#,
        "email exists and phone not exists and tier not in (1, 2)",
        r#"name contains "x" and name ends_with "y" and name matches "^a.*z$""#,
        "signup_at >= @2024-01-31T10:00:00Z and vip != true and score < -1.5",
        "(a = 1 or b = 2) and not (c = 3 and d = 4)",
        "(revenue - refunds) * 2 >= 100",
        "`first` = 1 and `order` exists",
    ] {
        let c = p(text);
        assert_eq!(p(&c.to_string()), c, "{text} printed as {c}");
    }
}

#[test]
fn walkers_find_properties_and_segment_references() {
    let c = p(
        r#"in_segment("a") and (count(order_completed where category = "bikes" and price * items > 10) > 1
        or sum(revenue of order_completed) > 5 or page_viewed where path exists then x within 1d)
        and not in_segment("b") and in_segment("a") and age > 3"#,
    );
    assert_eq!(c.segment_refs(), ["a", "b"]);
    assert_eq!(
        c.event_properties(),
        ["category", "items", "path", "price", "revenue"]
    );
}

#[test]
fn precedence_not_binds_tighter_than_and_than_or() {
    let c = p("not a = 1 and b = 2 or c = 3");
    let a = Condition::Compare {
        left: name("a"),
        op: CompareOp::Eq,
        right: Literal::Int(1),
    };
    let b = Condition::Compare {
        left: name("b"),
        op: CompareOp::Eq,
        right: Literal::Int(2),
    };
    let c3 = Condition::Compare {
        left: name("c"),
        op: CompareOp::Eq,
        right: Literal::Int(3),
    };
    assert_eq!(
        c,
        Condition::Or {
            any: vec![
                Condition::And {
                    all: vec![Condition::Not { not: Box::new(a) }, b]
                },
                c3
            ]
        }
    );
    assert_eq!(c.to_string(), "(not a = 1 and b = 2) or c = 3");
}

#[test]
fn errors_say_where_and_what_was_expected() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    assert_eq!(
        err(r#"gender = "f" and"#),
        "line 1, column 17: expected a trait or metric name (back-quote names that are keywords), found end of input"
    );
    assert_eq!(
        err("age >\n  and x = 1"),
        "line 2, column 3: expected a value: a number, \"text\", true, false or a date @2024-01-31, found `and`"
    );
    assert_eq!(
        err("count(order_completed, within 7x) > 1"),
        "line 1, column 31: expected a number or a duration (30m, 12h, 7d, 4w), found 7x"
    );
    assert_eq!(
        err("a = \"open"),
        "line 1, column 5: expected a closing \", found \"open"
    );
    assert_eq!(
        err("did(order_completed where did(x)) within 7d"),
        "line 1, column 33: expected a condition on event properties after `where` (not did), found `)`"
    );
    assert_eq!(
        err("a = 1 b = 2"),
        "line 1, column 7: expected `and`, `or` or the end of the condition, found `b`"
    );
    assert!(
        err(r#"name matches "(unclosed""#).contains("valid regular expression (an unclosed `(`)")
    );
    assert!(err("a = 99999999999999999999").contains("a number that fits in 64 bits"));
    assert!(err("x between 1 2").contains("expected `and`, found `2`"));
    assert!(err("(a = 1").contains("column 7"), "{}", err("(a = 1"));
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(err(&deep).contains("levels of nesting"));
    let nots = format!("{}a = 1", "not ".repeat(100));
    assert!(err(&nots).contains("levels of nesting"));
}

/// Hostile conditions found by probing the server: every way of nesting counts against one
/// limit, the error says so, and nothing overflows the stack (a chain of 20,000 `+` used to
/// abort the server while printing or dropping the tree).
#[test]
fn every_kind_of_nesting_counts_against_one_limit() {
    let n = 20_000;
    let chains = [
        format!("a{} > 1", " + a".repeat(n)),
        format!("a{} > 1", " - 1".repeat(n)),
        format!("a{} > 1", " * a".repeat(n)),
        format!("a{} > 1", " / 2".repeat(n)),
        format!("{}a{} > 1", "(".repeat(n), ")".repeat(n)),
        format!("{}a = 1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}a = 1", "not ".repeat(n)),
        format!(
            "{}a = 1{}",
            "(a = 1 and (b = 2 or ".repeat(n),
            "))".repeat(n)
        ),
        format!(
            "did(e where {}x = 1{})",
            "(x = 1 or ".repeat(n),
            ")".repeat(n)
        ),
    ];
    for text in &chains {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("levels of nesting"), "{}...: {e}", &text[..40]);
    }
    // A flat `or` of many tests is not deep, but it is large.
    let wide = vec!["a = 1"; 20_000].join(" or ");
    assert!(parse(&wide)
        .unwrap_err()
        .to_string()
        .contains("at most 10000 parts"));
    // At the limit is fine: the test, 30 operators and the last name are 32 levels.
    let chain = format!("a{} > 1", " + a".repeat(MAX_DEPTH - 2));
    parse(&chain).unwrap();
    let chain = format!("a{} > 1", " + a".repeat(MAX_DEPTH - 1));
    assert!(parse(&chain)
        .unwrap_err()
        .to_string()
        .contains("levels of nesting"));
}

/// Builds `a = 1 and (a = 1 or (a = 1 and ...))` with `levels` and/or nodes on the path.
fn alternating(levels: usize) -> Condition {
    let leaf = || Condition::Compare {
        left: name("a"),
        op: CompareOp::Eq,
        right: Literal::Int(1),
    };
    let mut c = leaf();
    for i in 0..levels {
        let pair = vec![leaf(), c];
        c = if i % 2 == 0 {
            Condition::And { all: pair }
        } else {
            Condition::Or { any: pair }
        };
    }
    c
}

/// Whatever passes the size check can be saved (JSON) and read back, and printed and
/// parsed back; one level more is refused by the check, and by the parser for its text.
#[test]
fn the_deepest_accepted_conditions_round_trip() {
    let filtered = |levels: usize| Condition::Did {
        event: EventFilter {
            name: "e".into(),
            filter: Some(Box::new(alternating(levels))),
        },
        window: Window::All,
    };
    let nots = |levels: usize| {
        let mut c = alternating(0);
        for _ in 0..levels {
            c = Condition::Not { not: Box::new(c) };
        }
        c
    };
    // Depth counts every node: a test `a = 1` is two levels (the test and its name), an
    // event filter one more besides its `did`.
    type Shape = Box<dyn Fn(usize) -> Condition>;
    let shapes: [(&str, Shape); 3] = [
        ("and/or", Box::new(alternating)),
        ("did where and/or", Box::new(filtered)),
        ("not", Box::new(nots)),
    ];
    for (what, build) in &shapes {
        let limit = (0..MAX_DEPTH)
            .take_while(|&l| build(l).check_size().is_ok())
            .last()
            .unwrap();
        let deepest = build(limit);
        let json = serde_json::to_string(&deepest).unwrap();
        let back: Condition = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{what}: the deepest accepted JSON reads back: {e}"));
        assert_eq!(back, deepest, "{what}");
        assert_eq!(parse(&deepest.to_string()).unwrap(), deepest, "{what}");
        let over = build(limit + 1);
        assert_eq!(over.check_size(), Err(SizeError::TooDeep), "{what}");
        assert!(parse(&over.to_string()).is_err(), "{what}");
    }
    // The hand count: `and`/`or` nodes at levels 1..=30, the last test at 31, its name 32.
    assert!(alternating(MAX_DEPTH - 2).check_size().is_ok());
    assert_eq!(
        alternating(MAX_DEPTH - 1).check_size(),
        Err(SizeError::TooDeep)
    );
}

#[test]
fn json_form_is_stable_and_round_trips() {
    let c = p(r#"gender = "f" and count(order_completed, within 30d) >= 2"#);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"type":"and","all":[{"type":"compare","left":"gender","op":"eq","right":{"kind":"str","value":"f"}},{"type":"count","event":{"name":"order_completed"},"window":{"kind":"within","ms":2592000000},"op":"ge","value":2.0}]}"#
    );
    assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c);
}

// ---- property tests -------------------------------------------------------------

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,6}",
        1 => Just("first".to_string()),
        1 => Just("and".to_string()),
        1 => "[a-z ]{1,5}",
    ]
    .prop_filter("non-empty, no back quotes", |n| {
        !n.trim().is_empty() && !n.contains('`')
    })
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 /_.-]{0,8}",
        Just("quote \" back \\ nl \n tab \t".to_string()),
        "\\PC{0,6}",
    ]
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<i64>().prop_map(Literal::Int),
        (-1e12f64..1e12).prop_map(Literal::Float),
        prop_oneof![Just(1e-7), Just(1.5e300), Just(-0.25)].prop_map(Literal::Float),
        arb_text().prop_map(Literal::Str),
        any::<bool>().prop_map(Literal::Bool),
        (0i64..4_102_444_800_000).prop_map(|ms| Literal::Time(crate::Timestamp(ms))),
    ]
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    let leaf = prop_oneof![
        3 => arb_name().prop_map(Operand::Name),
        1 => (-1e6f64..1e6).prop_map(Operand::Number),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        (
            prop_oneof![
                Just(ArithOp::Add),
                Just(ArithOp::Sub),
                Just(ArithOp::Mul),
                Just(ArithOp::Div)
            ],
            inner.clone(),
            inner,
        )
            .prop_map(|(op, l, r)| Operand::Arith {
                op,
                left: Box::new(l),
                right: Box::new(r),
            })
    })
}

fn arb_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

fn arb_duration() -> impl Strategy<Value = i64> {
    (1i64..100_000).prop_map(|s| s * 1000)
}

fn arb_window() -> impl Strategy<Value = Window> {
    prop_oneof![
        Just(Window::All),
        arb_duration().prop_map(|ms| Window::Within { ms }),
        (0i64..2_000_000_000_000, 0i64..2_000_000_000_000).prop_map(|(a, b)| Window::Between {
            from: crate::Timestamp(a),
            to: crate::Timestamp(b)
        }),
    ]
}

/// Conditions on properties or traits only (what `where` allows).
fn arb_property_condition() -> impl Strategy<Value = Condition> {
    let leaf =
        prop_oneof![
            (arb_operand(), arb_op(), arb_literal())
                .prop_map(|(left, op, right)| Condition::Compare { left, op, right }),
            (
                arb_operand(),
                prop::collection::vec(arb_literal(), 1..4),
                any::<bool>()
            )
                .prop_map(|(operand, values, negated)| Condition::In {
                    operand,
                    values,
                    negated
                }),
            (arb_operand(), arb_literal(), arb_literal())
                .prop_map(|(operand, low, high)| Condition::Between { operand, low, high }),
            (arb_name(), any::<bool>())
                .prop_map(|(name, negated)| Condition::Exists { name, negated }),
            (
                arb_name(),
                prop_oneof![
                    Just(TextOp::Contains),
                    Just(TextOp::StartsWith),
                    Just(TextOp::EndsWith)
                ],
                arb_text()
            )
                .prop_map(|(name, op, value)| Condition::Text { name, op, value }),
            (arb_name(), "[a-z^$.*]{0,5}").prop_map(|(name, value)| Condition::Text {
                name,
                op: TextOp::Matches,
                value
            }),
            (arb_name(), arb_text()).prop_map(|(name, value)| Condition::Has { name, value }),
        ];
    leaf.prop_recursive(3, 12, 3, boolean)
}

fn boolean(inner: BoxedStrategy<Condition>) -> impl Strategy<Value = Condition> {
    prop_oneof![
        prop::collection::vec(inner.clone(), 2..4).prop_map(|all| Condition::And { all }),
        prop::collection::vec(inner.clone(), 2..4).prop_map(|any| Condition::Or { any }),
        inner.prop_map(|c| Condition::Not { not: Box::new(c) }),
    ]
}

fn arb_event() -> impl Strategy<Value = EventFilter> {
    (
        prop_oneof![3 => arb_name(), 1 => Just("Order Completed".to_string())],
        prop::option::of(arb_property_condition().prop_map(Box::new)),
    )
        .prop_map(|(name, filter)| EventFilter { name, filter })
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    let leaf = prop_oneof![
        4 => arb_property_condition(),
        1 => arb_text().prop_map(|segment| Condition::InSegment { segment }),
        1 => (arb_event(), arb_window(), arb_op(), 0u32..50)
            .prop_map(|(event, window, op, n)| Condition::Count { event, window, op, value: n as f64 }),
        1 => (
            prop_oneof![Just(AggregateFn::Sum), Just(AggregateFn::Avg), Just(AggregateFn::Min), Just(AggregateFn::Max)],
            arb_name(), arb_event(), arb_window(), arb_op(), -1e6f64..1e6
        )
            .prop_map(|(function, property, event, window, op, value)| Condition::Aggregate {
                function, property, event, window, op, value
            }),
        1 => (arb_event(), arb_window()).prop_map(|(event, window)| Condition::Did { event, window }),
        1 => (arb_event(), arb_duration()).prop_map(|(event, ago_ms)| Condition::LastBefore { event, ago_ms }),
        1 => (arb_event(), arb_window()).prop_map(|(event, window)| Condition::First { event, window }),
        1 => (arb_event(), arb_event(), any::<bool>(), arb_duration(), arb_window()).prop_map(
            |(first, then, negated, within_ms, window)| Condition::Sequence { first, then, negated, within_ms, window }
        ),
    ];
    leaf.prop_recursive(3, 16, 3, boolean)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn printing_then_parsing_gives_the_same_tree(c in arb_condition()) {
        let text = c.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(back, c, "text: {}", text);
    }

    #[test]
    fn generated_conditions_are_within_the_limits(c in arb_condition()) {
        prop_assert!(c.check_size().is_ok());
    }

    #[test]
    fn json_round_trips(c in arb_condition()) {
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c);
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(text in "\\PC{0,60}") {
        let _ = parse(&text);
    }

    /// Long token soups (up to 3,000 tokens, nesting of every kind): no panic, no stack
    /// overflow, and whatever parses is within the limits and round-trips.
    #[test]
    fn fuzz_long_token_soups_parse_or_are_refused(
        parts in prop::collection::vec(prop_oneof![
            8 => Just("("), 6 => Just(")"), 3 => Just("and"), 3 => Just("or"), 3 => Just("not"),
            6 => Just("a"), 3 => Just("="), 4 => Just("1"), 3 => Just("+"), 2 => Just("*"),
            1 => Just("did(e where"), 1 => Just("`n\\m`"), 1 => Just("\"s\""),
            1 => Just("then"), 1 => Just("within 2d"), 1 => Just(">"),
        ], 0..3000)
    ) {
        let text = parts.join(" ");
        if let Ok(c) = parse(&text) {
            prop_assert!(c.check_size().is_ok());
            let json = serde_json::to_string(&c).unwrap();
            prop_assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c.clone());
            prop_assert_eq!(parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn the_parser_never_panics_on_near_miss_conditions(
        parts in prop::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("and"), Just("or"), Just("not"), Just("a"), Just("="),
            Just("1"), Just("\"x\""), Just("did"), Just("count"), Just("then"), Just("where"),
            Just("within"), Just("7d"), Just(","), Just("@2024-01-01"), Just("between"),
            Just("-"), Just("/"), Just("in"), Just("exists"), Just("`"), Just("1e"),
        ], 0..25)
    ) {
        let _ = parse(&parts.join(" "));
    }
}
