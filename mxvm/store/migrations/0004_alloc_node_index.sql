-- The node's allocation index at the allocation's last change that its agent must act on
-- (placed, or told to stop), stamped under the node's row lock in the same transaction that
-- bumps the index. An agent's long-poll then carries only what changed since the index the
-- agent has seen, instead of every allocation of the node each time. Rows from before this
-- column have 0: an agent that asks from index 0 gets everything anyway.
ALTER TABLE allocations ADD COLUMN node_index bigint NOT NULL DEFAULT 0;
