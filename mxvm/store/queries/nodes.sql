-- name: node_by_name
SELECT * FROM nodes WHERE name = $1;

-- name: node_get
SELECT * FROM nodes WHERE id = $1;

-- name: node_list
SELECT * FROM nodes ORDER BY name;

-- name: node_subnets
SELECT subnet FROM nodes WHERE subnet IS NOT NULL;

-- name: node_claim
-- Whose a node name is: the coordinator checks this before registering the name again.
SELECT id, node_key, address FROM nodes WHERE name = $1;

-- name: node_retire_name
-- A new agent takes over the name of a node that is not live: the node keeps its id, history
-- and subnet (until collected) under a name of its own, so that its old agent, should it come
-- back, runs as that separate node, never as the new one. Only while the name's key is still
-- the one checked ($2), or it was taken meanwhile: no row.
UPDATE nodes SET name = left(name, 50) || '.old-' || left(id, 8), modified_at = now()
WHERE id = $1 AND node_key IS NOT DISTINCT FROM $2
RETURNING name;

-- name: node_upsert
-- Registration: a node that registers again under the same name keeps its id and subnet.
-- Only if the name's key is still the one the coordinator checked ($18): a registration that
-- raced this one and took the name leaves no row (refused).
INSERT INTO nodes (
    id, name, address, status, eligibility,
    cpu_millicores, memory_mb, disk_mb,
    reserved_cpu_millicores, reserved_memory_mb, reserved_disk_mb,
    devices, attributes, drivers, host_volumes, subnet, last_heartbeat, agent_url, agent_secret,
    node_key
) VALUES (
    $1, $2, $3, 'ready', 'eligible', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::cidr, now(),
    $15, $16, $17
)
ON CONFLICT (name) DO UPDATE SET
    address = EXCLUDED.address,
    status = 'ready',
    cpu_millicores = EXCLUDED.cpu_millicores,
    memory_mb = EXCLUDED.memory_mb,
    disk_mb = EXCLUDED.disk_mb,
    reserved_cpu_millicores = EXCLUDED.reserved_cpu_millicores,
    reserved_memory_mb = EXCLUDED.reserved_memory_mb,
    reserved_disk_mb = EXCLUDED.reserved_disk_mb,
    devices = EXCLUDED.devices,
    attributes = EXCLUDED.attributes,
    drivers = EXCLUDED.drivers,
    host_volumes = EXCLUDED.host_volumes,
    subnet = COALESCE(nodes.subnet, EXCLUDED.subnet),
    agent_url = EXCLUDED.agent_url,
    agent_secret = EXCLUDED.agent_secret,
    node_key = EXCLUDED.node_key,
    last_heartbeat = now(),
    alloc_index = nodes.alloc_index + 1,
    modified_at = now()
WHERE nodes.node_key IS NOT DISTINCT FROM $18
RETURNING *, (xmax = 0) AS inserted;

-- name: node_set_eligibility
-- Not on a draining node (what the scheduler placed there the drain would stop): no row.
UPDATE nodes SET eligibility = $2, modified_at = now()
WHERE id = $1 AND NOT (drain AND $2 = 'eligible')
RETURNING *;

-- name: node_heartbeat
-- Postgres keeps a coarse copy of the heartbeat (the Redis lease is the fine one): written only
-- when the node comes back or the stored value is older than $2 seconds. `came_back` from the
-- status before the update (RETURNING alone sees the new one); the row lock makes a second
-- heartbeat racing this one see 'ready'.
WITH before AS (SELECT id, status FROM nodes WHERE id = $1 FOR UPDATE)
UPDATE nodes AS n
SET last_heartbeat = now(),
    status = 'ready',
    alloc_index = CASE WHEN n.status = 'down' THEN n.alloc_index + 1 ELSE n.alloc_index END,
    modified_at = CASE WHEN n.status <> 'ready' THEN now() ELSE n.modified_at END
FROM before
WHERE n.id = before.id
  AND (before.status <> 'ready' OR n.last_heartbeat < now() - make_interval(secs => $2))
RETURNING n.id, before.status <> 'ready' AS came_back;

-- name: node_exists
SELECT status FROM nodes WHERE id = $1;

-- name: nodes_ready_ids
SELECT id FROM nodes WHERE status = 'ready';

-- name: nodes_mark_down
UPDATE nodes SET status = 'down', alloc_index = alloc_index + 1, modified_at = now()
WHERE id = ANY($1::text[]) AND status <> 'down'
RETURNING id;

-- name: node_alloc_index
SELECT alloc_index FROM nodes WHERE id = $1;

-- name: nodes_bump_index
-- Wakes the agents of these nodes: their long-poll sees a new index.
WITH bumped AS (
    UPDATE nodes SET alloc_index = alloc_index + 1 WHERE id = ANY($1::text[]) RETURNING id
)
SELECT pg_notify('mxvm_node', string_agg(id, ',')) FROM bumped HAVING count(*) > 0;

