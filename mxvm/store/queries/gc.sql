-- Garbage collection (mxvm.coordinator.collector): what is over, and has been for a while,
-- goes, so that the tables, the listings and the node subnet pool do not grow with history.
-- $1: how many seconds it must have been over; $2: at most this many rows a round.

-- name: gc_jobs
-- Jobs that are over: batch jobs complete, stopped jobs dead; nothing of theirs live, changed
-- lately or left to evaluate. (A system or sysbatch job that is not stopped is never over: a
-- node that joins gets it.) Their evaluations and allocations go with them (ON DELETE CASCADE).
DELETE FROM jobs
WHERE id IN (
    SELECT j.id FROM jobs j
    WHERE j.modified_at < now() - make_interval(secs => $1)
      AND ((j.type = 'batch' AND j.status = 'complete') OR (j.stop AND j.status = 'dead'))
      AND NOT EXISTS (
          SELECT 1 FROM allocations a
          WHERE a.job_id = j.id
            AND (a.live OR a.modified_at >= now() - make_interval(secs => $1)))
      AND NOT EXISTS (
          SELECT 1 FROM evaluations e
          WHERE e.job_id = j.id AND e.status IN ('pending', 'blocked'))
    ORDER BY j.modified_at
    LIMIT $2
    FOR UPDATE OF j SKIP LOCKED
)
RETURNING id;

-- name: gc_evaluations
-- Finished evaluations, but each job's newest (`mxvm job status` shows why it placed what it
-- did).
DELETE FROM evaluations
WHERE id IN (
    SELECT e.id FROM evaluations e
    WHERE e.status IN ('complete', 'failed', 'canceled')
      AND e.modified_at < now() - make_interval(secs => $1)
      AND e.id <> (
          SELECT newest.id FROM evaluations newest
          WHERE newest.job_id = e.job_id
          ORDER BY newest.created_at DESC, newest.id DESC
          LIMIT 1)
    ORDER BY e.modified_at
    LIMIT $2
    FOR UPDATE OF e SKIP LOCKED
)
RETURNING id;

-- name: gc_nodes
-- Nodes down that long (their subnets go back to the pool), with their ended allocations. A
-- node holding any allocation of a batch or sysbatch job stays until the job is collected:
-- an instance that completed there must not be run again.
WITH gone AS (
    SELECT n.id FROM nodes n
    WHERE n.status = 'down' AND n.modified_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (
          SELECT 1 FROM allocations a JOIN jobs j ON j.id = a.job_id
          WHERE a.node_id = n.id AND (a.live OR j.type IN ('batch', 'sysbatch')))
    ORDER BY n.modified_at
    LIMIT $2
    FOR UPDATE OF n SKIP LOCKED
),
allocs AS (
    DELETE FROM allocations a USING gone WHERE a.node_id = gone.id
)
DELETE FROM nodes n USING gone WHERE n.id = gone.id
RETURNING n.id, n.name;
