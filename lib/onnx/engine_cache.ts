/**
 * The engine cache: a model as ONNX Runtime optimised it, saved once (`openSession`'s `saveTo`: the
 * optimised graph, its initializers and their prepacked forms in an external data file) and opened from its
 * path on later starts, which skips writing the graph, optimising it and prepacking the weights; ONNX
 * Runtime memory-maps the weights instead of copying them.
 *
 * An entry is one folder: `engine.json` (its key and the stamps of the files it was built from),
 * `model.onnx` and `model.onnx.data`, written atomically. It is used only when its key is exactly the one
 * asked for, and the key covers everything the saved file depends on: what the caller says the weights and
 * graph are, the ONNX Runtime version, the optimisation level and the CPU (an optimised file holds
 * CPU-specific layouts). The stamps (size and modification time of each source file) must match as well, so
 * that a source file changed since the entry was built sends the caller back to the files themselves.
 *
 * @module
 */
import { loadOrt, type OrtSession } from "./ort.ts";
import { writeDirAtomic } from "../util/fs.ts";

/** The file an entry's session opens. */
export const ENGINE_MODEL = "model.onnx";
const ENGINE_JSON = "engine.json";
/** Bumped when the layout of an entry changes. */
const ENTRY_FORMAT = "vit-deno-onnx-engine/1";

/** Size and modification time of a file an entry was built from. */
export interface FileStamp {
  path: string;
  size: number;
  mtimeMs: number | null;
}

/** Stamps of `paths`, taken before the files are read, so that a later change always shows. */
export async function stampFiles(paths: readonly string[]): Promise<FileStamp[]> {
  return await Promise.all(paths.map(async (path) => {
    const info = await Deno.stat(path);
    return { path, size: info.size, mtimeMs: info.mtime?.getTime() ?? null };
  }));
}

let cpuId: Promise<string> | undefined;

/**
 * What identifies this CPU to an optimised model: on Linux the model name and feature flags of
 * `/proc/cpuinfo` (ONNX Runtime picks kernels and packed layouts by instruction set), else the OS and arch.
 */
export function cpuIdentity(): Promise<string> {
  cpuId ??= (async () => {
    const base = `${Deno.build.os}/${Deno.build.arch}`;
    try {
      const info = await Deno.readTextFile("/proc/cpuinfo");
      const field = (name: string) => info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "";
      return `${base} ${field("model name")} ${field("flags") || field("Features")}`;
    } catch {
      return base;
    }
  })();
  return cpuId;
}

/** What an entry was built from; two keys are equal when every part is. */
export type EngineKey = Record<string, string>;

/**
 * The key of an entry: the caller's `parts` (what the weights and the graph are), with the ONNX Runtime
 * version, the optimisation level and the CPU added.
 */
export async function engineKey(parts: EngineKey, optimization = "all"): Promise<EngineKey> {
  const loaded = await loadOrt();
  const ort = "error" in loaded ? "unavailable" : loaded.version;
  return { ...parts, entry: ENTRY_FORMAT, ort, optimization, cpu: await cpuIdentity() };
}

function sameKey(a: EngineKey, b: EngineKey): boolean {
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => typeof a[k] === "string" && a[k] === b[k]);
}

interface EntryRecord {
  format: string;
  key: EngineKey;
  files: FileStamp[];
  created: string;
  /** The folder the files were in when the entry was written (what {@linkcode pruneEngines} checks). */
  source: string;
}

/**
 * The model path of the entry in `dir` when its key is `key` and every file it was built from still has the
 * stamp it had then; undefined otherwise. Never throws: an unreadable entry is a miss.
 */
export async function findEngine(
  dir: string,
  key: EngineKey,
  stamps: readonly FileStamp[],
): Promise<string | undefined> {
  let record: EntryRecord;
  try {
    record = JSON.parse(await Deno.readTextFile(`${dir}/${ENGINE_JSON}`));
  } catch {
    return undefined;
  }
  if (record?.format !== ENTRY_FORMAT || !record.key || !sameKey(record.key, key)) return undefined;
  if (!sameStamps(record.files, stamps)) return undefined;
  try {
    await Deno.stat(`${dir}/${ENGINE_MODEL}`);
  } catch {
    return undefined;
  }
  return `${dir}/${ENGINE_MODEL}`;
}

/** True when both lists stamp the same files (by name within their folder) with the same size and time. */
function sameStamps(recorded: readonly FileStamp[], now: readonly FileStamp[]): boolean {
  if (!Array.isArray(recorded) || recorded.length !== now.length) return false;
  const name = (p: string) => p.slice(p.lastIndexOf("/") + 1);
  return recorded.every((r, i) =>
    name(r.path) === name(now[i].path) && r.size === now[i].size && r.mtimeMs === now[i].mtimeMs
  );
}

/**
 * Writes the entry `dir` (replacing what is there, atomically) for files of the folder `source`: `open`
 * opens the session while saving the optimised model to the path it is given. Returns that session, which
 * keeps working after the folder moves into place (it holds its weights in memory).
 */
export async function writeEngine(
  dir: string,
  source: string,
  key: EngineKey,
  stamps: readonly FileStamp[],
  open: (saveTo: string) => Promise<OrtSession>,
): Promise<OrtSession> {
  let session: OrtSession | undefined;
  try {
    await writeDirAtomic(dir, async (tmp) => {
      session = await open(`${tmp}/${ENGINE_MODEL}`);
      const record: EntryRecord = {
        format: ENTRY_FORMAT,
        key,
        // Only file names: an entry inside a model folder stays valid when the folder is copied or moved.
        files: stamps.map((s) => ({ ...s, path: s.path.slice(s.path.lastIndexOf("/") + 1) })),
        created: new Date().toISOString(),
        source,
      };
      await Deno.writeTextFile(`${tmp}/${ENGINE_JSON}`, JSON.stringify(record, null, 1) + "\n");
    });
  } catch (e) {
    await session?.release();
    throw e;
  }
  return session!;
}

/**
 * Removes the entries under `root` whose source folder no longer exists (a cache of model folders that were
 * deleted, such as temporary ones, would otherwise only grow). Never throws.
 */
export async function pruneEngines(root: string): Promise<string[]> {
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (!e.isDirectory) continue;
      const dir = `${root}/${e.name}`;
      let record: EntryRecord;
      try {
        record = JSON.parse(await Deno.readTextFile(`${dir}/${ENGINE_JSON}`));
      } catch {
        continue; // not an entry, or one still being written
      }
      if (typeof record?.source !== "string") continue;
      try {
        await Deno.stat(record.source);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) continue;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        removed.push(dir);
      }
    }
  } catch {
    // No root yet, or unreadable: nothing to prune.
  }
  return removed;
}
