-- The audit trail (GET /api/audit): every mutating HTTP call, who made it
-- (the token's name), what and on which target, the outcome, and the change
-- (`detail`, JSON: before/after where the handler knows them, else the
-- request body with secret-looking fields redacted).
CREATE TABLE audit (
    id {{ID}},
    at BIGINT NOT NULL,
    who TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    status BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_at ON audit (at)
