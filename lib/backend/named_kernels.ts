/**
 * Kernels that the project registers under its own names (ops tfjs has no kernel for: LayerNorm, GELU, the
 * attention head split), for one backend, installed and removed together. Kernels that take the place of one
 * of tfjs's keep tfjs's to put back: `ReplacedKernels` (replaced_kernels.ts).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/** A set of kernels under the project's own names for one backend. */
export class NamedKernels {
  #installed = false;

  /**
   * `kernels`: [name, kernel function] pairs, registered for `backendName`; `gradients`: those of the kernels
   * that have one (tfjs keys a gradient by kernel name alone, for every backend, so it stays registered).
   */
  constructor(
    readonly backendName: string,
    readonly kernels: ReadonlyArray<readonly [string, unknown]>,
    readonly gradients: readonly tf.GradConfig[] = [],
  ) {}

  /** Whether the kernels are registered (whatever the current backend). */
  get installed(): boolean {
    return this.#installed;
  }

  /** Registers the kernels (idempotent); always true (the kernels are the project's, nothing is replaced). */
  install(): boolean {
    if (this.#installed) return true;
    for (const g of this.gradients) if (!tf.getGradient(g.kernelName)) tf.registerGradient(g);
    for (const [kernelName, fn] of this.kernels) {
      tf.registerKernel({ kernelName, backendName: this.backendName, kernelFunc: fn as tf.KernelFunc });
    }
    this.#installed = true;
    return true;
  }

  /** Removes the kernels: their callers compose the ops from tfjs's again. */
  uninstall(): void {
    if (!this.#installed) return;
    for (const [kernelName] of this.kernels) tf.unregisterKernel(kernelName, this.backendName);
    this.#installed = false;
  }

  /** Whether the kernels are registered and their backend is the current one (so they run). */
  active(): boolean {
    return this.#installed && tf.getBackend() === this.backendName;
  }
}