-- name: nodes_insert_many
-- Bulk registration of new nodes (imports, benchmarks); names must be new.
INSERT INTO nodes (
    id, name, address, status, eligibility,
    cpu_millicores, memory_mb, disk_mb,
    reserved_cpu_millicores, reserved_memory_mb, reserved_disk_mb,
    devices, attributes, drivers, host_volumes, subnet, last_heartbeat
)
SELECT u.id, u.name, u.address, 'ready', 'eligible', u.cpu, u.memory, u.disk,
       u.rcpu, u.rmemory, u.rdisk, u.devices::jsonb, u.attributes::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(u.drivers::jsonb)),
       u.host_volumes::jsonb, u.subnet::cidr, now()
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::int[], $8::int[],
    $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]
) AS u(id, name, address, cpu, memory, disk, rcpu, rmemory, rdisk,
       devices, attributes, drivers, host_volumes, subnet);

-- name: node_agent_endpoint
SELECT agent_url, agent_secret FROM nodes WHERE id = $1;

-- name: node_devices_for_update
SELECT devices FROM nodes WHERE id = $1 FOR UPDATE;

-- name: node_set_devices
UPDATE nodes SET devices = $2::jsonb, modified_at = now() WHERE id = $1 RETURNING *;

-- name: allocs_fail_on_device
-- The live allocation holding a device that went bad fails, as if its agent had said so: the
-- device claim goes with it (trigger) and the reschedule policy decides on a replacement.
UPDATE allocations
SET client_status = 'failed',
    client_description = $3,
    events = events || jsonb_build_array(jsonb_build_object(
        'time', now(), 'type', 'failed', 'message', $3::text)),
    modified_at = now()
WHERE live AND id IN (
    SELECT allocation_id FROM allocation_devices WHERE node_id = $1 AND device_id = $2
)
RETURNING id, job_id;

-- name: status_counts
-- How many nodes and jobs are in each status (the cluster status page).
SELECT 'nodes' AS kind, status, count(*) AS n FROM nodes GROUP BY status
UNION ALL
SELECT 'jobs' AS kind, status, count(*) AS n FROM jobs GROUP BY status;

-- name: node_lock
-- Serialises a drain or a batch of status reports with plans (which lock the node row too)
-- and with drain completion. The node row is always locked before its allocations' rows.
SELECT id FROM nodes WHERE id = $1 FOR UPDATE;

-- name: drain_live_allocs
-- The live allocations on the draining node, with what the drain decides by
-- (mxvm/scheduler/drain.py): their job's type, whether they run yet, whether they are
-- stopping already.
SELECT a.id, a.job_id, j.type AS job_type, a.client_status = 'running' AS running,
       a.desired_status = 'stop' AS stopping
FROM allocations AS a JOIN jobs AS j ON j.id = a.job_id
WHERE a.node_id = $1 AND a.live
ORDER BY a.id;

-- name: drain_job_availability
-- Per service job: the allocations it wants, how many its migrate policy lets a drain take
-- down at once (1 for jobs submitted before the policy existed), and how many of its
-- allocations meant to run are running now, on any node.
SELECT j.id,
       (j.spec ->> 'count')::int AS count,
       coalesce((j.spec -> 'migrate' ->> 'max_parallel')::int, 1) AS max_parallel,
       (SELECT count(*) FROM allocations AS a
        WHERE a.job_id = j.id AND a.live AND a.desired_status = 'run'
          AND a.client_status = 'running')::int AS running
FROM jobs AS j
WHERE j.id = ANY($1::text[])
ORDER BY j.id
-- Two drains stepping at once (a drain just started, the drainer on another node) count a
-- job one after the other, so together they take down no more than max_parallel.
FOR UPDATE OF j;

-- name: node_set_drain
-- Enabling marks the node ineligible and notes how the drain proceeds ($3: seconds to the
-- deadline, NULL for none); what to stop is decided after, and the flag clears once nothing
-- is left (nodes_drain_complete). Disabling keeps the eligibility as it is.
UPDATE nodes
SET drain = $2,
    drain_deadline = CASE WHEN $2 THEN now() + make_interval(secs => $3) END,
    drain_ignore_system = $2 AND $4,
    eligibility = CASE WHEN $2 THEN 'ineligible' ELSE eligibility END,
    modified_at = now()
WHERE id = $1
RETURNING *;

-- name: node_drain_state
-- The draining node's strategy, and whether its deadline has passed (by the database's
-- clock, the one that set it).
SELECT drain, drain_ignore_system,
       drain_deadline IS NOT NULL AND drain_deadline <= now() AS past_deadline
FROM nodes WHERE id = $1;

-- name: nodes_draining
SELECT id FROM nodes WHERE drain ORDER BY id;

-- name: nodes_lock_draining
SELECT id FROM nodes WHERE id = ANY($1::text[]) AND drain ORDER BY id FOR UPDATE;

-- name: nodes_drain_complete
-- A separate statement after nodes_lock_draining, so it reads what a drain committed
-- meanwhile. Complete once nothing live is left on the node but the system jobs the drain
-- leaves running.
UPDATE nodes AS n
SET drain = false, drain_deadline = NULL, drain_ignore_system = false, modified_at = now()
WHERE n.id = ANY($1::text[]) AND n.drain AND NOT EXISTS (
    SELECT 1 FROM allocations AS a JOIN jobs AS j ON j.id = a.job_id
    WHERE a.node_id = n.id AND a.live
      AND NOT (n.drain_ignore_system AND j.type IN ('system', 'sysbatch'))
)
RETURNING id;
