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
import { type HostMessage, MESSAGE_PREFIX, type WorkerMessage } from "./finetune_host.ts";

const encoder = new TextEncoder();

function send(m: WorkerMessage): void {
  const bytes = encoder.encode(MESSAGE_PREFIX + JSON.stringify(m) + "\n");
  for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
}

/** The server's messages, one JSON line each, in order. */
async function* messages(): AsyncGenerator<HostMessage> {
  let rest = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) if (line.trim()) yield JSON.parse(line) as HostMessage;
  }
}

async function main(): Promise<number> {
  const inbox = messages();
  const first = await inbox.next();
  if (first.done || first.value.type !== "start") throw new Error("expected a start message on stdin");
  const onProgress = async (progress: FineTuneProgress) => {
    send({ type: "progress", progress });
    const next = await inbox.next();
    // The server closed stdin: it is gone or ending the session.
    if (next.done) throw new DOMException("the server ended the session", "AbortError");
  };
  try {
    const outcome = await runFineTuneSpec(
      first.value.spec,
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
