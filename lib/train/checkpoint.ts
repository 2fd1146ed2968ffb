/**
 * Training checkpoints: `checkpoints/<name>/` holds the weights in the sharded format (float32, so a resume
 * is exact), `optimizer.safetensors` (the optimizer's slots) and `trainer.json` (where in the schedule and
 * data order the run stands), and with `model_ema` `ema.safetensors` (the weight average, float32).
 * A checkpoint's folder is written whole, in one atomic replacement; `checkpoints/latest.json` names the
 * newest and is written after it, atomically: a run killed at any moment resumes from a complete checkpoint.
 *
 * @module
 */
import { writeFileAtomic } from "../util/fs.ts";
import { loadWeights } from "../weights/load.ts";
import type { ModelManifest, Preprocessing, SourceInfo } from "../weights/manifest.ts";
import { encodeSafetensors, parseSafetensors } from "../weights/safetensors.ts";
import { saveModel } from "../weights/shards.ts";
import type { ViTConfig } from "../vit/config.ts";
import type { StateDict } from "../vit/params.ts";

/** The file beside a model folder's shards that holds the weights' EMA (`model_ema`). */
export const EMA_FILE = "ema.safetensors";

/** Where the run stands; enough to continue it exactly. */
export interface TrainerState {
  /** Epoch in progress (0-based). */
  epoch: number;
  /** Optimizer updates already done within that epoch. */
  updateInEpoch: number;
  /** Optimizer updates done in total. */
  update: number;
  /** Lines of `metrics.jsonl` written when the checkpoint was taken (later ones are dropped on resume). */
  metricsLines: number;
  /** Seconds of training so far (all processes). */
  elapsed: number;
  /** The options the run was started with (a resume must match them). */
  config: Record<string, unknown>;
  /**
   * Isolates the steps before the checkpoint ran on (`ViTModel.stepWorkers`: the data-parallel workers, or
   * 1): how a batch is cut into chunks, so the last bits of every gradient depend on it.
   */
  trainWorkers?: number;
}

/**
 * What `deno task train` records in an exported model's `extra.training`: a finished run's length, or where
 * `max_updates` stopped it (`stopped_at`, 0-based epoch); `deno task eval`'s report reads it back.
 */
export interface TrainingRecord {
  /** The options the run was started with. */
  config: Record<string, unknown>;
  epochs?: number;
  updates?: number;
  /** Seconds of training in the run folder (all its processes). */
  seconds?: number;
  stopped_at?: { epoch: number; update: number; seconds: number };
  eval?: { top1: number; top5: number; n: number };
  /** Which weights were exported, where not the raw ones or where that needs saying (`model_ema`). */
  weights?: string;
}

/** What {@linkcode saveCheckpoint} writes. */
export interface TrainCheckpoint {
  vit: ViTConfig;
  state: StateDict;
  optimizer: { step: number; slots: Map<string, { shape: number[]; data: Float32Array }> };
  trainer: TrainerState;
  preprocessing: Preprocessing;
  labels: string[];
  source: SourceInfo;
  /** The EMA of the weights (`model_ema`), when the run keeps one. */
  ema?: StateDict;
}

/** A checkpoint read back. */
export interface LoadedCheckpoint {
  dir: string;
  manifest: ModelManifest;
  state: StateDict;
  optimizer: { step: number; slots: Map<string, { shape: number[]; data: Float32Array | Int32Array }> };
  trainer: TrainerState;
  /** The EMA weights, when the checkpoint has them. */
  ema?: StateDict;
}

/**
 * Writes checkpoint `name` under `runDir/checkpoints/`, then points `latest.json` at it; old ones beyond
 * `keep` go.
 */
export async function saveCheckpoint(
  runDir: string,
  name: string,
  ck: TrainCheckpoint,
  keep = 2,
): Promise<string> {
  const root = `${runDir}/checkpoints`;
  await Deno.mkdir(root, { recursive: true });
  const dir = `${root}/${name}`;
  await saveModel(dir, {
    config: ck.vit,
    state: ck.state,
    preprocessing: ck.preprocessing,
    labels: ck.labels,
    source: ck.source,
    dtype: "float32",
    extra: { checkpoint: { epoch: ck.trainer.epoch, update: ck.trainer.update } },
    files: {
      "optimizer.safetensors": encodeSafetensors(ck.optimizer.slots, "F32"),
      ...(ck.ema ? { [EMA_FILE]: encodeSafetensors(ck.ema, "F32") } : {}),
      "trainer.json": new TextEncoder().encode(
        JSON.stringify({ ...ck.trainer, optimizerStep: ck.optimizer.step }, null, 1) + "\n",
      ),
    },
  });
  await writeFileAtomic(`${root}/latest.json`, JSON.stringify({ checkpoint: name }) + "\n");
  // Prune older checkpoints (names sort by update count), never the one just written.
  const names: string[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.isDirectory && /^step-\d+$/.test(e.name) && e.name !== name) names.push(e.name);
  }
  names.sort();
  for (const old of names.slice(0, Math.max(0, names.length - (keep - 1)))) {
    await Deno.remove(`${root}/${old}`, { recursive: true }).catch(() => {});
  }
  return dir;
}

/** The folder of a run's newest complete checkpoint (`latest.json` names it), or undefined when none. */
export async function latestCheckpointDir(runDir: string): Promise<string | undefined> {
  const root = `${runDir}/checkpoints`;
  let latest: { checkpoint: string };
  try {
    latest = JSON.parse(await Deno.readTextFile(`${root}/latest.json`));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`${root}/latest.json: unreadable (${(e as Error).message})`);
  }
  return `${root}/${latest.checkpoint}`;
}

/** Where checkpoint folder `dir` stands (`trainer.json`), with its optimizer's step count. */
export async function readTrainerState(dir: string): Promise<TrainerState & { optimizerStep: number }> {
  const path = `${dir}/trainer.json`;
  let state;
  try {
    state = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${dir} is not a training checkpoint: no trainer.json`);
    }
    throw new Error(`${path}: unreadable (${(e as Error).message})`);
  }
  for (const key of ["epoch", "updateInEpoch", "update", "metricsLines", "elapsed", "optimizerStep"]) {
    if (!Number.isInteger(state?.[key]) && !(key === "elapsed" && Number.isFinite(state?.[key]))) {
      throw new Error(`${path}: "${key}" must be a number, got ${JSON.stringify(state?.[key])}`);
    }
  }
  if (typeof state.config !== "object" || state.config === null) {
    throw new Error(`${path}: "config" must be the run's options (an object)`);
  }
  return state;
}

/** The newest complete checkpoint of a run, or undefined when there is none. */
export async function loadLatestCheckpoint(runDir: string): Promise<LoadedCheckpoint | undefined> {
  const dir = await latestCheckpointDir(runDir);
  if (!dir) return undefined;
  const { manifest, state } = await loadWeights(dir);
  const slots = parseSafetensors(
    await Deno.readFile(`${dir}/optimizer.safetensors`),
    `${dir}/optimizer.safetensors`,
  );
  const trainer = await readTrainerState(dir);
  const ema = await readEma(dir);
  return {
    dir,
    manifest,
    state,
    optimizer: { step: trainer.optimizerStep, slots },
    trainer,
    ...(ema ? { ema } : {}),
  };
}

/**
 * The weights' EMA kept beside a model folder (`ema.safetensors`: a checkpoint's, or a stopped run's
 * export's), or undefined when the folder has none.
 */
export async function readEma(dir: string): Promise<StateDict | undefined> {
  const path = `${dir}/${EMA_FILE}`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const t = parseSafetensors(bytes, path);
  return new Map([...t].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }]));
}
