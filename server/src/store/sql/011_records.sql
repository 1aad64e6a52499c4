-- Record-granular state. A record's fields were a row each in `field`, in the feed and in the
-- history: a push of one new person wrote some fifty rows and their index entries. Now a record is
-- one row holding its merged state, a village's feed names each of its records once, and the
-- history holds one row per accepted action.

-- Node ids of each record's values, numbered in order: the state lists them once.
CREATE TEMP TABLE record_node AS
    SELECT entity, node, dense_rank() OVER (PARTITION BY entity ORDER BY node) - 1 AS i
    FROM (SELECT DISTINCT entity, node FROM field);
CREATE INDEX temp.record_node_key ON record_node (entity, node);

CREATE TABLE entity_next (
    -- One record: its kind, home village, the sequence number of its last write or resend (where
    -- it stands in its villages' feeds) and its merged state: `{"n": [node ids], "f": {field:
    -- [value, clock, node index, sequence number, device change counter]}}`.
    pos INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    village TEXT,
    seq INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{"n":[],"f":{}}'
);
-- A village's records next to each other, in the order its feed names them: a bootstrap reads
-- them so.
INSERT INTO entity_next (id, kind, village, seq, state)
    SELECT e.id, e.kind, e.village,
        COALESCE((SELECT MAX(f.seq) FROM field f WHERE f.entity = e.id), 0),
        json_object(
            'n', json(COALESCE((SELECT json_group_array(node ORDER BY i)
                                FROM record_node WHERE entity = e.id),
                               '[]')),
            'f', json(COALESCE((SELECT json_group_object(f.field,
                                    json_array(json(f.value), f.hlc, n.i, f.seq, 0))
                                FROM field f JOIN record_node n ON n.entity = f.entity AND n.node = f.node
                                WHERE f.entity = e.id),
                               '{}')))
    FROM entity e ORDER BY e.village, 4;
DROP TABLE entity;
ALTER TABLE entity_next RENAME TO entity;
DROP TABLE record_node;

-- Who points at a record (residences, vehicles, merged duplicates) and which house holds an
-- address code, kept as the values are written.
CREATE TABLE link (
    -- One reference field's value (or an address code) of a record.
    field TEXT NOT NULL,
    target TEXT NOT NULL,
    entity TEXT NOT NULL,
    PRIMARY KEY (field, target, entity)
) WITHOUT ROWID;
INSERT INTO link (field, target, entity)
    SELECT field, value ->> '$', entity FROM field
    WHERE field IN ('person', 'house', 'owner', 'merged_into', 'address_code')
      AND json_type(value) = 'text'
    ORDER BY 1, 2, 3;

-- Each village's feed: a record once, at its number, read with its state.
DROP TABLE feed;
CREATE TABLE feed (
    -- One record in a village's scope, at the sequence number of its last write or resend.
    village TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (village, seq)
) WITHOUT ROWID;
INSERT INTO feed (village, seq, pos)
    SELECT s.village, e.seq, e.pos FROM scope s JOIN entity e ON e.id = s.entity
    WHERE e.seq > 0 ORDER BY 1, 2;

-- The history: one row per action (the fields one stamp wrote on a record, from one device).
CREATE TABLE history_next (
    -- One accepted action; `changes` is `{field: [old value, old stamp, value, won]}`. Never
    -- updated or deleted.
    seq INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    stamp TEXT NOT NULL,
    device TEXT,
    account INTEGER,
    at_ms INTEGER NOT NULL,
    changes TEXT NOT NULL
);
-- An action is a run of consecutive rows of one record, stamp, device and account, as the
-- server writes them now (a run another write interrupted stays two entries, in order).
CREATE TEMP TABLE history_run AS
    SELECT *, SUM(fresh) OVER (ORDER BY seq) AS run FROM (
        SELECT h.*, CASE WHEN LAG(entity) OVER w IS entity AND LAG(stamp) OVER w IS stamp
                          AND LAG(device) OVER w IS device AND LAG(account) OVER w IS account
                         THEN 0 ELSE 1 END AS fresh
        FROM history h WINDOW w AS (ORDER BY seq));
INSERT INTO history_next (entity, kind, stamp, device, account, at_ms, changes)
    SELECT MIN(entity), MIN(kind), MIN(stamp), MIN(device), MIN(account), MIN(at_ms),
        json_group_object(field, json_array(json(old_value), old_stamp, json(value),
            json(CASE WHEN won THEN 'true' ELSE 'false' END)) ORDER BY seq)
    FROM history_run GROUP BY run ORDER BY run;
DROP TABLE history_run;
DROP TABLE history;
ALTER TABLE history_next RENAME TO history;
CREATE INDEX history_entity ON history (entity, seq);

DROP TABLE field;
