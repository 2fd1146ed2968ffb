/**
 * Loading sharded weights (`model.json` + shards) from a local folder or an http(s) URL: shards are read or
 * fetched in parallel and every one is checked against its sha256 before any weight is used.
 *
 * @module
 */
import { initBackend } from "../backend/backend.ts";
import { ENGINE_MODEL, openEngine, pruneEngines, stampFiles, writeEngine } from "../onnx/engine_cache.ts";
import { openSession } from "../onnx/ort.ts";
import {
  type CreateOptions,
  createViT,
  onnxWeightsFromEnv,
  openOnnxViT,
  type ViTModel,
} from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { decodeInt8Entry, int8EntryBytes, int8Tensor } from "../vit/int8.ts";
import type { OnnxWeights } from "../vit/onnx_graph.ts";
import { resolveConfig } from "../vit/config.ts";
import { vitOnnxModel } from "../vit/onnx_graph.ts";
import { f16ToF32 } from "./dtype.ts";
import {
  engineCacheRoot,
  type EnginePlan,
  findPlannedEngines,
  modelFolderEngine,
  planEngine,
} from "./engine.ts";
import { isShardPath, type ModelManifest, SHARD_PATH_RULE, validateManifest } from "./manifest.ts";
import { sha256Hex } from "./sha256.ts";
import { notice } from "../util/log.ts";

/** Options of {@linkcode loadWeights} and {@linkcode loadModel}. */
export interface LoadOptions {
  /** How many shards are fetched at once; 8 by default. */
  concurrency?: number;
  /** The fetch to use for URLs (tests inject one); the global fetch by default. */
  fetch?: typeof fetch;
  /**
   * The model's files, already read ({@linkcode readModelFiles}): loaded from memory instead of `location`,
   * which then only names the model in messages.
   */
  files?: ModelFiles;
  /**
   * The smallest model (float32 bytes of its weights) whose engine a load writes to the user cache;
   * `ENGINE_CACHE_MIN_BYTES` (lib/weights/engine.ts) by default.
   */
  engineCacheMinBytes?: number;
}

/** A converted model's files by their path in its folder: `model.json` and the shards it lists. */
export type ModelFiles = Map<string, Uint8Array>;

/** A model loaded from sharded weights, with its manifest (labels, preprocessing, source). */
export interface LoadedModel {
  model: ViTModel;
  manifest: ModelManifest;
  /** The folder or URL it was loaded from. */
  location: string;
  /** The engine cache entry this load opened or wrote (onnx engine, inference only), if any. */
  engineCache?: { entry: string; opened: boolean };
}

function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location);
}

function join(location: string, file: string): string {
  if (isUrl(location)) return new URL(file, location.endsWith("/") ? location : `${location}/`).href;
  return `${location.replace(/\/+$/, "")}/${file}`;
}

async function readBytes(location: string, what: string, fetcher: typeof fetch): Promise<Uint8Array> {
  if (isUrl(location)) {
    let res: Response;
    try {
      res = await fetcher(location);
    } catch (e) {
      throw new Error(`${what}: fetching ${location} failed (${(e as Error).message})`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`${what}: ${location} answered HTTP ${res.status}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  }
  try {
    return await Deno.readFile(location);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${what}: ${location} does not exist`);
    throw new Error(`${what}: reading ${location} failed (${(e as Error).message})`);
  }
}

async function fileSize(path: string, what: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${what}: ${path} does not exist`);
    throw new Error(`${what}: reading ${path} failed (${(e as Error).message})`);
  }
}

/** Reads a file of known size into `target`; a file that changed size meanwhile is an error. */
async function readInto(path: string, target: Uint8Array, what: string): Promise<void> {
  using file = await Deno.open(path);
  let at = 0;
  while (at < target.length) {
    const n = await file.read(target.subarray(at));
    if (n === null) throw new Error(`${what}: ${path} ended at byte ${at}, expected ${target.length}`);
    at += n;
  }
  if ((await file.read(new Uint8Array(1))) !== null) {
    throw new Error(`${what}: ${path} grew while being read`);
  }
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Reads and validates `model.json` of a folder or URL, with its bytes. */
async function readManifestBytes(
  location: string,
  options: LoadOptions,
): Promise<{ manifest: ModelManifest; bytes: Uint8Array }> {
  const where = join(location, "model.json");
  const bytes = options.files?.get("model.json") ??
    await readBytes(where, "model.json", options.fetch ?? fetch);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
  }
  return { manifest: validateManifest(json, where), bytes };
}

/** Reads and validates `model.json` of a folder or URL. */
export async function readManifest(location: string, options: LoadOptions = {}): Promise<ModelManifest> {
  return (await readManifestBytes(location, options)).manifest;
}

/** Loads the manifest and the verified weights as a timm-named float32 state dict. */
export async function loadWeights(
  location: string,
  options: LoadOptions = {},
): Promise<{ manifest: ModelManifest; state: StateDict }> {
  return await readShards(location, await readManifest(location, options), options);
}

/**
 * The sha256 of shard bytes {@linkcode readModelFiles} has hashed, so that loading them does not hash again.
 */
const hashed = new WeakMap<Uint8Array, string>();

/** Throws unless `bytes` are shard `path` of `manifest` (its sha256). */
async function verifyShard(manifest: ModelManifest, path: string, bytes: Uint8Array): Promise<void> {
  const actual = hashed.get(bytes) ?? await sha256Hex(bytes);
  if (actual !== manifest.shards[path]) {
    throw new Error(
      `shard ${path}: sha256 ${actual} does not match the manifest's ${manifest.shards[path]} ` +
        `(${bytes.length} bytes; the shard is corrupt or truncated)`,
    );
  }
}

