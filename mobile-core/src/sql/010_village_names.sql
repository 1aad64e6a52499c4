-- The names of the session's villages, by code (JSON), as the server gave them at sign-in and
-- at each refresh: a phone shows 桥西社区居民委员会, not 441303006001.
ALTER TABLE session ADD COLUMN village_names TEXT NOT NULL DEFAULT '{}';
