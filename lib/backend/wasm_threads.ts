/**
 * tfjs-wasm's threaded SIMD build, started in Deno.
 *
 * tfjs 4.22 turns threads off whenever it sees Node, which includes Deno (tfjs issue #3830), and forcing them
 * on fails: Emscripten gives its pthread worker to `node:worker_threads` as a `blob:` URL, which Deno's
 * `Worker` refuses (only file paths), and the worker script itself expects CommonJS (`require`, the bundle's
 * `require$$N` and `commonjsGlobal`). So, for the time `setBackend("wasm")` runs, `globalThis.Worker` is
 * replaced by a `node:worker_threads` `Worker` that starts a real file: a short ES-module preamble that
 * provides those names, then tfjs's own worker script unchanged. The preamble also turns the main script,
 * which Emscripten posts as a `Blob`, into text the worker script can `importScripts`.
 *
 * Threads default to the machine's cores (`navigator.hardwareConcurrency`; tfjs itself would take half of
 * `os.cpus()`), at most the 8 workers Emscripten spawns up front; `VIT_WASM_THREADS=n` sets them, and `1`
 * keeps the single-threaded SIMD build. The pthread workers are unreferenced, so they never keep the
 * process alive, and terminated at unload. A start that fails or does not finish within
 * {@linkcode WASM_THREADS_TIMEOUT_MS} falls back to the single-threaded build with a line on stderr.
 *
 * Written here rather than taken from a library: no npm package starts tfjs-wasm's pthreads in Deno.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { setThreadsCount } from "@tensorflow/tfjs-backend-wasm";
import workerScript from "@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js";
import { Worker as NodeWorker } from "node:worker_threads";
import os from "node:os";
import { join } from "node:path";
import { warn } from "../util/log.ts";
import { MAX_WASM_THREADS, wasmThreadsWanted } from "./threads.ts";

/** How long a threaded start may take before it is abandoned for the single-threaded build. */
export const WASM_THREADS_TIMEOUT_MS = 30_000;

/** What {@linkcode startWasm} ended with. */
export interface WasmStart {
  /** Threads XNNPACK runs on (1: the single-threaded SIMD build). */
  threads: number;
  /** Why threads were asked for but not used, when that happened. */
  fallback?: string;
}

/** Options of {@linkcode startWasm}, for tests. */
export interface WasmStartOptions {
  /** Threads wanted; `VIT_WASM_THREADS`, else the machine's cores, by default. */
  threads?: number;
  /** Abandon a threaded start after this long. */
  timeoutMs?: number;
  /** Code put before the worker script (tests make a worker fail with it). */
  extraPreamble?: string;
}

// The worker runs as an ES module; tfjs's script expects CommonJS and the names its bundle's factory
// (posted as text) closes over. `load` carries that factory as a Blob: read it before the script sees it.
const PREAMBLE = `import * as __wt from "node:worker_threads";
import __fs from "node:fs";
import __path from "node:path";
import __os from "node:os";
import __perf from "node:perf_hooks";
const __texts = new Map();
let __chain = Promise.resolve();
const __parentPort = {
  on(event, handler) {
    __wt.parentPort.on(event, (data) => {
      __chain = __chain.then(async () => {
        if (data && data.cmd === "load" && data.urlOrBlob instanceof Blob) {
          __texts.set("vit-deno-wasm-main.js", await data.urlOrBlob.text());
          data.urlOrBlob = "vit-deno-wasm-main.js";
        }
        handler(data);
      }).catch((e) => setTimeout(() => { throw e; }));
    });
  },
  postMessage: (m, t) => __wt.parentPort.postMessage(m, t),
};
const __fsShim = { ...__fs, readFileSync: (f, o) => __texts.has(f) ? __texts.get(f) : __fs.readFileSync(f, o) };
const __modules = { worker_threads: { ...__wt, parentPort: __parentPort }, fs: __fsShim };
Object.assign(globalThis, {
  global: globalThis,
  require: (m) => __modules[m] ?? (() => { throw new Error("vit-deno pthread: no module " + m); })(),
  require$$0: __fs, require$$1: __path, require$$3: __perf, require$$4: __os,
  commonjsGlobal: globalThis, __filename: "vit-deno-wasm-main.js", __dirname: ".",
});
// The script assigns these; a Deno worker has them as getters only.
for (const k of ["self", "location"]) {
  Object.defineProperty(globalThis, k, { value: globalThis[k], writable: true, configurable: true });
}
`;

let workerFile: string | undefined;

/** Writes the worker (preamble + tfjs's script) once per content, atomically; returns its path. */
async function ensureWorkerFile(extraPreamble: string): Promise<string> {
  // As tfjs does before making its Blob: the script holds a raw newline inside a string literal.
  const script = (workerScript as { wasmWorkerContents: string }).wasmWorkerContents.replace(/\n/g, "\\n");
  const text = PREAMBLE + extraPreamble + "\n" + script;
  if (!extraPreamble && workerFile) return workerFile;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const hex = Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  const path = join(os.tmpdir(), `vit-deno-wasm-pthread-${hex}.mjs`);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
  if (!extraPreamble) workerFile = path;
  return path;
}

const started = new Set<NodeWorker>();
let unloadHooked = false;

/** Workers Emscripten's build creates when it starts (its `pthreadPoolSize`). */
const EMSCRIPTEN_POOL = 8;

