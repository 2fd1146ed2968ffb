/**
 * Frozen work done once: when `freeze` leaves a prefix of the network fixed (patch embedding, tokens, blocks
 * 0..N−1, and with `head-only` the final norm too), its output for each distinct input view is computed once
 * and kept, so a training step runs forward and backward through the trainable suffix only.
 *
 * Keys are content hashes: SHA-256 of the frozen prefix's weights, its split point, architecture and engine
 * (the model key), and SHA-256 of each preprocessed, augmented input image. A different base model, a changed
 * preprocessing or another augmentation draw therefore never meets a stale entry, in memory or on disk.
 *
 * Bounded: entries live in memory up to `memoryBytes` and, when a folder is given, on disk up to `diskBytes`
 * (one file per entry, written atomically); at most `maxViewsPerImage` views of one sample are stored (a
 * flip gives two), further views are computed and not kept. Augmentation that makes nearly every view new
 * (random crops, RandAugment, mixing) turns caching off: see {@linkcode cacheableAugment}.
 *
 * @module
 */
import type { TrainAugment } from "../data/augment.ts";
import type { ViTModel } from "../vit/model.ts";
import type { DeviceGrads, LossOptions, Targets } from "../vit/model.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** Budgets and place of a {@linkcode FrozenPrefixCache}. */
export interface FrozenCacheOptions {
  /** Bytes of prefix outputs kept in memory. Default 512 MiB. */
  memoryBytes?: number;
  /** A folder for entries beyond memory, kept across runs; none by default. */
  dir?: string;
  /** Bytes of entries in `dir`. Default 2 GiB. */
  diskBytes?: number;
  /** Distinct views of one sample kept. Default 2 (an image and its flip). */
  maxViewsPerImage?: number;
}

/** What the cache did so far. */
export interface FrozenCacheStats {
  /** Images whose prefix came from memory or disk. */
  hits: number;
  /** Images whose prefix was computed. */
  misses: number;
  /** Entries held in memory and on disk (this process's writes and reads). */
  memoryEntries: number;
  diskEntries: number;
  memoryBytes: number;
}

/**
 * Whether caching suits `augment`: only a horizontal flip (two views per image) or nothing. Any other
 * augmentation field that is on (crops, RandAugment, mixing, erasing …) makes nearly every view new.
 */
