-- Where each device's first accepted write stands in the sequence (`store::scope`): a pull from
-- no cursor of a device that wrote at or below a compaction's horizon may hold records whose
-- drops the compaction removed, and is told to drop those (`store::pull`). Devices that wrote
-- before this column existed (a change counter processed, or a village written in) are taken
-- to have written from the start.
ALTER TABLE device ADD COLUMN first_write_seq BIGINT;
UPDATE device SET first_write_seq = 0
    WHERE last_counter > 0 OR id IN (SELECT device FROM device_village);
