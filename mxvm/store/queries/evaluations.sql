-- name: eval_insert
INSERT INTO evaluations (id, job_id, trigger, node_id, wait_until, status)
VALUES ($1, $2, $3, $4, $5, 'pending')
RETURNING *;

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

-- name: eval_finish
UPDATE evaluations
SET status = $2, status_description = $3, failures = $4, queued = $5,
    modified_at = clock_timestamp()
WHERE id = $1
RETURNING *;

-- name: evals_supersede
UPDATE evaluations
SET status = 'canceled', status_description = 'superseded by ' || $1,
    modified_at = clock_timestamp()
WHERE job_id = $2 AND id <> $1 AND status IN ('pending', 'blocked')
  AND created_at <= $3
  AND (wait_until IS NULL OR wait_until <= now());

-- name: evals_unblock
-- Capacity changed: every blocked evaluation gets another try.
UPDATE evaluations SET status = 'pending', modified_at = clock_timestamp()
WHERE status = 'blocked'
RETURNING id;

-- name: evals_notify
SELECT pg_notify('mxvm_eval', '');
