/**
 * File helpers every layer uses: atomic writes (content goes to a temporary sibling first and is renamed
 * into place, so a crash never leaves a half-written file or model folder behind) and existence checks.
 *
 * @module
 */
import { warn } from "./log.ts";

/** When a process started (clock ticks since boot, from `/proc/<pid>/stat`), or undefined off Linux. */
export function processStart(pid: number | "self"): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the parenthesised command name; starttime is field 22 overall.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/**
 * This process as named in temporary files: `<pid>s<start time>` (`<pid>` where the start time is unknown),
 * so that a later process given the same pid (PID 1 in a container) can tell the leftovers of a crashed one
 * from its own (see `lib/serve/state/liveness.ts`).
 */
export const PROCESS_TAG: string = ((start) => start === undefined ? `${Deno.pid}` : `${Deno.pid}s${start}`)(
  processStart("self"),
);

function tempSibling(path: string): string {
  return `${path}.tmp-${PROCESS_TAG}-${crypto.randomUUID().slice(0, 8)}`;
}

async function writeTemp(tmp: string, data: Uint8Array | string): Promise<void> {
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
}

/** Writes a file atomically (temp file in the same folder, then rename). */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempSibling(path);
  try {
    await writeTemp(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Creates a file atomically, only if nothing exists at `path`: the content goes to a temporary sibling that
 * is then hard-linked into place, so readers see the whole file or none, and of two writers racing for one
 * path exactly one wins (the other gets `Deno.errors.AlreadyExists`).
 */
export async function createFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempSibling(path);
  try {
    await writeTemp(tmp, data);
    await Deno.link(tmp, path);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/** A folder written but not yet in place (see {@linkcode stageDir}). */
export interface StagedDir {
  /** The temporary sibling folder holding the content. */
  readonly path: string;
  /**
   * Puts the folder in place, replacing `dir` whole: an existing `dir` is moved aside first and removed
   * only after the new one is in place. When that fails (another writer's folder took `dir` meanwhile,
   * which then stays, or any other error), it throws, discards the staged folder and puts the old one back.
   */
  commit(): Promise<void>;
  /** Removes the staged folder (a no-op after `commit`). */
  discard(): Promise<void>;
}

/**
 * Writes a folder's content into a fresh temporary sibling of `dir` (named for this process, so that a
 * crash leaves a leftover that `lib/serve/state/liveness.ts` can tell from a live writer's), to be put in
 * place by `commit` later: the content can be written as soon as it is known, and committed once it may be.
 */
export async function stageDir(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<StagedDir> {
  const tmp = tempSibling(dir);
  await Deno.mkdir(tmp, { recursive: true });
  const discard = () => Deno.remove(tmp, { recursive: true }).catch(() => {});
  try {
    await fill(tmp);
  } catch (e) {
    await discard();
    throw e;
  }
  let done = false;
  return {
    path: tmp,
    async commit() {
      done = true;
      let old: string | undefined;
      try {
        await Deno.stat(dir);
        const aside = tempSibling(`${dir}.old`);
        await Deno.rename(dir, aside);
        old = aside;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          await discard();
          throw e;
        }
      }
      try {
        await Deno.rename(tmp, dir);
      } catch (e) {
        await discard();
        // Put the old folder back unless another writer's took its place (ENOTEMPTY), which then stays; when
        // that cannot be told, the old folder is left where it is rather than lost.
        const taken = await pathExists(dir).catch(() => undefined);
        if (old && taken === false) {
          try {
            await Deno.rename(old, dir);
            old = undefined;
          } catch {
            // Removed below, as a replaced folder is.
          }
        } else if (taken === undefined) {
          old = undefined;
        }
        throw e;
      } finally {
        if (old) {
          await Deno.remove(old, { recursive: true }).catch((e) =>
            warn(`${old}: the folder that ${dir} replaced was not removed (${e.message})`)
          );
        }
      }
    },
    async discard() {
      if (!done) await discard();
      done = true;
    },
  };
}

/**
 * Fills a folder atomically: `fill` writes into a fresh temporary sibling folder, which then replaces
 * `dir` whole (see {@linkcode stageDir}).
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  await (await stageDir(dir, fill)).commit();
}

/**
 * True when something exists at `path`; false when it does not; throws on any other error (permissions,
 * I/O), so a failure is not mistaken for an absent file.
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * True when `path` is a folder; false when it is not, does not exist or cannot be read (dataset discovery).
 */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}
