/**
 * Admission control for inference: a bound on images accepted but not yet classified. A request that would
 * exceed it is refused at once with 503 and a `Retry-After` estimated from recent throughput, instead of
 * waiting in an unbounded queue until its client gives up.
 *
 * @module
 */
import { ServiceError } from "./errors.ts";

/** Counts images in flight against a limit. */
export class Admission {
  #pending = 0;
  /** Exponential moving average of device seconds per image. */
  #secondsPerImage = 0.05;

  constructor(readonly limit: number) {}

  /** Images accepted and not yet finished. */
  get pending(): number {
    return this.#pending;
  }

  /** Reserves room for `n` images or throws 503 `queue_full`. */
  admit(n: number): void {
    if (this.#pending + n > this.limit) {
      const wait = Math.max(1, Math.ceil(this.#pending * this.#secondsPerImage));
      throw new ServiceError(
        "unavailable",
        "queue_full",
        `the inference queue is full (${this.#pending} images waiting, limit ${this.limit}); retry in ${wait} s`,
        { retryAfterS: wait },
      );
    }
    this.#pending += n;
  }

  /** Releases `n` images admitted earlier. */
  release(n: number): void {
    this.#pending = Math.max(0, this.#pending - n);
  }

  /** Records a finished batch to refine the `Retry-After` estimate. */
  observe(images: number, seconds: number): void {
    if (images > 0) this.#secondsPerImage = 0.8 * this.#secondsPerImage + 0.2 * (seconds / images);
  }
}
