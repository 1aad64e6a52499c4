CREATE INDEX field_ref ON field (field, value)
    -- Who points at a record (residences, vehicles, merged duplicates): for record pages and merges.
    WHERE field IN ('person', 'house', 'owner', 'merged_into');

CREATE TABLE watch_rule (
    -- One entry of the watch list, kept by administrators: an ID number, or a risk region as a
    -- division prefix (2, 4 or 6 digits).
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('id_number', 'region')),
    value TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    added_by INTEGER REFERENCES account (id),
    added_ms INTEGER NOT NULL,
    UNIQUE (kind, value)
);

CREATE TABLE alert (
    -- A person who matched a watch rule, raised once per person and rule; the rule's text is
    -- copied so that removing a rule keeps its alerts readable.
    id INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    rule_kind TEXT NOT NULL,
    rule_value TEXT NOT NULL,
    raised_ms INTEGER NOT NULL,
    device TEXT,
    account INTEGER,
    acknowledged_ms INTEGER,
    acknowledged_by INTEGER,
    UNIQUE (entity, rule_kind, rule_value)
);
CREATE INDEX alert_open ON alert (acknowledged_ms, id);

CREATE TABLE duplicate_dismissal (
    -- A candidate pair a reviewer judged to be two people (`a` < `b`): not proposed again.
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    account INTEGER,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;

-- Console lists and the dashboard at district scale: a station's newest records in order, and
-- counts that the index answers without reading the rows.
CREATE INDEX summary_kind_recent ON summary (kind, updated_seq);
CREATE INDEX summary_recent ON summary (updated_seq);
CREATE INDEX summary_village_recent ON summary (village, kind, updated_seq);
DROP INDEX summary_list;
CREATE INDEX summary_list ON summary (village, kind, review_status, deleted, updated_seq);
DROP INDEX summary_created;
CREATE INDEX summary_created ON summary (village, created_at, deleted);
CREATE INDEX summary_officer ON summary (village, created_by, review_status, deleted);

CREATE TABLE device_village (
    -- A village whose records a device wrote (its own captures are on it whether or not the
    -- server sent them). When the village is no longer the officer's, pulls tell the device to drop
    -- its records until the device's cursor shows it applied that page (`purged_seq`).
    device TEXT NOT NULL,
    village TEXT NOT NULL,
    purged_seq INTEGER,
    PRIMARY KEY (device, village)
) WITHOUT ROWID;
