-- name: eval_get
SELECT * FROM evaluations WHERE id = $1;

-- name: evals_ready
-- The newest runnable evaluation per job: older ones for the same job are superseded by it.
SELECT * FROM (
    SELECT DISTINCT ON (job_id) *
    FROM evaluations
    WHERE status = 'pending' AND (wait_until IS NULL OR wait_until <= now())
    ORDER BY job_id, created_at DESC
) newest
ORDER BY created_at
LIMIT $1;

-- name: evals_finish_many
-- Record the outcomes; older open evaluations of each finished one's job are superseded by it.
-- A blocked outcome planned before the last capacity change ($6: the count the planner saw)
-- stays pending instead: that change's unblock could not see it. The count is read under a
-- share lock, so an unblock in flight is waited for (or waits for this, and then sees it).
-- Returns the evaluations left pending so.
WITH cap AS (
    SELECT seq FROM capacity_changes FOR SHARE
),
finished AS (
    UPDATE evaluations AS e
    SET status = CASE
            WHEN u.status = 'blocked' AND $6::bigint <> (SELECT seq FROM cap) THEN 'pending'
            ELSE u.status
        END,
        status_description = u.description, failures = u.failures::jsonb,
        queued = u.queued, modified_at = clock_timestamp()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
        AS u(id, status, description, failures, queued)
    WHERE e.id = u.id
    RETURNING e.id, e.job_id, e.created_at, e.status, u.status AS outcome
),
superseded AS (
    UPDATE evaluations AS e
    SET status = 'canceled', status_description = 'superseded by ' || f.id,
        modified_at = clock_timestamp()
    FROM finished f
    WHERE e.job_id = f.job_id AND e.id <> f.id AND e.status IN ('pending', 'blocked')
      AND e.created_at <= f.created_at
      AND (e.wait_until IS NULL OR e.wait_until <= now())
)
SELECT id FROM finished WHERE outcome = 'blocked' AND status = 'pending';

-- name: evals_insert_many
INSERT INTO evaluations (id, job_id, trigger, node_id, wait_until, status)
SELECT u.id, u.job_id, u.trigger, u.node_id, u.wait_until, 'pending'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
    AS u(id, job_id, trigger, node_id, wait_until)
RETURNING *;

-- name: capacity_changed
-- Counted before the unblock below, in a statement of its own: the unblock's snapshot then
-- includes any blocked outcome whose writer held the count's share lock (evals_finish_many).
UPDATE capacity_changes SET seq = seq + 1;

-- name: capacity_seq
SELECT seq FROM capacity_changes;

-- name: evals_unblock
-- Capacity changed: every blocked evaluation gets another try.
UPDATE evaluations SET status = 'pending', modified_at = clock_timestamp()
WHERE status = 'blocked'
RETURNING id;

-- name: evals_notify
SELECT pg_notify('mxvm_eval', '');
