-- A level belongs to the position it was set for (issue 21): its side is
-- recorded once and never recomputed, and a level whose position goes flat
-- or changes side is retired (`cancelled`, with a `reason`).
ALTER TABLE levels ADD COLUMN side TEXT;
ALTER TABLE levels ADD COLUMN reason TEXT;
-- Levels from before: the side of the position stored now, else the one
-- their two prices imply (take-profit above stop-loss: long).
UPDATE levels SET side = 'short' WHERE side IS NULL AND EXISTS (SELECT 1 FROM positions p WHERE p.account = levels.account AND p.symbol = levels.symbol AND p.amount LIKE '-%');
UPDATE levels SET side = 'long' WHERE side IS NULL AND EXISTS (SELECT 1 FROM positions p WHERE p.account = levels.account AND p.symbol = levels.symbol AND p.amount NOT LIKE '-%');
UPDATE levels SET side = 'long' WHERE side IS NULL AND take_profit IS NOT NULL AND stop_loss IS NOT NULL AND CAST(take_profit AS REAL) > CAST(stop_loss AS REAL);
UPDATE levels SET side = 'short' WHERE side IS NULL AND take_profit IS NOT NULL AND stop_loss IS NOT NULL AND CAST(take_profit AS REAL) < CAST(stop_loss AS REAL);
-- An armed level with no position and no way to tell its side protects nothing.
UPDATE levels SET status = 'cancelled', reason = 'position_closed' WHERE side IS NULL AND status = 'armed';
-- Closes are worked by one sender at a time across the stream, the tick and
-- every replica: a claim (owner, lease end on the database's clock, and a
-- token bumped whenever the owner changes) that every write of the close is conditional on.
ALTER TABLE order_intents ADD COLUMN owner TEXT;
ALTER TABLE order_intents ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_intents ADD COLUMN claim BIGINT NOT NULL DEFAULT 0;
-- This installation's id, part of every client order id, so that a fresh
-- store never reuses the ids of another installation's orders on the same account.
CREATE TABLE installation (
    singleton BIGINT PRIMARY KEY,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL
)
