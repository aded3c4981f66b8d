//! The OpenAPI 3.1 document, written beside the routes so it cannot drift:
//! every route is added through [`Routes::route`] together with the
//! description of each of its methods, and `GET /api/openapi.json` serves
//! what was collected. A route added without its description does not
//! compile; a method left undescribed is caught by `tests/openapi.rs`,
//! which tries every method on every documented path.
//!
//! Plain `serde_json` rather than a framework: the handlers take raw JSON
//! and answer `Value`s, so the schemas here are the contract, written once.

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

use super::AppState;

/// Routes and their descriptions, collected together.
pub struct Routes {
    router: Router<AppState>,
    paths: BTreeMap<String, Map<String, Value>>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            paths: BTreeMap::new(),
        }
    }

    /// Adds `path` served by `handler`, described method by method.
    pub fn route(mut self, path: &str, handler: MethodRouter<AppState>, ops: Vec<(&str, Op)>) -> Self {
        self.router = self.router.route(path, handler);
        let entry = self.paths.entry(path.to_string()).or_default();
        for (method, mut op) in ops {
            if op.0.get("operationId").is_none() {
                op.0["operationId"] = json!(operation_id(method, path));
            }
            entry.insert(method.to_string(), op.0);
        }
        self
    }

    /// The router, and the document describing it.
    pub fn finish(self) -> (Router<AppState>, Value) {
        let document = document(self.paths);
        (self.router, document)
    }
}

/// `get /api/levels/{id}` → `get_api_levels_id`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{method}_{}", words.join("_"))
}

/// One operation's description.
pub struct Op(Value);

/// An operation: what it does, its group, and (unless changed) a 200 answer of `ok`.
pub fn op(summary: &str, tag: &str, ok: Value) -> Op {
    Op(json!({
        "summary": summary,
        "tags": [tag],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}},
    }))
}

impl Op {
    fn responses(&mut self) -> &mut Map<String, Value> {
        self.0["responses"].as_object_mut().expect("responses is an object")
    }

    fn parameter(mut self, name: &str, place: &str, schema: Value, description: &str) -> Self {
        let required = place == "path";
        let list = self
            .0
            .as_object_mut()
            .expect("an object")
            .entry("parameters")
            .or_insert(json!([]));
        list.as_array_mut().expect("an array").push(json!({
            "name": name, "in": place, "required": required, "schema": schema, "description": description,
        }));
        self
    }

    pub fn path(self, name: &str, description: &str) -> Self {
        self.parameter(name, "path", json!({"type": "string"}), description)
    }

    /// A numeric id in the path.
    pub fn id(self, description: &str) -> Self {
        self.parameter("id", "path", id(), description)
    }

    /// `after`: ids above this one.
    pub fn after(self) -> Self {
        self.query("after", id(), "answer ids above this one (0: from the start)")
    }

