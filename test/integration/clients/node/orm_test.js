'use strict';
// node-postgres (pg) and Sequelize v6 against pg_envelope protected columns.
//
// Driven by ../test_node.py, one process per phase:
//   node orm_test.js setup   creates the tables as the application would (Sequelize sync(),
//                            plain CREATE TABLE for the pg-only table); no protection yet
//   node orm_test.js run     the application's DML after an operator ran protect_column
//   node orm_test.js alter   Sequelize sync({ alter: true }) on an already protected table
// Connection: --host --port --user --database --prefix --route (or PGHOST, PGPORT, PGUSER,
// PGDATABASE, TABLE_PREFIX, ROUTE); the password comes from PGPASSWORD (or --password).
//
// The application code is plain: a Sequelize model `Person` with a STRING email (unique) and
// a STRING name, plain pg queries. Nothing here knows about pg_envelope, except the
// observations that say where a client behaves differently on a protected column.
//
// Prints `ok <check>`, `not ok <check>: <error>` and `info <observation>: <value>` lines,
// then one `RESULT <json>` line; exits 1 when a check failed.

const assert = require('node:assert/strict');

let pg;
let Sequelize;
let DataTypes;
let Op;
try {
  pg = require('pg');
  ({ Sequelize, DataTypes, Op } = require('sequelize'));
} catch (e) {
  console.error(`node modules missing (${e.message}): run npm ci --prefix test/integration/clients/node`);
  process.exit(3);
}

