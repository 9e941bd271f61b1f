#!/usr/bin/env node
/**
 * Writes __test__/fixtures/openr1-sample.parquet: the rows of ../shared/data/openr1-sample.jsonl in the schema of
 * the OpenR1-Math-220K parquet shards (list<string> generations, list<bool> correctness, as pyarrow writes them),
 * in row groups of 2 rows so the reader's row-group streaming is exercised.
 *   node scripts/make-openr1-parquet.mjs [input.jsonl] [output.parquet]
 */
import { readFileSync } from 'node:fs'
import { parquetWriteFile } from 'hyparquet-writer'

const input = process.argv[2] ?? new URL('../../shared/data/openr1-sample.jsonl', import.meta.url).pathname
const output = process.argv[3] ?? new URL('../__test__/fixtures/openr1-sample.parquet', import.meta.url).pathname
const rows = readFileSync(input, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l))

const str = (name) => ({ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' })
// the standard 3-level LIST layout: <name> (LIST) → list (repeated) → element
const list = (name, element) => [
  { name, repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { ...element, name: 'element' },
]
const schema = [
  { name: 'schema', num_children: 8 },
  str('uuid'),
  str('problem'),
  str('answer'),
  str('source'),
  ...list('generations', str('element')),
  ...list('correctness_math_verify', { type: 'BOOLEAN', repetition_type: 'OPTIONAL' }),
  ...list('finish_reasons', str('element')),
  { name: 'reported_chat_tokens', type: 'INT64', repetition_type: 'OPTIONAL' },
]
const col = (name, f = (r) => r[name] ?? null) => ({ name, data: rows.map(f) })
parquetWriteFile({
  filename: output,
  schema,
  rowGroupSize: 2,
  columnData: [
    col('uuid'),
    col('problem'),
    col('answer'),
    col('source'),
    col('generations'),
    col('correctness_math_verify'),
    col('finish_reasons'),
    col('reported_chat_tokens', (r) => (r.reported_chat_tokens == null ? null : BigInt(r.reported_chat_tokens))),
  ],
})
console.log(`wrote ${rows.length} rows to ${output}`)
