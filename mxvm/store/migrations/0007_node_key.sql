-- The key of the agent a node's name belongs to (kept in the agent's state dir). Another
-- agent registering the name is refused while the node is live. NULL: registered by an agent
-- older than the key, or not yet claimed; the next registration sets it.
ALTER TABLE nodes ADD COLUMN node_key text;
