// Every JSONL file given loads in DuckDB with read_json_auto, alone and all
// together (every record type in one scan), with the contract's columns, each
// one typed: no column (nor any field of a struct) falls back to JSON.
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

const paths = process.argv.slice(2);
if (paths.length === 0) throw new Error('usage: check_duckdb.mjs FILE...');
const instance = await DuckDBInstance.create(':memory:');
const con = await instance.connect();
const quote = (p) => "'" + p.replaceAll("'", "''") + "'";
const FORMATS = { alpaca: 'instruction,input,output,metadata', chat: 'messages,metadata' };
const METADATA = ['schema_version', 'record_type', 'health_domain', 'split', 'user_id', 'correlation_id',
  'pseudonymization_key_id', 'processing_timestamp', 'source_bucket', 'source_key', 'quality_score', 'record_count',
  'processing_duration_seconds', 'clinical_insights', 'instruction_variant', 'phi_redacted', 'redactions',
  'content_hash', 'config_fingerprint'];
let total = 0;

async function check(list) {
  const src = `read_json_auto([${list.map(quote).join(', ')}])`;
  const described = (await con.runAndReadAll(`DESCRIBE SELECT * FROM ${src}`)).getRows();
  const cols = described.map((r) => r[0]).join();
  if (!Object.values(FORMATS).includes(cols)) throw new Error(`${list}: columns ${cols}`);
  for (const [name, type] of described) {
    if (String(type).includes('JSON')) throw new Error(`${list}: column ${name} is not typed: ${type}`);
  }
  const meta = String(described.find((r) => r[0] === 'metadata')[1]);
  for (const field of METADATA) {
    if (!meta.includes(`${field} `) && !meta.includes(`"${field}" `)) throw new Error(`${list}: metadata lacks ${field}: ${meta}`);
  }
  if (cols === FORMATS.chat) {
    const roles = (await con.runAndReadAll(
      `SELECT DISTINCT list_transform(messages, m -> m.role)::VARCHAR FROM ${src}`)).getRows();
    if (roles.length !== 1 || roles[0][0] !== '[system, user, assistant]') throw new Error(`${list}: roles ${roles}`);
  }
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
console.log(`duckdb: ${paths.length} files, ${total} lines, ${types} record types, every column typed: ok`);
