/**
 * tfjs-wasm's threaded build in Deno (lib/backend/wasm_threads.ts), each case in its own process since the
 * build is fixed once per process: threads start, the product is bit-identical to one thread, the process
 * exits by itself, `globalThis.Worker` is put back, and a worker that throws or never answers falls back to
 * one thread with a line on stderr instead of hanging.
 */
import assert from "node:assert/strict";
import { wasmThreadsWanted } from "../lib/backend/threads.ts";

const CHILD = new URL("./_wasm_threads_child.ts", import.meta.url).pathname;

interface ChildResult {
  start: { threads: number; fallback?: string };
  backend: string;
  tfjsThreads: number;
  workerRestored: boolean;
  first: number[];
  sum: number;
  stderr: string;
}

async function child(threads: number, mode: "ok" | "fail" | "hang"): Promise<ChildResult> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, String(threads), mode],
    stdout: "piped",
    stderr: "piped",
    env: { VIT_QUIET: "1" },
  });
  // The child never calls Deno.exit: if its pthreads kept it alive, this would time out.
  const out = await cmd.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return { ...JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!), stderr };
}

Deno.test("2 wasm threads start in Deno, match 1 thread bit for bit, and let the process exit", async () => {
  const one = await child(1, "ok");
  const two = await child(2, "ok");
  assert.deepEqual(one.start, { threads: 1 });
  assert.deepEqual(two.start, { threads: 2 });
  assert.equal(two.backend, "wasm");
  assert.equal(two.tfjsThreads, 2);
  assert.ok(two.workerRestored, "globalThis.Worker was not put back");
  assert.deepEqual(two.first, one.first);
  assert.equal(two.sum, one.sum);
});

Deno.test("a pthread worker that throws falls back to one thread, with a line on stderr", async () => {
  const r = await child(2, "fail");
  assert.equal(r.start.threads, 1);
  assert.equal(r.tfjsThreads, 1);
  assert.match(r.start.fallback ?? "", /injected worker failure/);
  assert.match(r.stderr, /wasm threads \(2\) unavailable, single-threaded instead/);
  assert.ok(r.workerRestored);
});

Deno.test("a pthread worker that never answers times out and falls back to one thread", async () => {
  const r = await child(2, "hang");
  assert.equal(r.start.threads, 1);
  assert.match(r.start.fallback ?? "", /did not finish within 5000 ms/);
  assert.match(r.stderr, /single-threaded instead/);
});

Deno.test("VIT_WASM_THREADS: cores by default, a positive integer, capped at 8", () => {
  assert.equal(wasmThreadsWanted(undefined), Math.min(8, navigator.hardwareConcurrency));
  assert.equal(wasmThreadsWanted("1"), 1);
  assert.equal(wasmThreadsWanted("64"), 8);
  assert.throws(() => wasmThreadsWanted("two"), /VIT_WASM_THREADS: expected a positive integer, got "two"/);
  assert.throws(() => wasmThreadsWanted("0"), /VIT_WASM_THREADS/);
});
