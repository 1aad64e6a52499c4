-- A village's feed holds the current values of the records in the village, with the values
-- themselves, each once, at the sequence number it was last written or resent: a row whose field
-- is written again goes. A pull reads one village's rows in order, one range of one table,
-- where it read each value again from `field` (a lookup into a table ordered by record, whose
-- village's rows lie one to a page among the other villages'), and a snapshot of a village is
-- its feed up to a sequence number.
CREATE TABLE feed_next (
    -- One current value of a record in a village's scope, at the sequence number it was last
    -- written or resent.
    village TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (village, seq)
) WITHOUT ROWID;
-- Built from what each village's scope holds: the old feed's rows that were not superseded.
INSERT INTO feed_next (village, seq, entity, kind, field, value, hlc, node)
    SELECT s.village, f.seq, f.entity, e.kind, f.field, f.value, f.hlc, f.node
    FROM scope s JOIN entity e ON e.id = s.entity JOIN field f ON f.entity = s.entity
    ORDER BY s.village, f.seq;
DROP TABLE feed;
ALTER TABLE feed_next RENAME TO feed;
