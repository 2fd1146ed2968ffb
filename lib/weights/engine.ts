/**
 * Where the onnx engine caches a sharded model's optimised ONNX Runtime model (lib/onnx/engine_cache.ts), and
 * what it is keyed by. Two places are looked in, in order:
 *
 * 1. `<model folder>/onnx-engine/<float32|int8>/`, written by `deno task convert --onnx-engine` (a deployed
 *    model folder then starts fast on its first start, on a machine with the same CPU and ONNX Runtime);
 * 2. the user cache, `VIT_ONNX_CACHE` (a folder; `off` turns caching off), else
 *    `$XDG_CACHE_HOME/vit-deno/onnx`, else `~/.cache/vit-deno/onnx`: one entry per model folder and weight
 *    storage, written by the first start that misses and replaced when the model changes.
 *
 * The key is the sha256 of `model.json` (which lists the sha256 of every shard, so an entry holds exactly the
 * weights the manifest names, checked when it was built), the weight storage (float32 or int8), a digest of
 * the graph writer's sources, and what lib/onnx/engine_cache.ts adds (ONNX Runtime version, optimisation
 * level, CPU). A hit skips reading the shards and their sha256 check; the size and modification time of
 * `model.json` and every shard must still be those recorded, so a shard changed since then sends the load
 * back to the shards, whose check then reports it.
 *
 * @module
 */
import { type EngineKey, engineKey, type FileStamp, findEngine, stampFiles } from "../onnx/engine_cache.ts";
import { onnxGraphSources, type OnnxWeights } from "../vit/onnx_graph.ts";
import { sha256Hex } from "./sha256.ts";
import type { ModelManifest } from "./manifest.ts";

/** Models whose float32 weights are smaller than this are not cached at load: they open fast anyway. */
export const ENGINE_CACHE_MIN_BYTES = 32 * 2 ** 20;

/** The user cache folder of load-time entries, or undefined when caching is off or no folder is known. */
export function engineCacheRoot(): string | undefined {
  const env = Deno.env.get("VIT_ONNX_CACHE");
  if (env === "off") return undefined;
  if (env) return env.replace(/\/+$/, "");
  const xdg = Deno.env.get("XDG_CACHE_HOME"), home = Deno.env.get("HOME");
  if (xdg) return `${xdg}/vit-deno/onnx`;
  return home ? `${home}/.cache/vit-deno/onnx` : undefined;
}

/** The entry inside a model folder (written by `deno task convert --onnx-engine`). */
export function modelFolderEngine(dir: string, weights: OnnxWeights): string {
  return `${dir.replace(/\/+$/, "")}/onnx-engine/${weights}`;
}

/** What one load of a local model folder looks for and, on a miss, writes. */
export interface EnginePlan {
  key: EngineKey;
  /** The model folder, as a real path. */
  source: string;
  /** `model.json` and the shards, stamped before anything is read. */
  stamps: FileStamp[];
  /** Entry folders looked in, in order. */
  lookIn: string[];
  /** Where a miss writes its entry; undefined when nothing is written. */
  writeTo?: string;
}

/** The float32 bytes of a manifest's weights. */
function float32Bytes(manifest: ModelManifest): number {
  return manifest.weightsManifest.reduce(
    (sum, g) => sum + g.weights.reduce((s, w) => s + 4 * w.shape.reduce((a, b) => a * b, 1), 0),
    0,
  );
}

/**
 * The engine plan of the model folder `dir` whose `model.json` is `manifestBytes` (stamped as `manifestStamp`
 * before it was read); undefined when the graph writer's sources cannot be read. `writeTo` is the user cache
 * entry for models of at least `minBytes` ({@linkcode ENGINE_CACHE_MIN_BYTES} by default), or
 * `options.writeTo` when given.
 */
export async function planEngine(
  dir: string,
  manifest: ModelManifest,
  manifestBytes: Uint8Array,
  manifestStamp: FileStamp,
  weights: OnnxWeights,
  options: { writeTo?: string; minBytes?: number } = {},
): Promise<EnginePlan | undefined> {
  const sources = await onnxGraphSources();
  if (sources === undefined) return undefined;
  const base = dir.replace(/\/+$/, "");
  const shards = manifest.weightsManifest.flatMap((g) => g.paths.map((p) => `${base}/${p}`));
  const stamps = [manifestStamp, ...await stampFiles(shards)];
  const key = await engineKey({
    manifest: await sha256Hex(manifestBytes),
    weights,
    graph: await sha256Hex(new TextEncoder().encode(sources)),
  });
  const root = engineCacheRoot();
  const source = await Deno.realPath(base);
  let userEntry: string | undefined;
  if (root) {
    const id = await sha256Hex(new TextEncoder().encode(`${source}\0${weights}`));
    userEntry = `${root}/${id.slice(0, 24)}`;
  }
  const lookIn = [modelFolderEngine(base, weights), ...(userEntry ? [userEntry] : [])];
  const writeTo = options.writeTo ??
    (float32Bytes(manifest) >= (options.minBytes ?? ENGINE_CACHE_MIN_BYTES) ? userEntry : undefined);
  return { key, source, stamps, lookIn, ...(writeTo ? { writeTo } : {}) };
}

/** The model paths of the entries of `plan` that match, in the order it looks in them. */
export async function* findPlannedEngines(plan: EnginePlan): AsyncGenerator<string> {
  for (const dir of plan.lookIn) {
    const found = await findEngine(dir, plan.key, plan.stamps);
    if (found) yield found;
  }
}
