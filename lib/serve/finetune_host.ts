/**
 * The service's default {@linkcode FineTuner}: each session runs in a training worker process of its own
 * (`deno run lib/serve/finetune_worker.ts`), so that its training steps, synchronous tfjs calls that last
 * minutes for ViT-B/16 on wasm, never hold the server's event loop; health checks, classification and
 * metrics are answered while a session trains.
 *
 * A process per session rather than a Deno `Worker`: a session's end (success, cancellation, crash) is
 * then the end of its process, which frees everything it started. Inside a `Worker` that is not so: the
 * threads a training step starts from it (tfjs-wasm's pthreads and the data-parallel training workers,
 * both `node:worker_threads`) outlive `Worker.terminate()` and keep their memory and, mid-step, a core
 * (measured: a terminated `Worker`'s busy `node:worker_threads` child kept running). A process also keeps
 * a training crash that a `Worker` cannot contain (V8 out of memory, an abort in native code) away from the
 * server. Starting one costs about a second, small beside a session.
 *
 * The worker gets the session as a {@linkcode FineTuneSpec} (files, not weights or images) on its stdin
 * and writes the model folder itself (atomically); the server relays its progress, read from its stdout,
 * and registers the result. Cancellation kills the worker at once (not at the end of the step in
 * progress), except while it writes the model folder, which is left to finish. A worker that dies fails
 * its session with its last error line (the full log goes to the server's stderr).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { FineTuneOutcome, FineTuneProgress, FineTuner, FineTuneSpec } from "./finetune.ts";
import { abortError } from "./errors.ts";

/** Messages from the server to a training worker, one JSON line each on its stdin. */
export type HostMessage = { type: "start"; spec: FineTuneSpec } | { type: "continue" };

/**
 * Messages from a training worker to the server, one line each on its stdout after {@linkcode
 * MESSAGE_PREFIX}.
 */
export type WorkerMessage =
  | { type: "progress"; progress: FineTuneProgress }
  | { type: "saving" }
  | { type: "done"; outcome: FineTuneOutcome }
  | { type: "error"; name: string; message: string };

/** Marks a worker's stdout line as a message (other lines, e.g. a library's output, are logged). */
export const MESSAGE_PREFIX = "@vit-finetune ";

/** Options of {@linkcode workerFineTuner}. */
export interface WorkerTunerOptions {
  /** The worker's script and its arguments; finetune_worker.ts by default (tests give one that crashes). */
  script?: { path: string; args?: string[] };
}

/** Calls `onLine` for each line of `stream` (decoded as UTF-8): how both sides read the other's messages. */
export async function eachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (rest) onLine(rest);
}

/** A {@linkcode FineTuner} that runs each session in a worker process of its own (see the module doc). */
export function workerFineTuner(options: WorkerTunerOptions = {}): FineTuner {
  // fileURLToPath, not `.pathname`: a checkout path with spaces or non-ASCII names stays a real path.
  const script = options.script ?? { path: fileURLToPath(new URL("./finetune_worker.ts", import.meta.url)) };
  const config = fileURLToPath(new URL("../../deno.json", import.meta.url));
  return async (spec, onProgress, signal) => {
    if (signal.aborted) throw abortError();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", config, script.path, ...(script.args ?? [])],
      // Plain text: the log is relayed line by line and an uncaught error's line is read back.
      env: { NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdin = child.stdin.getWriter();
    const encoder = new TextEncoder();
    const post = (m: HostMessage) => stdin.write(encoder.encode(JSON.stringify(m) + "\n")).catch(() => {});
    let saving = false, killed = false, outcome: FineTuneOutcome | undefined;
    let failure: unknown, lastError = "";
    const kill = () => {
      if (killed) return;
      killed = true;
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    };
    const onAbort = () => {
      if (!saving) kill();
    };
    signal.addEventListener("abort", onAbort);
    // Progress is handled one message at a time, in order.
    let handling = Promise.resolve();
    const onMessage = async (m: WorkerMessage) => {
      switch (m.type) {
        case "progress":
          try {
            await onProgress(m.progress);
            await post({ type: "continue" });
          } catch (e) {
            failure ??= e;
            kill();
          }
          break;
        case "saving":
          saving = true;
          break;
        case "done":
          outcome = m.outcome;
          break;
        case "error":
          failure ??= m.name === "AbortError" ? abortError() : new Error(m.message);
          break;
      }
    };
    const stdout = eachLine(child.stdout, (line) => {
      if (!line.startsWith(MESSAGE_PREFIX)) {
        if (line.trim()) console.error(`finetune worker: ${line}`);
        return;
      }
      let m: WorkerMessage;
      try {
        m = JSON.parse(line.slice(MESSAGE_PREFIX.length)) as WorkerMessage;
      } catch {
        // A garbled channel cannot be trusted further: end the worker (its exit ends the session).
        failure ??= new Error("the training worker sent an unreadable message");
        kill();
        return;
      }
      handling = handling.then(() => onMessage(m));
    });
    const stderr = eachLine(child.stderr, (line) => {
      if (!line.trim()) return;
      console.error(`finetune worker: ${line}`);
      // Deno's report of an uncaught error starts with "error: "; keep the last one for the session.
      if (line.startsWith("error: ")) lastError = line.slice("error: ".length);
    });
    try {
      await post({ type: "start", spec });
      const status = await child.status;
      await Promise.all([stdout, stderr]);
      await handling;
      if (failure !== undefined) throw failure;
      if (signal.aborted && !outcome) throw abortError();
      if (outcome && status.success) return outcome;
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      throw new Error(
        `the training worker stopped unexpectedly (${how})${lastError ? `: ${lastError}` : ""}`,
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
      await stdin.close().catch(() => {});
      kill();
    }
  };
}