type Listener = (...args: unknown[]) => void;

/** A pool slot that is never run: it answers Emscripten's `load` and fails the start if asked for more. */
class IdleWorker {
  readonly #listeners: Array<[string, Listener]> = [];
  constructor(readonly threads: number, readonly fail: (e: Error) => void) {}
  on(event: string, listener: Listener): this {
    this.#listeners.push([event, listener]);
    return this;
  }
  postMessage(message: { cmd?: string }): void {
    if (message?.cmd === "load") {
      queueMicrotask(() => {
        for (const [event, l] of this.#listeners) if (event === "message") l({ cmd: "loaded" });
      });
    } else {
      this.fail(
        new Error(`tfjs-wasm asked for more than ${this.threads - 1} pthreads (got "${message?.cmd}")`),
      );
    }
  }
  terminate(): void {}
  ref(): void {}
  unref(): void {}
}

/** Terminates every pthread worker started so far. */
function terminateWorkers(): void {
  for (const w of started) void w.terminate();
  started.clear();
}

/**
 * Runs `tf.setBackend("wasm")` with Emscripten's `Worker` redirected to `file` for its duration; the
 * original `globalThis.Worker` is put back afterwards, whatever happens.
 */
async function setBackendThreaded(file: string, threads: number, timeoutMs: number): Promise<boolean> {
  const original = Object.getOwnPropertyDescriptor(globalThis, "Worker");
  // tfjs's C++ caps the count at half of the logical cores it reads (os.cpus() under Node) while it starts.
  const cpus = os.cpus;
  os.cpus = () => Array.from({ length: 2 * threads }, () => cpus()[0]);
  let fail: (e: Error) => void = () => {};
  const failed = new Promise<never>((_, reject) => fail = reject);
  class PthreadWorker extends NodeWorker {
    constructor(_blobUrl: string) {
      super(file);
      // Listening from the start: a worker that fails while loading can do so before Emscripten listens.
      super.on("error", (e: unknown) => {
        fail(new Error(`a pthread worker failed: ${e instanceof Error ? e.message : String(e)}`));
      });
      // Idle or busy, pthreads must never hold the process open; Emscripten refs them when they run.
      this.unref();
      started.add(this);
    }
    override ref(): void {}
    // Emscripten rethrows a worker's error on the main thread, which would end the process: a failed
    // worker fails the start instead (the listener above), so Emscripten's own is not added.
    // deno-lint-ignore no-explicit-any
    override on(event: string | symbol, listener: (...args: any[]) => void): this {
      return event === "error" ? this : super.on(event, listener);
    }
  }
  // Emscripten creates EMSCRIPTEN_POOL workers up front and takes them from the end of its pool; XNNPACK's
  // thread pool runs `threads − 1` of them beside the calling thread. The others get a stand-in that only
  // answers the load, saving a V8 isolate and a copy of the main script each.
  let created = 0;
  const idle = EMSCRIPTEN_POOL - (threads - 1);
  function poolWorker(blobUrl: string): PthreadWorker | IdleWorker {
    return created++ < idle ? new IdleWorker(threads, fail) : new PthreadWorker(blobUrl);
  }
  Object.defineProperty(globalThis, "Worker", {
    configurable: true,
    get: () => poolWorker,
    // Emscripten assigns node's Worker here at start-up; ours stays in place.
    set: () => {},
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      tf.setBackend("wasm"),
      failed,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`the threaded start did not finish within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    os.cpus = cpus;
    if (original) Object.defineProperty(globalThis, "Worker", original);
    else delete (globalThis as { Worker?: unknown }).Worker;
  }
}

/**
 * Starts tfjs-wasm with the threads wanted (see {@linkcode wasmThreadsWanted}); false when even the
 * single-threaded build fails. Call it instead of `tf.setBackend("wasm")`, once per process.
 */
export async function startWasm(options: WasmStartOptions = {}): Promise<WasmStart | undefined> {
  const threads = Math.min(MAX_WASM_THREADS, options.threads ?? wasmThreadsWanted());
  if (threads > 1) {
    const factory = tf.findBackendFactory("wasm");
    let reason: string;
    try {
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
      setThreadsCount(threads);
      const file = await ensureWorkerFile(options.extraPreamble ?? "");
      if (!unloadHooked) {
        unloadHooked = true;
        globalThis.addEventListener("unload", terminateWorkers);
      }
      if (await setBackendThreaded(file, threads, options.timeoutMs ?? WASM_THREADS_TIMEOUT_MS)) {
        await tf.ready();
        return { threads };
      }
      reason = "tfjs-wasm refused the threaded build";
    } catch (e) {
      reason = e instanceof Error ? e.message : String(e);
    }
    // Start again from a clean registration: the abandoned start may still be pending inside tfjs.
    terminateWorkers();
    tf.removeBackend("wasm");
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    setThreadsCount(-1);
    if (factory) tf.registerBackend("wasm", factory, 2);
    warn(`wasm threads (${threads}) unavailable, single-threaded instead: ${reason}`);
    if (!(await tf.setBackend("wasm"))) return undefined;
    await tf.ready();
    return { threads: 1, fallback: reason };
  }
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
  if (!(await tf.setBackend("wasm"))) return undefined;
  await tf.ready();
  return { threads: 1 };
}
