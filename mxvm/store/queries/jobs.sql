-- name: job_submit
-- The job, its first evaluation and the evaluator's wake-up in one statement (one round trip;
-- a statement is atomic, and the evaluation's foreign key is checked at its end). Nothing is
-- inserted when the task's memory ($8) is below the image's minimum that nodes report
-- (attribute $7); the row returned then carries that minimum and no job.
WITH minimum AS (
    SELECT min((attributes ->> $7)::int) AS mb FROM nodes WHERE attributes ? $7
), job AS (
    INSERT INTO jobs (id, name, type, priority, spec, status)
    SELECT $1, $2, $3, $4, $5, 'pending' FROM minimum
    WHERE minimum.mb IS NULL OR $8 >= minimum.mb
    RETURNING *
), ev AS (
    INSERT INTO evaluations (id, job_id, trigger, status)
    SELECT $6, job.id, 'job-register', 'pending' FROM job
    RETURNING created_at, modified_at
)
SELECT minimum.mb AS image_min_memory, job.*,
       ev.created_at AS eval_created_at, ev.modified_at AS eval_modified_at,
       CASE WHEN job.id IS NOT NULL THEN pg_notify('mxvm_eval', '') END AS notified
FROM minimum LEFT JOIN job ON true LEFT JOIN ev ON true;

-- name: job_get
SELECT * FROM jobs WHERE id = $1;

-- name: job_list
SELECT * FROM jobs ORDER BY created_at DESC, id;

-- name: job_stop
UPDATE jobs SET stop = true, status_description = 'stopped by request', modified_at = now()
WHERE id = $1 AND NOT stop
RETURNING *;

-- name: jobs_status_inputs
-- What each job's status is derived from.
SELECT
    j.id,
    j.type,
    j.stop,
    (SELECT count(*) FROM allocations a WHERE a.job_id = j.id AND a.live) AS live,
    (SELECT count(*) FROM allocations a WHERE a.job_id = j.id) AS total,
    (SELECT count(*) FROM evaluations e
      WHERE e.job_id = j.id AND e.status IN ('pending', 'blocked')) AS open_evals
FROM jobs j WHERE j.id = ANY($1::text[]);

-- name: jobs_set_status
UPDATE jobs AS j SET status = u.status, modified_at = now()
FROM unnest($1::text[], $2::text[]) AS u(id, status)
WHERE j.id = u.id AND j.status <> u.status;

-- name: jobs_get
SELECT * FROM jobs WHERE id = ANY($1::text[]);

-- name: jobs_system_live
SELECT id FROM jobs WHERE type IN ('system', 'sysbatch') AND NOT stop;