    /// Links from this operation's `status` answer (whose body has an `id`) to other operations.
    pub fn links(mut self, status: u16, to: &[(&str, &str)]) -> Self {
        let links: Map<String, Value> = to
            .iter()
            .map(|(name, operation)| {
                (
                    name.to_string(),
                    json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}}),
                )
            })
            .collect();
        self.responses()[&status.to_string()]["links"] = Value::Object(links);
        self
    }

    pub fn query(self, name: &str, schema: Value, description: &str) -> Self {
        self.parameter(name, "query", schema, description)
    }

    /// An optional request header.
    pub fn header_param(self, name: &str, description: &str) -> Self {
        self.parameter(name, "header", json!({"type": "string"}), description)
    }

    /// `limit` (1 to 10 000).
    pub fn limit(self) -> Self {
        self.query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}),
            "rows to answer",
        )
    }

    /// A JSON body (required).
    pub fn body(mut self, schema: Value, example: Value) -> Self {
        self.0["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema, "example": example}},
        });
        self
    }

    /// The success answer is `status` (201, 202, 204, ...) instead of 200; `None`: no body.
    pub fn answers(mut self, status: u16, description: &str, schema: Option<Value>) -> Self {
        let responses = self.responses();
        responses.remove("200");
        let mut answer = json!({"description": description});
        if let Some(schema) = schema {
            answer["content"] = json!({"application/json": {"schema": schema}});
        }
        responses.insert(status.to_string(), answer);
        self
    }

    /// A second success answer beside the 200 one (`202`: accepted, still working).
    pub fn also_answers(mut self, status: u16, description: &str, schema: Value) -> Self {
        let answer = json!({"description": description, "content": {"application/json": {"schema": schema}}});
        self.responses().insert(status.to_string(), answer);
        self
    }

    /// A success answer in another media type.
    pub fn text(mut self, media: &str, description: &str) -> Self {
        self.responses().insert(
            "200".into(),
            json!({"description": description, "content": {media: {"schema": {"type": "string"}}}}),
        );
        self
    }

    /// A `text/event-stream` answer whose events each have `schema`.
    pub fn event_stream(mut self, description: &str, schema: Value) -> Self {
        self.responses().insert(
            "200".into(),
            json!({"description": description, "content": {"text/event-stream": {"schema": schema}}}),
        );
        self
    }

    /// Error answers this operation can give, each the JSON error shape.
    pub fn errors(mut self, statuses: &[(u16, &str)]) -> Self {
        for (status, why) in statuses {
            self.responses().insert(
                status.to_string(),
                json!({"description": why, "content": {"application/json": {"schema": schema("Error")}}}),
            );
        }
        self
    }

    /// Needs a token of scope `admin` (401 without a known one, 403 with a
    /// lesser scope or when no admin token is configured).
    pub fn admin(self) -> Self {
        self.scoped("admin")
    }

    /// Needs a token of scope `trade` or `admin`.
    pub fn trade(self) -> Self {
        self.scoped("trade")
    }

    fn scoped(mut self, scope: &str) -> Self {
        self.0["security"] = json!([{"token": [scope]}]);
        self.0["x-scope"] = json!(scope);
        self.errors(&[
            (401, "missing or unknown bearer token"),
            (
                403,
                "the token's scope is not enough, or no token of this scope is configured",
            ),
            (
                429,
                "this token's mutating calls per minute are spent (Retry-After says when to come back)",
            ),
        ])
    }

    /// Needs a token of any scope while a `read`-scope token is configured; open otherwise.
    pub fn reader(mut self) -> Self {
        self.0["security"] = json!([{}, {"token": ["read"]}]);
        self.0["x-scope"] = json!("read");
        self.errors(&[(
            401,
            "a read-scope token is configured and the bearer token is missing or unknown",
        )])
    }

    /// Open unless `http.metrics_requires_token` (then a token of any scope,
    /// as a bearer token or basic auth with the token's name as user).
    pub fn metrics_auth(mut self) -> Self {
        self.0["security"] = json!([{}, {"token": ["read"]}]);
        self.0["x-scope"] = json!("metrics");
        self.errors(&[(401, "http.metrics_requires_token is set and no known token came")])
    }

    /// Open unless `http.status_requires_token` (then a token of any scope).
    pub fn status_document(mut self) -> Self {
        self.0["security"] = json!([{}, {"token": ["read"]}]);
        self.0["x-scope"] = json!("status");
        self.errors(&[(
            401,
            "http.status_requires_token is set and the bearer token is missing or unknown",
        )])
    }
}

/// A reference to a component schema.
pub fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An array of a component schema.
pub fn list(name: &str) -> Value {
    json!({"type": "array", "items": schema(name)})
}

fn document(paths: BTreeMap<String, Map<String, Value>>) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "script-manager",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One scheduler for a trading platform's periodic work: the status of its processes, \
                operator actions, and the platform's data (prices, positions, trades, dashboards, \
                take-profit/stop-loss levels, alerts). Errors are always `{\"error\": {\"code\", \"message\"}}`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "a named token ([[http.tokens]], or http.admin_token / http.read_token) of scope read, trade or admin; scopes nest (admin includes trade includes read); the operation's x-scope says what it needs"},
            },
            "schemas": schemas(),
        },
    })
}

