/**
 * `deno task export --from <run-or-checkpoint> --output <dir>`: writes a training checkpoint (a run folder's
 * newest, or a given `checkpoints/step-N`) as float16 shards with its EMA and schedule position, as
 * `deno task train --max_updates <n> --export <dir>` writes the checkpoint it stops at, without training an
 * update: to keep an epoch's weights of a run that goes on, or to carry a run to another machine
 * (`--initial_checkpoint <dir> --start_epoch <epoch>`). A run still training is only read.
 *
 * @module
 */
import { exportCheckpoint } from "../lib/train/export.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine, runTask } from "./_cli.ts";

const USAGE = `Usage: deno task export --from <run-or-checkpoint-dir> --output <dir>

Exports a training checkpoint as float16 shards (with its EMA under model_ema), without training.`;

/** The options of `deno task export`. */
export const EXPORT_OPTIONS = {
  from: {
    type: "string",
    metavar: "dir",
    required: true,
    help: "a run folder (its newest checkpoint) or a checkpoint folder (checkpoints/step-N)",
  },
  output: {
    type: "string",
    metavar: "dir",
    required: true,
    help: "where the model folder is written (atomically)",
  },
  ema: {
    type: "boolean",
    default: false,
    help: "write the checkpoint's EMA of the weights (model_ema) as the model, to evaluate or ship it; " +
      "by default the raw weights, with the EMA beside them for a continuation",
  },
} satisfies Schema;

if (import.meta.main) {
  const { values: o } = commandLine("export", USAGE, EXPORT_OPTIONS);
  await runTask("export", async () => {
    console.error(await exportCheckpoint(o.from as string, o.output as string, { ema: o.ema as boolean }));
    return 0;
  });
}
