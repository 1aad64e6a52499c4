-- Scope, the history's index and the summary keyed by a record's position (`entity.pos`, the
-- order records were first written in), not by its id. Ids are random: each of these put a new
-- record's entry on a page of its own, which the commit wrote to the log and the checkpoint
-- wrote again (some fourteen pages a new person at the district's scale, half of them these).
-- A new record's position comes after every other: its entries share the last pages.

-- Records compacted away (`store::retention`): their history stays, under the position they
-- had, and is found from their id here. A new record's position is past every one listed, so no
-- history is ever filed under two records. Records compacted before this step get positions
-- below zero.
CREATE TABLE compacted (
    -- A record removed by a compaction: the position its history is filed under.
    pos INTEGER PRIMARY KEY,
    id TEXT NOT NULL
);
CREATE INDEX compacted_id ON compacted (id);
INSERT INTO compacted (pos, id)
    SELECT -ROW_NUMBER() OVER (ORDER BY entity), entity
    FROM (SELECT DISTINCT h.entity FROM history h
          WHERE NOT EXISTS (SELECT 1 FROM entity e WHERE e.id = h.entity));

CREATE TABLE scope_next (
    -- One village whose devices receive a record (by its position): its own village and, for a
    -- person, the villages of the houses they live in.
    pos INTEGER NOT NULL,
    village TEXT NOT NULL,
    PRIMARY KEY (pos, village)
) WITHOUT ROWID;
INSERT INTO scope_next (pos, village)
    SELECT e.pos, s.village FROM scope s JOIN entity e ON e.id = s.entity ORDER BY 1, 2;
DROP TABLE scope;
ALTER TABLE scope_next RENAME TO scope;
CREATE INDEX scope_village ON scope (village, pos);

CREATE TABLE summary_next (
    -- One row per record, at its position: what the console lists, filters and searches,
    -- derived from the record's current fields after every write.
    pos INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    village TEXT,
    label TEXT NOT NULL,
    id_number TEXT,
    name TEXT,
    plate TEXT,
    address TEXT,
    phone TEXT,
    review_status TEXT,
    deleted INTEGER NOT NULL,
    created_by TEXT,
    created_at TEXT,
    updated_seq INTEGER NOT NULL
);
INSERT INTO summary_next (pos, entity, kind, village, label, id_number, name, plate, address,
                          phone, review_status, deleted, created_by, created_at, updated_seq)
    SELECT e.pos, s.entity, s.kind, s.village, s.label, s.id_number, s.name, s.plate, s.address,
           s.phone, s.review_status, s.deleted, s.created_by, s.created_at, s.updated_seq
    FROM summary s JOIN entity e ON e.id = s.entity ORDER BY e.pos;
DROP TABLE summary;
ALTER TABLE summary_next RENAME TO summary;
CREATE INDEX summary_id_number ON summary (id_number) WHERE id_number IS NOT NULL;
CREATE INDEX summary_name ON summary (name) WHERE name IS NOT NULL;
CREATE INDEX summary_plate ON summary (plate) WHERE plate IS NOT NULL;
CREATE INDEX summary_address ON summary (address) WHERE address IS NOT NULL;
CREATE INDEX summary_phone ON summary (phone) WHERE phone IS NOT NULL;
CREATE INDEX summary_kind_recent ON summary (kind, updated_seq);
CREATE INDEX summary_recent ON summary (updated_seq);
CREATE INDEX summary_village_recent ON summary (village, kind, updated_seq);
CREATE INDEX summary_list ON summary (village, kind, review_status, deleted, updated_seq);
CREATE INDEX summary_created ON summary (village, created_at, deleted, updated_seq);
CREATE INDEX summary_officer ON summary (village, created_by, review_status, deleted, updated_seq);

CREATE TABLE history_next (
    -- One accepted action, filed under its record's position; `changes` is `{field: [old
    -- value, old stamp, value, won]}`. Never updated or deleted.
    seq INTEGER PRIMARY KEY,
    pos INTEGER NOT NULL,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    stamp TEXT NOT NULL,
    device TEXT,
    account INTEGER,
    at_ms INTEGER NOT NULL,
    changes TEXT NOT NULL
);
INSERT INTO history_next (seq, pos, entity, kind, stamp, device, account, at_ms, changes)
    SELECT h.seq, COALESCE(e.pos, c.pos), h.entity, h.kind, h.stamp, h.device, h.account,
           h.at_ms, h.changes
    FROM history h LEFT JOIN entity e ON e.id = h.entity LEFT JOIN compacted c ON c.id = h.entity
    ORDER BY h.seq;
DROP TABLE history;
ALTER TABLE history_next RENAME TO history;
CREATE INDEX history_pos ON history (pos, seq);
CREATE INDEX history_device ON history (device, seq);