/// A row id: a whole number that fits in 64 bits.
fn id() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX})
}

/// A price in a request: a positive number, or a positive decimal string.
fn positive() -> Value {
    json!({"oneOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": "^([0-9]*[1-9][0-9]*(\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$"},
    ]})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

/// A decimal number as a string ("95000.5").
fn decimal() -> Value {
    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

fn schemas() -> Value {
    let mut all = data_schemas();
    all["AuditPage"] = audit_page();
    for (name, schema) in account_schemas() {
        all[name] = schema;
    }
    all
}

/// The accounts API's shapes: credentials go in, never out.
fn account_schemas() -> [(&'static str, Value); 4] {
    let credential = json!({"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[!-~]+$",
        "description": "as the venue issued it (printable ASCII, no spaces); never shown again"});
    let ms = json!({"type": ["integer", "null"], "format": "int64", "description": "ms since the Unix epoch; null for file accounts"});
    [
        (
            "Account",
            object(
                &["name", "source", "read_only", "api_key_last4", "state"],
                json!({
                    "name": {"type": "string"},
                    "source": {"enum": ["file", "api"], "description": "file accounts are read-only through the API"},
                    "read_only": {"type": "boolean"},
                    "api_key_last4": {"type": "string", "maxLength": 4, "description": "at most the API key's last four characters"},
                    "created_at": ms, "updated_at": ms,
                    "created_by": nullable("string"), "updated_by": nullable("string"),
                    "state": {"type": ["object", "null"], "description": "stream: off, up or down (the account's user stream); \
                        sync: one entry per account process working for it on this replica (empty on a replica that does not own it)",
                        "properties": {"stream": {"enum": ["off", "up", "down"]}, "sync": {"type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "process": {"type": "string"},
                                "last_success": nullable("string"),
                                "last_error": {"type": ["object", "null"]},
                                "next_due": {"type": "string"},
                                "consecutive_failures": {"type": "integer", "minimum": 0},
                            }}}}},
                }),
            ),
        ),
        (
            "NewAccount",
            json!({
                "type": "object",
                "required": ["name", "api_key", "api_secret"],
                "additionalProperties": false,
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "api_key": credential.clone(),
                    "api_secret": credential.clone(),
                },
            }),
        ),
        (
            "Credentials",
            json!({
                "type": "object",
                "required": ["api_key", "api_secret"],
                "additionalProperties": false,
                "properties": {"api_key": credential.clone(), "api_secret": credential},
            }),
        ),
        (
            "RemovedAccount",
            object(
                &["name", "removed", "positions"],
                json!({
                        "name": {"type": "string"},
                        "removed": {"const": true},
                        "levels_retired": {"type": "integer", "description": "armed levels retired with reason account_removed"},
                        "backstops_cancelled": {"type": "integer", "description": "our conditional orders cancelled on the venue"},
                        "positions": {"type": "string", "description": "what became of its positions: left open"},
                "backstops": {"type": "string", "description": "present when the venue refused the account's credentials, so our conditional orders could not be cancelled"},
                    }),
            ),
        ),
    ]
}

fn audit_page() -> Value {
    object(
        &["entries", "next_before"],
        json!({

        "entries": {"type": "array", "items": {"type": "object", "description": "id, at_ms, who (the token's name), method, route, target, status, outcome (ok, refused, error), detail (before/after, or the request with secrets redacted)"}},
        "next_before": {"type": ["integer", "null"], "description": "pass as before= for the next page; null on the last"},
            }),
    )
}

