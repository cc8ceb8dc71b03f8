-- The control plane's state. Invariants live here as constraints, not in Python.

CREATE TABLE cluster_epoch (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL CHECK (epoch >= 0)
);
INSERT INTO cluster_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE nodes (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    address text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('initializing', 'ready', 'down')),
    eligibility text NOT NULL CHECK (eligibility IN ('eligible', 'ineligible')),
    cpu_millicores integer NOT NULL CHECK (cpu_millicores >= 0),
    memory_mb integer NOT NULL CHECK (memory_mb >= 0),
    disk_mb integer NOT NULL CHECK (disk_mb >= 0),
    reserved_cpu_millicores integer NOT NULL DEFAULT 0
        CHECK (reserved_cpu_millicores BETWEEN 0 AND cpu_millicores),
    reserved_memory_mb integer NOT NULL DEFAULT 0
        CHECK (reserved_memory_mb BETWEEN 0 AND memory_mb),
    reserved_disk_mb integer NOT NULL DEFAULT 0 CHECK (reserved_disk_mb BETWEEN 0 AND disk_mb),
    devices jsonb NOT NULL DEFAULT '[]',
    attributes jsonb NOT NULL DEFAULT '{}',
    drivers text[] NOT NULL DEFAULT '{}',
    host_volumes jsonb NOT NULL DEFAULT '{}',
    subnet cidr UNIQUE,
    last_heartbeat timestamptz,
    -- bumped whenever the node's allocations change; agents long-poll on it
    alloc_index bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id text PRIMARY KEY,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('service', 'batch', 'system', 'sysbatch')),
    priority integer NOT NULL CHECK (priority BETWEEN 1 AND 100),
    spec jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'dead')),
    status_description text NOT NULL DEFAULT '',
    stop boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
);
-- One live job per name; a stopped job's name can be used again.
CREATE UNIQUE INDEX jobs_live_name ON jobs (name) WHERE NOT stop;

CREATE TABLE evaluations (
    id text PRIMARY KEY,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    trigger text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('pending', 'complete', 'blocked', 'failed', 'canceled')),
    status_description text NOT NULL DEFAULT '',
    node_id text REFERENCES nodes (id) ON DELETE SET NULL,
    failures jsonb NOT NULL DEFAULT '{}',
    queued integer NOT NULL DEFAULT 0 CHECK (queued >= 0),
    wait_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX evaluations_pending ON evaluations (created_at) WHERE status = 'pending';
CREATE INDEX evaluations_blocked ON evaluations (job_id) WHERE status = 'blocked';
CREATE INDEX evaluations_job ON evaluations (job_id);

CREATE TABLE allocations (
    id text PRIMARY KEY,
    eval_id text,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    job_version integer NOT NULL DEFAULT 0,
    node_id text NOT NULL REFERENCES nodes (id),
    name text NOT NULL,
    idx integer NOT NULL CHECK (idx >= 0),
    desired_status text NOT NULL CHECK (desired_status IN ('run', 'stop')),
    desired_description text NOT NULL DEFAULT '',
    client_status text NOT NULL
        CHECK (client_status IN ('pending', 'starting', 'running', 'complete', 'failed', 'lost')),
    client_description text NOT NULL DEFAULT '',
    cpu_millicores integer NOT NULL CHECK (cpu_millicores >= 0),
    memory_mb integer NOT NULL CHECK (memory_mb >= 0),
    disk_mb integer NOT NULL CHECK (disk_mb >= 0),
    device_ids jsonb NOT NULL DEFAULT '[]',
    ports jsonb NOT NULL DEFAULT '{}',
    ip inet,
    exit_code integer,
    previous_allocation text,
    reschedule_attempts integer NOT NULL DEFAULT 0 CHECK (reschedule_attempts >= 0),
    events jsonb NOT NULL DEFAULT '[]',
    live boolean GENERATED ALWAYS AS
        (client_status NOT IN ('complete', 'failed', 'lost')) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_node_live ON allocations (node_id) WHERE live;
CREATE INDEX allocations_job ON allocations (job_id);

-- Live claims on a node's devices and ports. A row exists only while its allocation is live
-- (the trigger below removes it), so the primary keys say: a device or host port has at most
-- one active assignment per node.
CREATE TABLE allocation_devices (
    node_id text NOT NULL REFERENCES nodes (id),
    device_id text NOT NULL,
    allocation_id text NOT NULL REFERENCES allocations (id) ON DELETE CASCADE,
    PRIMARY KEY (node_id, device_id)
);
CREATE INDEX allocation_devices_alloc ON allocation_devices (allocation_id);

CREATE TABLE allocation_ports (
    node_id text NOT NULL REFERENCES nodes (id),
    port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    allocation_id text NOT NULL REFERENCES allocations (id) ON DELETE CASCADE,
    PRIMARY KEY (node_id, port)
);
CREATE INDEX allocation_ports_alloc ON allocation_ports (allocation_id);

CREATE FUNCTION release_allocation_claims() RETURNS trigger AS $$
BEGIN
    IF NOT NEW.live THEN
        DELETE FROM allocation_devices WHERE allocation_id = NEW.id;
        DELETE FROM allocation_ports WHERE allocation_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER allocations_release_claims
    AFTER UPDATE OF client_status ON allocations
    FOR EACH ROW WHEN (OLD.live AND NOT NEW.live)
    EXECUTE FUNCTION release_allocation_claims();
