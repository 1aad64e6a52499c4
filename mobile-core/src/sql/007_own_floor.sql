-- The highest change counter this device had handed out when it last dropped records a pull
-- told it to drop: every value it wrote with a higher counter is still here, so a pull need not
-- send those back (the server is told so in each pull).
ALTER TABLE device ADD COLUMN own_floor INTEGER NOT NULL DEFAULT 0;
-- A phone upgraded to this version may have dropped records before it kept the floor (and a
-- server of this version keeps its counters already): it starts at every change it made.
UPDATE device SET own_floor = MAX(0, next_counter - 1);
