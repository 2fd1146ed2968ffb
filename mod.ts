/**
 * vit-deno: timm Vision Transformers in Deno on tfjs (WebGPU, wasm or cpu): inference, gradients and
 * fine-tuning, with timm's names, layouts and numerics.
 *
 * ```ts
 * import { archConfig, createViT } from "./mod.ts";
 * const model = await createViT(archConfig("vit_base_patch16_224")!, stateDict);
 * const logits = await model.logits(pixels, [1, 3, 224, 224]);
 * model.dispose();
 * ```
 *
 * @module
 */

export {
  type BackendInfo,
  type BackendName,
  describeBackend,
  type EngineName,
  ensureTrainingBackend,
  initBackend,
} from "./lib/backend/backend.ts";
export { resolveConfig, type ResolvedViTConfig, timmConfig, type ViTConfig } from "./lib/vit/config.ts";
export { archConfig, KNOWN_ARCHS } from "./lib/vit/archs.ts";
export { type HostTensor, paramSpecs, type StateDict } from "./lib/vit/params.ts";
export { type CreateOptions, createViT, type LossOptions, ViTModel } from "./lib/vit/model.ts";
export { encodeSafetensors, parseSafetensors, readSafetensors } from "./lib/weights/safetensors.ts";
export { formulaStateDict } from "./lib/weights/formula.ts";
export {
  type Checkpoint,
  type CheckpointFormat,
  parseCheckpoint,
  readCheckpoint,
} from "./lib/weights/checkpoint.ts";
export { convertCheckpoint, type ConvertOptions } from "./lib/weights/convert.ts";
export { inferConfig } from "./lib/weights/infer_config.ts";
export {
  type LoadedModel,
  loadModel,
  type LoadOptions,
  loadWeights,
  type ModelFiles,
  readManifest,
  readModelFiles,
  writeModelFiles,
} from "./lib/weights/load.ts";
export {
  defaultPreprocessing,
  type ModelManifest,
  type Preprocessing,
  type SourceInfo,
} from "./lib/weights/manifest.ts";
export { saveModel, type SaveModelOptions } from "./lib/weights/shards.ts";
export { decodeImage, type DecodeOptions, ImageDecodeError, probeImage } from "./lib/data/decode.ts";
export type { RgbImage } from "./lib/data/image.ts";
export {
  type PreprocessConfig,
  preprocessEval,
  preprocessEvalBatch,
  preprocessSample,
  preprocessTrain,
} from "./lib/data/preprocess.ts";
export { augmentRng, type EpochAugment, type TrainAugment } from "./lib/data/augment.ts";
export {
  CachedDataset,
  classBalancedSubset,
  type Dataset,
  type Sample,
  subsetDataset,
} from "./lib/data/dataset.ts";
export { CIFAR10_CLASSES, CifarBinaryDataset } from "./lib/data/cifar_binary.ts";
export { openFlatFolder, openImageFolder } from "./lib/data/image_folder.ts";
export { openCifar10 } from "./lib/data/cifar10.ts";
export { createApp } from "./routes/app.ts";
export { Service } from "./lib/serve/service.ts";
export { DEFAULT_LIMITS, parseServeArgs, type ServeLimits, type ServeOptions } from "./lib/serve/options.ts";
export type { FineTuneJob, FineTuneProgress, FineTuner, FineTuneResult } from "./lib/serve/finetune.ts";
