/**
 * What machine a figure was measured on, how busy it was, and the process's peak memory (Linux `/proc`).
 *
 * @module
 */

/** The machine, described once per bench run and copied into every figure. */
export interface MachineInfo {
  /** e.g. `AMD EPYC, 2 cores, 23 GiB`. */
  summary: string;
  cpu: string;
  cores: number;
  memGiB: number;
  os: string;
  deno: string;
  v8: string;
  hostname: string;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** Describes this machine (CPU model from `/proc/cpuinfo` where readable). */
export function machineInfo(): MachineInfo {
  const cpuinfo = readText("/proc/cpuinfo") ?? "";
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? Deno.build.arch;
  const cores = navigator.hardwareConcurrency;
  const memGiB = Math.round(Deno.systemMemoryInfo().total / 2 ** 30);
  return {
    summary: `${cpu}, ${cores} cores, ${memGiB} GiB`,
    cpu,
    cores,
    memGiB,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    hostname: Deno.hostname(),
  };
}

/** The 1, 5 and 15 minute load averages (all zero where the OS does not report them). */
export function loadAverage(): [number, number, number] {
  try {
    return Deno.loadavg().map((x) => Math.round(x * 100) / 100) as [number, number, number];
  } catch {
    return [0, 0, 0];
  }
}

function statusKiB(pid: number | "self", field: string): number | undefined {
  const text = readText(`/proc/${pid}/status`);
  const m = text && new RegExp(`^${field}:\\s*(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Peak resident memory (`VmHWM`) of a process in bytes, or undefined where `/proc` is unavailable. */
export function peakRssBytes(pid: number | "self" = "self"): number | undefined {
  const kib = statusKiB(pid, "VmHWM");
  return kib === undefined ? undefined : kib * 1024;
}

/**
 * Resets this process's peak-RSS counter (Linux: writing 5 to `/proc/self/clear_refs`), so the next
 * {@linkcode peakRssBytes} covers only what follows. Returns false where that is not possible.
 */
export function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}
