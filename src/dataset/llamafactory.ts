/**
 * The LLaMA-Factory side of the dataset: the `dataset_info.json` entry (in the form the VTC-R1 README gives)
 * and full-SFT configs with the paper's settings (`examples/vtcr1_glyph_full_sft.yaml` of VTC-R1; option names
 * as in LLaMA-Factory's `examples/train_full/qwen3vl_full_sft.yaml`).
 */

export interface DatasetInfoEntry {
  file_name: string
  formatting: 'sharegpt'
  columns: { messages: string; images: string }
  tags: { role_tag: string; content_tag: string; user_tag: string; assistant_tag: string; system_tag: string }
}

export function datasetInfo(name: string, fileName: string): Record<string, DatasetInfoEntry> {
  return {
    [name]: {
      file_name: fileName,
      formatting: 'sharegpt',
      columns: { messages: 'messages', images: 'images' },
      tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant', system_tag: 'system' },
    },
  }
}

export type Backbone = 'qwen3-vl' | 'glyph'

export interface TrainYamlOptions {
  backbone: Backbone
  /** The dataset's name in dataset_info.json. */
  dataset: string
  /** Absolute path of the dataset directory: LLaMA-Factory's `dataset_dir` (images are relative to it). */
  datasetDir: string
  /** Base model (a local path or a hub id). */
  model?: string
  outputDir?: string
  /** DeepSpeed ZeRO-3 config; default LLaMA-Factory's own, relative to its checkout (where `llamafactory-cli` runs). */
  deepspeed?: string
  imageMaxPixels?: number
  cutoffLen?: number
  /** Caps the samples used (the paper's Glyph config uses 110000); default: all. */
  maxSamples?: number
}

const DEFAULT_MODEL: Record<Backbone, string> = { 'qwen3-vl': 'Qwen/Qwen3-VL-8B-Instruct', glyph: 'zai-org/Glyph' }
const TEMPLATE: Record<Backbone, string> = { 'qwen3-vl': 'qwen3_vl', glyph: 'glm4v' }

/** A full-SFT YAML for `llamafactory-cli train`. */
export function trainYaml(o: TrainYamlOptions): string {
  const q = (s: string) => JSON.stringify(s) // YAML accepts JSON strings; paths may hold spaces or colons
  const lines = [
    `# VTC-R1 full SFT of ${o.backbone === 'glyph' ? 'Glyph (GLM-4.1V)' : 'Qwen3-VL'} (settings of the VTC-R1 paper)`,
    `# llamafactory-cli train <this file>  (dataset_dir and deepspeed are absolute: runs from any directory)`,
    '### model',
    `model_name_or_path: ${q(o.model ?? DEFAULT_MODEL[o.backbone])}`,
    `image_max_pixels: ${o.imageMaxPixels ?? 262144}`,
    'video_max_pixels: 16384',
    'trust_remote_code: true',
    '',
    '### method',
    'stage: sft',
    'do_train: true',
    'finetuning_type: full',
    'freeze_vision_tower: true',
    'freeze_multi_modal_projector: true',
    'freeze_language_model: false',
    `deepspeed: ${q(o.deepspeed ?? 'examples/deepspeed/ds_z3_config.json')}`,
    '',
    '### dataset',
    `dataset: ${o.dataset}`,
    `dataset_dir: ${q(o.datasetDir)}`,
    `template: ${TEMPLATE[o.backbone]}`,
    `cutoff_len: ${o.cutoffLen ?? 32768}`,
    ...(o.maxSamples ? [`max_samples: ${o.maxSamples}`] : []),
    'overwrite_cache: true',
    'preprocessing_num_workers: 16',
    'dataloader_num_workers: 8',
    '',
    '### output',
    `output_dir: ${q(o.outputDir ?? `saves/vtc-r1-${o.backbone}/full/sft`)}`,
    'logging_steps: 10',
    'save_strategy: epoch',
    'plot_loss: true',
    'overwrite_output_dir: true',
    'save_only_model: true',
    'report_to: none',
    '',
    '### train',
    'per_device_train_batch_size: 1',
    'gradient_accumulation_steps: 8',
    'learning_rate: 1.0e-5',
    'num_train_epochs: 1.0',
    'lr_scheduler_type: cosine',
    'warmup_ratio: 0.1',
    'bf16: true',
    'ddp_timeout: 180000000',
    '',
  ]
  return lines.join('\n')
}
