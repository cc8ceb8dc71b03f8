-- Counts capacity changes (nodes joining or coming back, resources freed), so that an
-- evaluation planned against a snapshot older than the last change is not left blocked: the
-- change's unblock could not see it, as it was still pending then. One row.
CREATE TABLE capacity_changes (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq bigint NOT NULL DEFAULT 0
);
INSERT INTO capacity_changes DEFAULT VALUES;
