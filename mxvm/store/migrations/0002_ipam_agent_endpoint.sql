-- IPAM: every live allocation holds one address of its node's subnet, unique cluster-wide
-- (node subnets never overlap). Released with the other claims when the allocation ends.
CREATE TABLE allocation_ips (
    ip inet PRIMARY KEY,
    node_id text NOT NULL REFERENCES nodes (id),
    allocation_id text NOT NULL UNIQUE REFERENCES allocations (id) ON DELETE CASCADE
);
CREATE INDEX allocation_ips_node ON allocation_ips (node_id);

CREATE OR REPLACE FUNCTION release_allocation_claims() RETURNS trigger AS $$
BEGIN
    IF NOT NEW.live THEN
        DELETE FROM allocation_devices WHERE allocation_id = NEW.id;
        DELETE FROM allocation_ports WHERE allocation_id = NEW.id;
        DELETE FROM allocation_ips WHERE allocation_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Where the coordinator reaches a node's agent (logs, exec), and the secret it presents.
ALTER TABLE nodes ADD COLUMN agent_url text NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN agent_secret text NOT NULL DEFAULT '';
