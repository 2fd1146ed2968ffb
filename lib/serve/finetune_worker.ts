/**
 * The training worker's entry point: a Deno worker that runs one fine-tuning session
 * ({@linkcode runFineTuneSpec}) on its own tfjs backend, chosen as every process chooses it
 * (lib/backend/backend.ts: `VIT_BACKEND`, `VIT_WASM_THREADS`, `VIT_KERNELS`), and talks to the server's
 * thread by the messages of finetune_host.ts. After each optimizer step it posts the progress and waits for
 * the server's `continue` (which, on a device shared with inference, comes when the device is this session's
 * again). The server ends a session early by terminating the worker.
 *
 * @module
 */
import type { FineTuneProgress } from "./finetune.ts";
import { runFineTuneSpec } from "./finetune.ts";
import type { WorkerScope } from "./finetune_host.ts";

const scope = self as unknown as WorkerScope;

let proceed: (() => void) | undefined;
let started = false;

scope.onmessage = (e) => {
  const m = e.data;
  if (m.type === "continue") {
    const go = proceed;
    proceed = undefined;
    go?.();
    return;
  }
  if (m.type !== "start" || started) return;
  started = true;
  const onProgress = (progress: FineTuneProgress) =>
    new Promise<void>((resolve) => {
      proceed = resolve;
      scope.postMessage({ type: "progress", progress });
    });
  runFineTuneSpec(
    m.spec,
    onProgress,
    new AbortController().signal,
    () => scope.postMessage({ type: "saving" }),
  )
    .then(
      (outcome) => scope.postMessage({ type: "done", outcome }),
      (err) => {
        const error = err instanceof Error ? err : new Error(String(err));
        scope.postMessage({ type: "error", name: error.name, message: error.message, stack: error.stack });
      },
    );
};
