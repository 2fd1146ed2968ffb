/**
 * Getting CIFAR-10 onto disk and opening it:
 * - `prepareCifar10Jpeg`: extracts the JPEG copy's `train.tar.gz` / `test.tar.gz` into
 *   `<to>/{train,test}/<class>/NNNN.jpg`;
 * - `downloadCifar10Binary`: fetches the canonical `cifar-10-binary.tar.gz`, checks its MD5 and extracts
 *   `cifar-10-batches-bin/`.
 * Both are idempotent (a complete split — right file counts — is left alone) and atomic per split (the
 * extraction goes to a temporary sibling that is renamed into place once verified).
 *
 * `openCifar10` opens whichever is there, preferring the lossless binary batches.
 *
 * @module
 */
import { CIFAR10_CLASSES, cifarBatchFiles, CifarBinaryDataset } from "./cifar_binary.ts";
import type { Dataset } from "./dataset.ts";
import { downloadFile, md5File } from "./download.ts";
import { openImageFolder } from "./image_folder.ts";
import { extractTar, fileStream } from "./tar.ts";
import { pathExists } from "../util/fs.ts";

/** The canonical binary archive and its published MD5. */
export const CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
export const CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530";

/** Images per split. */
export const CIFAR10_COUNTS = { train: 50_000, test: 10_000 } as const;

/** A progress / status line sink (defaults to nothing). */
export type Log = (line: string) => void;

/** Images per class folder of `<dir>` (a missing folder counts nothing). */
export async function countClassImages(dir: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  if (!(await pathExists(dir))) return counts;
  for await (const c of Deno.readDir(dir)) {
    if (!c.isDirectory || c.name.startsWith(".")) continue;
    let n = 0;
    for await (const f of Deno.readDir(`${dir}/${c.name}`)) if (f.isFile && /\.jpe?g$/i.test(f.name)) n++;
    counts.set(c.name, n);
  }
  return counts;
}

/** Null when `<dir>` holds a complete split (10 CIFAR-10 class folders, `expected` images), else why not. */
export async function jpegSplitProblem(dir: string, expected: number): Promise<string | null> {
  const counts = await countClassImages(dir);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const names = [...counts.keys()].sort();
  if (names.join() !== [...CIFAR10_CLASSES].sort().join()) {
    return `${dir} has class folders [${names.join(", ")}], expected CIFAR-10's ten`;
  }
  if (total !== expected) return `${dir} holds ${total} images, expected ${expected}`;
  return null;
}

/**
 * Extracts `<from>/{train,test}.tar.gz` (the CIFAR-10 JPEG copy) into `<to>/{train,test}`, skipping a split
 * that is already complete, and verifies the counts (50,000 / 10,000). Returns what it did per split.
 */
