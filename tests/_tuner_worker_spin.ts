/**
 * A training worker for tests (see lib/serve/finetune_host.ts) whose first step never ends: it reports
 * step 1, then spins in a synchronous loop as a stuck tfjs kernel would. Only terminating the worker ends it.
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
    for (;;) { /* a step that never returns: no message can reach this worker again */ }
  }
};
