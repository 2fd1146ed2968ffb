/**
 * Dynamic batching for one model: images from concurrent requests are collected for at most `maxWaitMs`
 * (or until `maxBatch` are waiting) and classified in one device pass. The batch is assembled when the
 * device job starts, not when it is queued, so requests that arrive while the device is busy (e.g. with a
 * fine-tuning step) join the next pass instead of waiting for one of their own.
 *
 * @module
 */
import type { ViTModel } from "../vit/model.ts";
import type { Admission } from "./admission.ts";
import type { DeviceQueue } from "./device_queue.ts";
import { ServiceError } from "./errors.ts";
import type { ServeMetrics } from "./metrics.ts";

/** Batching parameters. */
export interface BatchOptions {
  /** Most images per device pass. */
  maxBatch: number;
  /** Longest time the first image of a batch waits for others, in milliseconds. */
  maxWaitMs: number;
}

interface Pending {
  input: Float32Array;
  resolve: (logits: Float32Array) => void;
  reject: (e: unknown) => void;
}

/** Collects preprocessed images for one model and runs them in batches on the device queue. */
export class Batcher {
  readonly #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scheduled = false;
  /** Batches on the device now. */
  #running = 0;
  /** Why new work is refused, once it is. */
  #closed: ServiceError | undefined;
  readonly #idle: Array<() => void> = [];

  constructor(
    readonly modelId: string,
    readonly model: ViTModel,
    readonly queue: DeviceQueue,
    readonly admission: Admission,
    readonly options: BatchOptions,
    readonly metrics?: ServeMetrics,
  ) {}

  /** Images waiting for a device pass. */
  get waiting(): number {
    return this.#pending.length;
  }

  /**
   * Logits for each preprocessed CHW image. The caller must have admitted them (see {@linkcode Admission});
   * they are released here once classified (or refused, when the model was removed meanwhile).
   */
  classify(inputs: Float32Array[]): Promise<Float32Array[]> {
    if (this.#closed) {
      this.admission.release(inputs.length);
      return Promise.reject(this.#closed);
    }
    const done = inputs.map((input) =>
      new Promise<Float32Array>((resolve, reject) => this.#pending.push({ input, resolve, reject }))
    );
    this.#schedule();
    return Promise.all(done);
  }

  #schedule(): void {
    if (this.#scheduled || this.#pending.length === 0) return;
    // While the device is busy the job waits in the queue anyway and takes whatever has arrived when it
    // starts, so waiting for more images first would only add latency.
    if (this.#pending.length >= this.options.maxBatch || this.options.maxWaitMs <= 0 || this.queue.busy) {
      this.#submit();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#submit(), this.options.maxWaitMs);
    }
  }

  #submit(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#scheduled || this.#pending.length === 0) return;
    this.#scheduled = true;
    this.queue.run("infer", () => {
      this.#scheduled = false;
      const batch = this.#pending.splice(0, this.options.maxBatch);
      // Whatever is left (or arrives now) gets the next device job.
      this.#schedule();
      return this.#runBatch(batch);
    }).catch(() => {});
  }

  async #runBatch(batch: Pending[]): Promise<void> {
    if (batch.length === 0) return this.#checkIdle();
    this.#running++;
    const { in_chans, img_size, num_classes } = this.model.config;
    const per = in_chans * img_size * img_size;
    const x = new Float32Array(batch.length * per);
    batch.forEach((p, i) => x.set(p.input, i * per));
    const t0 = performance.now();
    try {
      const logits = await this.model.logits(x, [batch.length, in_chans, img_size, img_size]);
      const seconds = (performance.now() - t0) / 1000;
      this.admission.observe(batch.length, seconds);
      this.metrics?.batchSize.observe({ model: this.modelId }, batch.length);
      this.metrics?.inferSeconds.observe({ model: this.modelId }, seconds);
      this.metrics?.images.inc({ model: this.modelId }, batch.length);
      batch.forEach((p, i) => p.resolve(logits.slice(i * num_classes, (i + 1) * num_classes)));
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.admission.release(batch.length);
      this.#running--;
      this.#checkIdle();
    }
  }

  #checkIdle(): void {
    // A device job still queued with nothing pending finds an empty batch and never touches the model.
    if (this.#pending.length || this.#running) return;
    for (const wake of this.#idle.splice(0)) wake();
  }

  /**
   * Refuses new work (404 `model_not_found`: the model was removed) and resolves once every image accepted
   * before has been classified, so removing a model does not fail requests already in its batches. After
   * {@linkcode close} it resolves once no batch is on the device, i.e. when the model may be freed.
   */
  drain(): Promise<void> {
    this.#closed ??= new ServiceError("not_found", "model_not_found", `model "${this.modelId}" was removed`);
    return new Promise((resolve) => {
      this.#idle.push(resolve);
      this.#checkIdle();
    });
  }

  /** Refuses new work and fails what is still waiting (a batch already on the device still finishes). */
  close(): void {
    this.#closed ??= new ServiceError(
      "unavailable",
      "model_unloaded",
      `model "${this.modelId}" was unloaded`,
    );
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const left = this.#pending.splice(0);
    this.admission.release(left.length);
    for (const p of left) p.reject(this.#closed);
    this.#checkIdle();
  }
}
