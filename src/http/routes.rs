//! Every route, registered in one place with its OpenAPI description (see
//! [`openapi`](super::openapi)): adding a route means describing it here.

use axum::routing::{delete, get, post, put};
use serde_json::json;

use super::openapi::{Routes, list, op, schema};
use super::{accounts, api, audit, data, events, flatten, live};

const OPS: &str = "operations";
const STATUS: &str = "status";
const DATA: &str = "data";
const ACCOUNTS: &str = "accounts";

pub fn all() -> Routes {
    Routes::new()
        .route(
            "/metrics",
            get(super::metrics),
            vec![(
                "get",
                op("Prometheus metrics", OPS, json!({}))
                    .text("text/plain", "Prometheus text format 0.0.4; OpenMetrics (with exemplars) when the Accept header asks for application/openmetrics-text")
                    .metrics_auth(),
            )],
        )
        .route(
            "/healthz",
            get(super::healthz),
            vec![("get", op("Liveness: the process answers", OPS, schema("Health")))],
        )
        .route(
            "/readyz",
            get(super::readyz),
            vec![(
                "get",
                op("Readiness: started and not stopping", OPS, schema("Health"))
                    .errors(&[(503, "starting or stopping")]),
            )],
        )
        .route(
            "/docs/runbooks",
            get(super::runbooks),
            vec![(
                "get",
                op("The runbooks the alerts link to", OPS, json!({})).text("text/markdown", "Markdown, one section per alert"),
            )],
        )
        .route(
            "/api/openapi.json",
            get(super::openapi_document),
            vec![("get", op("This document", OPS, json!({"type": "object"})))],
        )
        .route(
            "/api/script-manager/status",
            get(api::status),
            vec![("get", op("Every process's state, schedule and statistics", STATUS, schema("Status")).status_document())],
        )
        .route(
            "/api/script-manager/processes",
            get(api::processes),
            vec![("get", op("The processes", STATUS, list("Process")).status_document())],
        )
        .route(
            "/api/script-manager/processes/{id}",
            get(api::process).patch(live::patch_process),
            vec![
                (
                    "get",
                    op("One process", STATUS, schema("Process"))
                        .path("id", "process id, as in the configuration")
                        .status_document()
                        .errors(&[(404, "no such process")]),
                ),
                (
                    "patch",
                    op(
                        "Change settings without a restart, from the next tick; stored, so a restart and the other replicas keep them",
                        STATUS,
                        schema("Process"),
                    )
                    .path("id", "process id")
                    .body(schema("Overrides"), json!({"interval_seconds": 0.5}))
                    .admin()
                    .errors(&[
                        (400, "the body is not JSON"),
                        (404, "no such process"),
                        (422, "a field is unknown, of the wrong type or out of range (the message names it)"),
                    ]),
                ),
            ],
        )
        .route(
            "/api/script-manager/processes/{id}/overrides",
            delete(live::delete_overrides),
            vec![(
                "delete",
                op("Return to the file's settings", STATUS, schema("Process"))
                    .path("id", "process id")
                    .admin()
                    .errors(&[(404, "no such process")]),
            )],
        )
        .route(
            "/-/reload",
            post(live::reload),
            vec![(
                "post",
                op(
                    "Re-read the configuration file and environment: processes are added, removed and changed without a restart",
                    OPS,
                    schema("Reload"),
                )
                .admin()
                .errors(&[
                    (422, "the configuration is invalid; nothing changed (the message names the keys)"),
                    (503, "this instance cannot reload, or the reload stopped unexpectedly"),
                ]),
            )],
        )
        .route(
            "/api/script-manager/processes/{id}/trigger",
            post(api::trigger),
            vec![(
                "post",
                op("Run a process now (a continuous one reconnects)", STATUS, json!({}))
                    .path("id", "process id")
                    .answers(202, "started", Some(schema("Action")))
                    .admin()
                    .errors(&[
                        (404, "no such process"),
                        (409, "already running, disabled, or held by another replica"),
                        (503, "the service is stopping"),
                    ]),
            )],
        )
        .route(
            "/api/script-manager/processes/{id}/pause",
            post(api::pause),
            vec![(
                "post",
                op("Pause a process: its ticks are skipped until resumed", STATUS, schema("Action"))
                    .path("id", "process id")
                    .admin()
                    .errors(&[(404, "no such process")]),
            )],
        )
        .route(
            "/api/script-manager/processes/{id}/resume",
            post(api::resume),
            vec![(
                "post",
                op("Resume a paused process", STATUS, schema("Action"))
                    .path("id", "process id")
                    .admin()
                    .errors(&[(404, "no such process")]),
            )],
        )
        .route(
            "/api/script-manager/runs",
            get(api::runs),
            vec![(
                "get",
                op("Finished runs, newest first", STATUS, list("Run"))
                    .query("process", json!({"type": "string"}), "only this process's runs")
                    .limit()
                    .status_document()
                    .errors(&[(400, "bad or unknown query parameter"), (404, "no such process")]),
            )],
        )
        .route(
            "/api/prices",
            get(data::prices),
            vec![("get", op("Cached prices of the symbols in use", DATA, list("Price")).reader())],
        )
        .route(
            "/api/events",
            get(events::stream),
            vec![(
                "get",
                op("Live updates (Server-Sent Events): a snapshot, then deltas with increasing ids", DATA, json!({}))
                    .event_stream(
                        "Server-Sent Events, never-ending. First `snapshot` ({positions, levels, prices}), then \
                         `price` (conflated per symbol), `fill`, `position`, `level`, `alert`, `notification` and \
                         `process` events, each `id: <epoch>-<seq>` (strictly increasing on this replica) with a JSON \
                         `data`; `: keepalive` comments while idle. `Last-Event-ID` resumes from the replay buffer; an \
                         id this replica cannot resume gets `reset` then a fresh `snapshot`. A client too slow to read \
                         gets `reset` (id `reset`) and the stream ends. See docs/events.md",
                        json!({
                            "type": "object",
                            "description": "one event: `data` is JSON text",
                            "required": ["event", "data"],
                            "properties": {
                                "event": {"enum": ["snapshot", "reset", "price", "fill", "position", "level", "alert", "notification", "process"]},
                                "data": {"type": "string", "contentMediaType": "application/json"},
                                "id": {"type": "string", "description": "`<epoch>-<seq>`; `reset` on the last frame of a dropped client"},
                                "retry": {"type": "integer"},
                            },
                        }),
                    )
                    .query(
                        "types",
                        json!({"type": "string", "pattern": "^(price|fill|position|level|alert|notification|process)(,(price|fill|position|level|alert|notification|process))*$"}),
                        "comma list of event types (default: all)",
                    )
                    .query("account", json!({"type": "string"}), "only these accounts' events (comma list, or repeated); a token scoped to accounts sees only its own")
                    .query("symbols", json!({"type": "string"}), "only these symbols (comma list); their prices are streamed even without levels or alerts")
                    .query("access_token", json!({"type": "string"}), "the token, for browsers' EventSource (which cannot send headers); this route only")
                    .header_param("Last-Event-ID", "the id of the last event received: the missed ones are replayed")
                    .reader()
                    .errors(&[
                        (400, "bad or unknown query parameter or event type"),
                        (403, "the token may not see an account asked for"),
                        (422, "an account that is not configured, or a symbol the venue does not list"),
                        (503, "events.max_clients are connected (retry shortly), or the store did not answer"),
                    ]),
            )],
        )
        .route(
            "/api/positions",
            get(data::positions),
            vec![(
                "get",
                op("Open positions", DATA, list("Position"))
                    .query("account", json!({"type": "string"}), "only this account's")
                    .reader()
                    .errors(&[(400, "unknown query parameter")]),
            )],
        )
        .route(
            "/api/trades",
            get(data::trades),
            vec![(
                "get",
                op("Fills, newest first", DATA, list("Trade"))
                    .query("account", json!({"type": "string"}), "only this account's")
                    .query("symbol", json!({"type": "string"}), "only this symbol's")
                    .limit()
                    .reader()
                    .errors(&[(400, "bad or unknown query parameter")]),
            )],
        )
        .route(
            "/api/dashboard/{account}",
            get(data::dashboard),
            vec![(
                "get",
                op("An account's analytics (dashboard_sync's last snapshot)", DATA, schema("Dashboard"))
                    .path("account", "account name, as in the configuration")
                    .reader()
                    .errors(&[(404, "no such account, or no snapshot yet")]),
            )],
        )
        .route(
            "/api/levels",
            get(data::levels).post(data::create_level),
            vec![
                (
                    "get",
                    op("Take-profit/stop-loss levels, by id (a Link header points to the next page)", DATA, list("Level"))
                        .limit()
                        .after()
                        .reader()
                        .errors(&[(400, "bad or unknown query parameter")]),
                ),
                (
                    "post",
                    op("Arm a take-profit/stop-loss level on a position", DATA, json!({}))
                        .body(
                            schema("NewLevel"),
                            json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": "95000", "take_profit": "110000"}),
                        )
                        .answers(201, "armed", Some(schema("Level")))
                        .links(201, &[("GetLevel", "get_api_levels_id"), ("DeleteLevel", "delete_api_levels_id")])
                        .trade()
                        .errors(&[
                            (400, "the body is not JSON"),
                            (422, "a field is missing or invalid (the message names it)"),
                            (503, "the venue's symbol list is not read yet"),
                        ]),
                ),
            ],
        )
        .route(
            "/api/flatten",
            post(flatten::all),
            vec![(
                "post",
                op(
                    "Kill switch: cancel our conditional orders and close every open position of every account",
                    DATA,
                    schema("Flattened"),
                )
                .also_answers(
                    202,
                    "still working after 8 s: the closes it started go on (GET /api/levels shows them)",
                    json!({"type": "object", "properties": {"status": {"const": "in_progress"}, "message": {"type": "string"}}}),
                )
                .admin()
                .errors(&[
                    (429, "the exchange budget is spent for now; nothing more was sent (try again shortly)"),
                    (502, "the venue could not be asked what is open (nothing was sent for that account)"),
                    (503, "this instance has no exchange"),
                ]),
            )],
        )
        .route(
            "/api/accounts",
            get(accounts::list).post(accounts::create),
            vec![
                (
                    "get",
                    op("Exchange accounts, file and API, by name (a Link header points to the next page)", ACCOUNTS, list("Account"))
                        .limit()
                        .query("after", json!({"type": "string"}), "names after this one (the previous page's last)")
                        .admin()
                        .errors(&[(400, "bad or unknown query parameter")]),
                ),
                (
                    "post",
                    op("Add an exchange account while running: stored encrypted, used from the next run", ACCOUNTS, json!({}))
                        .body(
                            schema("NewAccount"),
                            json!({"name": "desk-2", "api_key": "<the venue's API key>", "api_secret": "<its secret>"}),
                        )
                        .answers(201, "added", Some(schema("Account")))
                        .admin()
                        .errors(&[
                            (400, "the body is not JSON"),
                            (409, "the name exists (file or API), or no store.encryption_key_file is configured"),
                            (422, "a field is missing or invalid (the message names it)"),
                            (503, "the store did not answer"),
                        ]),
                ),
            ],
        )
        .route(
            "/api/accounts/{account}",
            get(accounts::get).delete(accounts::remove),
            vec![
                (
                    "get",
                    op("One exchange account: source, key's last four characters, stream and sync state", ACCOUNTS, schema("Account"))
                        .path("account", "account name")
                        .admin()
                        .errors(&[(404, "no such account")]),
                ),
                (
                    "delete",
                    op(
                        "Remove an account added through the API: its armed levels are retired (account_removed) and our conditional orders on it cancelled first; its positions stay open",
                        ACCOUNTS,
                        schema("RemovedAccount"),
                    )
                    .path("account", "account name")
                    .admin()
                    .errors(&[
                        (404, "no such account"),
                        (409, "the account is defined in the configuration file"),
                        (429, "the exchange budget is spent for now; nothing was removed (try again shortly)"),
                        (502, "the venue could not be asked to cancel our conditional orders; nothing was removed"),
                        (503, "the store did not answer"),
                    ]),
                ),
            ],
        )
        .route(
            "/api/accounts/{account}/credentials",
            put(accounts::rotate),
            vec![(
                "put",
                op("Rotate an API account's key and secret: the next signed request uses them", ACCOUNTS, schema("Account"))
                    .path("account", "account name")
                    .body(schema("Credentials"), json!({"api_key": "<the new key>", "api_secret": "<its secret>"}))
                    .admin()
                    .errors(&[
                        (400, "the body is not JSON"),
                        (404, "no such account"),
                        (409, "the account is defined in the configuration file, or no store.encryption_key_file is configured"),
                        (422, "a field is missing or invalid (the message names it)"),
                        (503, "the store did not answer"),
                    ]),
            )],
        )
        .route(
            "/api/accounts/{account}/flatten",
            post(flatten::account),
            vec![(
                "post",
                op(
                    "Kill switch for one account: cancel our conditional orders and close its open positions",
                    DATA,
                    schema("Flattened"),
                )
                .path("account", "account name")
                .also_answers(
                    202,
                    "still working after 8 s: the closes it started go on (GET /api/levels shows them)",
                    json!({"type": "object", "properties": {"status": {"const": "in_progress"}, "message": {"type": "string"}}}),
                )
                .trade()
                .errors(&[
                    (404, "no such account"),
                    (429, "the exchange budget is spent for now; nothing more was sent (try again shortly)"),
                    (502, "the venue could not be asked what is open (nothing was sent)"),
                    (503, "this instance has no exchange"),
                ]),
            )],
        )
        .route(
            "/api/levels/{id}",
            get(data::level).delete(data::delete_level),
            vec![
                (
                    "get",
                    op("One level", DATA, schema("Level"))
                        .id("level id")
                        .reader()
                        .errors(&[(400, "not an id"), (404, "no such level")]),
                ),
                (
                    "delete",
                    op("Disarm a level", DATA, json!({}))
                        .id("level id")
                        .answers(204, "deleted", None)
                        .trade()
                        .errors(&[
                            (400, "not an id"),
                            (404, "no such level"),
                            (409, "its close order is in flight"),
                        ]),
                ),
            ],
        )
        .route(
            "/api/alerts",
            get(data::alerts).post(data::create_alert),
            vec![
                (
                    "get",
                    op("Price alerts, by id (a Link header points to the next page)", DATA, list("Alert"))
                        .limit()
                        .after()
                        .reader()
                        .errors(&[(400, "bad or unknown query parameter")]),
                ),
                (
                    "post",
                    op("Create a price alert", DATA, json!({}))
                        .body(
                            schema("NewAlert"),
                            json!({"symbol": "ETHUSDT", "condition": "above", "price": "4200"}),
                        )
                        .answers(201, "created", Some(schema("Alert")))
                        .links(201, &[("DeleteAlert", "delete_api_alerts_id")])
                        .trade()
                        .errors(&[
                            (400, "the body is not JSON"),
                            (422, "a field is missing or invalid (the message names it)"),
                            (503, "the venue's symbol list is not read yet"),
                        ]),
                ),
            ],
        )
        .route(
            "/api/alerts/{id}",
            delete(data::delete_alert),
            vec![(
                "delete",
                op("Delete an alert", DATA, json!({}))
                    .id("alert id")
                    .answers(204, "deleted", None)
                    .trade()
                    .errors(&[(400, "not an id"), (404, "no such alert")]),
            )],
        )
        .route(
            "/api/notifications",
            get(data::notifications),
            vec![(
                "get",
                op("The notification outbox, newest first", DATA, list("Notification"))
                    .limit()
                    .reader()
                    .errors(&[(400, "bad or unknown query parameter")]),
            )],
        )
        .route(
            "/api/audit",
            get(audit::list),
            vec![(
                "get",
                op("The audit trail: every mutating call, newest first (who, what, target, outcome, change)", OPS, schema("AuditPage"))
                    .limit()
                    .query("before", json!({"type": "integer", "format": "int64", "minimum": 1}), "only rows older than this id (the previous page's next_before)")
                    .admin()
                    .errors(&[(400, "bad or unknown query parameter")]),
            )],
        )
}
