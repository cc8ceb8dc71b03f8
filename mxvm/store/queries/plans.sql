-- name: epoch_get
SELECT epoch FROM cluster_epoch WHERE id = 1;

-- name: plan_lock_nodes
-- The epoch fence (it records the plan's epoch unless a newer leader already committed; its
-- row lock serialises plan application cluster-wide) and, only past it, the plan's node rows
-- locked (their index bumped, waking their agents' long-polls), in one round trip. The first
-- column says whether the fence held ($1: the epoch; NULL = a newer leader committed, and
-- nothing is locked); a row per locked node follows in the other columns (none when the plan
-- touches no node; a new leader claims its epoch with no node at all). The usage read next
-- sees every committed placement: READ COMMITTED takes a new snapshot per statement, so
-- that read must stay a statement of its own.
WITH fence AS (
    UPDATE cluster_epoch SET epoch = $1 WHERE id = 1 AND epoch <= $1 RETURNING epoch
), locked AS (
    UPDATE nodes SET alloc_index = alloc_index + 1
    WHERE id = ANY($2::text[]) AND EXISTS (SELECT 1 FROM fence)
    RETURNING id, status, eligibility, devices, subnet,
              cpu_millicores - reserved_cpu_millicores AS cpu,
              memory_mb - reserved_memory_mb AS memory,
              disk_mb - reserved_disk_mb AS disk
)
SELECT fence.epoch AS fenced, locked.*
FROM (SELECT 1) AS one LEFT JOIN fence ON true LEFT JOIN locked ON true;

-- name: plan_node_usage
-- What live allocations take on each node now, and which devices and ports they hold.
SELECT n.id AS node_id,
       COALESCE(u.cpu, 0) AS cpu, COALESCE(u.memory, 0) AS memory, COALESCE(u.disk, 0) AS disk,
       COALESCE(d.ids, '{}') AS devices, COALESCE(p.ports, '{}') AS ports,
       COALESCE(i.ips, '{}') AS ips
FROM unnest($1::text[]) AS n(id)
LEFT JOIN (
    SELECT node_id, sum(cpu_millicores)::bigint AS cpu, sum(memory_mb)::bigint AS memory,
           sum(disk_mb)::bigint AS disk
    FROM allocations WHERE live AND node_id = ANY($1::text[]) GROUP BY node_id
) u ON u.node_id = n.id
LEFT JOIN (
    SELECT node_id, array_agg(device_id) AS ids
    FROM allocation_devices WHERE node_id = ANY($1::text[]) GROUP BY node_id
) d ON d.node_id = n.id
LEFT JOIN (
    SELECT node_id, array_agg(port) AS ports
    FROM allocation_ports WHERE node_id = ANY($1::text[]) GROUP BY node_id
) p ON p.node_id = n.id
LEFT JOIN (
    SELECT node_id, array_agg(host(ip)) AS ips
    FROM allocation_ips WHERE node_id = ANY($1::text[]) GROUP BY node_id
) i ON i.node_id = n.id;

-- name: plan_stopped_jobs
-- Which of the jobs a plan places for are stopped. Share-locked after the nodes (the order
-- plans and drains keep): a stop in flight is waited for and seen, or waits for this commit
-- and then stops what it placed. Nothing is placed for a stopped job: its VMs would start
-- only to be stopped by the stop's evaluation, and a batch command would run meanwhile.
SELECT id, stop FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE;

-- name: nodes_notify
-- One notification per payload; a payload is many node ids, comma-separated.
SELECT count(pg_notify('mxvm_node', p)) FROM unnest($1::text[]) AS p;

-- name: plan_stop
-- Stops placed allocations (a plan's stops, a node's drain), and in the same statement bumps
-- their nodes' index and stamps each allocation with it (allocations.node_index), the node
-- row locked before the allocation's as everywhere; the caller wakes the agents (NOTIFY).
WITH target AS (
    SELECT a.id, a.node_id, s.description
    FROM allocations AS a JOIN unnest($1::text[], $2::text[]) AS s(id, description) USING (id)
    WHERE a.desired_status = 'run'
), bumped AS (
    UPDATE nodes SET alloc_index = alloc_index + 1
    WHERE id IN (SELECT node_id FROM target)
    RETURNING id, alloc_index
)
UPDATE allocations AS a
SET desired_status = 'stop', desired_description = t.description, node_index = b.alloc_index,
    modified_at = now()
FROM target AS t JOIN bumped AS b ON b.id = t.node_id
WHERE a.id = t.id AND a.desired_status = 'run'
RETURNING a.id, a.node_id;

-- name: plan_insert
-- The admitted placements with their IP, device and port claims, and the wake-up of their
-- nodes' agents ($22: notification payloads), in one statement: one round trip, and the
-- claims' foreign keys are checked at its end, when the allocations are there.
WITH allocs AS (
    INSERT INTO allocations (
        id, eval_id, job_id, job_version, node_id, name, idx,
        cpu_millicores, memory_mb, disk_mb, device_ids, ports,
        previous_allocation, reschedule_attempts, ip, desired_status, client_status, events,
        node_index
    )
    SELECT u.id, u.eval_id, u.job_id, u.job_version, u.node_id, u.name, u.idx,
           u.cpu, u.memory, u.disk, u.device_ids::jsonb, u.ports::jsonb,
           u.previous_allocation, u.reschedule_attempts, u.ip::inet, 'run', 'pending',
           jsonb_build_array(jsonb_build_object(
               'time', now(), 'type', 'placed', 'message', 'placed on node ' || u.node_id)),
           -- plan_lock_nodes bumped (and locked) the node earlier in this transaction
           (SELECT n.alloc_index FROM nodes AS n WHERE n.id = u.node_id)
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::int[],
        $8::int[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[], $14::int[],
        $15::text[]
    ) AS u(id, eval_id, job_id, job_version, node_id, name, idx,
           cpu, memory, disk, device_ids, ports, previous_allocation, reschedule_attempts, ip)
    RETURNING id
), ips AS (
    INSERT INTO allocation_ips (ip, node_id, allocation_id)
    SELECT u.ip::inet, u.node_id, u.id
    FROM unnest($1::text[], $5::text[], $15::text[]) AS u(id, node_id, ip)
    WHERE u.ip IS NOT NULL
), devices AS (
    INSERT INTO allocation_devices (node_id, device_id, allocation_id)
    SELECT * FROM unnest($16::text[], $17::text[], $18::text[])
), ports AS (
    INSERT INTO allocation_ports (node_id, port, allocation_id)
    SELECT * FROM unnest($19::text[], $20::int[], $21::text[])
)
SELECT (SELECT count(*) FROM allocs) AS inserted,
       (SELECT count(pg_notify('mxvm_node', p)) FROM unnest($22::text[]) AS p) AS notified;
