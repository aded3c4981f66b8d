#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json. The dashboards are data; this keeps
their conventions in one place: a `datasource` variable, fixed uids,
$__rate_interval, a unit and a description on every panel, exemplars on
latency panels. Run it after changing a panel: scripts/gen-dashboards.py"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
ROOT = os.path.join(os.path.dirname(__file__), "..", "grafana", "dashboards")


def target(expr, legend, ref, exemplar=False, instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "exemplar": exemplar}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def panel(title, description, unit, exprs, x, y, w=12, h=8, kind="timeseries", exemplar=False, extra=None):
    refs = "ABCDEFGH"
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [target(e, l, refs[i], exemplar, instant=(kind in ("stat", "table"))) for i, (e, l) in enumerate(exprs)],
        "options": {},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
    if extra:
        p.update(extra)
    return p


def dashboard(uid, title, description, panels, variables=()):
    for i, p in enumerate(panels):
        p["id"] = i + 1
    templating = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0},
    ] + list(variables)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["script-manager"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": templating},
        "panels": panels,
        "links": [{"title": "script-manager dashboards", "type": "dashboards", "tags": ["script-manager"]}],
    }


RI = "$__rate_interval"


def quantiles(metric, by, where=""):
    sel = f"{{{where}}}" if where else ""
    return [
        (f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[{RI}])))", f"p{int(q * 100)} {{{{{by}}}}}")
        for q in (0.5, 0.95, 0.99)
    ]


