// Every JSONL file given loads in DuckDB with read_json_auto, alone and all
// together (every record type in one scan), with the contract's columns.
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

const paths = process.argv.slice(2);
if (paths.length === 0) throw new Error('usage: check_duckdb.mjs FILE...');
const instance = await DuckDBInstance.create(':memory:');
const con = await instance.connect();
const quote = (p) => "'" + p.replaceAll("'", "''") + "'";
let total = 0;

async function check(list) {
  const src = `read_json_auto([${list.map(quote).join(', ')}])`;
  const cols = (await con.runAndReadAll(`DESCRIBE SELECT * FROM ${src}`)).getRows().map((r) => r[0]);
  if (cols.join() !== 'instruction,input,output,metadata') throw new Error(`${list}: columns ${cols}`);
  const rows = (await con.runAndReadAll(
    `SELECT count(*), count(DISTINCT metadata.record_type), count(metadata.health_domain) FROM ${src}`)).getRows();
  return rows[0].map(Number);
}

for (const p of paths) {
  const lines = readFileSync(p, 'utf8').split('\n').filter((l) => l.length > 0).length;
  const [n, , domains] = await check([p]);
  if (n !== lines || domains !== lines) throw new Error(`${p}: ${n} rows, ${domains} domains, ${lines} lines`);
  total += lines;
}
const [n, types] = await check(paths);
if (n !== total) throw new Error(`all files: ${n} rows, expected ${total}`);
console.log(`duckdb: ${paths.length} files, ${total} lines, ${types} record types: ok`);
