/**
 * An {@linkcode ImageSet} over an image-folder split (`<dir>/<class>/<file>`, classes sorted by name as
 * torchvision's `ImageFolder`): every file is decoded once (lib/data's decoder) into one uint8 HWC buffer in
 * memory, and batches are preprocessed from it on demand.
 *
 * @module
 */
import { decodeImage } from "../data/decode.ts";
import type { Preprocessing } from "../weights/manifest.ts";
import type { ImageSet } from "./image_set.ts";

/** An opened folder split: the set, its class names and its file paths (in sample order). */
export interface FolderSet {
  set: ImageSet;
  classes: string[];
  files: string[];
}

async function listDir(dir: string, want: "dir" | "file"): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (want === "dir" ? e.isDirectory : e.isFile && !e.name.startsWith(".")) out.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${dir} does not exist (run \`deno task data\` first?)`);
    }
    throw e;
  }
  return out.sort();
}

/** Normalises one HWC uint8 image of the model's size into CHW float32 at `out`. */
function normalize(src: Uint8Array, size: number, pre: Preprocessing, out: Float32Array): void {
  const plane = size * size;
  for (let c = 0; c < 3; c++) {
    const scale = 1 / (255 * pre.std[c]), shift = pre.mean[c] / pre.std[c];
    for (let i = 0; i < plane; i++) out[c * plane + i] = src[i * 3 + c] * scale - shift;
  }
}

/**
 * Decodes every image of `dir` (in parallel, `concurrency` at a time) and returns a set that serves them
 * preprocessed for `pre`. Images must already be `pre.img_size` square (CIFAR at 32 px); other sizes need
 * lib/data's resize and are rejected with a clear error until it is wired in.
 */
export async function openImageFolder(
  dir: string,
  pre: Preprocessing,
  options: {
    /** Keep only the first `perClass` files (by name) of each class; all by default. */
    perClass?: number;
    concurrency?: number;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<FolderSet> {
  const classes = await listDir(dir, "dir");
  if (classes.length === 0) throw new Error(`${dir}: no class folders`);
  const files: string[] = [];
  const labelList: number[] = [];
  for (const [k, name] of classes.entries()) {
    const names = await listDir(`${dir}/${name}`, "file");
    for (const f of options.perClass ? names.slice(0, options.perClass) : names) {
      files.push(`${dir}/${name}/${f}`);
      labelList.push(k);
    }
  }
  const n = files.length;
  const size = pre.img_size;
  const per = size * size * 3;
  const pixels = new Uint8Array(n * per);
  let next = 0, done = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const img = await decodeImage(await Deno.readFile(files[i]), { source: files[i] });
      if (img.width !== size || img.height !== size) {
        throw new Error(`${files[i]}: ${img.width}x${img.height}, the model needs ${size}x${size} images`);
      }
      pixels.set(img.data, i * per);
      if (++done % 5000 === 0) options.onProgress?.(done, n);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
  const labels = Int32Array.from(labelList);
  const set: ImageSet = {
    size: n,
    labels,
    shape: [3, size, size],
    images(indices: ArrayLike<number>): Promise<Float32Array> {
      const out = new Float32Array(indices.length * per);
      for (let b = 0; b < indices.length; b++) {
        const i = indices[b];
        normalize(pixels.subarray(i * per, (i + 1) * per), size, pre, out.subarray(b * per, (b + 1) * per));
      }
      return Promise.resolve(out);
    },
  };
  return { set, classes, files };
}
