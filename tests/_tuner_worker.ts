/**
 * A training worker for tests (see lib/serve/finetune_host.ts) that reports step 1 and then, in its second
 * step, does what its module URL's query says: `?spin` spins in a synchronous loop as a stuck tfjs kernel
 * would (only terminating the worker ends it); `?crash` dies with an uncaught error naming a server path, as
 * a crash inside a native or wasm kernel surfaces.
 */
import type { WorkerMessage, WorkerScope } from "../lib/serve/finetune_host.ts";

const scope = self as unknown as WorkerScope;
const mode = new URL(import.meta.url).search.slice(1);

scope.onmessage = (e) => {
  if (e.data.type === "start") {
    const { spec } = e.data;
    const m: WorkerMessage = {
      type: "progress",
      progress: { step: 1, steps: spec.steps, epoch: 0, loss: 1, lr: spec.lr, imgPerSec: 1 },
    };
    scope.postMessage(m);
  } else if (e.data.type === "continue" && mode === "spin") {
    for (;;) { /* a step that never returns: no message can reach this worker again */ }
  } else if (e.data.type === "continue" && mode === "crash") {
    setTimeout(() => {
      throw new Error(`memory access out of bounds in ${Deno.cwd()}/node_modules/kernel.wasm`);
    }, 10);
  }
};
