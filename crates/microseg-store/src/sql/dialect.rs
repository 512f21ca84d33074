//! What differs between the SQL engines: quoting, types, text and JSON functions.
//!
//! Everything else the compiler writes is the SQL all four engines share (`WITH`, window
//! functions with `RANGE` offsets, `IN (SELECT ...)`, `CASE`, `COALESCE`, `NULLIF`).

/// A SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.38 or later (JSON functions, `REGEXP` for `matches`).
    Sqlite,
    /// PostgreSQL 12 or later (`json` properties, `jsonb` string sets).
    Postgres,
    /// DuckDB 1.0 or later (JSON text read with its JSON functions).
    DuckDb,
    /// Spark SQL 4.0 or later (JSON text read through `VARIANT`).
    Spark,
}

impl Dialect {
    /// Every dialect, by name.
    pub const ALL: [Dialect; 4] = [
        Dialect::Sqlite,
        Dialect::Postgres,
        Dialect::DuckDb,
        Dialect::Spark,
    ];

    /// The dialect called `name`, or a message naming the ones there are.
    pub fn from_name(name: &str) -> Result<Dialect, String> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                format!("unknown SQL dialect '{name}' (use sqlite, postgres, duckdb or spark)")
            })
    }

    /// The dialect's name as `--dialect` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::DuckDb => "duckdb",
            Dialect::Spark => "spark",
        }
    }

    /// A string literal.
    pub fn string(self, s: &str) -> String {
        match self {
            // Spark reads backslash escapes inside literals.
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            _ => format!("'{}'", s.replace('\'', "''")),
        }
    }

    /// A quoted identifier.
    pub fn ident(self, s: &str) -> String {
        match self {
            Dialect::Spark => format!("`{}`", s.replace('`', "``")),
            _ => format!("\"{}\"", s.replace('"', "\"\"")),
        }
    }

    /// The 64-bit float type.
    pub(crate) fn real(self) -> &'static str {
        match self {
            Dialect::Sqlite => "REAL",
            Dialect::Postgres => "double precision",
            Dialect::DuckDb | Dialect::Spark => "DOUBLE",
        }
    }

    /// The text type.
    fn text(self) -> &'static str {
        match self {
            Dialect::Sqlite | Dialect::Postgres => "TEXT",
            Dialect::DuckDb => "VARCHAR",
            Dialect::Spark => "STRING",
        }
    }

    /// `x` as text.
    pub(crate) fn to_text(self, x: &str) -> String {
        format!("CAST({x} AS {})", self.text())
    }

    /// A string literal that compares by bytes, as the evaluator does (PostgreSQL would
    /// otherwise use the database's collation).
    pub(crate) fn ordered_string(self, s: &str) -> String {
        match self {
            Dialect::Postgres => format!("{} COLLATE \"C\"", self.string(s)),
            _ => self.string(s),
        }
    }

    /// An ORDER BY key on a text column in byte order.
    pub(crate) fn byte_order(self, col: &str) -> String {
        match self {
            Dialect::Postgres => format!("{col} COLLATE \"C\""),
            _ => col.to_string(),
        }
    }

    /// The sum of `x`, 0.0 over no rows or only NULLs.
    pub(crate) fn sum_or_zero(self, x: &str) -> String {
        match self {
            Dialect::Sqlite => format!("total({x})"),
            _ => format!("coalesce(sum({x}), 0.0)"),
        }
    }

    /// Integer division of non-negative integers.
    pub(crate) fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite | Dialect::Postgres => format!("({a}) / {b}"),
            Dialect::DuckDb => format!("({a}) // {b}"),
            Dialect::Spark => format!("({a}) div {b}"),
        }
    }

    /// True when `text` contains `needle` (a literal).
    pub(crate) fn contains(self, text: &str, needle: &str) -> String {
        match self {
            Dialect::Postgres => format!("strpos({text}, {}) > 0", self.string(needle)),
            _ => format!("instr({text}, {}) > 0", self.string(needle)),
        }
    }

    /// True when `text` starts with `prefix` (non-empty).
    pub(crate) fn starts_with(self, text: &str, prefix: &str) -> String {
        let n = prefix.chars().count();
        match self {
            Dialect::Sqlite => format!("substr({text}, 1, {n}) = {}", self.string(prefix)),
            _ => format!("left({text}, {n}) = {}", self.string(prefix)),
        }
    }

    /// True when `text` ends with `suffix` (non-empty).
    pub(crate) fn ends_with(self, text: &str, suffix: &str) -> String {
        let n = suffix.chars().count();
        match self {
            Dialect::Sqlite => format!("substr({text}, -{n}) = {}", self.string(suffix)),
            _ => format!("right({text}, {n}) = {}", self.string(suffix)),
        }
    }

    /// True when the regular expression `pattern` finds a match in `text`.
    pub(crate) fn matches(self, text: &str, pattern: &str) -> String {
        let p = self.string(pattern);
        match self {
            Dialect::Sqlite => format!("{text} REGEXP {p}"),
            Dialect::Postgres => format!("{text} ~ {p}"),
            Dialect::DuckDb => format!("regexp_matches({text}, {p})"),
            Dialect::Spark => format!("{text} RLIKE {p}"),
        }
    }

    /// True when the string set `col` (a JSON array of strings) holds `item`.
    pub(crate) fn set_has(self, col: &str, item: &str) -> String {
        let v = self.string(item);
        match self {
            Dialect::Sqlite => format!("EXISTS (SELECT 1 FROM json_each({col}) WHERE value = {v})"),
            Dialect::Postgres => format!("{col} @> jsonb_build_array({v})"),
            Dialect::DuckDb => {
                format!("list_contains(CAST(json_extract_string({col}, '$[*]') AS VARCHAR[]), {v})")
            }
            Dialect::Spark => format!("array_contains(from_json({col}, 'array<string>'), {v})"),
        }
    }

    /// What a JSON value in the properties of event alias `e` is: [`Json`].
    pub(crate) fn property(self, e: &str, name: &str) -> Json {
        let props = format!("{e}.properties");
        match self {
            Dialect::Sqlite => {
                let path = self.string(&format!(
                    "$.\"{}\"",
                    name.replace('\\', "\\\\").replace('"', "\\\"")
                ));
                Json {
                    kind: format!("coalesce(json_type({props}, {path}), 'null')"),
                    null: "'null'",
                    number: "('integer', 'real')",
                    text: "('text', 'true', 'false', 'array', 'object')",
                    as_number: format!("json_extract({props}, {path})"),
                    as_text: format!(
                        "CASE json_type({props}, {path}) WHEN 'true' THEN 'true' \
                         WHEN 'false' THEN 'false' ELSE json_extract({props}, {path}) END"
                    ),
                }
            }
            Dialect::Postgres => {
                let key = self.string(name);
                Json {
                    kind: format!("coalesce(json_typeof({props} -> {key}), 'null')"),
                    null: "'null'",
                    number: "('number')",
                    text: "('string', 'boolean', 'array', 'object')",
                    as_number: format!("CAST({props} ->> {key} AS double precision)"),
                    as_text: format!("{props} ->> {key}"),
                }
            }
            Dialect::DuckDb => {
                // A JSON pointer (RFC 6901) takes any key: `~` and `/` escaped.
                let pointer =
                    self.string(&format!("/{}", name.replace('~', "~0").replace('/', "~1")));
                Json {
                    kind: format!("coalesce(json_type({props}, {pointer}), 'NULL')"),
                    null: "'NULL'",
                    number: "('UBIGINT', 'BIGINT', 'DOUBLE', 'HUGEINT')",
                    text: "('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT')",
                    as_number: format!("CAST(json_extract_string({props}, {pointer}) AS DOUBLE)"),
                    as_text: format!("json_extract_string({props}, {pointer})"),
                }
            }
            Dialect::Spark => {
                let value = format!(
                    "variant_get(try_parse_json({props}), {})",
                    self.string(&spark_path(name))
                );
                Json {
                    kind: format!(
                        "coalesce(regexp_extract(schema_of_variant({value}), '^[A-Z]+', 0), 'VOID')"
                    ),
                    null: "'VOID'",
                    number:
                        "('BIGINT', 'INT', 'SMALLINT', 'TINYINT', 'DOUBLE', 'FLOAT', 'DECIMAL')",
                    text: "('STRING', 'BOOLEAN', 'ARRAY', 'OBJECT')",
                    as_number: format!("try_variant_get({value}, '$', 'double')"),
                    as_text: format!(
                        "CASE WHEN schema_of_variant({value}) IN ('STRING', 'BOOLEAN') \
                         THEN variant_get({value}, '$', 'string') ELSE to_json({value}) END"
                    ),
                }
            }
        }
    }

    /// `text` (RFC 3339 or `YYYY-MM-DD`, as the evaluator reads times) as UTC
    /// milliseconds, NULL when it is not such a time.
    pub(crate) fn text_time(self, text: &str) -> String {
        const SHAPE: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\
             ([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)([.][0-9]+)?)?\
             ([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)?$";
        const OFFSET: &str = "([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$";
        let t = format!("trim({text})");
        let shape = self.matches(&t, SHAPE);
        // A time without an offset is UTC, as the evaluator reads it.
        let utc = format!(
            "CASE WHEN length({t}) = 10 THEN {t} || 'T00:00:00Z' WHEN {} THEN {t} \
             ELSE {t} || 'Z' END",
            self.matches(&t, OFFSET)
        );
        match self {
            Dialect::Sqlite => format!(
                "(CASE WHEN {text} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' \
                 THEN CAST(round((julianday({text}) - 2440587.5) * 86400000.0) AS INTEGER) END)"
            ),
            Dialect::Postgres => {
                // A cast of 2024-02-30 fails the query: test the day of the month first.
                let (y, m, d) = (
                    format!("CAST(substr({t}, 1, 4) AS int)"),
                    format!("CAST(substr({t}, 6, 2) AS int)"),
                    format!("CAST(substr({t}, 9, 2) AS int)"),
                );
                let last_day = format!(
                    "CAST(extract(day FROM make_date({y}, {m}, 1) + interval '1 month' \
                     - interval '1 day') AS int)"
                );
                format!(
                    "(CASE WHEN {shape} THEN CASE WHEN {d} <= {last_day} THEN \
                     CAST(round(extract(epoch FROM CAST({utc} AS timestamptz)) * 1000) AS bigint) \
                     END END)"
                )
            }
            Dialect::DuckDb => {
                format!("(CASE WHEN {shape} THEN epoch_ms(TRY_CAST({utc} AS TIMESTAMPTZ)) END)")
            }
            Dialect::Spark => {
                format!("(CASE WHEN {shape} THEN unix_millis(try_cast({utc} AS TIMESTAMP)) END)")
            }
        }
    }
}

/// A top-level key as a Spark variant path: `$['key']`, or `$["key"]` when the key holds
/// a single quote.
fn spark_path(name: &str) -> String {
    if name.contains('\'') {
        format!("$[\"{name}\"]")
    } else {
        format!("$['{name}']")
    }
}

/// How a dialect reads one JSON property: its kind, and its value as a number or as text.
pub(crate) struct Json {
    /// SQL naming the value's kind, never NULL (absent reads as `null`).
    pub kind: String,
    /// The kind of an absent or JSON `null` value, as a SQL literal.
    pub null: &'static str,
    /// The kinds that are numbers, as a SQL list.
    pub number: &'static str,
    /// The kinds read as text (strings, booleans as `true`/`false`, lists and objects as
    /// their JSON text), as a SQL list.
    pub text: &'static str,
    /// The value as a number (valid when the kind is a number).
    pub as_number: String,
    /// The value as text (valid when the kind is a text kind).
    pub as_text: String,
}
