//! Every endpoint once: its handler and its documentation side by side. The router and
//! the OpenAPI 3.1 document served at `/openapi.json` are both built from [`endpoints`],
//! so an endpoint cannot exist undocumented; request and response bodies that are Rust
//! types have their JSON Schema derived from the type (`schemars`).

use std::sync::Arc;

use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use microseg_store::tracking::Call;
use serde_json::{json, Map, Value as Json};

use crate::admin;
use crate::error::{ErrorBody, ErrorKind};
use crate::http;
use crate::pipeline::PublishedChange;
use crate::App;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Anyone.
    Open,
    /// A write key (HTTP Basic username, or the body's `writeKey`).
    Write,
    /// An admin token (`Authorization: Bearer`).
    Admin,
}

/// One method on one path, with what the OpenAPI document says about it.
pub(crate) struct Endpoint {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) auth: Auth,
    /// The request body's schema (a `#/components/schemas/` name).
    pub(crate) body: Option<&'static str>,
    /// Query parameters: name and description.
    pub(crate) query: &'static [(&'static str, &'static str)],
    /// The success status, its description and the response schema name, if any.
    pub(crate) ok: (u16, &'static str, Option<&'static str>),
    /// Error statuses it may answer (with an `Error` body).
    pub(crate) errors: &'static [u16],
    pub(crate) route: MethodRouter<Arc<App>>,
}

const CALL_ERRORS: &[u16] = &[400, 401, 413, 503];
const ADMIN_ERRORS: &[u16] = &[401];

fn call(path: &'static str, kind: Option<Call>, summary: &'static str) -> Endpoint {
    Endpoint {
        method: "post",
        path,
        summary,
        auth: Auth::Write,
        body: Some(if kind.is_some() {
            "TrackingCall"
        } else {
            "TrackingBatch"
        }),
        query: &[],
        ok: (
            200,
            "Stored durably (committed and fsynced) before this answer.",
            Some("Success"),
        ),
        errors: CALL_ERRORS,
        route: http::calls(kind),
    }
}

fn admin_get(
    path: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
    route: MethodRouter<Arc<App>>,
) -> Endpoint {
    Endpoint {
        method: "get",
        path,
        summary,
        auth: Auth::Admin,
        body: None,
        query,
        ok: (
            200,
            "The answer, as of the streaming clock (`as_of`).",
            None,
        ),
        errors: &[401, 404],
        route,
    }
}

