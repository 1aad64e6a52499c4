-- A phone's pull carries the watch-list hits of its villages raised in the last days: found by
-- when they were raised, not by reading every alert.
CREATE INDEX alert_raised ON alert (raised_ms);
