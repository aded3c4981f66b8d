-- The close protocol (issue 12): a level is executed only when the venue's
-- position is flat. An intent may take several reduce-only orders: order n
-- has the client id `<client_order_id>` (n = 0) or `<client_order_id>-<n>`.
-- `attempt` is the order being worked on; `filled_qty` and `notional` sum the
-- fills of the orders before it.
ALTER TABLE order_intents ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_intents ADD COLUMN filled_qty TEXT NOT NULL DEFAULT '0';
ALTER TABLE order_intents ADD COLUMN notional TEXT NOT NULL DEFAULT '0';
ALTER TABLE levels ADD COLUMN closed_qty TEXT;
ALTER TABLE levels ADD COLUMN avg_price TEXT;
ALTER TABLE levels ADD COLUMN close_orders BIGINT;
CREATE INDEX levels_by_updated ON levels (status, updated_at);
CREATE INDEX alerts_by_status ON alerts (status, triggered_at);
CREATE INDEX notifications_by_delivery ON notifications (status, delivered_at)
