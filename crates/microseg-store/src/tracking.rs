//! Calls of the Segment tracking spec (`track`, `identify`, `page`, `screen`, `group`,
//! `alias`, and `batch` of them) read into [`Message`]s, with the mapping of
//! `docs/api.md` and INTERFACES.md: `track` is an event named by `event`; `page` and
//! `screen` are `page_viewed` / `screen_viewed` with `name` and `category` among the
//! properties; `properties.revenue` is the revenue (for `Order Completed`, `total` when
//! there is no `revenue`); `identify` sets traits; `group` sets
//! `group_id` and the group's traits under `group.`; `alias` merges `previousId` into
//! `userId`. No I/O.

use microseg_core::time::parse_timestamp;
use microseg_core::Timestamp;
use microseg_engine::streaming::EventValue;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

/// The order event of Segment's e-commerce spec, whose `total` is its revenue when it has
/// no `revenue`.
pub const ORDER_COMPLETED: &str = "Order Completed";

/// Segment's limit on one message, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Segment's limit on one batch request, in bytes.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The kinds of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// An action.
    Track,
    /// Who the user is.
    Identify,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user's group (company, account).
    Group,
    /// Another id of the same user.
    Alias,
}

impl Call {
    /// The call named by a message's `type` or an endpoint.
    pub fn from_name(name: &str) -> Option<Call> {
        Some(match name {
            "track" => Call::Track,
            "identify" => Call::Identify,
            "page" => Call::Page,
            "screen" => Call::Screen,
            "group" => Call::Group,
            "alias" => Call::Alias,
            _ => return None,
        })
    }
}

/// What a message does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Records an event.
    Event {
        /// Its name.
        name: String,
        /// `properties.revenue`, when a number.
        revenue: Option<f64>,
        /// Its properties.
        properties: Properties,
    },
    /// Sets traits (a `null` removes one).
    Traits(Map<String, Json>),
    /// Merges the profile of `previous_id` into the user's.
    Alias {
        /// The other id.
        previous_id: String,
    },
}

/// An event's properties in the two forms the store and the evaluators need, made when
/// the call is read (on the request's thread rather than the single writer's).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// As stored: compact JSON; `None` when there are none.
    pub json: Option<String>,
    /// As the evaluators read them (see [`stream_properties`]).
    pub values: Vec<(String, EventValue)>,
}

/// One call, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The sender's id for de-duplication.
    pub message_id: Option<String>,
    /// The known user's id.
    pub user_id: Option<String>,
    /// The anonymous visitor's id.
    pub anonymous_id: Option<String>,
    /// When it happened (`timestamp`, else `originalTimestamp`); `None`: when received.
    pub time: Option<Timestamp>,
    /// What it does.
    pub action: Action,
}

impl Message {
    /// A message microseg itself records about the profile with external id `external`
    /// (an anonymous visitor's `anonymous:ID` is sent as its `anonymousId`).
    pub fn about(external: &str, time: Option<Timestamp>, action: Action) -> Message {
        let (user_id, anonymous_id) = match external.strip_prefix("anonymous:") {
            Some(a) => (None, Some(a.to_string())),
            None => (Some(external.to_string()), None),
        };
        Message {
            message_id: None,
            user_id,
            anonymous_id,
            time,
            action,
        }
    }
}

impl Action {
    /// The event `name` with `properties` and no revenue.
    pub fn event(name: &str, properties: Map<String, Json>) -> Action {
        Action::Event {
            name: name.to_string(),
            revenue: None,
            properties: Properties {
                values: stream_properties(&properties),
                json: Some(Json::Object(properties).to_string()),
            },
        }
    }
}

/// Why a call was refused: where (a JSON path such as `batch[3].event`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct SpecError {
    /// The field.
    pub at: String,
    /// What is wrong with it.
    pub reason: String,
}

fn error(at: &str, field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        at: if at.is_empty() {
            field.to_string()
        } else if field.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{field}")
        },
        reason: reason.into(),
    }
}

