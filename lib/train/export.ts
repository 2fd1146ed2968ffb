/**
 * Exporting a training run as float16 shards (what `weights/` ships): a finished run's final model, or the
 * weights that a run stopped by `max_updates` has reached (with `model_ema`, their EMA beside them), so that
 * its schedule can go on from them where the run folder is not kept (`initial_checkpoint` plus
 * `start_epoch`).
 *
 * @example
 * ```ts
 * const result = await train(inputs);
 * console.error(await exportRun(result, "runs/x_weights"));
 * ```
 *
 * @module
 */
import type { ModelManifest } from "../weights/manifest.ts";
import { loadWeights } from "../weights/load.ts";
import { saveModel } from "../weights/shards.ts";
import { encodeSafetensors } from "../weights/safetensors.ts";
import {
  EMA_FILE,
  latestCheckpointDir,
  readEma,
  readTrainerState,
  type TrainingRecord,
} from "./checkpoint.ts";
import { type TrainConfig, trainEmaDecay } from "./config.ts";
import type { TrainResult } from "./trainer.ts";

/** Options of {@linkcode exportRun} and {@linkcode exportCheckpoint}. */
export interface ExportOptions {
  /**
   * A stopped run: export the checkpoint's EMA of the weights (`model_ema`) as the model, for evaluation or
   * shipping, instead of the raw weights with the EMA beside them (what a continuation needs).
   */
  ema?: boolean;
}

/** Writes `result`'s weights into `dir` (atomically) and returns a line saying what was written. */
export async function exportRun(
  result: TrainResult,
  dir: string,
  options: ExportOptions = {},
): Promise<string> {
  const { manifest, state } = await loadWeights((result.finalDir ?? result.checkpointDir)!);
  if (result.finished) {
    await saveModel(dir, { ...float16Of(manifest), state, extra: manifest.extra });
    return `exported ${dir} (float16 shards)`;
  }
  const at = result.state;
  // The checkpoint's raw weights are the model, also with model_ema (an EMA this early still leans on the
  // starting weights); the EMA goes beside them so that a start_epoch continuation carries it on.
  const ema = at.config.model_ema ? await readEma(result.checkpointDir!) : undefined;
  const stoppedAt = { epoch: at.epoch, update: at.update, seconds: at.elapsed };
  const redone = at.updateInEpoch;
  const where = redone ? `in epoch ${at.epoch + 1}` : `after epoch ${at.epoch}`;
  if (options.ema) {
    if (!ema) {
      throw new Error(`${result.checkpointDir} keeps no EMA of the weights (the run has no model_ema)`);
    }
    const decay = trainEmaDecay(at.config as unknown as TrainConfig);
    await saveModel(dir, {
      ...float16Of(manifest),
      state: ema,
      extra: {
        training: {
          config: at.config,
          stopped_at: stoppedAt,
          weights: `EMA of the weights (decay ${decay})`,
        },
      },
    });
    return `exported ${dir} (float16 shards of the EMA of the weights at update ${at.update}, ${where})`;
  }
  const training: TrainingRecord = {
    config: at.config,
    stopped_at: stoppedAt,
    ...(ema ? { weights: `the raw weights (their EMA in ${EMA_FILE}, float16)` } : {}),
  };
  await saveModel(dir, {
    ...float16Of(manifest),
    state,
    extra: { training },
    ...(ema ? { files: { [EMA_FILE]: encodeSafetensors(ema, "F16") } } : {}),
  });
  return `exported ${dir} (float16 shards of the weights at update ${at.update}, ${where}); ` +
    `elsewhere, go on with --initial_checkpoint ${dir} --start_epoch ${at.epoch} --output <a new folder>` +
    (redone ? ` (its ${redone} updates in epoch ${at.epoch + 1} are done again)` : "");
}

function float16Of(m: ModelManifest) {
  return {
    config: m.vit,
    preprocessing: m.preprocessing,
    labels: m.labels,
    source: m.source,
    dtype: "float16" as const,
  };
}

/**
 * Exports checkpoint folder `from` (`<run>/checkpoints/step-N`), or a run folder's newest checkpoint, into
 * `dir` as {@linkcode exportRun} exports a run that `max_updates` stopped there: its raw weights as float16
 * shards, its EMA beside them with `model_ema` (or, with `options.ema`, the EMA as the model), and where the
 * schedule stood. What `deno task export` runs;
 * a run that is still going is read from its last complete checkpoint and left alone.
 *
 * @example
 * ```ts
 * console.error(await exportCheckpoint("runs/cifar10_vit_p4", "runs/cifar10_vit_p4_now"));
 * ```
 */
export async function exportCheckpoint(
  from: string,
  dir: string,
  options: ExportOptions = {},
): Promise<string> {
  let checkpointDir = from;
  try {
    await Deno.stat(`${from}/trainer.json`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const latest = await latestCheckpointDir(from);
    if (!latest) {
      throw new Error(
        `${from} is neither a training checkpoint (trainer.json) nor a run folder (checkpoints/)`,
      );
    }
    checkpointDir = latest;
  }
  const state = await readTrainerState(checkpointDir);
  return await exportRun({ finished: false, state, checkpointDir }, dir, options);
}
