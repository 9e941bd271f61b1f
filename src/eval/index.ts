/** Evaluation harness: benchmark loaders, answer extraction, grading, the runner, reports. */
export {
  BENCHMARKS,
  SAMPLES_PER_QUESTION,
  BenchmarkFormatError,
  UnknownBenchmarkError,
  benchmarkName,
  loadBenchmark,
  parseBenchmark,
  parseChoices,
  type BenchItem,
  type Benchmark,
  type BenchmarkName,
  type LoadOptions,
  type RowIssue,
} from './bench.js'
export { extractAnswer, lastNumber, type ExtractOptions, type Extraction, type ExtractionSource } from '../answer.js'
export {
  choiceLetter,
  gradeAnswer,
  gradeResponse,
  isEquivalent,
  numericEqual,
  parseNumber,
  type AnswerKind,
  type GradeMethod,
  type GradeOptions,
  type ResponseVerdict,
  type Verdict,
} from './grade.js'
export { normalizeAnswer } from './normalize.js'
export { casEqual, type CasMethod, type CasOutcome } from './cas.js'
export {
  agreementText,
  reportHtml,
  reportMarkdown,
  summarize,
  type Agreement,
  type BenchSummary,
  type Disagreement,
  type EvalReport,
  type ModeRatios,
  type ModeSummary,
  type ResultRow,
  type RunMode,
} from './report.js'
export { runEval, type EvalOptions, type EvalOutcome, type EvalProgress } from './runner.js'
export { EVAL_FILES, latestRows, readResults, writeReports, type EvalRow, type RunInfo } from './results.js'
export { modelFingerprint } from './fingerprint.js'
export { importRecorded, type RecordedOptions, type RecordedOutcome } from './recorded.js'
