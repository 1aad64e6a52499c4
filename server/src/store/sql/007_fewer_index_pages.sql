-- Fewer index pages written per push: a push's commit writes every page it dirtied, and with
-- records' ids random, each index ordered by record id dirties a page per record.
--
-- Who lives where is read from the reference fields' index (`field_ref`) and the residences'
-- fields themselves: `residence_link` and its two indexes repeated them, three pages a residence.
DROP TABLE residence_link;
-- The summary rows of one village, capture time (to the second) and officer, which a phone's
-- batch is made of, were ordered by record id in these two indexes; with the sequence number of
-- the last write after them, a batch's rows go onto the last page or two. Queries read them by
-- the same leading columns as before (the dashboard's counts still without reading the rows).
DROP INDEX summary_created;
CREATE INDEX summary_created ON summary (village, created_at, deleted, updated_seq);
DROP INDEX summary_officer;
CREATE INDEX summary_officer ON summary (village, created_by, review_status, deleted, updated_seq);