overview = dashboard(
    "script-manager-overview",
    "script-manager: overview",
    "Every process's health, the shared exchange API budget, and the service's resources.",
    [
        panel("Process status", "Failures in a row per process (0 = healthy). Red means the process is failing now.", "short",
              [("max by (process) (script_manager_process_consecutive_failures)", "{{process}}")], 0, 0, 12, 6, kind="stat",
              extra={"options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "textMode": "value_and_name"},
                     "fieldConfig": {"defaults": {"unit": "short", "thresholds": {"mode": "absolute", "steps": [
                         {"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 3}]}}, "overrides": []}}),
        panel("Running, paused, scheduler", "Processes executing right now, paused by an operator, and whether the scheduler runs at all (SCRIPT_MANAGER_ENABLED).", "short",
              [("sum(script_manager_process_running)", "executing"), ("sum(script_manager_process_paused)", "paused"),
               ("max(script_manager_scheduler_enabled)", "scheduler enabled"), ("count(script_manager_build_info)", "instances")], 12, 0, 12, 6, kind="stat"),
        panel("Runs per minute by outcome", "Finished runs per minute, per process and outcome (success, error, timeout).", "opm",
              [(f"sum by (process, outcome) (rate(script_manager_process_runs_total[{RI}])) * 60", "{{process}} {{outcome}}")], 0, 6),
        panel("Success ratio", "Share of runs that succeeded, per process.", "percentunit",
              [(f"sum by (process) (rate(script_manager_process_runs_total{{outcome=\"success\"}}[{RI}])) / sum by (process) (rate(script_manager_process_runs_total[{RI}]))", "{{process}}")], 12, 6),
        panel("Run duration p50 / p95 / p99", "Wall time of runs, all attempts included. Exemplars link to the run's trace.", "s",
              quantiles("script_manager_process_run_duration_seconds", "process"), 0, 14, exemplar=True),
        panel("Scheduling lag p99", "Actual start minus scheduled start of runs: how late the scheduler is.", "s",
              [(f"histogram_quantile(0.99, sum by (process, le) (rate(script_manager_process_schedule_lag_seconds_bucket[{RI}])))", "{{process}}")], 12, 14, exemplar=True),
        panel("Skipped ticks", "Ticks that started no run: overlap (still running), missed (coalesced), paused.", "opm",
              [(f"sum by (process, reason) (rate(script_manager_process_skipped_runs_total[{RI}])) * 60", "{{process}} {{reason}}")], 0, 22),
        panel("Errors by kind", "Failed runs per minute by error kind (timeout, upstream, budget_exhausted, store, ...).", "opm",
              [(f"sum by (process, kind) (rate(script_manager_process_errors_total[{RI}])) * 60", "{{process}} {{kind}}")], 12, 22),
        panel("API calls per minute against limits", "Exchange calls each process made in the sliding last minute, and its configured limit.", "short",
              [("script_manager_api_calls_last_minute", "{{process}} calls"), ("script_manager_api_limit_calls_per_minute", "{{process}} limit")], 0, 30),
        panel("Global weight budget", "Weight used this minute: our count, the venue's header, our limit (venue x margin) and the venue's limit.", "short",
              [("script_manager_api_weight_used", "ours"), ("script_manager_api_upstream_used_weight", "venue's count"),
               ("script_manager_api_weight_limit", "our limit"), ("script_manager_api_upstream_weight_limit", "venue limit")], 12, 30),
        panel("429 / 418 answers", "Rate-limit answers from the venue in each interval: 429 (warning), 418 (IP ban).", "short",
              [(f"sum by (status) (increase(script_manager_api_rate_limit_responses_total[{RI}]))", "{{status}}")], 0, 38),
        panel("Requests saved by cache and de-duplication", "Upstream requests sent, and requests answered by the cache or by an identical request in flight instead.", "reqps",
              [(f"sum(rate(script_manager_api_calls_total[{RI}]))", "sent"),
               (f"sum(rate(script_manager_api_cache_requests_total{{result=\"hit\"}}[{RI}]))", "cache hits"),
               (f"sum(rate(script_manager_api_deduplicated_total[{RI}]))", "de-duplicated")], 12, 38),
        panel("Upstream latency p95 by endpoint", "Latency of exchange requests by route. Exemplars link to the request's trace.", "s",
              [(f"histogram_quantile(0.95, sum by (endpoint, le) (rate(script_manager_api_request_duration_seconds_bucket[{RI}])))", "{{endpoint}}")], 0, 46, exemplar=True),
        panel("Budget waits", "Requests that waited for budget per process, and the p95 wait.", "s",
              [(f"histogram_quantile(0.95, sum by (le) (rate(script_manager_api_throttle_wait_seconds_bucket[{RI}])))", "p95 wait"),
               (f"sum by (process) (rate(script_manager_api_throttled_total[{RI}]))", "{{process}} waits/s")], 12, 46),
        panel("Upstream errors by kind", "Failed exchange calls per minute by kind.", "opm",
              [(f"sum by (kind) (rate(script_manager_api_errors_total[{RI}])) * 60", "{{kind}}")], 0, 54),
        panel("Weight spent by process", "Request weight per minute, per process.", "short",
              [(f"sum by (process) (rate(script_manager_api_weight_total[{RI}])) * 60", "{{process}}")], 12, 54),
        panel("Memory", "Resident memory of the service.", "bytes",
              [("script_manager_resident_memory_bytes", "resident")], 0, 62, 8),
        panel("CPU", "CPU time used by the service per second (1 = one core).", "percentunit",
              [(f"rate(script_manager_cpu_seconds_total[{RI}])", "cpu")], 8, 62, 8),
        panel("File descriptors", "Open file descriptors against the limit.", "short",
              [("script_manager_open_fds", "open"), ("script_manager_max_fds", "limit")], 16, 62, 8),
        panel("Uptime", "Time since the service started.", "s",
              [("time() - script_manager_start_time_seconds", "{{instance}}")], 0, 70, 8, 4, kind="stat"),
        panel("Venue clock offset", "Venue clock minus ours, measured at start-up and on -1021.", "s",
              [("script_manager_api_clock_offset_seconds", "offset")], 8, 70, 8, 4, kind="stat"),
        panel("Effective intervals", "The interval each process is on now: its configured one, stretched (up to "
              "scheduler.adapt_max_factor) while the API budget is tight or the venue holds us back.", "s",
              [("script_manager_process_effective_interval_seconds", "{{process}}")], 16, 70, 8, 4),
        # Several replicas (ha.enabled): empty on a single replica.
        panel("Lease holders (HA)", "Which replica holds each process's lease and so runs its ticks; "
              "a process with no holder runs nowhere.", "short",
              [("max by (process, instance) (script_manager_ha_lease_held) == 1", "{{process}} on {{instance}}")],
              0, 74, 12, 8, kind="table"),
        panel("Failovers (HA)", "Leases taken over after their holder let them lapse (crash, freeze, "
              "lost PostgreSQL), by the replica that took over.", "short",
              [('sum by (instance) (increase(script_manager_ha_claims_total{result="expired"}[$__rate_interval]))', "{{instance}}")],
              12, 74),
        panel("Replicas alive (HA)", "Replicas that reported to PostgreSQL within the last heartbeats, as each sees it.", "short",
              [("max(script_manager_ha_replicas)", "replicas")], 0, 82, 6, 4, kind="stat"),
        panel("Coordination store (HA)", "1 while a replica reaches PostgreSQL; at 0 it runs nothing.", "short",
              [("script_manager_ha_store_up", "{{instance}}")], 6, 82, 6, 4, kind="stat"),
        panel("Fenced writes (HA)", "Writes refused because the run's lease had moved to another replica.", "short",
              [("sum by (instance) (increase(script_manager_ha_fencing_rejections_total[$__rate_interval]))", "{{instance}}")],
              12, 82, 6, 4),
        panel("Cluster budget waits (HA)", "Calls that waited for the next minute because all replicas together "
              "had spent the minute's budget; and calls admitted on a replica's local share (the venue's budget "
              "over the replicas it last saw) because PostgreSQL, where the cluster's budget is kept, did not answer.",
              "short",
              [("sum by (instance) (increase(script_manager_ha_cluster_budget_waits_total[$__rate_interval]))", "{{instance}} waits"),
               ("sum by (instance) (increase(script_manager_ha_cluster_budget_local_calls_total[$__rate_interval]))",
                "{{instance}} on the local share")],
              18, 82, 6, 4),
        panel("Last reload OK", "1 if the last configuration reload (SIGHUP, POST /-/reload) was accepted; "
              "0: the file is invalid and the previous configuration still runs.", "short",
              [("script_manager_config_last_reload_successful", "{{instance}}")], 0, 86, 6, 4, kind="stat"),
        panel("Since the last good (re)load", "Time since the configuration was last loaded successfully.", "s",
              [("time() - script_manager_config_last_reload_success_timestamp_seconds", "{{instance}}")],
              6, 86, 6, 4, kind="stat"),
        panel("Processes held per replica", "How many processes each replica holds (runs the ticks of): "
              "with several replicas, each about its fair share; on one, all of them.", "short",
              [("max by (instance) (script_manager_ha_leases_held)", "{{instance}}")], 12, 86, 12, 8),
        panel("Hand-overs by reason (HA)", "Leases that changed hands: rebalance (to the replica whose share it is), "
              "shutdown, pause, removed (from the configuration), expired (taken over after a crash or freeze).", "short",
              [("sum by (reason) (increase(script_manager_ha_handovers_total[$__rate_interval]))", "{{reason}}")],
              0, 90, 12, 8),
        panel("HTTP requests shed", "Requests the HTTP server turned away to protect itself, by reason: concurrency "
              "(http.max_concurrent_requests), timeout (a read over http.request_timeout_seconds), rate_limited "
              "(a token over http.mutations_per_minute). See docs/security.md.", "short",
              [("sum by (reason) (increase(script_manager_http_requests_shed_total[$__rate_interval]))", "{{reason}}")],
              12, 94, 12, 8),
    ],
)

PROC = 'process="$process"'
process = dashboard(
    "script-manager-process",
    "script-manager: process",
    "One process in detail: runs, errors, timing, budget and configuration.",
    [
        panel("Status", "Failures in a row, executing now, paused.", "short",
              [(f"script_manager_process_consecutive_failures{{{PROC}}}", "failures in a row"),
               (f"script_manager_process_running{{{PROC}}}", "executing"), (f"script_manager_process_paused{{{PROC}}}", "paused")], 0, 0, 8, 6, kind="stat"),
        panel("Since last run / success / error", "Seconds since the last run finished, the last success, and the last failure.", "s",
              [(f"time() - script_manager_process_last_run_timestamp_seconds{{{PROC}}}", "last run"),
               (f"time() - script_manager_process_last_success_timestamp_seconds{{{PROC}}}", "last success"),
               (f"time() - script_manager_process_last_error_timestamp_seconds{{{PROC}}}", "last error")], 8, 0, 8, 6, kind="stat"),
        panel("Configuration", "Interval, timeout, priority, retries, enabled: the configuration the alerts compare against.", "short",
              [(f"script_manager_process_interval_seconds{{{PROC}}}", "interval s"), (f"script_manager_process_timeout_seconds{{{PROC}}}", "timeout s"),
               (f"script_manager_process_priority{{{PROC}}}", "priority"), (f"script_manager_process_max_retries{{{PROC}}}", "retries"),
               (f"script_manager_process_enabled{{{PROC}}}", "enabled")], 16, 0, 8, 6, kind="stat"),
        panel("Runs by outcome", "Finished runs per minute by outcome.", "opm",
              [(f"sum by (outcome) (rate(script_manager_process_runs_total{{{PROC}}}[{RI}])) * 60", "{{outcome}}")], 0, 6),
        panel("Errors by kind", "Failures per minute by kind.", "opm",
              [(f"sum by (kind) (rate(script_manager_process_errors_total{{{PROC}}}[{RI}])) * 60", "{{kind}}")], 12, 6),
        panel("Duration p50 / p95 / p99 against the interval", "Run duration quantiles and the interval; exemplars link to traces.", "s",
              quantiles("script_manager_process_run_duration_seconds", "process", PROC) + [(f"script_manager_process_interval_seconds{{{PROC}}}", "interval")], 0, 14, exemplar=True),
        panel("Scheduling lag p50 / p99", "How late runs start compared to their tick.", "s",
              [(f"histogram_quantile({q}, sum by (le) (rate(script_manager_process_schedule_lag_seconds_bucket{{{PROC}}}[{RI}])))", f"p{int(q*100)}") for q in (0.5, 0.99)], 12, 14, exemplar=True),
        panel("Retries and skipped ticks", "Attempts beyond the first, and ticks skipped by reason.", "opm",
              [(f"sum(rate(script_manager_process_retries_total{{{PROC}}}[{RI}])) * 60", "retries"),
               (f"sum by (reason) (rate(script_manager_process_skipped_runs_total{{{PROC}}}[{RI}])) * 60", "skipped: {{reason}}")], 0, 22),
        panel("API calls against the limit", "Calls in the sliding last minute, the configured limit, and weight spent per minute.", "short",
              [(f"script_manager_api_calls_last_minute{{{PROC}}}", "calls last minute"), (f"script_manager_api_limit_calls_per_minute{{{PROC}}}", "limit"),
               (f"sum(rate(script_manager_api_weight_total{{{PROC}}}[{RI}])) * 60", "weight per minute"),
               (f"sum(rate(script_manager_api_calls_total{{{PROC}}}[{RI}])) * 60", "calls sent per minute")], 12, 22),
        panel("Child program resources", "For command processes: CPU time of the child programs per second, and the last child's peak memory.", "short",
              [(f"rate(script_manager_process_child_cpu_seconds_total{{{PROC}}}[{RI}])", "child cpu (cores)"),
               (f"script_manager_process_child_peak_rss_bytes{{{PROC}}} / 1048576", "child peak RSS (MiB)")], 0, 30),
        panel("Budget waits", "Requests of this process that waited for the API budget, per second.", "reqps",
              [(f"sum(rate(script_manager_api_throttled_total{{{PROC}}}[{RI}]))", "waits")], 12, 30),
    ],
    variables=[{
        "name": "process", "label": "Process", "type": "query", "datasource": DS,
        "query": {"query": "label_values(script_manager_process_enabled, process)", "refId": "process"},
        "definition": "label_values(script_manager_process_enabled, process)", "refresh": 2, "hide": 0,
        "current": {"text": "trade_sync", "value": "trade_sync"},
    }],
)

trading = dashboard(
    "script-manager-trading",
    "script-manager: trading",
    "The platform's work: prices, take-profit/stop-loss levels, trades, notifications, dashboards.",
    [
        panel("Price age", "Age of the oldest cached price in use; level_monitor fetches fresher ones itself.", "s",
              [("script_manager_price_age_seconds", "oldest price")], 0, 0, 8, 6, kind="stat"),
        panel("Levels armed", "Take-profit/stop-loss levels waiting for their price.", "short",
              [("script_manager_levels_armed", "armed")], 8, 0, 8, 6, kind="stat"),
        panel("Open positions", "Open positions across accounts at the last position sync.", "short",
              [("script_manager_positions_open", "open")], 16, 0, 8, 6, kind="stat"),
        panel("Level triggers", "Crossed levels in each interval by kind and outcome (executed, failed, cancelled = nothing was held any more, unknown = its first attempt could not finish).", "short",
              [(f"sum by (kind, outcome) (increase(script_manager_level_triggers_total[{RI}]))", "{{kind}} {{outcome}}")], 0, 6),
        panel("Trigger latency p50 / p95", "From receiving the crossing price to the venue acknowledging the close (our monotonic clock), and the venue's own timing of it (its clock on both ends).", "s",
              [(f"histogram_quantile({q}, sum by (le) (rate(script_manager_level_trigger_latency_seconds_bucket[{RI}])))", f"p{int(q*100)}") for q in (0.5, 0.95)]
              + [(f"histogram_quantile(0.95, sum by (le) (rate(script_manager_level_trigger_venue_latency_seconds_bucket[{RI}])))", "venue p95")], 12, 6, exemplar=True),
        panel("Trades synced per minute", "Fills newly stored by trade sync.", "opm",
              [(f"sum(rate(script_manager_trades_synced_total[{RI}])) * 60", "trades")], 0, 14),
        panel("Notifications", "Webhook delivery attempts per minute by outcome, the outbox backlog, and deliveries refused by policy (host not allowed, an inside address, a redirect) by reason.", "short",
              [(f"sum by (outcome) (rate(script_manager_notifications_total[{RI}])) * 60", "{{outcome}} per minute"),
               ("script_manager_notification_outbox_pending", "pending"),
               (f"sum by (reason) (increase(script_manager_webhook_refused_total[{RI}]))", "refused: {{reason}}")], 12, 14),
        panel("Dashboard snapshot age", "Age of the oldest cached per-account analytics.", "s",
              [("script_manager_dashboard_snapshot_age_seconds", "oldest snapshot")], 0, 22, 8, 6, kind="stat"),
        panel("Accounts by state and failures", "Accounts by their worst state (ok, failing, stream_down, stale), failures summed over every account per process (both hold in both modes), and per account the failures of those that have series of their own (all of them up to telemetry.per_account_series_limit, above it those with a problem).", "short",
              [("sum by (state) (script_manager_accounts)", "{{state}}"),
               (f"sum by (process) (increase(script_manager_account_failures_total[{RI}]))", "{{process}} failures (all accounts)"),
               (f"topk(10, sum by (process, account) (increase(script_manager_account_errors_total[{RI}])))", "{{process}} {{account}}")], 8, 22, 8, 6),
        panel("Skipped symbols and dropped run records", "Symbols left out because the venue no longer lists them, and run records the store's queue could not take.", "short",
              [(f"sum by (process) (increase(script_manager_symbols_skipped_total[{RI}]))", "{{process}} skipped"),
               (f"increase(script_manager_run_records_dropped_total[{RI}])", "run records dropped")], 16, 22, 8, 6),
        panel("Closes retrying", "Crossed levels whose close cannot go on yet (refused, or its outcome still unknown): the position is still open while this is above 0.", "short",
              [("script_manager_level_close_retrying", "retrying")], 0, 28, 8, 6, kind="stat"),
        panel("Close refusals by step", "Close orders the venue refused or left unanswered, by the refusal table's next step (retry_later, look_up, split, reread, final).", "short",
              [(f"sum by (step) (increase(script_manager_level_close_refusals_total[{RI}]))", "{{step}}")], 8, 28, 8, 6),
        panel("Levels retired", "Armed levels cancelled without a close because their position went flat or changed side, or the kill switch flattened it.", "short",
              [(f"sum by (reason) (increase(script_manager_levels_retired_total[{RI}]))", "{{reason}}")], 16, 28, 8, 6),
        panel("Backstops on the venue", "The conditional orders armed stop-losses want on the venue, by state: live, placing, missing (not placed yet), failed (refused). Anything but live for 2 minutes while the venue answers pages (ScriptManagerPositionUnprotected).", "short",
              [("sum by (state) (script_manager_backstop_orders)", "{{state}}")], 0, 34, 8, 6),
        panel("Backstop placements and cancels", "Backstop changes sent to the venue per interval, by action and outcome.", "short",
              [(f"sum by (action, outcome) (increase(script_manager_backstop_changes_total[{RI}]))", "{{action}} {{outcome}}")], 8, 34, 8, 6),
        panel("Kill switch", "Positions the kill switch (POST /api/flatten) acted on, by outcome.", "short",
              [(f"sum by (outcome) (increase(script_manager_positions_flattened_total[{RI}]))", "{{outcome}}")], 16, 34, 8, 6),
    ],
)

streams = dashboard(
    "script-manager-streams",
    "script-manager: streams",
    "Prices and account events by WebSocket (market_stream, user_stream): up, traffic, reconnects, lag, staleness.",
    [
        panel("Streams up", "1 while a stream's connection is open (book and mark prices; each account's user data).", "short",
              [("max by (stream, account) (script_manager_stream_up)", "{{stream}} {{account}}")], 0, 0),
        panel("Messages per second", "Messages received, by stream.", "short",
              [(f"sum by (stream, account) (rate(script_manager_stream_messages_total[{RI}]))", "{{stream}} {{account}}")], 12, 0),
        panel("Reconnects", "Connections replaced in each interval, by stream and reason (silent, closed, error, planned, listen_key).", "short",
              [(f"sum by (stream, reason) (increase(script_manager_stream_reconnects_total[{RI}]))", "{{stream}} {{reason}}")], 0, 8),
        panel("Event lag p50 / p95", "Receive time minus the venue's event time.", "s",
              [(f"histogram_quantile({q}, sum by (le, stream) (rate(script_manager_stream_event_lag_seconds_bucket[{RI}])))", f"{{{{stream}}}} p{int(q*100)}") for q in (0.5, 0.95)], 12, 8, exemplar=True),
        panel("Last event age", "Time since each stream last delivered a message.", "s",
              [("max by (stream, account) (script_manager_stream_last_event_age_seconds)", "{{stream}} {{account}}")], 0, 16, 8, 8),
        panel("Stale symbols", "Watched symbols without a fresh streamed price (REST covers them).", "short",
              [("max(script_manager_stream_stale_symbols)", "stale")], 8, 16, 8, 8, kind="stat"),
        panel("Listen keys and restarts", "Listen-key creations and extensions by result, and restarts of the continuous processes.", "short",
              [(f"sum by (account, result) (increase(script_manager_stream_listen_key_renewals_total[{RI}]))", "{{account}} {{result}}"),
               (f"sum by (process) (increase(script_manager_process_restarts_total[{RI}]))", "{{process}} restarts"),
               ("max by (process) (script_manager_process_up)", "{{process}} up"),
               ("max by (process) (time() - script_manager_process_last_event_timestamp_seconds > 0)", "{{process}} since last event")], 16, 16, 8, 8),
        panel("Screens on the event stream", "GET /api/events: clients connected per replica, frames sent per second by type "
              "(price, fill, position, level, alert, notification, process, snapshot, reset), clients dropped for reading too "
              "slowly (or told to resync after the relay between replicas reconnected), and Last-Event-ID resumes: "
              "replayed (hit) or answered with a fresh snapshot (reset).", "short",
              [("sum by (instance) (script_manager_events_clients)", "{{instance}} clients"),
               (f"sum by (type) (rate(script_manager_events_sent_total[{RI}]))", "sent {{type}} /s"),
               (f"sum by (reason) (increase(script_manager_events_clients_dropped_total[{RI}]))", "dropped {{reason}}"),
               (f"sum by (outcome) (increase(script_manager_events_replays_total[{RI}]))", "resume {{outcome}}")], 0, 24, 24, 8),
    ],
)

for name, d in (("overview", overview), ("process", process), ("trading", trading), ("streams", streams)):
    with open(os.path.join(ROOT, f"{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
print("wrote", ", ".join(f"{n}.json" for n in ("overview", "process", "trading", "streams")))
