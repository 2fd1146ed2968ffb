/**
 * The engine cache: a model as ONNX Runtime optimised it, saved once (`openSession`'s `saveTo`: the
 * optimised graph, its initializers and their packed forms in an external data file) and opened from its
 * path on later starts, which skips reading the weights, writing and optimising the graph and packing the
 * weights; ONNX Runtime memory-maps them instead of copying them.
 *
 * Weights packed ahead of time and memory-mapped ran ~25% slower here than the same weights packed at load
 * into the process's own memory (docs/benchmarks.md), while packing at load takes about a second. So
 * {@linkcode openEngine} starts on the ahead-of-time packed graph (`model.onnx`) and, once the first run is
 * done (or the session has sat idle briefly), opens the same graph without the packed forms
 * (`model.unpacked.onnx`, the same data file), which packs at load, and switches to it: a fast first answer,
 * then full speed.
 *
 * An entry is one folder: `engine.json` (its key and the stamps of the files it was built from),
 * `model.onnx`, `model.unpacked.onnx` and `model.onnx.data`, written atomically. It is used only when its key
 * is exactly the one asked for, and the key covers everything the saved file depends on: what the caller says
 * the weights and graph are, the ONNX Runtime version, the optimisation level and the CPU (an optimised file
 * holds CPU-specific layouts). The stamps (size and modification time of each source file) must match as
 * well, so that a source file changed since the entry was built sends the caller back to the files
 * themselves.
 *
 * @module
 */
import { loadOrt, openSession, type OrtSession } from "./ort.ts";
import { decodeMessage, encodeMessage, type Field, fieldText, messageField } from "./protobuf.ts";
import { writeDirAtomic } from "../util/fs.ts";

/** The file an entry's first session opens (weights packed ahead of time). */
export const ENGINE_MODEL = "model.onnx";
/** The same graph without the packed forms: packs at load (full speed). */
export const ENGINE_UNPACKED = "model.unpacked.onnx";
const ENGINE_JSON = "engine.json";
/** Bumped when the layout of an entry changes. */
const ENTRY_FORMAT = "vit-deno-onnx-engine/3";

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
    await Promise.all(
      [ENGINE_MODEL, ENGINE_UNPACKED, `${ENGINE_MODEL}.data`].map((f) => Deno.stat(`${dir}/${f}`)),
    );
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
      const unpacked = withoutPrepacked(await Deno.readFile(`${tmp}/${ENGINE_MODEL}`));
      await Deno.writeFile(`${tmp}/${ENGINE_UNPACKED}`, unpacked);
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

/**
 * A saved model (`ModelProto` bytes) without the packed forms of its initializers: the `external_data`
 * entries ONNX Runtime names `prepacked_*` are dropped, so it reads the plain initializers (same data file)
 * and packs them at load.
 */
export function withoutPrepacked(model: Uint8Array): Uint8Array {
  const TENSOR_EXTERNAL_DATA = 13, GRAPH = 7, INITIALIZER = 5, KEY = 1;
  const prepacked = (f: Field) =>
    f.no === TENSOR_EXTERNAL_DATA &&
    fieldText(decodeMessage(f.bytes!).find((x) => x.no === KEY)!).startsWith("prepacked");
  return encodeMessage(
    decodeMessage(model).map((f) => {
      if (f.no !== GRAPH) return f;
      return messageField(
        GRAPH,
        decodeMessage(f.bytes!).map((g) =>
          g.no === INITIALIZER
            ? messageField(INITIALIZER, decodeMessage(g.bytes!).filter((t) => !prepacked(t)))
            : g
        ),
      );
    }),
  );
}

/**
 * When an opened engine switches to full speed: after its first run, once no run has been asked for during
 * `idleMs`, or at the latest `maxWaitMs` after that first run.
 */
export interface UpgradeTiming {
  idleMs: number;
  maxWaitMs: number;
}

/**
 * Runs wait while ONNX Runtime opens another session here (onnxruntime-node's calls are queued: a run asked
 * for 50 ms into a 2.5 s open returned after it), so the switch never starts before the first answer, then
 * waits for a quiet moment; under continuous load it happens 5 s after the first answer anyway, once.
 */
const UPGRADE_TIMING: UpgradeTiming = { idleMs: 250, maxWaitMs: 5000 };