export async function prepareCifar10Jpeg(
  from: string,
  to: string,
  options: { splits?: ("train" | "test")[]; log?: Log } = {},
): Promise<Record<string, "present" | "extracted">> {
  const log = options.log ?? (() => {});
  const done: Record<string, "present" | "extracted"> = {};
  await Deno.mkdir(to, { recursive: true });
  for (const split of options.splits ?? ["train", "test"] as const) {
    const dest = `${to}/${split}`;
    const expected = CIFAR10_COUNTS[split];
    if ((await jpegSplitProblem(dest, expected)) === null) {
      log(`${dest}: complete (${expected} images), skipped`);
      done[split] = "present";
      continue;
    }
    const archive = `${from}/${split}.tar.gz`;
    if (!(await pathExists(archive))) {
      throw new Error(`${archive} is missing (pass --from <folder with ${split}.tar.gz>)`);
    }
    const tmp = `${to}/.${split}.tmp-${Deno.pid}`;
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    const t0 = performance.now();
    try {
      const r = await extractTar(await fileStream(archive), tmp, {
        source: archive,
        filter: (path) => path === split || path.startsWith(`${split}/`),
      });
      const problem = await jpegSplitProblem(`${tmp}/${split}`, expected);
      if (problem) throw new Error(`${archive} is incomplete: ${problem.replace(tmp, "(extracted)")}`);
      await Deno.remove(dest, { recursive: true }).catch(() => {});
      await Deno.rename(`${tmp}/${split}`, dest);
      log(`${dest}: extracted ${r.files} files in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      done[split] = "extracted";
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  }
  return done;
}

/** Null when `<dir>` holds all six binary batches of `recordsPerBatch` records each, else why not. */
export async function binaryBatchesProblem(dir: string, recordsPerBatch = 10_000): Promise<string | null> {
  for (const f of [...cifarBatchFiles("train"), ...cifarBatchFiles("test")]) {
    try {
      const size = (await Deno.stat(`${dir}/${f}`)).size;
      if (size !== recordsPerBatch * 3073) {
        return `${dir}/${f} is ${size} bytes, expected ${recordsPerBatch * 3073}`;
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return `${dir}/${f} is missing`;
      throw e;
    }
  }
  return null;
}

/** Options of `downloadCifar10Binary`; the defaults are the canonical archive. */
export interface BinaryDownloadOptions {
  url?: string;
  /** Expected MD5 of the archive (hex). */
  md5?: string;
  /** Records per batch file that make the extraction complete (tests use small synthetic batches). */
  recordsPerBatch?: number;
  log?: Log;
}

/**
 * Downloads `cifar-10-binary.tar.gz` into `dataDir` (kept, and reused when its MD5 matches), verifies its
 * MD5 and extracts `dataDir/cifar-10-batches-bin`. Does nothing when that folder is already complete.
 * Returns "present" or "downloaded".
 */
export async function downloadCifar10Binary(
  dataDir: string,
  options: BinaryDownloadOptions = {},
): Promise<"present" | "downloaded"> {
  const url = options.url ?? CIFAR10_BINARY_URL;
  const md5 = (options.md5 ?? CIFAR10_BINARY_MD5).toLowerCase();
  const log = options.log ?? (() => {});
  const records = options.recordsPerBatch ?? 10_000;
  const dest = `${dataDir}/cifar-10-batches-bin`;
  if ((await binaryBatchesProblem(dest, records)) === null) {
    log(`${dest}: complete, skipped`);
    return "present";
  }
  await Deno.mkdir(dataDir, { recursive: true });
  const archive = `${dataDir}/cifar-10-binary.tar.gz`;
  if (!(await pathExists(archive)) || (await md5File(archive)) !== md5) {
    log(`downloading ${url}`);
    let shown = -1;
    await downloadFile(url, archive, {
      md5,
      onProgress: (bytes, total) => {
        const pct = total ? Math.floor((100 * bytes) / total / 10) * 10 : -1;
        if (pct !== shown && pct >= 0) log(`  ${pct}% of ${(total / 2 ** 20).toFixed(0)} MiB`);
        shown = pct;
      },
    });
  }
  log(`${archive}: MD5 ${md5} ok, extracting`);
  const tmp = `${dataDir}/.cifar-10-batches-bin.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  try {
    await extractTar(await fileStream(archive), tmp, {
      source: archive,
      filter: (path) => path.startsWith("cifar-10-batches-bin/"),
    });
    const problem = await binaryBatchesProblem(`${tmp}/cifar-10-batches-bin`, records);
    if (problem) throw new Error(`${archive} is incomplete: ${problem.replace(tmp, "(extracted)")}`);
    await Deno.remove(dest, { recursive: true }).catch(() => {});
    await Deno.rename(`${tmp}/cifar-10-batches-bin`, dest);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  log(`${dest}: ready`);
  return "downloaded";
}

/**
 * CIFAR-10 split `split` from `dataDir`: the binary batches (`cifar-10-batches-bin/`) when complete, else
 * the JPEG copy (`cifar10-jpeg/<split>/`). `source` says which was opened.
 */
export async function openCifar10(
  dataDir: string,
  split: "train" | "test",
): Promise<{ dataset: Dataset; source: "binary" | "jpeg" }> {
  const bin = `${dataDir}/cifar-10-batches-bin`;
  if ((await binaryBatchesProblem(bin)) === null) {
    return { dataset: await CifarBinaryDataset.open(bin, split), source: "binary" };
  }
  const jpeg = `${dataDir}/cifar10-jpeg/${split}`;
  const problem = await jpegSplitProblem(jpeg, CIFAR10_COUNTS[split]);
  if (problem) {
    throw new Error(
      `no CIFAR-10 ${split} split in ${dataDir}: ${bin} is incomplete and ${problem} (run \`deno task data\`)`,
    );
  }
  return { dataset: await openImageFolder(jpeg), source: "jpeg" };
}
