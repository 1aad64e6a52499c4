CREATE TABLE meta (
    -- Server-wide settings and counters: the server's node id, the last sequence number issued.
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE station (
    -- One police station (派出所); in Daya Bay one per street.
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE village (
    -- One village or community committee, under the station that serves it.
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    station TEXT NOT NULL REFERENCES station (code)
) WITHOUT ROWID;

CREATE TABLE account (
    -- One person who signs in: an officer, a station reviewer or an administrator.
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('officer', 'reviewer', 'admin')),
    station TEXT REFERENCES station (code),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);

CREATE TABLE account_village (
    -- One village assigned to an officer (一村一警: usually exactly one).
    account INTEGER NOT NULL REFERENCES account (id),
    village TEXT NOT NULL REFERENCES village (code),
    PRIMARY KEY (account, village)
) WITHOUT ROWID;

CREATE TABLE device (
    -- One phone (or field client), registered at its first login; `last_counter` is the last
    -- change counter processed, written in the same transaction as the changes.
    id TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES account (id),
    name TEXT NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms INTEGER,
    last_sync_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_counter INTEGER NOT NULL DEFAULT 0,
    villages TEXT
) WITHOUT ROWID;

CREATE TABLE refresh_token (
    -- One refresh token, stored as its SHA-256; spent once used. Reusing a spent one revokes
    -- every token of the device.
    hash TEXT PRIMARY KEY,
    device TEXT NOT NULL REFERENCES device (id),
    account INTEGER NOT NULL REFERENCES account (id),
    issued_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX refresh_token_device ON refresh_token (device);

CREATE TABLE entity (
    -- One replicated entity: its kind and home village.
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    village TEXT
) WITHOUT ROWID;

CREATE TABLE field (
    -- The current (winning) value of one field of one entity, with its stamp and the sequence
    -- number at which it last changed or was resent; pulls read it in `seq` order.
    entity TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (entity, field)
) WITHOUT ROWID;
CREATE UNIQUE INDEX field_seq ON field (seq);

CREATE TABLE residence_link (
    -- One residence as scope needs it: who lives in which house, and whether still.
    residence TEXT PRIMARY KEY,
    person TEXT,
    house TEXT,
    open INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX residence_link_person ON residence_link (person);
CREATE INDEX residence_link_house ON residence_link (house);

CREATE TABLE scope (
    -- One village whose devices receive an entity: its own village and, for a person, the
    -- villages of the houses they live in.
    entity TEXT NOT NULL,
    village TEXT NOT NULL,
    PRIMARY KEY (entity, village)
) WITHOUT ROWID;
CREATE INDEX scope_village ON scope (village, entity);

CREATE TABLE purge (
    -- An entity that left a village's scope at a sequence number: that village's devices drop it.
    seq INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    village TEXT NOT NULL
);

CREATE TABLE history (
    -- Every accepted change, in order: the record's audit trail. Never updated or deleted.
    seq INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    field TEXT NOT NULL,
    old_value TEXT,
    old_stamp TEXT,
    value TEXT NOT NULL,
    stamp TEXT NOT NULL,
    won INTEGER NOT NULL,
    device TEXT,
    account INTEGER,
    at_ms INTEGER NOT NULL
);
CREATE INDEX history_entity ON history (entity, seq);

CREATE TABLE refusal (
    -- A change refused for good, kept so that a replayed push is answered as the first time.
    device TEXT NOT NULL,
    counter INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (device, counter)
) WITHOUT ROWID;

CREATE TABLE conflict (
    -- A concurrent edit: both values, both stamps and authors; settled by a reviewer's write.
    id INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    field TEXT NOT NULL,
    kept_value TEXT NOT NULL,
    kept_stamp TEXT NOT NULL,
    lost_value TEXT NOT NULL,
    lost_stamp TEXT NOT NULL,
    device TEXT,
    account INTEGER,
    at_ms INTEGER NOT NULL,
    settled_ms INTEGER
);
CREATE INDEX conflict_entity ON conflict (entity);
