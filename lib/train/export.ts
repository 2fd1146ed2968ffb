/**
 * Exporting a training run as float16 shards (what `weights/` ships): a finished run's final model, or the
 * weights that a run stopped by `max_updates` has reached, so that its schedule can go on from them where the
 * run folder is not kept (`initial_checkpoint` plus `start_epoch`).
 *
 * @example
 * ```ts
 * const result = await train(inputs);
 * console.error(await exportRun(result, inputs.config.output, "runs/x_weights"));
 * ```
 *
 * @module
 */
import type { ModelManifest } from "../weights/manifest.ts";
import { loadWeights } from "../weights/load.ts";
import { saveModel } from "../weights/shards.ts";
import { loadLatestCheckpoint } from "./checkpoint.ts";
import type { TrainResult } from "./trainer.ts";

/** Writes `result`'s weights into `dir` (atomically) and returns a line saying what was written. */
export async function exportRun(result: TrainResult, runDir: string, dir: string): Promise<string> {
  if (result.finished) {
    const { manifest, state } = await loadWeights(result.finalDir!);
    await saveModel(dir, { ...float16Of(manifest), state, extra: manifest.extra });
    return `exported ${dir} (float16 shards)`;
  }
  const at = result.state;
  const ck = await loadLatestCheckpoint(runDir);
  if (ck?.trainer.update !== at.update) {
    throw new Error(`export: ${runDir}/checkpoints has no checkpoint at update ${at.update}`);
  }
  // The raw weights, also with model_ema: an EMA this early still leans on the starting weights.
  const extra = {
    training: {
      config: at.config,
      stopped_at: { epoch: at.epoch, update: at.update, seconds: at.elapsed },
      ...(ck.ema ? { weights: "the raw weights (the EMA stays in the run's checkpoints)" } : {}),
    },
  };
  await saveModel(dir, { ...float16Of(ck.manifest), state: ck.state, extra });
  return `exported ${dir} (float16 shards of the weights at update ${at.update}, in epoch ${
    at.epoch + 1
  }); ` +
    `elsewhere, go on with --initial_checkpoint ${dir} --start_epoch ${at.epoch}` +
    (at.updateInEpoch ? ` (its ${at.updateInEpoch} updates in that epoch are done again)` : "");
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
