/**
 * Child process of tests/wasm_threads_test.ts (the wasm build is fixed once per process):
 * `deno run -A tests/_wasm_threads_child.ts <threads> <ok|fail|hang>` starts tfjs-wasm through
 * lib/backend/wasm_threads.ts, a worker made to throw or to never answer in the last two modes, runs a
 * ViT-B/16-sized product and prints one JSON line. It returns without `Deno.exit`: the test checks that the
 * pthreads do not keep the process alive.
 */
import * as tf from "@tensorflow/tfjs";
import { getThreadsCount } from "@tensorflow/tfjs-backend-wasm";
import { startWasm } from "../lib/backend/wasm_threads.ts";

const [threadsArg, mode] = Deno.args;
const workerBefore = globalThis.Worker;
const preambles: Record<string, string> = {
  ok: "",
  fail: `throw new Error("injected worker failure");`,
  hang: `await new Promise(() => {});`,
};
// However slowly a loaded machine starts the workers, the start must end as the mode says (threads, or the
// injected failure): the deadline is far off, and short only where hanging is what is tested.
const deadlines: Record<string, number> = { ok: 300_000, fail: 300_000, hang: 5000 };
const start = await startWasm({
  threads: Number(threadsArg),
  extraPreamble: preambles[mode],
  timeoutMs: deadlines[mode],
});
const a = tf.randomNormal([197, 768], 0, 1, "float32", 1) as tf.Tensor2D;
const b = tf.randomNormal([768, 3072], 0, 1, "float32", 2) as tf.Tensor2D;
const c = tf.matMul(a, b);
const data = await c.data();
let sum = 0;
for (let i = 0; i < data.length; i++) sum += data[i] * ((i % 7) + 1);
console.log(JSON.stringify({
  start,
  backend: tf.getBackend(),
  tfjsThreads: getThreadsCount(),
  workerRestored: globalThis.Worker === workerBefore,
  first: Array.from(data.subarray(0, 4)),
  sum,
}));