/// Takes an id field: a string or a number (stringified, as Segment's libraries do);
/// `null`, absent or empty is none.
fn id(m: &mut Map<String, Json>, at: &str, field: &str) -> Result<Option<String>, SpecError> {
    match m.remove(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(error(at, field, "must be a string")),
    }
}

/// Takes an object field (absent or `null`: empty).
fn object(
    m: &mut Map<String, Json>,
    at: &str,
    field: &str,
) -> Result<Map<String, Json>, SpecError> {
    match m.remove(field) {
        None | Some(Json::Null) => Ok(Map::new()),
        Some(Json::Object(o)) => Ok(o),
        Some(_) => Err(error(at, field, "must be an object")),
    }
}

/// Takes a text field.
fn text(m: &mut Map<String, Json>, at: &str, field: &str) -> Result<Option<String>, SpecError> {
    match m.remove(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(error(at, field, "must be a string")),
    }
}

/// Reads one call of kind `call` (from its endpoint, or its `type` inside a batch when
/// `None`); `at` prefixes error paths.
pub fn parse_message(call: Option<Call>, json: Json, at: &str) -> Result<Message, SpecError> {
    let Json::Object(mut m) = json else {
        return Err(error(at, "", "must be a JSON object"));
    };
    let call = match call {
        Some(c) => c,
        None => match m.get("type") {
            Some(Json::String(t)) => Call::from_name(t).ok_or_else(|| {
                error(
                    at,
                    "type",
                    format!("unknown call '{t}' (track, identify, page, screen, group, alias)"),
                )
            })?,
            None | Some(Json::Null) => return Err(error(at, "type", "missing")),
            Some(_) => return Err(error(at, "type", "must be a string")),
        },
    };
    let user_id = id(&mut m, at, "userId")?;
    let anonymous_id = id(&mut m, at, "anonymousId")?;
    let message_id = id(&mut m, at, "messageId")?;
    let mut time = None;
    for field in ["timestamp", "originalTimestamp"] {
        if let Some(t) = text(&mut m, at, field)? {
            time = Some(
                parse_timestamp(&t)
                    .map_err(|_| error(at, field, format!("'{t}' is not an ISO 8601 time")))?,
            );
            break;
        }
    }
    let action = match call {
        Call::Track => {
            let name = text(&mut m, at, "event")?
                .filter(|e| !e.is_empty())
                .ok_or_else(|| error(at, "event", "missing"))?;
            let properties = object(&mut m, at, "properties")?;
            event(name, properties)
        }
        Call::Page | Call::Screen => {
            let mut properties = object(&mut m, at, "properties")?;
            for field in ["name", "category"] {
                if let Some(v) = text(&mut m, at, field)? {
                    properties.insert(field.to_string(), Json::String(v));
                }
            }
            let name = if call == Call::Page {
                "page_viewed"
            } else {
                "screen_viewed"
            };
            event(name.to_string(), properties)
        }
        Call::Identify => Action::Traits(object(&mut m, at, "traits")?),
        Call::Group => {
            let group =
                id(&mut m, at, "groupId")?.ok_or_else(|| error(at, "groupId", "missing"))?;
            let mut traits = Map::new();
            traits.insert("group_id".into(), Json::String(group));
            for (k, v) in object(&mut m, at, "traits")? {
                traits.insert(format!("group.{k}"), v);
            }
            Action::Traits(traits)
        }
        Call::Alias => {
            let previous_id =
                id(&mut m, at, "previousId")?.ok_or_else(|| error(at, "previousId", "missing"))?;
            if user_id.is_none() {
                return Err(error(at, "userId", "missing (alias needs the user's id)"));
            }
            Action::Alias { previous_id }
        }
    };
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(error(at, "userId", "missing: give userId or anonymousId"));
    }
    Ok(Message {
        message_id,
        user_id,
        anonymous_id,
        time,
        action,
    })
}

