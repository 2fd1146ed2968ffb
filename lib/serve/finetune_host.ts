/**
 * The service's default {@linkcode FineTuner}: each session runs in a Deno worker of its own
 * (finetune_worker.ts), so that its training steps, synchronous tfjs calls that last minutes for ViT-B/16 on
 * wasm, never hold the server's event loop; health checks, classification and metrics are answered while a
 * session trains. One worker per session rather than one shared training worker: a session's end (success,
 * cancellation, crash) is then the end of its worker, which frees its backend, its wasm heap and its threads
 * at once, and a crash can only fail the session it belongs to. Starting a worker costs about a second and a
 * backend start, small beside a session.
 *
 * The worker gets the session as a {@linkcode FineTuneSpec} (files, not weights or images) and writes the
 * model folder itself; the server's thread relays its progress and registers the result. Cancellation
 * terminates the worker at once (not at the end of the step in progress), except while it writes the model
 * folder, which is left to finish. A worker that dies (an uncaught error, a failed start) fails its session
 * with an error that names no server file (the detail goes to the server's log).
 *
 * @module
 */
import type { FineTuneOutcome, FineTuneProgress, FineTuner, FineTuneSpec } from "./finetune.ts";

/** Messages from the server's thread to a training worker. */
export type HostMessage = { type: "start"; spec: FineTuneSpec } | { type: "continue" };

/** Messages from a training worker to the server's thread. */
export type WorkerMessage =
  | { type: "progress"; progress: FineTuneProgress }
  | { type: "saving" }
  | { type: "done"; outcome: FineTuneOutcome }
  | { type: "error"; name: string; message: string; stack?: string };

/** A training worker's global scope, as its module sees it (`self`, typed for these messages). */
export interface WorkerScope {
  postMessage(m: WorkerMessage): void;
  onmessage: ((e: MessageEvent<HostMessage>) => void) | null;
}

/** Options of {@linkcode workerFineTuner}. */
export interface WorkerTunerOptions {
  /** The worker's module; finetune_worker.ts by default (tests give one that crashes). */
  module?: URL;
}

function abortError(): DOMException {
  return new DOMException("the fine-tuning session was cancelled", "AbortError");
}

/** A {@linkcode FineTuner} that runs each session in a worker of its own (see the module doc). */
export function workerFineTuner(options: WorkerTunerOptions = {}): FineTuner {
  const module = options.module ?? new URL("./finetune_worker.ts", import.meta.url);
  return (spec, onProgress, signal) =>
    new Promise<FineTuneOutcome>((resolve, reject) => {
      if (signal.aborted) return reject(abortError());
      const worker = new Worker(module, { type: "module", name: "vit-deno fine-tuning" });
      let saving = false, ended = false;
      const end = (settle: () => void) => {
        if (ended) return;
        ended = true;
        signal.removeEventListener("abort", onAbort);
        worker.terminate();
        settle();
      };
      const onAbort = () => {
        if (!saving) end(() => reject(abortError()));
      };
      signal.addEventListener("abort", onAbort);
      const post = (m: HostMessage) => worker.postMessage(m);
      worker.onmessage = async (e: MessageEvent<WorkerMessage>) => {
        const m = e.data;
        switch (m.type) {
          case "progress":
            try {
              await onProgress(m.progress);
              if (!ended) post({ type: "continue" });
            } catch (err) {
              end(() => reject(err));
            }
            break;
          case "saving":
            saving = true;
            break;
          case "done":
            end(() => resolve(m.outcome));
            break;
          case "error": {
            if (m.stack) console.error(`finetune worker: ${m.stack}`);
            const err = m.name === "AbortError" ? abortError() : new Error(m.message);
            end(() => reject(err));
            break;
          }
        }
      };
      worker.onerror = (e: ErrorEvent) => {
        // Handled here: unhandled, a worker's error would end the whole server.
        e.preventDefault();
        console.error(`finetune worker: crashed: ${e.message} (${e.filename}:${e.lineno})`);
        end(() => reject(new Error(`the training worker stopped unexpectedly: ${e.message}`)));
      };
      worker.onmessageerror = () => {
        end(() => reject(new Error("the training worker sent a message that could not be read")));
      };
      post({ type: "start", spec });
    });
}