/// Every endpoint of the server.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        call("/v1/track", Some(Call::Track), "Record an event (Segment `track`)."),
        call("/v1/identify", Some(Call::Identify), "Set a profile's traits (Segment `identify`)."),
        call("/v1/page", Some(Call::Page), "Record a page view as `page_viewed`."),
        call("/v1/screen", Some(Call::Screen), "Record a screen view as `screen_viewed`."),
        call("/v1/group", Some(Call::Group), "Set `group_id` and the group's traits under `group.`."),
        call("/v1/alias", Some(Call::Alias), "Merge `previousId`'s profile into `userId`'s."),
        call("/v1/batch", None, "Several calls in one request (Segment `batch`)."),
        call("/v1/import", None, "Same as /v1/batch (Segment's bulk path)."),
        admin_get("/v1/segments", "List segments with their size and whether they stream.", &[], get(admin::list_segments)),
        Endpoint {
            method: "post",
            path: "/v1/segments",
            summary: "Create a segment; its state is backfilled from every stored event before the answer.",
            auth: Auth::Admin,
            body: Some("SegmentDefinition"),
            query: &[],
            ok: (201, "Created and loaded: the segment with its size.", None),
            errors: &[400, 401, 409],
            route: post(admin::create_segment),
        },
        admin_get("/v1/segments/{name}", "One segment: condition, version, size.", &[], get(admin::show_segment)),
        Endpoint {
            method: "put",
            path: "/v1/segments/{name}",
            summary: "Edit a segment (a new version), backfilled from history before the answer.",
            auth: Auth::Admin,
            body: Some("SegmentDefinition"),
            query: &[],
            ok: (200, "Saved and loaded: the segment with its size.", None),
            errors: &[400, 401, 404],
            route: put(admin::edit_segment),
        },
        Endpoint {
            method: "delete",
            path: "/v1/segments/{name}",
            summary: "Delete a segment (also one that no longer reads back); refused while another segment uses it.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (204, "Deleted, and no longer evaluated.", None),
            errors: &[400, 401, 404],
            route: delete(admin::delete_segment),
        },
        admin_get("/v1/segments/{name}/members", "The members' external ids.", &[], get(admin::members)),
        admin_get(
            "/v1/segments/{name}/explain",
            "Why a profile is or is not a member: every node of the condition with what it saw.",
            &[("profile", "The profile's external id.")],
            get(admin::explain),
        ),
        admin_get(
            "/v1/overlap",
            "Sizes of two or more segments and of every pair's intersection (with Jaccard).",
            &[("segments", "Segment names, comma separated.")],
            get(admin::overlap),
        ),
        admin_get(
            "/v1/profiles/{id}",
            "A profile: traits, metrics, segments and recent events.",
            &[("events", "How many recent events (default 20, at most 1000).")],
            get(admin::profile),
        ),
        Endpoint {
            method: "delete",
            path: "/v1/profiles/{id}",
            summary: "Erase a person: the profile and those merged into it, their events, identities and memberships, and what webhooks still hold for them. The answer has counts only.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "`{\"erased\": true, \"profiles\", \"events\", \"identities\"}`.", None),
            errors: &[401, 404],
            route: delete(admin::erase_profile),
        },
        Endpoint {
            method: "get",
            path: "/v1/decide",
            summary: "What a person gets now on a channel or placement: the winning campaign, variant, content and offer, and why every other campaign lost (docs/campaigns.md). Records a `decision_served` event for a winner.",
            auth: Auth::Write,
            body: None,
            query: &[
                ("profile", "The person's external id."),
                ("channel", "email, sms, push, web or webhook (or give placement)."),
                ("placement", "A website placement (web campaigns naming it in their messages)."),
            ],
            ok: (200, "`{\"profile\", \"winner\", \"candidates\", \"fallback\"}`.", None),
            errors: &[400, 401, 404, 429],
            route: get(crate::decide::decide),
        },
        Endpoint {
            method: "options",
            path: "/v1/decide",
            summary: "CORS preflight: allowed for the origins of `[server] cors_origins`.",
            auth: Auth::Open,
            body: None,
            query: &[],
            ok: (204, "With the Access-Control-Allow-* headers when the origin is allowed, without them otherwise.", None),
            errors: &[],
            route: axum::routing::options(crate::decide::preflight),
        },
        Endpoint {
            method: "get",
            path: "/v1/unsubscribe",
            summary: "The unsubscribe page of a marketing e-mail's link: one button that POSTs (a GET changes nothing).",
            auth: Auth::Open,
            body: None,
            query: &[("t", "The link's signed token.")],
            ok: (200, "An HTML page.", None),
            errors: &[400],
            route: get(crate::activation::unsubscribe_page),
        },
        Endpoint {
            method: "post",
            path: "/v1/unsubscribe",
            summary: "One-click unsubscribe (RFC 8058): sets the person's consent for the link's channel to false; no login, no redirect.",
            auth: Auth::Open,
            body: None,
            query: &[("t", "The link's signed token.")],
            ok: (200, "Unsubscribed (committed).", None),
            errors: &[400, 503],
            route: post(crate::activation::unsubscribe),
        },
        Endpoint {
            method: "post",
            path: "/v1/message-events",
            summary: "A channel's report about a message `{\"type\": \"delivered\"|\"opened\"|\"clicked\"|\"soft_bounce\"|\"hard_bounce\"|\"complaint\", \"idempotency_key\"}` (or `channel` and `address` instead of the key): the person's `message_*` event, and for a hard bounce or complaint the address suppressed at once.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "`{\"event\", \"suppressed\"}`.", None),
            errors: &[400, 401, 404],
            route: post(crate::activation::message_event),
        },
        admin_get("/v1/campaigns", "List campaigns with their version, status and file.", &[], get(crate::campaigns::list)),
        Endpoint {
            method: "post",
            path: "/v1/campaigns",
            summary: "Create a campaign from its file, checked first (a bad field or template is refused with the field and the reason).",
            auth: Auth::Admin,
            body: Some("CampaignFile"),
            query: &[],
            ok: (201, "The campaign as listed.", None),
            errors: &[400, 401],
            route: post(crate::campaigns::create),
        },
        admin_get("/v1/campaigns/{name}", "One campaign: version, status and file.", &[], get(crate::campaigns::show)),
        Endpoint {
            method: "put",
            path: "/v1/campaigns/{name}",
            summary: "Save the next version of a campaign.",
            auth: Auth::Admin,
            body: Some("CampaignFile"),
            query: &[],
            ok: (200, "The campaign as listed.", None),
            errors: &[400, 401, 404],
            route: put(crate::campaigns::edit),
        },
        admin_get(
            "/v1/campaigns/{name}/preview",
            "The message as one person would get it, and what would block it now; counts nowhere.",
            &[("profile", "The person's external id.")],
            get(crate::campaigns::preview),
        ),
        Endpoint {
            method: "post",
            path: "/v1/campaigns/{name}/test",
            summary: "Send the message as one person would get it to an address (a webhook campaign: a URL, or none for the configured one), marked as a test; counts nowhere.",
            auth: Auth::Admin,
            body: None,
            query: &[
                ("profile", "The person's external id."),
                ("to", "An e-mail address, or a webhook URL."),
            ],
            ok: (200, "`{\"profile\", \"to\", \"channel\", \"message\", \"idempotency_key\"}`.", None),
            errors: &[400, 401, 404],
            route: post(crate::campaigns::test_send),
        },
        Endpoint {
            method: "post",
            path: "/v1/campaigns/{name}/run",
            summary: "Run a campaign now: the audience, the rules, the messages queued in the outbox (or only counted with dry_run=true).",
            auth: Auth::Admin,
            body: None,
            query: &[("dry_run", "true: count and render, queue nothing.")],
            ok: (200, "The counts of `campaign run --json`.", None),
            errors: &[400, 401, 404],
            route: post(crate::campaigns::run),
        },
        Endpoint {
            method: "post",
            path: "/v1/campaigns/{name}/{action}",
            summary: "pause, resume or archive a campaign.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "The campaign as listed.", None),
            errors: &[401, 404],
            route: post(crate::campaigns::status),
        },
        Endpoint {
            method: "get",
            path: "/v1/changes",
            summary: "Membership changes as server-sent events (`event: entered|exited`, `data:` one Change).",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "A text/event-stream of Change objects.", Some("Change")),
            errors: ADMIN_ERRORS,
            route: get(admin::changes),
        },
        admin_get("/v1/webhooks", "List webhook subscriptions (without secrets).", &[], get(admin::list_webhooks)),
        Endpoint {
            method: "post",
            path: "/v1/webhooks",
            summary: "Subscribe a URL to membership changes: batches of Change objects, signed, retried with back-off.",
            auth: Auth::Admin,
            body: Some("WebhookBody"),
            query: &[],
            ok: (201, "The subscription with its signing secret (shown once here).", None),
            errors: &[400, 401],
            route: post(admin::create_webhook),
        },
        Endpoint {
            method: "delete",
            path: "/v1/webhooks/{id}",
            summary: "Stop and delete a subscription.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (204, "Deleted.", None),
            errors: &[401, 404],
            route: delete(admin::delete_webhook),
        },
        Endpoint {
            method: "get",
            path: "/",
            summary: "The web console (docs/console.md): plain HTML, CSS and JavaScript served from the binary; it logs in with an admin token and reads the /v1/console/ endpoints.",
            auth: Auth::Open,
            body: None,
            query: &[],
            ok: (200, "text/html", None),
            errors: &[],
            route: get(crate::console::file),
        },
        Endpoint {
            method: "get",
            path: "/console/{file}",
            summary: "The console's script (`app.js`) and style sheet (`style.css`).",
            auth: Auth::Open,
            body: None,
            query: &[],
            ok: (200, "text/javascript or text/css", None),
            errors: &[404],
            route: get(crate::console::file),
        },
        admin_get(
            "/v1/console/overview",
            "The console's overview: profiles, customers, events, orders, revenue, AOV, the 5 × 5 recency × frequency counts, the key metrics' distributions (with `charts`, SVG), and the ingest rate now.",
            &[],
            get(crate::console::overview),
        ),
        admin_get(
            "/v1/console/segments",
            "Every saved segment with its size now, whether it streams, and its size at the end of each of the 8 weeks before (`trend`, from stored events).",
            &[],
            get(crate::console::segments),
        ),
        Endpoint {
            method: "post",
            path: "/v1/console/size",
            summary: "The size of a condition as typed: `{size, share, profiles}`, or `{error: {message, line, column}}` when it does not parse (line and column 1-based) or does not evaluate (no position). Nothing is saved.",
            auth: Auth::Admin,
            body: Some("SizeRequest"),
            query: &[],
            ok: (200, "The size or the error.", None),
            errors: &[400, 401],
            route: post(crate::console::size),
        },
        admin_get(
            "/v1/console/explore",
            "Overlaps of chosen segments (`share_of_row`, Jaccard), the drill-down tree with every node's size, shares, condition and whether it is under the statistical floor (100), and the metrics' correlations; with `charts`.",
            &[
                ("segments", "Saved segments to overlap, comma separated (default the first six saved)."),
                ("by", "The tree's dimensions, outermost first, comma separated (at most 4)."),
                ("within", "A saved segment the tree starts from."),
                ("metrics", "Numeric traits or metrics to correlate (default visits, orders, revenue, aov, recency_days, tenure_days)."),
            ],
            get(crate::console::explore),
        ),
        admin_get(
            "/v1/console/profiles/{id}",
            "A person for the console: identities, traits, metrics with the predicted 12-month value, saved segments they are in, recent events, and what each campaign channel would decide now (not recorded).",
            &[],
            get(crate::console::profile),
        ),
        Endpoint {
            method: "post",
            path: "/v1/console/discover",
            summary: "Runs a discovery (a target's rate or mean by micro-segment, with intervals and FDR control) or, with `experiment`, an uplift discovery; the ranked segments and a bar chart with interval whiskers.",
            auth: Auth::Admin,
            body: Some("DiscoverRequest"),
            query: &[],
            ok: (200, "`{kind, base, base_size, tested, found, segments, charts}`.", None),
            errors: &[400, 401, 404],
            route: post(crate::console::discover),
        },
        admin_get(
            "/v1/console/personas",
            "Personas by k-means (default k 4 on visits, orders, revenue, tenure_days, ln(1 + x) of the counts and money): sizes, centres, over-indexed traits, and a chart.",
            &[("k", "Clusters, 2 to 8 (default 4)."), ("features", "Numeric traits or metrics, comma separated.")],
            get(crate::console::personas),
        ),
        admin_get(
            "/v1/console/campaigns",
            "Every campaign with its status, channel, segment and messages by outbox status.",
            &[],
            get(crate::console::campaigns),
        ),
        admin_get(
            "/v1/console/campaigns/{name}",
            "One campaign: its file, a dry run's counts now (active campaigns), the outbox by status, the last 50 delivery attempts, its results (treated vs holdout with 95% intervals, money, CAC vs predicted LTV) and the lift chart.",
            &[("window", "The attribution window in days (default 7).")],
            get(crate::console::campaign),
        ),
        Endpoint {
            method: "get",
            path: "/healthz",
            summary: "Liveness: `{\"status\": \"ok\"}`.",
            auth: Auth::Open,
            body: None,
            query: &[],
            ok: (200, "The server answers.", None),
            errors: &[],
            route: get(http::health),
        },
        Endpoint {
            method: "get",
            path: "/metrics",
            summary: "Prometheus text format: ingested messages, rejects, queue depth, commit and change latency histograms, segment changes, webhook deliveries, limits hit. Admin token needed unless `[server] public_metrics = true`.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "text/plain; version=0.0.4", None),
            errors: &[401],
            route: get(http::metrics),
        },
        Endpoint {
            method: "get",
            path: "/openapi.json",
            summary: "This document. Admin token needed unless `[server] public_metrics = true`.",
            auth: Auth::Admin,
            body: None,
            query: &[],
            ok: (200, "OpenAPI 3.1.", None),
            errors: &[401],
            route: get(http::openapi),
        },
    ]
}

