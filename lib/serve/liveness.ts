/**
 * Telling whether the process that wrote something (a session record, a half-written model folder, an
 * extracted upload) is still running, so a restarted server can clean up after a crashed one without
 * touching the work of a live sibling (workers of `deno serve --parallel` share one process).
 *
 * @module
 */

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

/**
 * Removes the entries of `dir` left by dead processes: names matching `pattern`, whose first capture group
 * is the writer's pid. Returns the names removed.
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
    if (!m || processAlive(Number(m[1]))) continue;
    await Deno.remove(`${dir}/${e.name}`, { recursive: true }).catch(() => {});
    removed.push(e.name);
  }
  return removed;
}
