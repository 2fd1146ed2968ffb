/**
 * `deno task classify [--model weights] [--top-k 5] [--json] [--max-pixels N] image...`: classifies image
 * files with a converted or trained model (a folder or an http(s) URL) and prints the top-k labels and
 * probabilities of each, as text or JSON. Files that cannot be decoded are reported by name and make the
 * exit status 1; the others are still classified.
 *
 * @module
 */
import { decodeImage, DEFAULT_MAX_PIXELS } from "../lib/data/decode.ts";
import { preprocessEval } from "../lib/data/preprocess.ts";
import { topK } from "../lib/serve/classify.ts";
import { loadModel } from "../lib/weights/load.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine, runTask } from "./_cli.ts";

const USAGE = `Usage: deno task classify [--model dir|url] [--top-k 5] [--json] [--max-pixels N] image...

Classifies image files and prints the top-k labels and probabilities of each.`;

/** The options of `deno task classify`. */
export const CLASSIFY_OPTIONS = {
  model: {
    type: "string",
    default: "weights",
    aliases: ["-m"],
    metavar: "dir|url",
    help: "model folder or URL",
  },
  "top-k": {
    type: "integer",
    default: 5,
    range: [1, Infinity],
    aliases: ["-k"],
    help: "labels shown per image",
  },
  json: { type: "boolean", default: false, help: "print JSON" },
  "max-pixels": {
    type: "integer",
    default: DEFAULT_MAX_PIXELS,
    range: [1, Infinity],
    help: "largest image (width·height) decoded",
  },
} satisfies Schema;

function parse(args: readonly string[]) {
  const { values, positionals } = commandLine("classify", USAGE, CLASSIFY_OPTIONS, args, {
    allowPositionals: true,
  });
  if (positionals.length === 0) throw new Error(`no image files given (see deno task classify --help)`);
  return {
    model: values.model as string,
    topK: values["top-k"] as number,
    json: values.json as boolean,
    maxPixels: values["max-pixels"] as number,
    files: positionals,
  };
}

async function main(): Promise<number> {
  let o;
  try {
    o = parse(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  let loaded;
  try {
    loaded = await loadModel(o.model, { trainable: false });
  } catch (e) {
    console.error(`classify: cannot load model ${JSON.stringify(o.model)}: ${(e as Error).message}`);
    return 1;
  }
  const { model, manifest } = loaded;
  const pre = manifest.preprocessing;
  const per = 3 * pre.img_size * pre.img_size;
  const ok: Array<{ file: string; input: Float32Array; width: number; height: number }> = [];
  const errors: Array<{ file: string; error: string }> = [];
  for (const file of o.files) {
    try {
      const img = await decodeImage(await Deno.readFile(file), { maxPixels: o.maxPixels, source: file });
      ok.push({ file, input: preprocessEval(img, pre), width: img.width, height: img.height });
    } catch (e) {
      errors.push({ file, error: (e as Error).message });
    }
  }
  const results = [];
  if (ok.length) {
    const x = new Float32Array(ok.length * per);
    ok.forEach((r, i) => x.set(r.input, i * per));
    const t0 = performance.now();
    const logits = await model.logits(x, [ok.length, 3, pre.img_size, pre.img_size]);
    const ms = performance.now() - t0;
    const k = Math.min(o.topK, manifest.labels.length);
    const c = manifest.labels.length;
    for (const [i, r] of ok.entries()) {
      results.push({
        file: r.file,
        width: r.width,
        height: r.height,
        predictions: topK(logits.subarray(i * c, (i + 1) * c), manifest.labels, k),
      });
    }
    if (!o.json) {
      console.error(`classify: ${ok.length} image(s) in ${ms.toFixed(0)} ms on ${model.backend.engine}`);
    }
  }
  model.dispose();
  if (o.json) {
    console.log(JSON.stringify({ model: o.model, results, errors }, null, 2));
  } else {
    for (const r of results) {
      console.log(`${r.file} (${r.width}×${r.height})`);
      for (const p of r.predictions) {
        console.log(`  ${(100 * p.probability).toFixed(2).padStart(6)}%  ${p.label}`);
      }
    }
    for (const e of errors) console.error(`classify: ${e.error}`);
  }
  return errors.length ? 1 : 0;
}

if (import.meta.main) await runTask("classify", main);