fn event(name: String, properties: Map<String, Json>) -> Action {
    let number = |key: &str| properties.get(key).and_then(Json::as_f64);
    // Segment's e-commerce spec: an order's `revenue`, or its `total` without one.
    let revenue = match number("revenue") {
        None if name == ORDER_COMPLETED => number("total"),
        revenue => revenue,
    };
    let values = stream_properties(&properties);
    let json = (!properties.is_empty()).then(|| Json::Object(properties).to_string());
    Action::Event {
        name,
        revenue,
        properties: Properties { json, values },
    }
}

/// Event properties as the evaluators read them: numbers, texts (booleans as
/// `true`/`false`, lists and objects as JSON text); nulls are absent.
pub fn stream_properties(m: &Map<String, Json>) -> Vec<(String, EventValue)> {
    m.iter()
        .filter_map(|(k, v)| {
            let value = match v {
                Json::Null => return None,
                Json::Number(n) => EventValue::Number(n.as_f64()?),
                Json::String(s) => EventValue::Text(s.clone()),
                Json::Bool(b) => EventValue::Text(b.to_string()),
                other => EventValue::Text(other.to_string()),
            };
            Some((k.clone(), value))
        })
        .collect()
}

/// A request body read: its messages and the `writeKey` field, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The calls.
    pub messages: Vec<Message>,
    /// The body's `writeKey`.
    pub write_key: Option<String>,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or a call that breaks the spec.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// One message over [`MAX_MESSAGE_BYTES`].
    #[error("{at}: message of {bytes} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    MessageTooLarge {
        /// The message.
        at: String,
        /// Its size.
        bytes: usize,
    },
}

