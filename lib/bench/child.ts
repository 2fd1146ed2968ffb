/**
 * Timing a child process from spawn to exit while sampling its peak resident memory, for figures that must
 * include process start (cold start) or that are a CLI of their own (conversion).
 *
 * @module
 */
import { peakRssBytes } from "./machine.ts";

/** What a timed child process did. */
export interface ChildRun {
  /** Spawn to exit, in milliseconds. */
  wallMs: number;
  /** The child's `VmHWM` as last sampled before it exited (sampled every 20 ms), in bytes. */
  peakRssBytes?: number;
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` (cwd `cwd`), timing it from spawn to exit and sampling its peak RSS. */
export async function runTimed(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<ChildRun> {
  const start = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let peak: number | undefined;
  const sampler = setInterval(() => {
    const now = peakRssBytes(child.pid);
    if (now !== undefined) peak = Math.max(peak ?? 0, now);
  }, 20);
  try {
    const out = await child.output();
    const wallMs = performance.now() - start;
    return {
      wallMs,
      peakRssBytes: peak,
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    clearInterval(sampler);
  }
}

/** `deno run -A --config <deno.json> <script> ...args`, with the project's config and import map. */
export function denoRunArgs(root: string, script: string, args: string[]): string[] {
  return ["run", "-A", "--config", `${root}/deno.json`, `${root}/${script}`, ...args];
}

/**
 * Polls `${url}/readyz` every 250 ms until it answers 200; throws after `timeoutMs`, with `detail()` (e.g. the
 * server's log tail) in the message.
 */
export async function waitReady(
  url: string,
  timeoutMs: number,
  detail: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${url}/readyz`);
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      const tail = detail();
      throw new Error(`the server was not ready in ${timeoutMs / 1000} s${tail ? `:\n${tail}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
