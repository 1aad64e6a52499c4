CREATE TABLE device (
    -- The single row describing this replica: its node id, clock and change counter.
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node TEXT NOT NULL,
    clock_last INTEGER NOT NULL DEFAULT 0,
    clock_offset_ms INTEGER NOT NULL DEFAULT 0,
    next_counter INTEGER NOT NULL DEFAULT 1,
    user_name TEXT NOT NULL DEFAULT 'local'
);

CREATE TABLE record (
    -- One row per entity on the device: its merged field state (JSON, every field with its
    -- stamp) and the summary columns that lists and searches read through indexes.
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    village TEXT,
    label TEXT NOT NULL DEFAULT '',
    id_number TEXT,
    name TEXT,
    plate TEXT,
    address TEXT,
    phone TEXT,
    review_status TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_hlc INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX record_kind_village ON record (kind, village, updated_hlc);
CREATE INDEX record_id_number ON record (id_number) WHERE id_number IS NOT NULL;
CREATE INDEX record_name ON record (name) WHERE name IS NOT NULL;
CREATE INDEX record_plate ON record (plate) WHERE plate IS NOT NULL;
CREATE INDEX record_address ON record (address) WHERE address IS NOT NULL;
CREATE INDEX record_phone ON record (phone) WHERE phone IS NOT NULL;

CREATE TABLE link (
    -- One row per reference from one record's field to another record (a residence's person,
    -- a vehicle's owner...), so a record page finds what points at it without a scan.
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    field TEXT NOT NULL,
    PRIMARY KEY (target, source, field)
) WITHOUT ROWID;

CREATE TABLE outbox (
    -- One row per local action whose changes the server has not yet made durable: the field
    -- changes it made (JSON: counter, field, value unless the record still holds it, base stamp,
    -- refusal), all with one stamp; NULL when they are exactly the record's fields with that
    -- stamp. `pending` counts those still to push, `refused` those refused for good.
    first_counter INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    changes TEXT,
    pending INTEGER NOT NULL,
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_refused ON outbox (entity) WHERE refused > 0;
CREATE INDEX outbox_hlc ON outbox (hlc);