/// Reads the body of a call to endpoint `call` (`None`: `/v1/batch`). Each call of a batch
/// is measured against [`MAX_MESSAGE_BYTES`] as sent (its raw JSON text).
pub fn parse_request(call: Option<Call>, body: &[u8]) -> Result<Request, RequestError> {
    let not_json = |e: serde_json::Error| SpecError {
        at: "body".into(),
        reason: format!("not valid JSON: {e}"),
    };
    match call {
        Some(call) => {
            let mut json: Json = serde_json::from_slice(body).map_err(not_json)?;
            if body.len() > MAX_MESSAGE_BYTES {
                return Err(RequestError::MessageTooLarge {
                    at: "body".into(),
                    bytes: body.len(),
                });
            }
            let write_key = match &mut json {
                Json::Object(m) => text(m, "", "writeKey")?,
                _ => None,
            };
            Ok(Request {
                messages: vec![parse_message(Some(call), json, "")?],
                write_key,
            })
        }
        None => {
            // The calls stay raw text until each is measured and read on its own.
            let mut top: BTreeMap<String, &RawValue> =
                serde_json::from_slice(body).map_err(|e| match e.classify() {
                    serde_json::error::Category::Data => error("", "", "must be a JSON object"),
                    _ => not_json(e),
                })?;
            let write_key = match top.remove("writeKey") {
                Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
                    .map_err(|_| error("", "writeKey", "must be a string"))?,
                None => None,
            };
            let missing = || error("", "batch", "missing: a list of calls");
            let items: Vec<&RawValue> = match top.get("batch") {
                Some(raw) => serde_json::from_str(raw.get()).map_err(|_| missing())?,
                None => return Err(missing().into()),
            };
            let mut messages = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let bytes = item.get().len();
                if bytes > MAX_MESSAGE_BYTES {
                    let at = format!("batch[{i}]");
                    return Err(RequestError::MessageTooLarge { at, bytes });
                }
                let json: Json = serde_json::from_str(item.get()).map_err(not_json)?;
                messages.push(parse_message(None, json, &format!("batch[{i}]"))?);
            }
            Ok(Request {
                messages,
                write_key,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(call: Call, body: &str) -> Result<Message, RequestError> {
        parse_request(Some(call), body.as_bytes()).map(|r| r.messages.into_iter().next().unwrap())
    }

    #[test]
    fn an_order_completed_without_revenue_has_its_total_as_revenue() {
        let revenue = |body: &str| match one(Call::Track, body).unwrap().action {
            Action::Event { revenue, .. } => revenue,
            _ => panic!("not an event"),
        };
        let call = |event: &str, props: &str| {
            format!(r#"{{"userId": "u", "event": "{event}", "properties": {props}}}"#)
        };
        assert_eq!(
            revenue(&call("Order Completed", r#"{"total": 30.5}"#)),
            Some(30.5)
        );
        assert_eq!(
            revenue(&call(
                "Order Completed",
                r#"{"revenue": 25, "total": 30.5}"#
            )),
            Some(25.0)
        );
        assert_eq!(revenue(&call("Product Viewed", r#"{"total": 30.5}"#)), None);
        assert_eq!(revenue(&call("Order Completed", "{}")), None);
    }

    #[test]
    fn calls_map_to_events_and_traits_as_documented() {
        let m = one(
            Call::Track,
            r#"{"userId": 42, "event": "Order Completed", "properties": {"revenue": 42.5},
                "timestamp": "2026-11-24T00:39:46.108+00:00", "messageId": "m1"}"#,
        )
        .unwrap();
        assert_eq!(m.user_id.as_deref(), Some("42"));
        assert_eq!(
            m.time,
            Some(parse_timestamp("2026-11-24T00:39:46.108Z").unwrap())
        );
        assert!(
            matches!(m.action, Action::Event { ref name, revenue: Some(42.5), .. } if name == "Order Completed")
        );
        let m = one(
            Call::Page,
            r#"{"anonymousId": "a1", "userId": null, "name": "Pricing", "category": "Docs", "properties": null}"#,
        )
        .unwrap();
        let Action::Event {
            name, properties, ..
        } = m.action
        else {
            panic!()
        };
        assert_eq!(name, "page_viewed");
        assert_eq!(
            properties.json.as_deref(),
            Some(r#"{"category":"Docs","name":"Pricing"}"#)
        );
        assert_eq!(
            properties.values,
            [
                ("category".into(), EventValue::Text("Docs".into())),
                ("name".into(), EventValue::Text("Pricing".into()))
            ]
        );
        let m = one(
            Call::Group,
            r#"{"userId": "u", "groupId": "acme", "traits": {"employees": 50}}"#,
        )
        .unwrap();
        let Action::Traits(t) = m.action else {
            panic!()
        };
        assert_eq!(t["group_id"], "acme");
        assert_eq!(t["group.employees"], 50);
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |call, body: &str| one(call, body).unwrap_err().to_string();
        assert_eq!(err(Call::Track, r#"{"userId": "u"}"#), "event: missing");
        assert_eq!(
            err(Call::Track, r#"{"event": "x"}"#),
            "userId: missing: give userId or anonymousId"
        );
        assert_eq!(
            err(Call::Alias, r#"{"userId": "u"}"#),
            "previousId: missing"
        );
        assert_eq!(
            err(
                Call::Track,
                r#"{"userId": "u", "event": "x", "timestamp": "yesterday"}"#
            ),
            "timestamp: 'yesterday' is not an ISO 8601 time"
        );
        let batch = parse_request(
            None,
            br#"{"batch": [{"type": "track", "userId": "u", "event": "a"}, {"type": "fly", "userId": "u"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            batch.to_string(),
            "batch[1].type: unknown call 'fly' (track, identify, page, screen, group, alias)"
        );
        assert!(parse_request(None, b"{not json")
            .unwrap_err()
            .to_string()
            .starts_with("body: not valid JSON"));
        let big = format!(
            r#"{{"batch": [{{"type": "track", "userId": "u", "event": "a", "properties": {{"x": "{}"}}}}]}}"#,
            "y".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(matches!(
            parse_request(None, big.as_bytes()),
            Err(RequestError::MessageTooLarge { ref at, .. }) if at == "batch[0]"
        ));
    }
}
