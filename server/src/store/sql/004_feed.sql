CREATE TABLE feed (
    -- Each village's feed: a value at the sequence number it was written or resent, once per
    -- village the entity lies in. A pull reads its own villages' feeds in order instead of every
    -- change of the district. A row whose field has since been written again is superseded
    -- (its `seq` no longer the field's) and skipped.
    village TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entity TEXT NOT NULL,
    field TEXT NOT NULL,
    PRIMARY KEY (village, seq)
) WITHOUT ROWID;
INSERT INTO feed (village, seq, entity, field)
    SELECT s.village, f.seq, f.entity, f.field FROM field f JOIN scope s ON s.entity = f.entity;
-- Pulls no longer walk the whole district in sequence order.
DROP INDEX field_seq;
