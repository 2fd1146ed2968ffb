/**
 * The one device queue: inference batches and fine-tuning steps take turns on the accelerator, one job at a
 * time. Inference goes first, so a running fine-tuning session delays a classification by at most the one
 * training step in progress; after `maxInferBurst` inference jobs in a row a waiting training step gets its
 * turn, so a steady stream of requests cannot stop a session either.
 *
 * @module
 */

/** What a job is, which decides its priority. */
export type JobKind = "infer" | "train";

/** Options of {@linkcode DeviceQueue}. */
export interface DeviceQueueOptions {
  /** Inference jobs run back to back before a waiting training step goes; 8 by default. */
  maxInferBurst?: number;
  /** Called with each job's kind and its seconds on the device. */
  onJob?: (kind: JobKind, seconds: number) => void;
}

/** Serialises device work between inference and training. */
export class DeviceQueue {
  readonly #waiting: Record<JobKind, Array<() => void>> = { infer: [], train: [] };
  readonly #maxBurst: number;
  readonly #onJob?: (kind: JobKind, seconds: number) => void;
  #busy = false;
  #burst = 0;
  /** The kind of the job holding the device, if any. */
  running: JobKind | undefined;

  constructor(options: DeviceQueueOptions = {}) {
    this.#maxBurst = options.maxInferBurst ?? 8;
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
    await this.#acquire(kind);
    this.running = kind;
    const t0 = performance.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#onJob?.(kind, (performance.now() - t0) / 1000);
      this.running = undefined;
      this.#release(kind);
    };
  }

  #acquire(kind: JobKind): Promise<void> {
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting[kind].push(resolve));
  }

  #release(finished: JobKind): void {
    this.#burst = finished === "infer" ? this.#burst + 1 : 0;
    const trainTurn = this.#waiting.train.length > 0 &&
      (this.#waiting.infer.length === 0 || this.#burst >= this.#maxBurst);
    const next = trainTurn ? this.#waiting.train.shift() : this.#waiting.infer.shift();
    if (next) next();
    else this.#busy = false;
  }
}
