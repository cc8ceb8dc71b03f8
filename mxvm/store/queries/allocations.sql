-- name: alloc_get
SELECT * FROM allocations WHERE id = $1;

-- name: allocs_get_for_update
SELECT id, node_id, client_status FROM allocations WHERE id = ANY($1::text[])
ORDER BY id FOR UPDATE;

-- name: alloc_list
SELECT * FROM allocations ORDER BY created_at DESC, id LIMIT $1;

-- name: alloc_list_job
SELECT * FROM allocations WHERE job_id = $1 ORDER BY idx, created_at;

-- name: alloc_list_jobs
SELECT * FROM allocations WHERE job_id = ANY($1::text[]) ORDER BY idx, created_at;

-- name: alloc_list_node
SELECT * FROM allocations WHERE node_id = $1 ORDER BY created_at DESC, id;

-- name: alloc_node_desired
-- What a node's agent must converge to, in one statement (one consistent view): a row per
-- live allocation (`live_id`) with the node's index. No row: no such node; one row with a
-- NULL live_id: a node with nothing to run. Only the allocations that changed after index $2
-- (their stamp, allocations.node_index, is newer) come in full, with their job's spec; all of
-- them do when $2 is 0, or when it is past the node's index (an agent that knew another
-- incarnation of this node); the others' columns are NULL, so an answer costs what changed.
-- Without the allocations' event history: the agent never reads it, and it grows with every
-- transition and restart (a long-poll answer of 70 allocations was half events). The job's
-- spec comes as text, for pydantic's own JSON parser (~40 % less time per answer).
SELECT n.alloc_index AS node_index, l.id AS live_id,
       a.id, a.eval_id, a.job_id, a.job_version, a.node_id, a.name, a.idx, a.desired_status,
       a.desired_description, a.client_status, a.client_description, a.cpu_millicores,
       a.memory_mb, a.disk_mb, a.device_ids, a.ports, a.ip, a.exit_code,
       a.previous_allocation, a.reschedule_attempts, '[]'::jsonb AS events, a.created_at,
       a.modified_at, j.spec::text AS job_spec
FROM nodes n
LEFT JOIN allocations l ON l.node_id = n.id AND l.live
LEFT JOIN allocations a ON a.id = l.id
    AND ($2::bigint = 0 OR $2::bigint > n.alloc_index OR l.node_index > $2::bigint)
LEFT JOIN jobs j ON j.id = a.job_id
WHERE n.id = $1
ORDER BY l.created_at, l.id;

-- name: allocs_update_client
-- Returns only what the caller acts on (which allocations ended, and their jobs): building
-- whole allocations, event history included, was most of a status report's cost.
UPDATE allocations AS a
SET client_status = u.status, client_description = u.description,
    exit_code = COALESCE(u.exit_code, a.exit_code), events = a.events || u.events::jsonb,
    modified_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[])
    AS u(id, status, description, exit_code, events)
WHERE a.id = u.id
RETURNING a.id, a.job_id, a.client_status;

-- name: allocs_mark_lost
UPDATE allocations
SET client_status = 'lost',
    client_description = 'node ' || node_id || ' is down',
    events = events || jsonb_build_array(jsonb_build_object(
        'time', now(), 'type', 'lost', 'message', 'node ' || node_id || ' stopped heartbeating')),
    modified_at = now()
WHERE node_id = ANY($1::text[]) AND live
RETURNING id, job_id;
