-- The summary as a table ordered by when its rows were first written, its record id kept in an
-- index of its own. Ordered by record id (random), a push of new records put each summary row,
-- the widest row a record has, on a page of its own, and every index of the summary repeated the
-- id: a push's commit wrote most of the summary's pages. Now new rows go onto the last pages, and
-- the indexes point at them by a number.
CREATE TABLE summary_next (
    -- One row per entity: what the console lists, filters and searches, derived from the
    -- entity's current fields after every write.
    entity TEXT NOT NULL UNIQUE,
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
INSERT INTO summary_next (entity, kind, village, label, id_number, name, plate, address, phone,
                          review_status, deleted, created_by, created_at, updated_seq)
    SELECT entity, kind, village, label, id_number, name, plate, address, phone,
           review_status, deleted, created_by, created_at, updated_seq
    FROM summary ORDER BY updated_seq;
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
