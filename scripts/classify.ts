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

const USAGE = "usage: deno task classify [--model dir|url] [--top-k 5] [--json] [--max-pixels N] image...";

function parse(args: string[]) {
  const o = { model: "weights", topK: 5, json: false, maxPixels: DEFAULT_MAX_PIXELS, files: [] as string[] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] = a.startsWith("--") ? a.split("=", 2) : [a, undefined];
    const value = () => inline ?? args[++i];
    if (flag === "--model" || flag === "-m") o.model = value();
    else if (flag === "--top-k" || flag === "-k") o.topK = Number(value());
    else if (flag === "--max-pixels") o.maxPixels = Number(value());
    else if (flag === "--json") o.json = true;
    else if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else if (flag.startsWith("-")) throw new Error(`unknown option ${a}\n${USAGE}`);
    else o.files.push(a);
  }
  if (!o.model) throw new Error(`--model needs a folder or URL\n${USAGE}`);
  if (!Number.isInteger(o.topK) || o.topK < 1) {
    throw new Error(`--top-k must be a positive integer\n${USAGE}`);
  }
  if (!(o.maxPixels > 0)) throw new Error(`--max-pixels must be positive\n${USAGE}`);
  if (o.files.length === 0) throw new Error(`no image files given\n${USAGE}`);
  return o;
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

if (import.meta.main) Deno.exit(await main());