/// The router of every endpoint; an unknown path or method gets an error answer too.
pub(crate) fn router(app: Arc<App>) -> Router {
    let mut paths: Vec<(&str, MethodRouter<Arc<App>>)> = Vec::new();
    for e in endpoints() {
        match paths.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, route)) => *route = std::mem::take(route).merge(e.route),
            None => paths.push((e.path, e.route)),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |r, (path, route)| {
            r.route(path, route.fallback(crate::error::wrong_method))
        })
        .fallback(crate::error::no_route)
        .with_state(app)
}

fn schema_of<T: schemars::JsonSchema>() -> Json {
    let mut s = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(m) = s.as_object_mut() {
        m.remove("$schema");
    }
    s
}

/// The schemas the endpoints refer to.
fn schemas() -> Map<String, Json> {
    let id = json!({"type": ["string", "number"]});
    let common = json!({
        "type": {"type": "string", "enum": ["track", "identify", "page", "screen", "group", "alias"], "description": "The call (inside a batch; the endpoint says it otherwise)."},
        "userId": id, "anonymousId": id,
        "messageId": {"type": "string", "description": "De-duplicates resent calls (the last million are remembered)."},
        "timestamp": {"type": "string", "format": "date-time", "description": "When it happened (else originalTimestamp, else when received)."},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "event": {"type": "string", "description": "track: the event's name."},
        "properties": {"type": "object", "description": "track, page, screen: properties; `revenue` is the event's revenue."},
        "traits": {"type": "object", "description": "identify, group: traits (nested objects become dotted names; null removes one)."},
        "name": {"type": "string"}, "category": {"type": "string"},
        "groupId": id, "previousId": id,
        "context": {"type": "object"}, "integrations": {"type": "object"},
        "writeKey": {"type": "string", "description": "The write key, when not sent as the Basic username."}
    });
    let mut out = Map::new();
    out.insert(
        "TrackingCall".into(),
        json!({"type": "object", "description": "One call of the Segment tracking spec (at most 32 KB); userId or anonymousId is required.", "properties": common}),
    );
    out.insert(
        "TrackingBatch".into(),
        json!({"type": "object", "description": "At most 500 KB.", "required": ["batch"], "properties": {
            "batch": {"type": "array", "items": {"$ref": "#/components/schemas/TrackingCall"}},
            "writeKey": {"type": "string"}
        }}),
    );
    out.insert(
        "Success".into(),
        json!({"type": "object", "properties": {"success": {"type": "boolean"}}}),
    );
    out.insert("Error".into(), schema_of::<ErrorBody>());
    out.insert("Change".into(), schema_of::<PublishedChange>());
    out.insert(
        "SegmentDefinition".into(),
        schema_of::<admin::SegmentDefinition>(),
    );
    out.insert("WebhookBody".into(), schema_of::<admin::WebhookBody>());
    out.insert(
        "SizeRequest".into(),
        schema_of::<crate::console::SizeRequest>(),
    );
    out.insert(
        "DiscoverRequest".into(),
        schema_of::<crate::console::DiscoverRequest>(),
    );
    out.insert(
        "CampaignFile".into(),
        json!({"type": "object", "description": "A campaign file (docs/campaigns.md); checked before it is saved.",
            "required": ["name", "segment", "channel", "variants"],
            "properties": {
                "name": {"type": "string"},
                "segment": {"type": "string", "description": "A saved segment's name or a condition."},
                "exclude": {"type": "array", "items": {"type": "string"}},
                "channel": {"type": "string", "enum": ["email", "sms", "push", "web", "webhook"]},
                "kind": {"type": "string", "enum": ["marketing", "transactional"]},
                "priority": {"type": "integer"},
                "holdout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "offer": {"type": "object", "properties": {
                    "kind": {"type": "string", "enum": ["discount", "downsell", "upsell", "none"]},
                    "value": {"type": "number"}, "valid_for": {"type": "string"},
                    "code": {"type": "string", "enum": ["unique"]}}},
                "variants": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["name", "message"], "properties": {
                        "name": {"type": "string"}, "weight": {"type": "number"},
                        "message": {"type": "object", "additionalProperties": {"type": "string"},
                                    "description": "The channel's fields as minijinja templates."}}}},
                "trigger": {"type": "object"}, "schedule": {"type": "object"},
                "cost_per_message": {"type": "number"}
            }}),
    );
    out
}

