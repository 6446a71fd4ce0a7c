-- tpcb-global.sql with a call of a function of no extension (bench_same, made by
-- run_at_bench.sh) in the account UPDATE: each COMMIT gets the proxy's check of writes beside the
-- branch's own rows (docs/undo-log.md). TPC-B-like, each transaction a dtx global transaction:
-- bind (dtx.begin), the local transaction (its writes become one AT branch at END), commit
-- through the coordinator (dtx.commit). The ranges are those of run_at_bench.sh's data:
-- 1,000,000 accounts, 10,000 tellers, 1,000 branches.
\set aid random(1, 1000000)
\set bid random(1, 1000)
\set tid random(1, 10000)
\set delta random(-5000, 5000)
SELECT dtx.begin();
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + bench_same(:delta) WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
SELECT dtx.commit();