export function cacheableAugment(augment: TrainAugment | undefined): boolean {
  if (!augment) return true;
  return Object.entries(augment).every(([k, v]) => k === "hflip" || !v);
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(data: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

/**
 * The frozen prefix's outputs of one model, by input view. Create with {@linkcode FrozenPrefixCache.create}.
 */
export class FrozenPrefixCache {
  readonly #memory = new Map<string, Float32Array>();
  readonly #viewsOf = new Map<number, number>();
  #memoryBytes = 0;
  #diskBytes = 0;
  #diskEntries = 0;
  #hits = 0;
  #misses = 0;

  private constructor(
    readonly model: ViTModel,
    /** Where the prefix ends (`ViTModel.frozenSplit`). */
    readonly split: number,
    /** SHA-256 of the prefix's weights, split, architecture and engine. */
    readonly modelKey: string,
    readonly options: Required<Omit<FrozenCacheOptions, "dir">> & { dir?: string },
  ) {}

  /**
   * A cache for `model`'s frozen prefix, or undefined when nothing before the trainable part is frozen (or
   * only the embeddings are: recomputing them costs less than looking them up).
   */
  static async create(
    model: ViTModel,
    options: FrozenCacheOptions = {},
  ): Promise<FrozenPrefixCache | undefined> {
    const split = model.frozenSplit();
    if (split < 1) return undefined;
    // Parameters the prefix reads: embeddings, blocks before the split, and the final norm past the blocks.
    const used = (name: string) => {
      const m = /^blocks\.(\d+)\./.exec(name);
      if (m) return Number(m[1]) < split;
      if (name.startsWith("norm.")) return split > model.config.depth;
      return !name.startsWith("head.");
    };
    const parts: Uint8Array[] = [
      new TextEncoder().encode(JSON.stringify({
        split,
        config: model.config,
        backend: model.backend.name,
        kernels: model.backend.kernels,
        // On the onnx engine the prefix runs on ONNX Runtime, whose results differ in the last bits.
        engine: model.onOnnx ? `onnx ${model.backend.ort?.version}` : "tfjs",
      })),
    ];
    for (
      const [name, v] of [...model.variables].filter(([n]) => used(n)).sort(([a], [b]) => a < b ? -1 : 1)
    ) {
      parts.push(new TextEncoder().encode(`${name}:${v.shape.join("x")}`));
      const data = await v.data() as Float32Array;
      parts.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
    const total = parts.reduce((a, p) => a + p.length, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    const modelKey = await sha256(all);
    if (options.dir) await Deno.mkdir(options.dir, { recursive: true });
    return new FrozenPrefixCache(model, split, modelKey, {
      memoryBytes: options.memoryBytes ?? 512 * 2 ** 20,
      diskBytes: options.diskBytes ?? 2 * 2 ** 30,
      maxViewsPerImage: options.maxViewsPerImage ?? 2,
      ...(options.dir ? { dir: options.dir } : {}),
    });
  }

  /** Counters so far. */
  get stats(): FrozenCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      memoryEntries: this.#memory.size,
      diskEntries: this.#diskEntries,
      memoryBytes: this.#memoryBytes,
    };
  }

  #file(key: string): string {
    return `${this.options.dir}/${this.modelKey.slice(0, 16)}-${key}.f32`;
  }

  async #fromDisk(key: string, per: number): Promise<Float32Array | undefined> {
    if (!this.options.dir) return undefined;
    try {
      const bytes = await Deno.readFile(this.#file(key));
      if (bytes.byteLength !== per * 4) return undefined;
      return new Float32Array(bytes.buffer, bytes.byteOffset, per);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async #store(key: string, sample: number, row: Float32Array): Promise<void> {
    const views = this.#viewsOf.get(sample) ?? 0;
    if (views >= this.options.maxViewsPerImage) return;
    const bytes = row.byteLength;
    if (this.#memoryBytes + bytes <= this.options.memoryBytes) {
      this.#memory.set(key, row);
      this.#memoryBytes += bytes;
    } else if (this.options.dir && this.#diskBytes + bytes <= this.options.diskBytes) {
      await writeFileAtomic(this.#file(key), new Uint8Array(row.buffer, row.byteOffset, bytes));
      this.#diskBytes += bytes;
      this.#diskEntries++;
    } else return;
    this.#viewsOf.set(sample, views + 1);
  }

  /**
   * The prefix outputs of a batch of preprocessed images (`ids` name the samples, for the per-image view
   * bound), looked up by content and computed in one pass for the misses.
   */
  async prefixes(
    ids: ArrayLike<number>,
    input: Float32Array,
    shape: readonly number[],
  ): Promise<Float32Array> {
    const n = shape[0], pixels = shape[1] * shape[2] * shape[3];
    const per = this.model.prefixSize(this.split);
    const out = new Float32Array(n * per);
    const keys: string[] = [];
    const missing: number[] = [];
    for (let i = 0; i < n; i++) {
      const image = input.subarray(i * pixels, (i + 1) * pixels);
      const key = await sha256(new Uint8Array(image.buffer, image.byteOffset, image.byteLength));
      keys.push(key);
      const row = this.#memory.get(key) ?? await this.#fromDisk(key, per);
      if (row) {
        out.set(row, i * per);
        this.#hits++;
      } else missing.push(i);
    }
    if (missing.length) {
      const batch = new Float32Array(missing.length * pixels);
      missing.forEach((i, j) => batch.set(input.subarray(i * pixels, (i + 1) * pixels), j * pixels));
      const rows = await this.model.prefixOutputs(
        batch,
        [missing.length, shape[1], shape[2], shape[3]],
        this.split,
      );
      for (const [j, i] of missing.entries()) {
        const row = rows.slice(j * per, (j + 1) * per);
        out.set(row, i * per);
        await this.#store(keys[i], ids[i], row);
      }
      this.#misses += missing.length;
    }
    return out;
  }

  /** Loss and gradients of a batch through the trainable suffix, its prefix from the cache. */
  async lossAndDeviceGrads(
    ids: ArrayLike<number>,
    input: Float32Array,
    shape: readonly number[],
    labels: Targets,
    options: LossOptions = {},
  ): Promise<DeviceGrads> {
    const prefix = await this.prefixes(ids, input, shape);
    return await this.model.lossAndDeviceGradsFromPrefix(prefix, shape[0], this.split, labels, options);
  }
}
