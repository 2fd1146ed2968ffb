/**
 * Telling whether the process that wrote something (a session record, a half-written model folder, an
 * extracted upload) is still running, so a restarted server can clean up after a crashed one without
 * touching the work of a live sibling (workers of `deno serve --parallel` share one process).
 *
 * @module
 */
import { PROCESS_TAG, processStart } from "../../util/fs.ts";

export { PROCESS_TAG };

/** This process, as recorded in what it owns. */
export const SELF: { pid: number; start?: number } = { pid: Deno.pid, start: processStart("self") };

/**
 * Whether process `pid` (started at `start`, when known) still runs. A reused pid is told apart by its start
 * time; without /proc (not Linux) only this process counts as alive.
 */
export function processAlive(pid: number, start?: number): boolean {
  if (pid === SELF.pid) return start === undefined || SELF.start === undefined || start === SELF.start;
  const actual = processStart(pid);
  return actual !== undefined && (start === undefined || actual === start);
}

/** The writer named by a tag `<pid>` or `<pid>s<start>` (see `PROCESS_TAG`). */
export function parseProcessTag(tag: string): { pid: number; start?: number } {
  const [pid, start] = tag.split("s");
  return start === undefined ? { pid: Number(pid) } : { pid: Number(pid), start: Number(start) };
}

/** Whether the process named by a tag (see `PROCESS_TAG`) still runs. */
export function tagAlive(tag: string): boolean {
  const { pid, start } = parseProcessTag(tag);
  // This process names what it writes with its start time whenever it knows it: a name with this pid and
  // no start time was left by an earlier process that had the same pid (PID 1 in a container).
  if (pid === SELF.pid && start === undefined && SELF.start !== undefined) return false;
  return processAlive(pid, start);
}

/** The tag group of temporary names: `<pid>` or `<pid>s<start>`. */
const TAG = String.raw`(\d+(?:s\d+)?)`;

/** Temporary siblings of atomic writes, `<name>.tmp-<tag>-<random>` (see `lib/util/fs.ts`). */
export const TEMP_SIBLING: RegExp = new RegExp(String.raw`\.tmp-${TAG}-[0-9a-f-]+$`);

/** Extracted uploads and their archives, `<tag>-<uuid>[.upload]` in `<state-dir>/uploads`. */
export const UPLOAD_NAME: RegExp = new RegExp(String.raw`^${TAG}-[0-9a-f-]+(\.upload)?$`);

/**
 * Removes the entries of `dir` left by dead processes: names matching `pattern`, whose first capture group
 * is the writer's tag (`<pid>` or `<pid>s<start>`: a pid reused by a later process is told apart by its
 * start time). Returns the names removed.
 */
export async function removeOrphans(dir: string, pattern: RegExp): Promise<string[]> {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return removed;
  }
  for (const e of entries) {
    const m = pattern.exec(e.name);
    if (!m || tagAlive(m[1])) continue;
    await Deno.remove(`${dir}/${e.name}`, { recursive: true }).catch(() => {});
    removed.push(e.name);
  }
  return removed;
}
