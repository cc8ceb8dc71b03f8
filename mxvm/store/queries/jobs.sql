-- name: job_submit
-- A batch of submitted jobs, each with its first evaluation, in one statement (one round trip
-- and one commit however many requests came in together; a statement is atomic, and the
-- evaluations' foreign key is checked at its end). One row comes back per input, in order:
-- a job is not inserted when its task's memory is below the minimum that nodes report for
-- its image (the row then carries that minimum), nor when a live job already has its name
-- (the row then carries no minimum and no job). No NOTIFY here: it would hold Postgres'
-- notify lock through the commit and serialise concurrent submits; the coordinator wakes
-- the evaluator after the commit (coordinator/nudge.py).
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                         $6::text[], $7::text[], $8::int[])
        WITH ORDINALITY AS u(id, name, type, priority, spec, eval_id, min_attr, memory_mb, n)
), checked AS (
    SELECT i.*, (SELECT min((attributes ->> i.min_attr)::int) FROM nodes
                 WHERE attributes ? i.min_attr) AS image_min_memory
    FROM input i
), job AS (
    INSERT INTO jobs (id, name, type, priority, spec, status)
    SELECT c.id, c.name, c.type, c.priority, c.spec::jsonb, 'pending' FROM checked c
    WHERE c.image_min_memory IS NULL OR c.memory_mb >= c.image_min_memory
    ORDER BY c.n
    ON CONFLICT (name) WHERE NOT stop DO NOTHING
    RETURNING id, status, status_description, stop, version, created_at, modified_at
), ev AS (
    INSERT INTO evaluations (id, job_id, trigger, status)
    SELECT c.eval_id, job.id, 'job-register', 'pending' FROM job JOIN checked c USING (id)
    RETURNING job_id, created_at, modified_at
)
SELECT c.image_min_memory, c.memory_mb < c.image_min_memory AS below_minimum,
       job.id, job.status, job.status_description, job.stop, job.version,
       job.created_at, job.modified_at,
       ev.created_at AS eval_created_at, ev.modified_at AS eval_modified_at
FROM checked c LEFT JOIN job ON job.id = c.id LEFT JOIN ev ON ev.job_id = c.id
ORDER BY c.n;

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
