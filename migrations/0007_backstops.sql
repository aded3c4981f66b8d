-- A conditional order on the venue for every armed stop-loss (issue 22):
-- the second line of protection, there when the service is not. One row per
-- placement: `client_algo_id` is `sm-<installation>-<level>-<s|t><generation>`,
-- written (state `placing`) before the order is sent, so a lost answer is
-- settled by looking the id up, never by a blind resend.
CREATE TABLE backstops (
    client_algo_id TEXT PRIMARY KEY,
    level_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    trigger_price TEXT NOT NULL,
    state TEXT NOT NULL,
    generation BIGINT NOT NULL,
    algo_id BIGINT,
    order_id BIGINT,
    failures BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX backstops_by_level ON backstops (level_id, kind, generation);
CREATE INDEX backstops_by_state ON backstops (state);
-- Who took a level's position flat: `service` (our close) or `venue` (its backstop).
ALTER TABLE levels ADD COLUMN closed_by TEXT
