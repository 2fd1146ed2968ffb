/**
 * Child processes of the benches: timing one from spawn to exit while sampling its peak resident memory, for
 * figures that must include process start (cold start) or that are a CLI of their own (conversion); and
 * what a bench needs to start a server as one (a free port, a model folder of formula weights, the
 * readiness poll).
 *
 * @module
 */
import { archConfig } from "../vit/archs.ts";
import { formulaStateDict } from "../weights/formula.ts";
import { defaultPreprocessing } from "../weights/manifest.ts";
import { saveModel } from "../weights/shards.ts";
import { pathExists } from "../util/fs.ts";
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
  /** Killed at its timeout (`code` is then 124 and `stderr` ends with the reason). */
  timedOut: boolean;
}

/** Kills `child` at once; a child that has already exited is left alone. */
export function killChild(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch { /* it exited meanwhile */ }
}

/**
 * How long a bench waits for a child process (or, for a long-lived probe, for its next answer) before killing
 * it: far above any figure the benches take, so that it only ends a hung probe (a `setBackend` that never
 * settles, a deadlocked worker) instead of the whole bench hanging.
 */
export const CHILD_TIMEOUT_MS = 15 * 60_000;

/**
 * Runs `cmd args` (cwd `cwd`), timing it from spawn to exit and sampling its peak RSS. A child still running
 * after `timeoutMs` (default {@linkcode CHILD_TIMEOUT_MS}) is killed and answers code 124 with the reason at
 * the end of its stderr.
 */
export async function runTimed(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<ChildRun> {
  const start = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timeoutMs = options.timeoutMs ?? CHILD_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killChild(child);
  }, timeoutMs);
  let peak: number | undefined;
  const sampler = setInterval(() => {
    const now = peakRssBytes(child.pid);
    if (now !== undefined) peak = Math.max(peak ?? 0, now);
  }, 20);
  try {
    const out = await child.output();
    const wallMs = performance.now() - start;
    const stderr = new TextDecoder().decode(out.stderr);
    return {
      wallMs,
      peakRssBytes: peak,
      code: timedOut ? 124 : out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: timedOut ? `${stderr}\n${cmd} did not exit in ${timeoutMs / 1000} s and was killed` : stderr,
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    clearInterval(sampler);
  }
}

/** `deno run -A --config <deno.json> <script> ...args`, with the project's config and import map. */
export function denoRunArgs(root: string, script: string, args: string[]): string[] {
  return ["run", "-A", "--config", `${root}/deno.json`, `${root}/${script}`, ...args];
}

/**
 * Polls `${url}/readyz` every 250 ms until it answers 200; throws after `timeoutMs`, with `detail()` (e.g.
 * the server's log tail) in the message.
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

/** A free loopback port (bound, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * A model folder (fp32 shards) of architecture `arch` (e.g. `vit_base_patch16_224`) with formula weights
 * (lib/weights/formula.ts), under `cache`, written once: what a bench's server serves when the figure is
 * about speed, not predictions.
 */
export async function formulaModelFolder(cache: string, arch: string): Promise<string> {
  const config = archConfig(arch);
  if (!config) throw new Error(`unknown architecture "${arch}"`);
  const dir = `${cache}/formula-${arch}`;
  if (await pathExists(`${dir}/model.json`)) return dir;
  await saveModel(dir, {
    config,
    state: formulaStateDict(config),
    labels: Array.from({ length: config.num_classes }, (_, i) => `class_${i}`),
    preprocessing: defaultPreprocessing(config.img_size),
    source: { file: `formula weights (lib/weights/formula.ts) of ${arch}, for benches` },
    dtype: "float32",
  });
  return dir;
}