/**
 * Reads a converted model's files (`model.json` and the shards it lists) from a folder or an http(s) URL,
 * every shard checked against its sha256, to be kept elsewhere ({@linkcode writeModelFiles}) and loaded
 * from memory (`LoadOptions.files`) without being read twice.
 *
 * @example Keep a local copy of a model served over HTTP
 * ```ts
 * const { files } = await readModelFiles("https://example.com/models/cifar10/");
 * await writeModelFiles("/var/cache/cifar10", files);
 * ```
 */
export async function readModelFiles(
  location: string,
  options: LoadOptions = {},
): Promise<{ manifest: ModelManifest; files: ModelFiles }> {
  const { manifest, bytes } = await readManifestBytes(location, options);
  const paths = [...new Set(manifest.weightsManifest.flatMap((g) => g.paths))];
  const shards = await mapLimit(paths, options.concurrency ?? 8, async (path) => {
    const data = await readBytes(join(location, path), `shard ${path}`, options.fetch ?? fetch);
    await verifyShard(manifest, path, data);
    hashed.set(data, manifest.shards[path]);
    return data;
  });
  return {
    manifest,
    files: new Map([["model.json", bytes], ...paths.map((p, i) => [p, shards[i]] as const)]),
  };
}

/**
 * Writes a model's files (see {@linkcode readModelFiles}) into the folder `dir`, creating it. Throws, writing
 * nothing, unless every path is `model.json` or a shard path (`isShardPath`): none may leave the folder.
 */
export async function writeModelFiles(dir: string, files: ModelFiles): Promise<void> {
  for (const path of files.keys()) {
    if (path !== "model.json" && !isShardPath(path)) {
      throw new Error(`model file ${JSON.stringify(path)}: expected ${SHARD_PATH_RULE}`);
    }
  }
  const root = dir.replace(/\/+$/, "");
  const folders = new Set([...files.keys()].map((path) => `${root}/${path}`.replace(/\/[^/]*$/, "")));
  for (const folder of folders) await Deno.mkdir(folder, { recursive: true });
  for (const [path, data] of files) await Deno.writeFile(`${root}/${path}`, data);
}

