-- Live overrides of process settings (PATCH /api/script-manager/processes/{id}):
-- kept so a restart and the other replicas keep them. `settings` is the JSON
-- object of the overridden fields.
CREATE TABLE process_overrides (
    process TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at BIGINT NOT NULL
);