/**
 * A session that answers from `first` until `later` has opened, then from `later`; `later` is started after
 * the first run, once no run has been asked for during `timing.idleMs` (or `timing.maxWaitMs` after the first
 * run regardless), and `first` is released once its runs in flight are done. If `later` fails, `first` keeps
 * answering and `onError` hears why. `upgraded` resolves when the switch happened (true) or was given up
 * (false); `upgrade()` starts it now (a server's start-up, where the time belongs) and returns `upgraded`.
 */
export function upgradingSession(
  first: OrtSession,
  later: () => Promise<OrtSession>,
  onError: (e: Error) => void = () => {},
  timing: UpgradeTiming = UPGRADE_TIMING,
): UpgradingSession {
  let current = first, inFlight = 0, released = false, started = false;
  let done!: (ok: boolean) => void;
  const upgraded = new Promise<boolean>((resolve) => (done = resolve));
  let next: Promise<void> | undefined;
  let idle: ReturnType<typeof setTimeout> | undefined, deadline: ReturnType<typeof setTimeout> | undefined;
  const releaseFirstWhenIdle = () => {
    if (current !== first && inFlight === 0) first.release().catch(() => {});
  };
  const start = () => {
    if (started || released) return;
    started = true;
    clearTimeout(idle);
    clearTimeout(deadline);
    next = later().then(async (s) => {
      if (released) {
        await s.release();
        return done(false);
      }
      current = s;
      releaseFirstWhenIdle();
      done(true);
    }, (e) => {
      onError(e as Error);
      done(false);
    });
  };
  // Unref'd: a process that is otherwise done (the cold-start probe) does not wait for the switch.
  const waitForQuiet = () => {
    clearTimeout(idle);
    if (started) return;
    idle = setTimeout(() => inFlight === 0 && start(), timing.idleMs);
    Deno.unrefTimer(idle);
    if (deadline === undefined) {
      deadline = setTimeout(start, timing.maxWaitMs);
      Deno.unrefTimer(deadline);
    }
  };
  return {
    upgraded,
    upgrade() {
      start();
      return upgraded;
    },
    async run(input, shape) {
      const session = current;
      if (session === first) {
        inFlight++;
        clearTimeout(idle);
      }
      try {
        return await session.run(input, shape);
      } finally {
        if (session === first) {
          inFlight--;
          releaseFirstWhenIdle();
          waitForQuiet();
        }
      }
    },
    async release() {
      released = true;
      clearTimeout(idle);
      clearTimeout(deadline);
      await next;
      await current.release();
      done(false);
    },
  };
}

/** An {@linkcode upgradingSession}: an `OrtSession` that switches to full speed. */
export interface UpgradingSession extends OrtSession {
  upgraded: Promise<boolean>;
  upgrade(): Promise<boolean>;
}

/** The entry's `engine.json` as text, when it holds `key` (else an error saying the entry changed). */
async function recordWithKey(dir: string, key: EngineKey): Promise<string> {
  const text = await Deno.readTextFile(`${dir}/${ENGINE_JSON}`);
  const record: EntryRecord = JSON.parse(text);
  if (!record?.key || !sameKey(record.key, key)) throw new Error(`${dir} now holds another model`);
  return text;
}

/**
 * Opens an entry found by {@linkcode findEngine} for `key` (the path of its `model.onnx`): on the packed
 * graph first, switching to the unpacked one when idle (see the module doc). Another process may replace the
 * entry meanwhile (a new model in the same folder): each open is followed by a check that `engine.json` is
 * still the one read before it, so a session never mixes two entries; a failed check before the first session
 * throws, before the switch it keeps the first session and tells `onError`.
 */
export async function openEngine(
  modelPath: string,
  key: EngineKey,
  onError?: (e: Error) => void,
): Promise<UpgradingSession> {
  const dir = modelPath.slice(0, modelPath.lastIndexOf("/"));
  const record = await recordWithKey(dir, key);
  const checked = async (path: string) => {
    const session = await openSession(path);
    if ((await Deno.readTextFile(`${dir}/${ENGINE_JSON}`).catch(() => "")) !== record) {
      await session.release();
      throw new Error(`${dir} was replaced while it was being opened`);
    }
    return session;
  };
  const first = await checked(modelPath);
  return upgradingSession(first, () => checked(`${dir}/${ENGINE_UNPACKED}`), onError);
}
