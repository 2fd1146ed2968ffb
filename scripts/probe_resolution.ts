/**
 * `deno run -A scripts/probe_resolution.ts --model <dir> [--sizes 32,40,48] [--subset 1000]`: a model's
 * top-1 on the held-out validation images (`holdout:5000`, never the test set) at other input sizes, its
 * weights adapted as a stage that changes `img_size` starts (`adaptForFineTuning`, no training), with
 * bilinear and bicubic upsampling. What finishing a model at a higher resolution would have to win back first
 * (docs/shipped_model.md).
 *
 * @module
 */
import { initBackend } from "../lib/backend/backend.ts";
import { classBalancedSubset } from "../lib/data/dataset.ts";
import { datasetImageSet, openSplit } from "../lib/data/image_set.ts";
import { evaluate } from "../lib/train/evaluate.ts";
import type { Schema } from "../lib/util/options.ts";
import { createViT } from "../lib/vit/model.ts";
import { adaptForFineTuning } from "../lib/weights/adapt.ts";
import { loadWeights } from "../lib/weights/load.ts";
import { commandLine, runTask } from "./_cli.ts";

const USAGE = "Usage: deno run -A scripts/probe_resolution.ts --model <dir> [options]";
const OPTIONS = {
  model: { type: "string", required: true, help: "model folder" },
  data: { type: "string", default: "data", help: "dataset folder" },
  sizes: {
    type: "string",
    default: "32,40,48",
    help: "input sizes, comma-separated (multiples of the patch)",
  },
  subset: { type: "integer", default: 1000, help: "class-balanced held-out images (0 = all 5,000)" },
} satisfies Schema;

if (import.meta.main) {
  const { values: o } = commandLine("probe_resolution", USAGE, OPTIONS);
  await runTask("probe_resolution", async () => {
    await initBackend("onnx");
    const { manifest, state } = await loadWeights(o.model as string);
    const { dataset, name } = await openSplit(o.data as string, "holdout:5000");
    const indices = classBalancedSubset(dataset.labels, o.subset as number);
    console.log(`${o.model} on ${name}, ${indices.length} images (onnx engine)`);
    for (const size of (o.sizes as string).split(",").map(Number)) {
      const vit = { ...manifest.vit, img_size: size };
      const model = await createViT(vit, adaptForFineTuning(state, vit).state, { trainable: false });
      try {
        for (const interpolation of ["bilinear", "bicubic"] as const) {
          const pre = { ...manifest.preprocessing, img_size: size, interpolation, crop_pct: 1 };
          const r = await evaluate(model, datasetImageSet(dataset, pre), { indices });
          console.log(
            `${size} px ${interpolation}: top-1 ${(100 * r.top1).toFixed(1)}%, loss ${r.loss.toFixed(3)}`,
          );
        }
      } finally {
        model.dispose();
      }
    }
    return 0;
  });
}
