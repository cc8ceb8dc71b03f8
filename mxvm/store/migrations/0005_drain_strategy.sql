-- Paced drains: the deadline at which whatever still runs on a draining node is stopped at
-- once (NULL: none), and whether its system jobs stay. Both only mean something while
-- `drain` is on. Drains from before this column had stopped everything at once already.
ALTER TABLE nodes
    ADD COLUMN drain_deadline timestamptz,
    ADD COLUMN drain_ignore_system boolean NOT NULL DEFAULT false;
-- The leader's drainer looks for draining nodes every second.
CREATE INDEX nodes_draining ON nodes (id) WHERE drain;
