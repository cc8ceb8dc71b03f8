-- name: snapshot_usage
SELECT node_id,
       sum(cpu_millicores)::bigint AS cpu,
       sum(memory_mb)::bigint AS memory,
       sum(disk_mb)::bigint AS disk,
       count(*) AS allocs
FROM allocations WHERE live
GROUP BY node_id;

-- name: snapshot_devices
SELECT node_id, device_id FROM allocation_devices;

-- name: snapshot_ports
SELECT node_id, port FROM allocation_ports;
