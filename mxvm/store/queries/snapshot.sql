-- name: snapshot
-- Every node with what its live allocations take and the devices and host ports they hold.
-- One statement: one consistent view in one round trip, without a transaction.
SELECT n.*,
       COALESCE(u.cpu, 0) AS used_cpu,
       COALESCE(u.memory, 0) AS used_memory,
       COALESCE(u.disk, 0) AS used_disk,
       COALESCE(u.allocs, 0) AS used_allocs,
       COALESCE(d.ids, '{}') AS used_devices,
       COALESCE(p.ports, '{}') AS used_ports
FROM nodes n
LEFT JOIN (
    SELECT node_id, sum(cpu_millicores)::bigint AS cpu, sum(memory_mb)::bigint AS memory,
           sum(disk_mb)::bigint AS disk, count(*) AS allocs
    FROM allocations WHERE live GROUP BY node_id
) u ON u.node_id = n.id
LEFT JOIN (
    SELECT node_id, array_agg(device_id) AS ids FROM allocation_devices GROUP BY node_id
) d ON d.node_id = n.id
LEFT JOIN (
    SELECT node_id, array_agg(port) AS ports FROM allocation_ports GROUP BY node_id
) p ON p.node_id = n.id
ORDER BY n.name;
