-- Node drain: the node's allocations are being stopped so that they run elsewhere. Cleared by
-- the coordinator once none of the allocations it stopped is live any more.
ALTER TABLE nodes ADD COLUMN drain boolean NOT NULL DEFAULT false;
