-- Where each device stood at its last complete pull (a lower bound: written with
-- `last_sync_ms`): the lowest of the active devices' is the horizon below which a compaction
-- removes purge notes and tombstones (`store::retention`).
ALTER TABLE device ADD COLUMN pulled_seq INTEGER;
