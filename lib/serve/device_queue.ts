/**
 * The one device queue: inference batches, and fine-tuning steps when training shares the inference device
 * (a GPU engine; on a CPU engine a session trains in its worker beside inference, see sessions.ts), take
 * turns on the accelerator, one job at a time. Inference goes first, so a running fine-tuning session delays
 * a classification by about one training step; after `maxInferBurst` inference jobs in a row a waiting
 * training step gets its turn, so a steady stream of requests cannot stop a session either.
 *
 * Requests announce themselves (`expect()`) when they arrive, before they have read and decoded their
 * images: while one is on its way, a training step waits up to `maxHoldMs` before taking the device, since
 * a request that reached the queue just after the step took it would wait the whole step.
 *
 * @module
 */

/** What a job is, which decides its priority. */
export type JobKind = "infer" | "train";

/** Options of {@linkcode DeviceQueue}. */
export interface DeviceQueueOptions {
  /** Inference jobs run back to back before a waiting training step goes; 8 by default. */
  maxInferBurst?: number;
  /** Longest a training step waits for announced requests, in milliseconds; 250 by default. */
  maxHoldMs?: number;
  /** Called with each job's kind and its seconds on the device. */
  onJob?: (kind: JobKind, seconds: number) => void;
}

/** Serialises device work between inference and training. */
export class DeviceQueue {
  readonly #waiting: Record<JobKind, Array<() => void>> = { infer: [], train: [] };
  readonly #maxBurst: number;
  readonly #maxHoldMs: number;
  readonly #onJob?: (kind: JobKind, seconds: number) => void;
  #busy = false;
  #burst = 0;
  #expected = 0;
  #holdUntil = 0;
  #holdTimer: ReturnType<typeof setTimeout> | undefined;
  /** The kind of the job holding the device, if any. */
  running: JobKind | undefined;

  constructor(options: DeviceQueueOptions = {}) {
    this.#maxBurst = options.maxInferBurst ?? 8;
    this.#maxHoldMs = options.maxHoldMs ?? 250;
    this.#onJob = options.onJob;
  }

  /** Jobs waiting for the device, by kind. */
  get depth(): Record<JobKind, number> {
    return { infer: this.#waiting.infer.length, train: this.#waiting.train.length };
  }

  /** Whether a job holds the device. */
  get busy(): boolean {
    return this.#busy;
  }

  /** Requests announced and not finished. */
  get expected(): number {
    return this.#expected;
  }

  /**
   * Announces inference work on its way (a request being read and decoded); call the returned function
   * (once) when the request is done.
   */
  expect(): () => void {
    this.#expected++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#expected--;
      if (this.#expected === 0) this.#dispatch();
    };
  }

  /** Runs `fn` when the device is free and it is this job's turn. */
  async run<T>(kind: JobKind, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(kind);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Waits for the device and holds it until the returned function is called (once). For work that cannot be
   * wrapped in one callback, such as a training loop that hands the device back between its steps.
   */
  async acquire(kind: JobKind): Promise<() => void> {
    await new Promise<void>((resolve) => {
      this.#waiting[kind].push(resolve);
      this.#dispatch();
    });
    this.running = kind;
    const t0 = performance.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#onJob?.(kind, (performance.now() - t0) / 1000);
      this.running = undefined;
      this.#burst = kind === "infer" ? this.#burst + 1 : 0;
      this.#busy = false;
      this.#dispatch();
    };
  }

  /** The waiter whose turn it is, or undefined (nothing waits, or training holds for announced requests). */
  #next(): (() => void) | undefined {
    const w = this.#waiting;
    const trainTurn = w.train.length > 0 && (w.infer.length === 0 || this.#burst >= this.#maxBurst);
    if (!trainTurn) return w.infer.shift();
    if (this.#expected > 0 && w.infer.length === 0 && this.#maxHoldMs > 0) {
      const now = performance.now();
      if (this.#holdUntil === 0) this.#holdUntil = now + this.#maxHoldMs;
      if (now < this.#holdUntil) {
        if (this.#holdTimer === undefined) {
          this.#holdTimer = setTimeout(() => {
            this.#holdTimer = undefined;
            this.#dispatch();
          }, this.#holdUntil - now);
        }
        return undefined;
      }
    }
    this.#holdUntil = 0;
    if (this.#holdTimer !== undefined) clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    return w.train.shift();
  }

  #dispatch(): void {
    if (this.#busy) return;
    const next = this.#next();
    if (!next) return;
    this.#busy = true;
    next();
  }
}
