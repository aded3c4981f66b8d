-- One schema for SQLite and PostgreSQL. `{{ID}}` becomes an auto-increment
-- primary key in each dialect; everything else is portable SQL. Decimals are
-- stored as TEXT (exact), times as BIGINT milliseconds since the epoch.

CREATE TABLE trades (
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    id BIGINT NOT NULL,
    order_id BIGINT NOT NULL,
    side TEXT NOT NULL,
    price TEXT NOT NULL,
    qty TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    commission TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (account, symbol, id)
);
CREATE INDEX trades_by_time ON trades (account, time);

CREATE TABLE sync_cursors (
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    next_from_id BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, symbol)
);

CREATE TABLE positions (
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    amount TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    mark_price TEXT NOT NULL,
    unrealized_pnl TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, symbol)
);

CREATE TABLE prices (
    symbol TEXT PRIMARY KEY,
    price TEXT NOT NULL,
    observed_at BIGINT NOT NULL,
    venue_time BIGINT NOT NULL
);

CREATE TABLE levels (
    id {{ID}},
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    take_profit TEXT,
    stop_loss TEXT,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    client_order_id TEXT,
    order_id BIGINT,
    trigger_kind TEXT,
    trigger_price TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX levels_by_status ON levels (status);

CREATE TABLE order_intents (
    client_order_id TEXT PRIMARY KEY,
    level_id BIGINT NOT NULL,
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty TEXT NOT NULL,
    kind TEXT NOT NULL,
    trigger_price TEXT NOT NULL,
    observed_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    order_id BIGINT,
    avg_price TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX order_intents_by_status ON order_intents (status);

CREATE TABLE alerts (
    id {{ID}},
    symbol TEXT NOT NULL,
    condition TEXT NOT NULL,
    price TEXT NOT NULL,
    webhook_url TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    triggered_at BIGINT
);

CREATE TABLE notifications (
    id {{ID}},
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    webhook_url TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX notifications_by_status ON notifications (status, next_attempt_at);

CREATE TABLE dashboard_snapshots (
    account TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    computed_at BIGINT NOT NULL
);

CREATE TABLE runs (
    id {{ID}},
    process TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    duration_seconds DOUBLE PRECISION NOT NULL,
    lag_seconds DOUBLE PRECISION NOT NULL,
    attempts BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error_kind TEXT,
    error_message TEXT,
    api_calls BIGINT NOT NULL,
    trace_id TEXT
);
CREATE INDEX runs_by_process ON runs (process, finished_at);
CREATE INDEX runs_by_time ON runs (finished_at);
