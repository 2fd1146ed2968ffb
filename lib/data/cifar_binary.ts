/**
 * CIFAR-10's canonical binary format (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin`
 * (train, 10,000 records each) and `test_batch.bin`; each record is 1 label byte then 3,072 pixel bytes as
 * three 32×32 planes (R, G, B). `batches.meta.txt` lists the class names, one per line.
 *
 * The batches are read into memory whole (30 MB each, small) and records converted to HWC on `get`.
 *
 * @module
 */
import { checkIndex, type Dataset, type Sample } from "./dataset.ts";

/** CIFAR-10's classes in label order. */
export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

const SIDE = 32;
const PIXELS = SIDE * SIDE * 3;
const RECORD = 1 + PIXELS;

/** The batch files of a split, in order. */
export function cifarBatchFiles(split: "train" | "test"): string[] {
  return split === "train" ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ["test_batch.bin"];
}

/** CIFAR-10 records held in memory. */
export class CifarBinaryDataset implements Dataset {
  readonly length: number;
  readonly classes: readonly string[];
  readonly labels: Int32Array;
  #records: Uint8Array[];
  #where: string[];

  /** From batch file contents (`names` for messages); every label must be < `classes.length`. */
  constructor(batches: Uint8Array[], names: string[], classes: readonly string[] = CIFAR10_CLASSES) {
    this.#records = [];
    this.#where = [];
    const labels: number[] = [];
    batches.forEach((bytes, b) => {
      if (bytes.length % RECORD !== 0 || bytes.length === 0) {
        throw new Error(
          `${names[b]}: ${bytes.length} bytes is not a whole number of ${RECORD}-byte CIFAR-10 records`,
        );
      }
      for (let off = 0, r = 0; off < bytes.length; off += RECORD, r++) {
        const label = bytes[off];
        if (label >= classes.length) {
          throw new Error(`${names[b]}: record ${r} has label ${label}, expected < ${classes.length}`);
        }
        labels.push(label);
        this.#records.push(bytes.subarray(off, off + RECORD));
        this.#where.push(`${names[b]}#${r}`);
      }
    });
    this.length = labels.length;
    this.labels = Int32Array.from(labels);
    this.classes = classes;
  }

  /**
   * Reads a split from a `cifar-10-batches-bin` folder. Class names come from `batches.meta.txt` when
   * present (CIFAR-10's otherwise).
   */
  static async open(dir: string, split: "train" | "test"): Promise<CifarBinaryDataset> {
    const files = cifarBatchFiles(split);
    const batches: Uint8Array[] = [];
    for (const f of files) {
      try {
        batches.push(await Deno.readFile(`${dir}/${f}`));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new Error(`${dir}/${f} is missing: a CIFAR-10 ${split} split needs ${files.join(", ")}`);
        }
        throw e;
      }
    }
    let classes = CIFAR10_CLASSES;
    try {
      const meta = (await Deno.readTextFile(`${dir}/batches.meta.txt`)).split(/\r?\n/).map((s) => s.trim())
        .filter((s) => s !== "");
      if (meta.length > 0) classes = meta;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return new CifarBinaryDataset(batches, files.map((f) => `${dir}/${f}`), classes);
  }

  // deno-lint-ignore require-await
  async get(i: number): Promise<Sample> {
    checkIndex(i, this.length, "CIFAR-10 binary");
    const rec = this.#records[i];
    const n = SIDE * SIDE;
    const data = new Uint8Array(PIXELS);
    for (let p = 0; p < n; p++) {
      data[3 * p] = rec[1 + p];
      data[3 * p + 1] = rec[1 + n + p];
      data[3 * p + 2] = rec[1 + 2 * n + p];
    }
    return { image: { width: SIDE, height: SIDE, data }, label: rec[0] };
  }

  describe(i: number): string {
    return this.#where[i] ?? `record ${i}`;
  }
}

/** Encodes samples as one CIFAR-10 binary batch (e.g. to write test data). Images must be 32×32. */
export function encodeCifarBatch(samples: readonly Sample[]): Uint8Array {
  const out = new Uint8Array(samples.length * RECORD);
  const n = SIDE * SIDE;
  samples.forEach((s, r) => {
    if (s.image.width !== SIDE || s.image.height !== SIDE) throw new Error(`sample ${r} is not 32x32`);
    const o = r * RECORD;
    out[o] = s.label;
    for (let p = 0; p < n; p++) {
      for (let c = 0; c < 3; c++) out[o + 1 + c * n + p] = s.image.data[3 * p + c];
    }
  });
  return out;
}
