// node-postgres (pg) through dtx-sql-proxy: each check prints "ok <name>" or "FAIL <name>: why",
// then "N passed, M failed"; the exit status is non-zero on any failure.
//   node pg_client.js --port 6433 --user postgres --database dtx_test
'use strict';
const { Client } = require('pg');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const b = JSON.stringify(expected);
  if (a !== b) throw new Error(`${what}: got ${a}, want ${b}`);
}

async function main() {
  const client = new Client({
    host: '127.0.0.1',
    port: Number(args.port),
    user: args.user,
    database: args.database,
    application_name: 'dtx-proxy-node-test',
  });
  await client.connect();
  const table = `proxy_node_${process.pid}`;

  await check('parameters of several types', async () => {
    const r = await client.query('SELECT $1::int + 1 AS n, $2::text AS t, $3::bool AS b, $4::numeric AS x, $5::int AS nul',
      [41, 'héllo', true, '12.50', null]);
    expectEqual(r.rows, [{ n: 42, t: 'héllo', b: true, x: '12.50', nul: null }], 'row');
  });

  await check('named prepared statement reused', async () => {
    await client.query(`CREATE TABLE ${table} (id int PRIMARY KEY, name text)`);
    for (let i = 1; i <= 5; i++) {
      await client.query({ name: 'insert-row', text: `INSERT INTO ${table} VALUES ($1, $2)`, values: [i, `n${i}`] });
    }
    const r = await client.query({ name: 'count-rows', text: `SELECT count(*)::int AS c FROM ${table} WHERE id > $1`, values: [2] });
    expectEqual(r.rows[0].c, 3, 'count');
  });

  await check('many rows through a portal', async () => {
    const r = await client.query('SELECT g, repeat($1, 100) AS pad FROM generate_series(1, 5000) g', ['x']);
    expectEqual(r.rowCount, 5000, 'rows');
    expectEqual(r.rows[4999].g, 5000, 'last');
  });

  await check('error inside a transaction block, then rollback', async () => {
    await client.query('BEGIN');
    await client.query(`UPDATE ${table} SET name = 'changed' WHERE id = $1`, [1]);
    let err = null;
    try {
      await client.query('SELECT 1 / $1::int', [0]);
    } catch (e) {
      err = e;
    }
    if (!err || err.code !== '22012') throw new Error(`want division_by_zero, got ${err && err.code}`);
    let aborted = null;
    try {
      await client.query('SELECT $1::int', [1]);
    } catch (e) {
      aborted = e;
    }
    if (!aborted || aborted.code !== '25P02') throw new Error(`want 25P02, got ${aborted && aborted.code}`);
    await client.query('ROLLBACK');
    const r = await client.query(`SELECT name FROM ${table} WHERE id = $1`, [1]);
    expectEqual(r.rows[0].name, 'n1', 'name after rollback');
  });

  await check('XID binding through pg', async () => {
    await client.query("SET dtx.xid = 'tc-node:1'");
    let r = await client.query('SHOW dtx.xid');
    expectEqual(r.rows, [{ 'dtx.xid': 'tc-node:1' }], 'show');
    await client.query('RESET dtx.xid');
    r = await client.query('SHOW dtx.xid');
    expectEqual(r.rows[0]['dtx.xid'], '', 'after reset');
  });

  await check('multi-statement query with notices', async () => {
    const notices = [];
    client.on('notice', (n) => notices.push(n.message));
    const results = await client.query("SELECT 1 AS a; DO $$ BEGIN RAISE NOTICE 'hi'; END $$; SELECT 2 AS b");
    expectEqual(results.map((x) => x.rows), [[{ a: 1 }], [], [{ b: 2 }]], 'results');
    await new Promise((resolve) => setImmediate(resolve));
    expectEqual(notices, ['hi'], 'notices');
  });

  await check('unique violation keeps the session usable', async () => {
    let err = null;
    try {
      await client.query(`INSERT INTO ${table} VALUES ($1, $2)`, [1, 'dup']);
    } catch (e) {
      err = e;
    }
    if (!err || err.code !== '23505') throw new Error(`want 23505, got ${err && err.code}`);
    const r = await client.query('SELECT $1::text AS ok', ['yes']);
    expectEqual(r.rows[0].ok, 'yes', 'after error');
  });

  await client.query(`DROP TABLE IF EXISTS ${table}`);
  await client.end();
}

main()
  .catch((e) => {
    failed++;
    console.log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
  })
  .finally(() => {
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
  });
