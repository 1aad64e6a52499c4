-- A record dropped (its village taken away) drops the links from it: found by their source, not
-- by a scan of every link (8 ms a record at a village's 60,000 links).
CREATE INDEX link_source ON link (source);
