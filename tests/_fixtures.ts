/**
 * Shared test helpers: where the shared fixtures and data live, skipping when they are absent, and the
 * tolerance measure of the fixtures' README (error relative to the reference's largest magnitude).
 */
import { readSafetensors, type SafeTensor } from "../lib/weights/safetensors.ts";

/** `../shared` beside the project root (overridable with `VIT_SHARED`). */
export const SHARED = Deno.env.get("VIT_SHARED") ?? new URL("../../shared", import.meta.url).pathname;
export const FIXTURES = `${SHARED}/fixtures/vit`;
export const CIFAR_JPEG = `${SHARED}/data/cifar10-jpeg`;

/** True when `path` exists; otherwise logs why the calling test is skipped. */
export function present(path: string, what: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    console.warn(`SKIP ${what}: ${path} is absent (the shared fixtures/data are not beside this checkout)`);
    return false;
  }
}

export const haveFixtures = present(`${FIXTURES}/micro/golden.safetensors`, "fixture tests");

/** A golden file as a map of tensors. */
export function golden(path: string): Promise<Map<string, SafeTensor>> {
  return readSafetensors(`${FIXTURES}/${path}`);
}

/** max |a − b| / max |ref|. */
export function relError(actual: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (actual.length !== ref.length) throw new Error(`length ${actual.length} vs reference ${ref.length}`);
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(actual[i] - ref[i]));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  if (!Number.isFinite(maxErr)) return Infinity;
  return maxRef === 0 ? maxErr : maxErr / maxRef;
}

/** Throws when the relative error exceeds `tol`, naming what was compared. */
export function assertClose(
  actual: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  const err = relError(actual, ref);
  if (!(err <= tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} exceeds ${tol}`);
  return err;
}

/** The fixtures' tolerances (README "Tolerances that a correct fp32 implementation meets"). */
export const TOL = { logits: 1e-4, loss: 1e-5, grads: 1e-3 } as const;

/**
 * A temporary folder in memory (/dev/shm) when the machine has one: the full-size tests write and read
 * gigabytes, which a slow disk turns into minutes.
 */
export async function fastTempDir(): Promise<string> {
  try {
    return await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vit-deno-" });
  } catch {
    return await Deno.makeTempDir({ prefix: "vit-deno-" });
  }
}

/**
 * Runs `fn` in a fresh {@linkcode fastTempDir} with the environment variables `env` set (undefined: unset),
 * then puts the variables back and removes the folder.
 */
export async function withTempEnv<T>(
  env: Record<string, string | undefined>,
  fn: (tmp: string) => Promise<T>,
): Promise<T> {
  const before = Object.fromEntries(Object.keys(env).map((k) => [k, Deno.env.get(k)]));
  const set = (vars: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(vars)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  };
  set(env);
  const tmp = await fastTempDir();
  try {
    return await fn(tmp);
  } finally {
    set(before);
    await Deno.remove(tmp, { recursive: true });
  }
}