/** The verified weights `manifest` lists, read from `location`. */
async function readShards(
  location: string,
  manifest: ModelManifest,
  options: LoadOptions,
): Promise<{ manifest: ModelManifest; state: StateDict }> {
  const fetcher = options.fetch ?? fetch;
  const state: StateDict = new Map();
  for (const group of manifest.weightsManifest) {
    const verify = (path: string, bytes: Uint8Array) => verifyShard(manifest, path, bytes);
    let all: Uint8Array;
    if (!isUrl(location) && !options.files) {
      // Local shards are read straight into one buffer: no per-shard copies to concatenate.
      const sizes = await Promise.all(
        group.paths.map((path) => fileSize(join(location, path), `shard ${path}`)),
      );
      const starts = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
      all = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
      await mapLimit(group.paths.map((_path, i) => i), options.concurrency ?? 8, async (i) => {
        const path = group.paths[i], slot = all.subarray(starts[i], starts[i] + sizes[i]);
        await readInto(join(location, path), slot, `shard ${path}`);
        await verify(path, slot);
      });
    } else {
      const shards = await mapLimit(group.paths, options.concurrency ?? 8, async (path) => {
        const bytes = options.files?.get(path) ??
          await readBytes(join(location, path), `shard ${path}`, fetcher);
        await verify(path, bytes);
        return bytes;
      });
      all = shards.length === 1 ? shards[0] : new Uint8Array(shards.reduce((a, x) => a + x.length, 0));
      if (shards.length > 1) {
        let at = 0;
        for (const x of shards) {
          all.set(x, at);
          at += x.length;
        }
      }
    }
    const size = all.length;
    let offset = 0;
    for (const w of group.weights) {
      const count = w.shape.reduce((a, b) => a * b, 1);
      const int8 = w.quantization?.dtype === "int8";
      const end = offset + (int8 ? int8EntryBytes(w.shape) : count * (w.quantization ? 2 : 4));
      if (end > size) {
        throw new Error(
          `${location}: weight "${w.name}" ends at byte ${end}, but the shards hold ${size} bytes`,
        );
      }
      // fp16 is widened straight from the shard bytes; fp32 gets its own copy (callers may keep one tensor
      // and drop the rest).
      const at = all.byteOffset + offset;
      if (int8) {
        // int8 stays int8 (lib/vit/int8.ts): the int8 graph takes it as it is; float engines widen it.
        state.set(w.name, int8Tensor(w.shape, decodeInt8Entry(all.subarray(offset, end), w.shape)));
        offset = end;
        continue;
      }
      const data = !w.quantization ? new Float32Array(all.slice(offset, end).buffer) : f16ToF32(
        at % 2 === 0
          ? new Uint16Array(all.buffer, at, count)
          : new Uint16Array(all.slice(offset, end).buffer),
      );
      state.set(w.name, { shape: w.shape, data });
      offset = end;
    }
    if (offset !== size) {
      throw new Error(`${location}: the shards hold ${size} bytes, the weights listed use ${offset}`);
    }
  }
  return { manifest, state };
}

/**
 * Loads a converted model from a local folder or an http(s) URL (shards fetched in parallel, every shard's
 * sha256 verified) and builds it on the current backend. An inference-only model (`trainable: false`) from a
 * local folder on the onnx engine goes through the engine cache (lib/weights/engine.ts): a matching entry is
 * opened without reading the shards; on a miss the model is loaded from them and its entry written.
 */
export async function loadModel(
  location: string,
  options: LoadOptions & CreateOptions = {},
): Promise<LoadedModel> {
  const engine = (await initBackend()).engine;
  if (options.trainable === false && !isUrl(location) && !options.files && engine === "onnx") {
    return await loadCached(location, options);
  }
  const { manifest, state } = await loadWeights(location, options);
  const inferenceOnnx = options.trainable === false && engine === "onnx";
  if (manifest.dtype === "int8" && !inferenceOnnx) {
    notice(
      `${join(location, "model.json")} holds int8 weights: widened to float32 for ${
        options.trainable === false ? `the ${engine} engine` : "training"
      } (they run as int8 only on the onnx engine, for inference)`,
    );
  }
  const model = await createViT(manifest.vit, state, {
    ...options,
    onnxWeights: weightsMode(manifest, options),
  });
  return { model, manifest, location };
}

/**
 * How the onnx graph stores the blocks' weights: int8 for int8 shards, else as asked (`VIT_ONNX_WEIGHTS`).
 */
function weightsMode(manifest: ModelManifest, options: CreateOptions): OnnxWeights {
  return manifest.dtype === "int8" ? "int8" : options.onnxWeights ?? onnxWeightsFromEnv();
}

function upgradeFailed(entry: string, e: Error): void {
  notice(
    `onnx engine cache ${entry}: the full-speed session did not open (${e.message}); serving on the packed one`,
  );
}