/// What an error status means, from the error table ([`ErrorKind`]): the meanings of
/// every kind with that status, with their codes.
fn reason(status: u16) -> String {
    ErrorKind::ALL
        .iter()
        .filter(|k| k.status().as_u16() == status)
        .map(|k| {
            let (_, code, meaning) = k.describe();
            format!("`{code}`: {meaning}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The OpenAPI 3.1 document of [`endpoints`].
pub(crate) fn openapi() -> Json {
    let mut paths = Map::new();
    for e in endpoints() {
        let mut op = json!({"summary": e.summary, "responses": {}});
        let security = match e.auth {
            Auth::Open => json!([]),
            Auth::Write => json!([{"writeKey": []}]),
            Auth::Admin => json!([{"adminToken": []}]),
        };
        op["security"] = security;
        let mut parameters: Vec<Json> = e
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(e.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}})
        }));
        if !parameters.is_empty() {
            op["parameters"] = json!(parameters);
        }
        if let Some(body) = e.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let (status, description, schema) = e.ok;
        let mut ok = json!({"description": description});
        if let Some(s) = schema {
            ok["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}});
        }
        op["responses"][status.to_string()] = ok;
        for status in e.errors {
            op["responses"][status.to_string()] = json!({
                "description": reason(*status),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            });
        }
        paths
            .entry(e.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(e.method.to_string(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "microseg",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "tracking ingestion (the Segment tracking API), real-time segment membership, and the management API. See docs/api.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic", "description": "The write key as the username, empty password (as Segment's libraries send it)."},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "`microseg key create admin`."}
            },
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` points at a schema the document defines, and every endpoint is in it
    /// once under its method.
    #[test]
    fn the_document_is_complete_and_its_references_resolve() {
        let doc = openapi();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        let all = endpoints();
        for e in &all {
            let op = &doc["paths"][e.path][e.method];
            assert_eq!(op["summary"], e.summary, "{} {}", e.method, e.path);
        }
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, all.len());
        // A derived schema carries the type's fields.
        let body = &schemas["SegmentDefinition"]["properties"];
        assert!(
            body.get("condition").is_some() && body.get("name").is_some(),
            "{body}"
        );
    }
}
