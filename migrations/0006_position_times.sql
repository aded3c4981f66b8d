-- Positions ordered by the venue's time (not ours): a write never replaces a
-- row with an older `venue_time`. A position that goes flat keeps its row
-- (amount '0', a tombstone) so an older answer that still shows it open
-- cannot bring it back; readers skip flat rows and tombstones are pruned an
-- hour after their venue time. Rows from before this migration get time 0:
-- any fact from the venue replaces them. `prev_amount` is the amount before
-- the last write, so one conditional statement can say what it changed.
ALTER TABLE positions ADD COLUMN venue_time BIGINT NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN prev_amount TEXT NOT NULL DEFAULT '0';
