CREATE TABLE summary (
    -- One row per entity: what the console lists, filters and searches, derived from the
    -- entity's current fields after every write.
    entity TEXT PRIMARY KEY,
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
) WITHOUT ROWID;
CREATE INDEX summary_list ON summary (village, kind, review_status, updated_seq);
CREATE INDEX summary_id_number ON summary (id_number) WHERE id_number IS NOT NULL;
CREATE INDEX summary_name ON summary (name) WHERE name IS NOT NULL;
CREATE INDEX summary_plate ON summary (plate) WHERE plate IS NOT NULL;
CREATE INDEX summary_address ON summary (address) WHERE address IS NOT NULL;
CREATE INDEX summary_phone ON summary (phone) WHERE phone IS NOT NULL;
CREATE INDEX summary_created ON summary (village, created_at);

INSERT INTO summary (entity, kind, village, label, deleted, updated_seq)
    SELECT id, kind, village, '', 0, 0 FROM entity;

CREATE TABLE console_session (
    -- One signed-in browser: the cookie's SHA-256, its account and its CSRF token.
    hash TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES account (id),
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit (
    -- One audited action: sign-ins, reviews, exports, views of a full ID number.
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    account INTEGER,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
