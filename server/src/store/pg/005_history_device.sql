-- Each device's accepted actions in order: a pull from no cursor by a device that wrote below a
-- compaction's horizon reads which records it wrote (`store::pull`), and without this
-- index every such pull (a retried first page, a hostile officer's repeated ones) read the
-- whole history. New entries go at the end of their device's run.
CREATE INDEX history_device ON history (device, seq);
