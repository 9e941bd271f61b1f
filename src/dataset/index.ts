/** The training-data builder: OpenR1-Math-220K (or any trace set) → VTC-R1 samples for LLaMA-Factory. */
export { buildDataset, type BuildOptions, type BuildProgress, type BuildResult, type SkippedRow } from './build.js'
export { datasetInfo, trainYaml, type Backbone, type DatasetInfoEntry, type TrainYamlOptions } from './llamafactory.js'
export {
  countRows,
  listInputs,
  normalizeRow,
  readRows,
  OPENR1_FIELDS,
  type BadRow,
  type ColumnMap,
  type InputFile,
  type InputRow,
  type OpenR1Field,
  type OpenR1Row,
  type RowPosition,
} from './openr1.js'
export { assistantTurns, IMAGE_PLACEHOLDER, SYSTEM_PROMPT, traceSamples, type ShareGptMessage, type TrainingSample } from './samples.js'
export { formatStats, type DatasetStats, type SampleStats, type VisionCounts } from './stats.js'
export { FILES } from './store.js'
export { CRITERIA, pickTrace, splitThink, type AnswerSource, type Criterion, type Trace } from './trace.js'
// the answer extraction the builder and the evaluation share
export { lastBoxed } from '../latex.js'