fn data_schemas() -> Value {
    let id = json!({"type": "integer", "format": "int64"});
    let ms = json!({"type": "integer", "format": "int64", "description": "ms since the Unix epoch"});
    json!({
        "Error": object(&["error"], json!({
            "error": object(&["code", "message"], json!({
                "code": {"type": "string", "description": "stable, for programs (`not_found`, `invalid_field`, ...)"},
                "message": {"type": "string", "description": "for people; names the field or parameter at fault"},
            })),
        })),
        "Health": object(&["status"], json!({"status": {"type": "string"}})),
        "Status": object(&["processes", "total_processes", "running_processes"], json!({
            "processes": {"type": "object", "additionalProperties": schema("Process")},
            "total_processes": {"type": "integer"},
            "running_processes": {"type": "integer"},
        })),
        "Process": object(&["process_name", "status", "interval_seconds", "metrics"], json!({
            "process_name": {"type": "string"},
            "status": {"type": "string"},
            "interval_seconds": {"type": "number"},
            "metrics": {"type": "object"},
        })),
        "Overrides": {
            "type": "object",
            "additionalProperties": false,
            "minProperties": 1,
            "description": "any of these; the others keep their value (earlier overrides stay)",
            "properties": {
                "interval_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
                "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                "max_api_calls_per_minute": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
                "retry_count": {"type": "integer", "minimum": 0, "maximum": 10},
                "enabled": {"type": "boolean"},
            },
        },
        "Reload": object(&["reloaded", "processes"], json!({
            "reloaded": {"type": "boolean"},
            "processes": object(&["added", "removed", "changed", "replaced"], json!({
                "added": {"type": "array", "items": {"type": "string"}},
                "removed": {"type": "array", "items": {"type": "string"}},
                "changed": {"type": "array", "items": {"type": "string"}},
                "replaced": {"type": "array", "items": {"type": "string"}},
            })),
        })),
        "Run": {"type": "object", "description": "one finished run: process, outcome, times, attempts, API calls, error"},
        "Action": object(&["process"], json!({
            "process": {"type": "string"},
            "triggered": {"type": "boolean"},
            "paused": {"type": "boolean"},
            "changed": {"type": "boolean", "description": "false when it already was in that state"},
        })),
        "Price": object(&["symbol", "price", "observed_at", "venue_time"], json!({
            "symbol": {"type": "string"}, "price": decimal(), "observed_at": ms, "venue_time": ms,
        })),
        "Position": object(&["account", "symbol", "amount", "entry_price", "mark_price", "unrealized_pnl", "updated_at", "venue_time"], json!({
            "account": {"type": "string"}, "symbol": {"type": "string"},
            "amount": {"type": "string", "description": "signed decimal: > 0 long, < 0 short"},
            "entry_price": decimal(), "mark_price": decimal(), "unrealized_pnl": {"type": "string"}, "updated_at": ms,
            "venue_time": {"type": "integer", "description": "the venue's time of the fact (ms since the epoch)"},
        })),
        "Trade": object(&["account", "symbol", "id", "order_id", "side", "price", "qty", "time"], json!({
            "account": {"type": "string"}, "symbol": {"type": "string"}, "id": id, "order_id": id,
            "side": {"enum": ["BUY", "SELL"]}, "price": decimal(), "qty": decimal(),
            "realized_pnl": {"type": "string"}, "commission": {"type": "string"}, "time": ms,
        })),
        "Dashboard": object(&["account", "computed_at", "analytics"], json!({
            "account": {"type": "string"},
            "computed_at": {"type": "string", "format": "date-time"},
            "analytics": {"type": "object", "description": "realized PnL 24 h/7 d/30 d, win rate, trades, volume, commission, exposure, unrealized PnL"},
        })),
        "Level": object(&["id", "account", "symbol", "status", "version"], json!({
            "id": id, "account": {"type": "string"}, "symbol": {"type": "string"},
            "side": {"description": "the side of the position it protects, recorded at creation",
                "anyOf": [{"enum": ["long", "short"]}, {"type": "null"}]},
            "take_profit": nullable("string"), "stop_loss": nullable("string"),
            "status": {"enum": ["armed", "triggered", "executed", "failed", "cancelled"]},
            "reason": {"description": "why a cancelled level was retired: position_closed, position_flipped, flattened or account_removed",
                "anyOf": [{"type": "string"}, {"type": "null"}]},
            "version": {"type": "integer"},
            "client_order_id": nullable("string"), "order_id": nullable("integer"),
            "trigger_kind": nullable("string"), "trigger_price": nullable("string"),
            "error": nullable("string"), "closed_qty": nullable("string"), "avg_price": nullable("string"),
            "close_orders": nullable("integer"), "created_at": ms, "updated_at": ms,
            "closed_by": {"description": "who took the position flat: service or venue (its backstop)",
                "anyOf": [{"enum": ["service", "venue"]}, {"type": "null"}]},
            "backstops": {"type": "array", "items": schema("Backstop"),
                "description": "its conditional orders on the venue, every placement (GET /api/levels/{id} only)"},
        })),
        "Backstop": object(&["kind", "client_algo_id", "trigger_price", "state"], json!({
            "kind": {"enum": ["stop_loss", "take_profit"]}, "client_algo_id": {"type": "string"},
            "algo_id": {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "trigger_price": {"type": "string"},
            "state": {"enum": ["placing", "live", "triggered", "recorded", "failed", "cancelled"]},
            "order_id": {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "error": nullable("string"),
        })),
        "Flattened": object(&["positions", "backstops_cancelled", "failed_accounts"], json!({
            "backstops_cancelled": {"type": "integer", "description": "our conditional orders cancelled on the venue"},
            "failed_accounts": {"type": "array", "description": "accounts it could not act on (nothing was sent for them); the others were flattened",
                "items": object(&["account", "error"], json!({"account": {"type": "string"}, "error": {"type": "string"}}))},
            "positions": {"type": "array", "items": object(&["account", "symbol", "amount", "outcome", "levels_retired"], json!({
                "account": {"type": "string"}, "symbol": {"type": "string"},
                "amount": {"type": "string", "description": "the signed amount that was open"},
                "outcome": {"enum": ["flat", "closing", "already_closing", "failed"]},
                "level_id": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "the level carrying this close"},
                "levels_retired": {"type": "integer"},
                "error": nullable("string"),
            }))},
        })),
        "NewLevel": {
            "type": "object",
            "required": ["account", "symbol"],
            "additionalProperties": false,
            "description": "give take_profit, stop_loss or both (different); prices as numbers or decimal strings. \
                The account must be configured and the symbol listed by the venue (422 otherwise). The level \
                protects the account's open position in the symbol and takes its side; with no open position \
                stored, name `side` (422 naming `symbol` otherwise). A long's take-profit is above its stop-loss.",
            "properties": {
                "account": {"type": "string", "minLength": 1},
                "symbol": {"type": "string", "pattern": "^[A-Za-z0-9]{1,20}$"},
                "take_profit": {"anyOf": [positive(), {"type": "null"}]},
                "stop_loss": {"anyOf": [positive(), {"type": "null"}]},
                "side": {"anyOf": [{"enum": ["long", "short"]}, {"type": "null"}]},
            },
        },
        "Alert": object(&["id", "symbol", "condition", "price", "status", "created_at"], json!({
            "id": id, "symbol": {"type": "string"}, "condition": {"enum": ["above", "below"]},
            "price": decimal(),
            "webhook_url": {
                "type": ["string", "null"],
                "description": "a credential: whole only for a caller that presented the admin token; \
                                others see scheme and host then `/…` (`https://hooks.slack.com/…`)",
            },
            "status": {"enum": ["active", "triggered"]}, "created_at": ms, "triggered_at": nullable("integer"),
        })),
        "NewAlert": {
            "type": "object",
            "required": ["symbol", "condition", "price"],
            "additionalProperties": false,
            "properties": {
                "symbol": {"type": "string", "pattern": "^[A-Za-z0-9]{1,20}$"},
                "condition": {"enum": ["above", "below"]},
                "price": positive(),
                "webhook_url": {"type": ["string", "null"], "format": "uri", "description": "an http(s) URL to an allowed host"},
            },
        },
        "Notification": {"type": "object", "description": "an outbox entry: event, payload, status, attempts"},
    })
}