function config() {
  const args = {};
  let phase = null;
  for (const a of process.argv.slice(2)) {
    const m = /^--([a-z]+)=(.*)$/s.exec(a);
    if (m) args[m[1]] = m[2];
    else if (phase === null) phase = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  const env = process.env;
  const c = {
    phase,
    host: args.host ?? env.PGHOST ?? '127.0.0.1',
    port: Number(args.port ?? env.PGPORT ?? 5432),
    user: args.user ?? env.PGUSER,
    password: args.password ?? env.PGPASSWORD,
    database: args.database ?? env.PGDATABASE,
    prefix: args.prefix ?? env.TABLE_PREFIX ?? '',
    route: args.route ?? env.ROUTE ?? 'direct',
  };
  if (!['setup', 'run', 'alter'].includes(c.phase)) throw new Error('phase must be setup, run or alter');
  for (const k of ['user', 'password', 'database']) if (!c[k]) throw new Error(`missing ${k}`);
  return c;
}

const cfg = config();
const T = {
  people: `${cfg.prefix}people`,
  blobs: `${cfg.prefix}blobs`,
};
const pgConfig = { host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password, database: cfg.database };

// Every SQL text Sequelize logs, tagged with the operation running when it was logged.
const sqlLog = [];
let currentOp = null;

function makeSequelize() {
  return new Sequelize(cfg.database, cfg.user, cfg.password, {
    host: cfg.host,
    port: cfg.port,
    dialect: 'postgres',
    logging: (sql) => sqlLog.push({ op: currentOp, sql }),
    pool: { max: 2, min: 0 },
  });
}

// The application's model: nothing pg_envelope-specific.
function definePerson(sequelize) {
  return sequelize.define('Person', {
    email: { type: DataTypes.STRING, allowNull: false, unique: true },
    name: { type: DataTypes.STRING },
  }, { tableName: T.people });
}

const passed = [];
const failed = [];
const observations = {};

async function check(name, fn) {
  currentOp = name;
  try {
    await fn();
    passed.push(name);
    console.log(`ok ${name}`);
  } catch (e) {
    const where = e && e.stack ? (e.stack.split('\n').find((l) => l.includes('orm_test.js')) || '').trim() : '';
    const msg = `${e && e.name}: ${String(e && e.message).replace(/\n+/g, ' | ').slice(0, 1500)} ${where}`;
    failed.push({ name, error: msg });
    console.log(`not ok ${name}: ${msg}`);
  } finally {
    currentOp = null;
  }
}

// Tags the SQL Sequelize logs while fn runs (the query log check below).
async function tag(label, fn) {
  const prev = currentOp;
  currentOp = label;
  try {
    return await fn();
  } finally {
    currentOp = prev;
  }
}

function observe(name, value) {
  observations[name] = value;
  console.log(`info ${name}: ${JSON.stringify(value)}`);
}

function finish() {
  console.log(`RESULT ${JSON.stringify({ phase: cfg.phase, route: cfg.route, passed, failed, observations })}`);
  process.exitCode = failed.length ? 1 : 0;
}

const mail = (local) => `${local}.${cfg.prefix}@example.org`;

// ---------------------------------------------------------------- setup
async function setup() {
  const sequelize = makeSequelize();
  const Person = definePerson(sequelize);
  await check('sequelize sync() creates the plain table', async () => {
    await Person.sync();
  });
  await sequelize.close();
  const client = new pg.Client(pgConfig);
  await client.connect();
  await check('pg creates the bytea/jsonb table', async () => {
    await client.query(`CREATE TABLE "${T.blobs}" (id serial PRIMARY KEY, label text, data bytea, doc jsonb)`);
  });
  await client.end();
}

// ---------------------------------------------------------------- run
async function runSequelize() {
  const sequelize = makeSequelize();
  const Person = definePerson(sequelize);
  const used = new Set();
  const e = (local) => { const m = mail(local); used.add(m); return m; };
  let ann;

  // An application calls sync() at every start: must be a no-op on the protected table.
  await check('sequelize sync() on the protected table', async () => {
    await Person.sync();
  });

  await check('sequelize create', async () => {
    ann = await tag('create', () => Person.create({ email: e('ann'), name: 'Ann' }));
    assert.equal(ann.email, e('ann'));
    assert.ok(Number.isInteger(ann.id));
  });

  await check('sequelize bulkCreate', async () => {
    const rows = await tag('bulkCreate', () => Person.bulkCreate([
      { email: e('bob'), name: 'Bob' },
      { email: e('cy'), name: 'Cy' },
      { email: e('dee'), name: 'Dee' },
    ]));
    assert.deepEqual(rows.map((r) => r.email), [e('bob'), e('cy'), e('dee')]);
    assert.ok(rows.every((r) => Number.isInteger(r.id)));
    assert.equal(await Person.count(), 4);
  });

  await check('sequelize update of another field', async () => {
    await tag('instance.update (name)', () => ann.update({ name: 'Ann B' }));
    const again = await tag('findByPk', () => Person.findByPk(ann.id));
    assert.equal(again.name, 'Ann B');
    assert.equal(again.email, e('ann'));
  });

  await check('sequelize update of the protected field', async () => {
    await tag('instance.update (email)', () => ann.update({ email: e('ann2') }));
    const byNew = await tag('findOne where email', () => Person.findOne({ where: { email: e('ann2') } }));
    assert.equal(byNew && byNew.id, ann.id);
    assert.equal(await Person.findOne({ where: { email: e('ann') } }), null);
  });

  await check('sequelize Model.upsert updates on the unique email', async () => {
    const bob = await Person.findOne({ where: { email: e('bob') } });
    const [row] = await tag('Model.upsert', () => Person.upsert({ email: e('bob'), name: 'Bob U' }));
    assert.equal(row.email, e('bob'));
    assert.equal(row.id, bob.id);
    const again = await Person.findByPk(bob.id);
    assert.equal(again.name, 'Bob U');
    assert.equal(await Person.count(), 4);
  });

  await check('sequelize Model.upsert inserts a new email', async () => {
    const [row] = await tag('Model.upsert', () => Person.upsert({ email: e('eve'), name: 'Eve' }));
    assert.equal(row.email, e('eve'));
    assert.equal(await Person.count(), 5);
    assert.equal((await Person.findOne({ where: { email: e('eve') } })).name, 'Eve');
  });

  await check('sequelize bulkCreate with updateOnDuplicate', async () => {
    const cy = await Person.findOne({ where: { email: e('cy') } });
    await tag('bulkCreate updateOnDuplicate', () => Person.bulkCreate([
      { email: e('cy'), name: 'Cy U' },
      { email: e('fay'), name: 'Fay' },
    ], { updateOnDuplicate: ['name', 'updatedAt'] }));
    const again = await Person.findByPk(cy.id);
    assert.equal(again.email, e('cy'));
    assert.equal(again.name, 'Cy U');
    assert.equal((await Person.findOne({ where: { email: e('fay') } })).name, 'Fay');
    assert.equal(await Person.count(), 6);
  });

  await check('sequelize findByPk', async () => {
    const p = await Person.findByPk(ann.id);
    assert.equal(p.email, e('ann2'));
    assert.equal(p.name, 'Ann B');
  });

  await check('sequelize findOne/findAll where email =', async () => {
    const one = await Person.findOne({ where: { email: e('dee') } });
    assert.equal(one.name, 'Dee');
    const all = await tag('findAll where email', () => Person.findAll({ where: { email: e('dee') } }));
    assert.deepEqual(all.map((p) => p.name), ['Dee']);
    const some = await Person.findAll({ where: { email: { [Op.in]: [e('dee'), e('eve'), mail('nobody')] } } });
    assert.deepEqual(some.map((p) => p.name).sort(), ['Dee', 'Eve']);
    assert.equal(await Person.findOne({ where: { email: mail('nobody') } }), null);
  });

  await check('sequelize count where email =', async () => {
    assert.equal(await tag('count where email', () => Person.count({ where: { email: e('eve') } })), 1);
    assert.equal(await Person.count({ where: { email: mail('nobody') } }), 0);
  });

  await check('sequelize destroy where email =', async () => {
    assert.equal(await tag('destroy where email', () => Person.destroy({ where: { email: e('eve') } })), 1);
    assert.equal(await Person.findOne({ where: { email: e('eve') } }), null);
    assert.equal(await Person.count(), 5);
  });

  await check('sequelize unique violation -> SequelizeUniqueConstraintError', async () => {
    let err = null;
    try {
      await Person.create({ email: e('dee'), name: 'Dee again' });
    } catch (x) {
      err = x;
    }
    assert.ok(err, 'duplicate email was accepted');
    assert.equal(err.name, 'SequelizeUniqueConstraintError', String(err));
    // The server's DETAIL (also in the server log) must not carry the plaintext key value.
    const detail = err.parent && err.parent.detail;
    assert.ok(detail && !detail.includes(e('dee')), `detail leaks plaintext: ${detail}`);
    observe('unique_violation', { detail, fields: err.fields, constraint: err.parent.constraint });
    assert.equal(await Person.count({ where: { email: e('dee') } }), 1);
  });

  await check('sequelize query with bind parameters', async () => {
    const rows = await tag('sequelize.query with bind', () => sequelize.query(`SELECT name FROM "${T.people}" WHERE email = $1`,
      { bind: [e('fay')], type: Sequelize.QueryTypes.SELECT }));
    assert.deepEqual(rows, [{ name: 'Fay' }]);
  });

  // Not a requirement: what ORDER BY on the protected column does.
  await check('sequelize findAll order by email (observed)', async () => {
    const rows = await Person.findAll({ order: [['email', 'ASC']] });
    const emails = rows.map((p) => p.email);
    assert.equal(emails.length, 5);
    observe('order_by_email_is_alphabetical', JSON.stringify(emails) === JSON.stringify([...emails].sort()));
  });

  // Which operations put the plaintext into the SQL text (and so into Sequelize's log,
  // console.log by default, and the server's statement log).
  await check('sequelize query log: bind parameters keep plaintext out', async () => {
    const tags = ['create', 'bulkCreate', 'instance.update (name)', 'instance.update (email)', 'Model.upsert',
      'bulkCreate updateOnDuplicate', 'findByPk', 'findOne where email', 'findAll where email',
      'count where email', 'destroy where email', 'sequelize.query with bind'];
    const inline = {};
    for (const t of tags) {
      const logged = sqlLog.filter((x) => x.op === t);
      assert.ok(logged.length, `nothing logged for ${t}`);
      inline[t] = logged.some(({ sql }) => [...used].some((m) => sql.includes(m)));
    }
    observe('plaintext_inline_in_sql_log', inline);
    for (const t of ['create', 'instance.update (email)', 'Model.upsert', 'sequelize.query with bind']) {
      assert.equal(inline[t], false, `${t} logged plaintext`);
    }
    const create = sqlLog.find((x) => x.op === 'create' && /INSERT INTO/.test(x.sql));
    assert.match(create.sql, /VALUES \(DEFAULT,\$1,\$2,/);
  });

  await sequelize.close();
  const final = await (async () => {
    const c = new pg.Client(pgConfig);
    await c.connect();
    const r = await c.query(`SELECT email FROM "${T.people}" ORDER BY id`);
    await c.end();
    return r.rows.map((x) => x.email);
  })();
  observe('people_emails_final', final);
  observe('people_emails_used', [...used]);
}

async function runPg() {
  const c = new pg.Client(pgConfig);
  await c.connect();
  const used = [];

  await check('pg parameterized insert/select', async () => {
    const m = mail('gus');
    used.push(m);
    const ins = await c.query(
      `INSERT INTO "${T.people}" (email, name, "createdAt", "updatedAt") VALUES ($1, $2, now(), now()) RETURNING id, email`,
      [m, 'Gus']);
    assert.equal(ins.rows[0].email, m);
    const sel = await c.query(`SELECT id, name FROM "${T.people}" WHERE email = $1`, [m]);
    assert.deepEqual(sel.rows, [{ id: ins.rows[0].id, name: 'Gus' }]);
    const any = await c.query(`SELECT name FROM "${T.people}" WHERE email = ANY($1) ORDER BY name`, [[m, mail('dee')]]);
    assert.deepEqual(any.rows.map((r) => r.name), ['Dee', 'Gus']);
  });

  // A named prepared statement: prepared once per connection, then executed with Bind only.
  // Client B holds a server connection in an open transaction between A's two executions,
  // which is what a second application request does; through pgbouncer in transaction mode
  // A's second execution then runs on a server connection that never saw the Parse.
  await check('pg named prepared statement', async () => {
    const name = `penv_find_${cfg.prefix}`;
    const q = (m) => ({ name, text: `SELECT name FROM "${T.people}" WHERE email = $1`, values: [m] });
    const b = new pg.Client(pgConfig);
    await b.connect();
    try {
      const first = await c.query(q(mail('dee')));
      assert.deepEqual(first.rows, [{ name: 'Dee' }]);
      await b.query('BEGIN');
      await b.query('SELECT 1');
      let outcome;
      try {
        const second = await c.query(q(mail('fay')));
        assert.deepEqual(second.rows, [{ name: 'Fay' }]);
        outcome = { ok: true };
      } catch (x) {
        if (x instanceof assert.AssertionError) throw x;
        outcome = { ok: false, code: x.code, error: x.message };
      }
      await b.query('COMMIT');
      observe('named_prepared_statement', outcome);
    } finally {
      await b.end();
    }
  });
  await c.end();

  // A fresh connection: the failed named statement above must not matter.
  const d = new pg.Client(pgConfig);
  await d.connect();
  const buf = Buffer.concat([Buffer.from('bytes-secret-'), Buffer.from([0, 1, 2, 0xfe, 0xff])]);
  const doc = { ssn: 'json-secret-123', nested: { n: 1, list: [1, 'two'] } };
  let id;
  await check('pg Buffer into protected bytea and object into protected jsonb, no casts', async () => {
    const r = await d.query(`INSERT INTO "${T.blobs}" (label, data, doc) VALUES ($1, $2, $3) RETURNING id`,
      ['first', buf, doc]);
    id = r.rows[0].id;
    assert.ok(Number.isInteger(id));
  });
  await check('pg reads protected bytea/jsonb back (default type parsers)', async () => {
    const r = await d.query(`SELECT data, doc FROM "${T.blobs}" WHERE id = $1`, [id]);
    const { data, doc: got } = r.rows[0];
    observe('protected_bytea_read_as', Buffer.isBuffer(data) ? 'Buffer' : typeof data);
    observe('protected_jsonb_read_as', typeof got === 'string' ? 'string' : 'object');
    // Whatever the JS type, the content must be the plaintext.
    if (Buffer.isBuffer(data)) assert.ok(data.equals(buf));
    else assert.equal(data, `\\x${buf.toString('hex')}`);
    assert.deepEqual(typeof got === 'string' ? JSON.parse(got) : got, doc);
    observe('type_oids', r.fields.map((f) => [f.name, f.dataTypeID]));
  });
  await check('pg reads protected bytea/jsonb as Buffer/object with casts', async () => {
    const r = await d.query(`SELECT data::bytea AS data, doc::jsonb AS doc FROM "${T.blobs}" WHERE id = $1`, [id]);
    assert.ok(Buffer.isBuffer(r.rows[0].data) && r.rows[0].data.equals(buf));
    assert.deepEqual(r.rows[0].doc, doc);
  });
  await check('pg reads protected bytea/jsonb as Buffer/object with a per-query types option', async () => {
    // The configuration a node application needs to get Buffer/object without casts:
    // parse the protected types' OIDs (per database) as bytea (17) / jsonb (3802).
    const o = (await d.query(`SELECT 'envelope.protected_bytea'::regtype::oid::int AS b,
                                     'envelope.protected_jsonb'::regtype::oid::int AS j`)).rows[0];
    const types = {
      getTypeParser(oid, format) {
        if (oid === o.b) return pg.types.getTypeParser(17, format);
        if (oid === o.j) return pg.types.getTypeParser(3802, format);
        return pg.types.getTypeParser(oid, format);
      },
    };
    const r = await d.query({ text: `SELECT data, doc FROM "${T.blobs}" WHERE id = $1`, values: [id], types });
    assert.ok(Buffer.isBuffer(r.rows[0].data) && r.rows[0].data.equals(buf));
    assert.deepEqual(r.rows[0].doc, doc);
  });
  await check('pg update of protected bytea/jsonb with Buffer/object', async () => {
    const buf2 = Buffer.from('bytes-secret-2');
    await d.query(`UPDATE "${T.blobs}" SET data = $1, doc = $2 WHERE id = $3`, [buf2, { ssn: 'json-secret-456' }, id]);
    const r = await d.query(`SELECT data::bytea AS data, doc::jsonb AS doc FROM "${T.blobs}" WHERE id = $1`, [id]);
    assert.ok(r.rows[0].data.equals(buf2));
    assert.deepEqual(r.rows[0].doc, { ssn: 'json-secret-456' });
    await d.query(`INSERT INTO "${T.blobs}" (label, data, doc) VALUES ($1, $2, $3)`, ['second', buf, doc]);
  });
  await d.end();
  observe('pg_emails_used', used);
}

// ---------------------------------------------------------------- alter
async function alter() {
  const sequelize = makeSequelize();
  const Person = definePerson(sequelize);
  let outcome;
  await check('sequelize sync({ alter: true }) on the protected table', async () => {
    try {
      await sequelize.sync({ alter: true });
      outcome = { ok: true };
    } catch (x) {
      outcome = { ok: false, name: x.name, error: x.message };
    }
    observe('sync_alter', outcome);
    observe('sync_alter_sql', sqlLog.filter((x) => /ALTER TABLE/.test(x.sql)).map((x) => x.sql));
  });
  await check('sequelize create and find after sync({ alter: true })', async () => {
    const p = await Person.create({ email: mail('after-alter'), name: 'After' });
    assert.equal(p.email, mail('after-alter'));
    const again = await Person.findOne({ where: { email: mail('after-alter') } });
    assert.equal(again && again.id, p.id);
    assert.equal(again.email, mail('after-alter'));
  });
  await sequelize.close();
}

(async () => {
  try {
    if (cfg.phase === 'setup') await setup();
    else if (cfg.phase === 'alter') await alter();
    else {
      await runSequelize();
      await runPg();
    }
  } catch (e) {
    failed.push({ name: 'unexpected', error: e && e.stack ? e.stack : String(e) });
    console.log(`not ok unexpected: ${e && e.stack}`);
  }
  finish();
})();
