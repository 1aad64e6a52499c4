-- The last record position a device's last complete pull saw (`store::pull`): a cursor that
-- names no villages (an earlier server's, or one signed with a key since retired) is read with
-- it, and a device is told to drop only records placed by then or written by itself. Devices
-- that have not pulled since have none, and are bounded by nothing, as before.
ALTER TABLE device ADD COLUMN placed INTEGER;
