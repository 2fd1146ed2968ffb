/**
 * `deno task data [options]`: puts CIFAR-10 into the ignored `data/` folder.
 *
 * By default extracts the JPEG copy (`<from>/{train,test}.tar.gz`) to `data/cifar10-jpeg/{train,test}`;
 * `--download` fetches the canonical binary archive instead (MD5-checked) to `data/cifar-10-batches-bin`.
 * Both skip what is already complete. `--bench` then times decoding (and 224 px preprocessing).
 */
import { fileURLToPath } from "node:url";
import {
  CIFAR10_BINARY_MD5,
  CIFAR10_BINARY_URL,
  downloadCifar10Binary,
  openCifar10,
  prepareCifar10Jpeg,
} from "../lib/data/cifar10.ts";
import { decodeImage } from "../lib/data/decode.ts";
import { openImageFolder } from "../lib/data/image_folder.ts";
import { datasetImageSet } from "../lib/data/image_set.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine, runTask } from "./_cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

const USAGE = `Usage: deno task data [options]

Extracts the CIFAR-10 JPEG copy into data/cifar10-jpeg/{train,test}/<class>/NNNN.jpg (50,000 / 10,000
images), or with --download fetches the canonical binary CIFAR-10 into data/cifar-10-batches-bin.
Complete splits are left alone; rerunning is cheap.`;

/** The options of `deno task data`. */
export const DATA_OPTIONS = {
  from: {
    type: "string",
    metavar: "dir",
    defaultText: "../shared/data/cifar10-jpeg",
    help: "folder holding train.tar.gz and test.tar.gz",
  },
  out: { type: "string", metavar: "dir", defaultText: "data", help: "data folder" },
  split: { type: "string", default: "both", range: ["train", "test", "both"], help: "split(s) to prepare" },
  download: { type: "boolean", default: false, help: `fetch ${CIFAR10_BINARY_URL}` },
  url: { type: "string", help: "download from this URL instead" },
  md5: { type: "string", defaultText: CIFAR10_BINARY_MD5, help: "expected MD5 of the download" },
  bench: {
    type: "boolean",
    default: false,
    help: "time decoding the test split (and preprocessing to 224 px)",
  },
} satisfies Schema;

async function main(): Promise<number> {
  const { values } = commandLine("data", USAGE, DATA_OPTIONS);
  const out = (values.out as string | undefined) ?? `${ROOT}/data`;
  const from = (values.from as string | undefined) ?? `${ROOT}/../shared/data/cifar10-jpeg`;
  const splits = values.split === "both" ? ["train", "test"] as const : [values.split as "train" | "test"];
  try {
    if (values.download || values.url) {
      await downloadCifar10Binary(out, {
        url: values.url as string | undefined,
        md5: values.md5 as string | undefined,
        log: console.log,
      });
    } else {
      await prepareCifar10Jpeg(from, `${out}/cifar10-jpeg`, { splits: [...splits], log: console.log });
    }
    if (values.bench) await bench(out, splits.includes("test") ? "test" : "train");
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) await runTask("data", main);

async function bench(out: string, split: "train" | "test"): Promise<void> {
  const { dataset, source } = await openCifar10(out, split);
  if (source === "jpeg") {
    const files = (await openImageFolder(`${out}/cifar10-jpeg/${split}`)).files;
    let t0 = performance.now();
    const bytes = await Promise.all(files.map((f) => Deno.readFile(f)));
    const readS = (performance.now() - t0) / 1000;
    t0 = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < bytes.length) await decodeImage(bytes[next++]);
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    const s = (performance.now() - t0) / 1000;
    console.log(
      `read ${files.length} files in ${readS.toFixed(2)} s; decoded in ${s.toFixed(2)} s = ${
        Math.round(files.length / s)
      } images/s (${navigator.hardwareConcurrency} cores)`,
    );
  }
  const set = datasetImageSet(dataset, {
    img_size: 224,
    crop_pct: 1,
    interpolation: "bilinear",
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
  }, 0);
  const t0 = performance.now();
  let n = 0;
  const total = Math.min(2048, dataset.length);
  for (let at = 0; at < total; at += 64) {
    const batch = Array.from({ length: Math.min(64, total - at) }, (_, i) => at + i);
    await set.images(batch);
    n += batch.length;
  }
  const s = (performance.now() - t0) / 1000;
  console.log(
    `${source}: read+decode+preprocess to 224 px: ${n} images in ${s.toFixed(2)} s = ${
      Math.round(n / s)
    } images/s`,
  );
}
