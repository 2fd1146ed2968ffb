/**
 * A training worker for tests (see lib/serve/finetune_host.ts) that dies during its second step with an
 * uncaught error naming a server path, as a crash inside a native or wasm kernel surfaces.
 */
import type { WorkerMessage, WorkerScope } from "../lib/serve/finetune_host.ts";

const scope = self as unknown as WorkerScope;

scope.onmessage = (e) => {
  if (e.data.type === "start") {
    const { spec } = e.data;
    const m: WorkerMessage = {
      type: "progress",
      progress: { step: 1, steps: spec.steps, epoch: 0, loss: 1, lr: spec.lr, imgPerSec: 1 },
    };
    scope.postMessage(m);
  } else if (e.data.type === "continue") {
    setTimeout(() => {
      throw new Error(`memory access out of bounds in ${Deno.cwd()}/node_modules/kernel.wasm`);
    }, 10);
  }
};
