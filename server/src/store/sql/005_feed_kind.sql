-- A feed row carries its record's kind, and a village's feed holds only records that lie in the
-- village (their rows go when they leave it): a pull reads the feed and each value, without
-- looking up the record's kind and scope for every value. Superseded rows are dropped on the way.
CREATE TABLE feed_next (
    -- Each village's feed: a value at the sequence number it was written or resent, once per
    -- village the entity lies in. A row whose field has since been written again is superseded
    -- (its `seq` no longer the field's) and skipped.
    village TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    field TEXT NOT NULL,
    PRIMARY KEY (village, seq)
) WITHOUT ROWID;
INSERT INTO feed_next (village, seq, entity, kind, field)
    SELECT q.village, q.seq, q.entity, e.kind, q.field FROM feed q
    JOIN entity e ON e.id = q.entity
    JOIN field f ON f.entity = q.entity AND f.field = q.field AND f.seq = q.seq
    WHERE EXISTS (SELECT 1 FROM scope s WHERE s.entity = q.entity AND s.village = q.village);
DROP TABLE feed;
ALTER TABLE feed_next RENAME TO feed;