/** The plan of a local folder, its manifest stamped before it is read. */
async function planFor(
  location: string,
  options: LoadOptions & CreateOptions,
  writeTo?: (weights: OnnxWeights) => string,
): Promise<{ manifest: ModelManifest; plan: EnginePlan | undefined; weights: OnnxWeights }> {
  const [manifestStamp] = await stampFiles([join(location, "model.json")]).catch(() => [undefined]);
  const { manifest, bytes } = await readManifestBytes(location, options);
  const weights = weightsMode(manifest, options);
  const plan = manifestStamp
    ? await planEngine(location, manifest, bytes, manifestStamp, weights, {
      ...(writeTo ? { writeTo: writeTo(weights) } : {}),
      ...(options.engineCacheMinBytes !== undefined ? { minBytes: options.engineCacheMinBytes } : {}),
    })
      // A shard that cannot be stamped is missing: reading the shards reports it.
      .catch(() => undefined)
    : undefined;
  return { manifest, plan, weights };
}

/** The model built from the shards, its session saving an entry to `plan.writeTo` when there is one. */
async function buildAndSave(
  location: string,
  manifest: ModelManifest,
  plan: EnginePlan | undefined,
  options: LoadOptions & CreateOptions,
): Promise<LoadedModel> {
  const { state } = await readShards(location, manifest, options);
  const writeTo = plan?.writeTo;
  if (!plan || !writeTo) return { model: await createViT(manifest.vit, state, options), manifest, location };
  let written = false;
  const model = await createViT(manifest.vit, state, {
    ...options,
    openOnnx: async (graph) => {
      try {
        const session = await writeEngine(
          writeTo,
          plan.source,
          plan.key,
          plan.stamps,
          (saveTo) => openSession(graph(), { saveTo }),
        );
        notice(`onnx engine cache written to ${writeTo} (later starts of ${location} open it)`);
        const root = engineCacheRoot();
        if (root && writeTo.startsWith(`${root}/`)) await pruneEngines(root);
        written = true;
        // The session that saved the entry holds ~1 GB more than one opened from it (ViT-B/16: RSS 1.6 GB
        // against 0.6 GB), so the entry is opened as later starts open it.
        await session.release();
        return await openEngine(`${writeTo}/${ENGINE_MODEL}`, plan.key, (e) => upgradeFailed(writeTo, e));
      } catch (e) {
        const why = (e as Error).message.split("\n")[0];
        notice(
          `onnx engine cache ${written ? "written but not opened" : "not written"} at ${writeTo} (${why})`,
        );
        return await openSession(graph());
      }
    },
  });
  return {
    model,
    manifest,
    location,
    ...(written ? { engineCache: { entry: writeTo, opened: false } } : {}),
  };
}

async function loadCached(location: string, loadOptions: LoadOptions & CreateOptions): Promise<LoadedModel> {
  const { manifest, plan, weights } = await planFor(location, loadOptions);
  const options = { ...loadOptions, onnxWeights: weights };
  // Entries in the order the plan looks (the model folder's, then the user cache); one that fails to open
  // (a data file cut short, say) gives way to the next before anything is rebuilt.
  for await (const found of plan ? findPlannedEngines(plan) : []) {
    try {
      const open = () => openEngine(found, plan!.key, (e) => upgradeFailed(found, e));
      const model = await openOnnxViT(manifest.vit, open, options);
      const entry = found.slice(0, found.lastIndexOf("/"));
      return { model, manifest, location, engineCache: { entry, opened: true } };
    } catch (e) {
      notice(`onnx engine cache ${found} could not be opened (${(e as Error).message.split("\n")[0]})`);
    }
  }
  return await buildAndSave(location, manifest, plan, options);
}

/**
 * Writes the engine cache entry inside the local model folder `dir` (`<dir>/onnx-engine/<weights>/`), from
 * its verified shards, for starts on a machine with this CPU and ONNX Runtime version; returns the entry's
 * folder. The weight storage is int8 for int8 shards, else `options.onnxWeights` (`VIT_ONNX_WEIGHTS`). The
 * onnx engine must be available.
 */
export async function writeModelFolderEngine(
  dir: string,
  options: LoadOptions & Pick<CreateOptions, "onnxWeights"> = {},
): Promise<string> {
  const { manifest, plan, weights } = await planFor(dir, options, (w) => modelFolderEngine(dir, w));
  const target = modelFolderEngine(dir, weights);
  if (!plan) {
    throw new Error(`${dir}: the onnx graph writer's sources cannot be read, so no engine is cached`);
  }
  const { state } = await readShards(dir, manifest, options);
  const graph = vitOnnxModel(resolveConfig(manifest.vit), state, { weights });
  state.clear();
  const session = await writeEngine(
    target,
    plan.source,
    plan.key,
    plan.stamps,
    (saveTo) => openSession(graph, { saveTo }),
  );
  await session.release();
  return target;
}
