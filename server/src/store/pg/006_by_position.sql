-- Scope, the history's index and the summary keyed by a record's position, not its random id,
-- as the SQLite schema's step 18 (server/src/store/sql/018_by_position.sql says why), with the
-- table of records compacted away whose history stays under the positions they had.
CREATE TABLE compacted (
    pos BIGINT PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL
);
CREATE INDEX compacted_id ON compacted (id);
INSERT INTO compacted (pos, id)
    SELECT -ROW_NUMBER() OVER (ORDER BY entity), entity
    FROM (SELECT DISTINCT h.entity FROM history h
          WHERE NOT EXISTS (SELECT 1 FROM entity e WHERE e.id = h.entity)) gone;

CREATE TABLE scope_next (
    pos BIGINT NOT NULL,
    village TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (pos, village)
);
INSERT INTO scope_next (pos, village)
    SELECT e.pos, s.village FROM scope s JOIN entity e ON e.id = s.entity ORDER BY 1, 2;
DROP TABLE scope;
ALTER TABLE scope_next RENAME TO scope;
CREATE INDEX scope_village ON scope (village, pos);

ALTER TABLE summary ADD COLUMN pos BIGINT;
UPDATE summary s SET pos = e.pos FROM entity e WHERE e.id = s.entity;
DELETE FROM summary WHERE pos IS NULL;
ALTER TABLE summary DROP CONSTRAINT summary_pkey;
ALTER TABLE summary ADD PRIMARY KEY (pos);

ALTER TABLE history ADD COLUMN pos BIGINT;
UPDATE history h SET pos = COALESCE((SELECT e.pos FROM entity e WHERE e.id = h.entity),
                                    (SELECT c.pos FROM compacted c WHERE c.id = h.entity));
ALTER TABLE history ALTER COLUMN pos SET NOT NULL;
DROP INDEX history_entity;
CREATE INDEX history_pos ON history (pos, seq);
