/**
 * The training worker process (`deno run -A lib/serve/finetune_worker.ts`, started by finetune_host.ts):
 * runs one fine-tuning session ({@linkcode runFineTuneSpec}) on its own tfjs backend, chosen as every process
 * chooses it (lib/backend/backend.ts: `VIT_BACKEND`, `VIT_WASM_THREADS`, `VIT_KERNELS`), reading the
 * server's messages from stdin and writing its own to stdout, one JSON line each. After each optimizer step
 * it reports the progress and waits for the server's `continue` (which, on a device shared with inference,
 * comes when the device is this session's again). The server ends a session early by killing the process.
 *
 * @module
 */
import type { FineTuneProgress } from "./finetune.ts";
import { runFineTuneSpec } from "./finetune.ts";
import { eachLine, type HostMessage, MESSAGE_PREFIX, type WorkerMessage } from "./finetune_host.ts";

const encoder = new TextEncoder();

function send(m: WorkerMessage): void {
  const bytes = encoder.encode(MESSAGE_PREFIX + JSON.stringify(m) + "\n");
  for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
}

/**
 * The server's messages, one JSON line each, in order. When the server closes stdin (it ended or died)
 * before the session's end, the process exits at once: when a step waits on the data-parallel workers this
 * thread is free to see it, otherwise at the end of the step.
 */
function inbox(): () => Promise<HostMessage> {
  const queued: HostMessage[] = [];
  let waiting: ((m: HostMessage) => void) | undefined;
  eachLine(Deno.stdin.readable, (line) => {
    if (!line.trim()) return;
    const m = JSON.parse(line) as HostMessage;
    if (waiting) waiting(m);
    else queued.push(m);
    waiting = undefined;
  }).finally(() => {
    console.error("the server closed the session's channel; stopping");
    Deno.exit(1);
  });
  return () => queued.length ? Promise.resolve(queued.shift()!) : new Promise((r) => waiting = r);
}

async function main(): Promise<number> {
  const next = inbox();
  const first = await next();
  if (first.type !== "start") throw new Error("expected a start message on stdin");
  const onProgress = async (progress: FineTuneProgress) => {
    send({ type: "progress", progress });
    await next(); // the server's `continue`
  };
  try {
    const outcome = await runFineTuneSpec(
      first.spec,
      onProgress,
      new AbortController().signal,
      () => send({ type: "saving" }),
    );
    send({ type: "done", outcome });
    return 0;
  } catch (e) {
    const error = e instanceof Error ? e : new Error(String(e));
    console.error(error.stack ?? error.message);
    send({ type: "error", name: error.name, message: error.message });
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main());
