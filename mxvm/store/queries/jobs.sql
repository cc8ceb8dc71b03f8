-- name: job_insert
INSERT INTO jobs (id, name, type, priority, spec, status)
VALUES ($1, $2, $3, $4, $5, 'pending')
RETURNING *;

-- name: job_get
SELECT * FROM jobs WHERE id = $1;

-- name: job_list
SELECT * FROM jobs ORDER BY created_at DESC, id;

-- name: job_stop
UPDATE jobs SET stop = true, status_description = 'stopped by request', modified_at = now()
WHERE id = $1 AND NOT stop
RETURNING *;

-- name: job_status_inputs
-- What the job's status is derived from.
SELECT
    j.type,
    j.stop,
    (SELECT count(*) FROM allocations a WHERE a.job_id = j.id AND a.live) AS live,
    (SELECT count(*) FROM allocations a WHERE a.job_id = j.id) AS total,
    (SELECT count(*) FROM evaluations e
      WHERE e.job_id = j.id AND e.status IN ('pending', 'blocked')) AS open_evals
FROM jobs j WHERE j.id = $1;

-- name: job_set_status
UPDATE jobs SET status = $2, modified_at = now() WHERE id = $1 AND status <> $2;

-- name: jobs_system_live
SELECT id FROM jobs WHERE type IN ('system', 'sysbatch') AND NOT stop;
