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
WITH finished AS (
    UPDATE evaluations AS e
    SET status = u.status, status_description = u.description, failures = u.failures::jsonb,
        queued = u.queued, modified_at = clock_timestamp()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
        AS u(id, status, description, failures, queued)
    WHERE e.id = u.id
    RETURNING e.id, e.job_id, e.created_at
)
UPDATE evaluations AS e
SET status = 'canceled', status_description = 'superseded by ' || f.id,
    modified_at = clock_timestamp()
FROM finished f
WHERE e.job_id = f.job_id AND e.id <> f.id AND e.status IN ('pending', 'blocked')
  AND e.created_at <= f.created_at
  AND (e.wait_until IS NULL OR e.wait_until <= now());

-- name: evals_insert_many
INSERT INTO evaluations (id, job_id, trigger, node_id, wait_until, status)
SELECT u.id, u.job_id, u.trigger, u.node_id, u.wait_until, 'pending'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
    AS u(id, job_id, trigger, node_id, wait_until)
RETURNING *;

-- name: evals_unblock
-- Capacity changed: every blocked evaluation gets another try.
UPDATE evaluations SET status = 'pending', modified_at = clock_timestamp()
WHERE status = 'blocked'
RETURNING id;

-- name: evals_notify
SELECT pg_notify('mxvm_eval', '');
