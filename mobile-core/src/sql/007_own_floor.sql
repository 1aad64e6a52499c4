-- The highest change counter this device had handed out when it last dropped records a pull
-- told it to drop: every value it wrote with a higher counter is still here, so a pull need not
-- send those back (the server is told so in each pull).
ALTER TABLE device ADD COLUMN own_floor INTEGER NOT NULL DEFAULT 0;
