-- Several replicas (issue 7): which grid slot a run was for, which replica ran it
-- and under which lease token. NULL on a single replica.
ALTER TABLE runs ADD COLUMN slot BIGINT;
ALTER TABLE runs ADD COLUMN replica TEXT;
ALTER TABLE runs ADD COLUMN lease_token BIGINT;
CREATE INDEX runs_by_slot ON runs (process, slot);
