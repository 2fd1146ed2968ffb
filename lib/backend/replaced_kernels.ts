/**
 * Project kernels that take the place of tfjs's own under tfjs's kernel names, for one backend: installed and
 * removed together, keeping tfjs's to put back (for before/after measurements and tests) and to fall back on
 * for the inputs a project kernel leaves to it. Kernels under the project's own names are `NamedKernels`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/** A set of kernels registered in place of tfjs's for one backend. */
export class ReplacedKernels {
  readonly #stock = new Map<string, tf.KernelConfig>();

  /** `kernels`: [tfjs kernel name, replacement kernel function] pairs, for `backendName`. */
  constructor(readonly backendName: string, readonly kernels: ReadonlyArray<readonly [string, unknown]>) {}

  /** Whether the replacements are the kernels registered now. */
  get installed(): boolean {
    return this.#stock.size > 0;
  }

  /** Registers the replacements (idempotent); false when the backend lacks one of tfjs's kernels. */
  install(): boolean {
    if (this.installed) return true;
    if (this.kernels.some(([name]) => !tf.getKernel(name, this.backendName))) return false;
    for (const [name, kernelFunc] of this.kernels) {
      const current = tf.getKernel(name, this.backendName)!;
      this.#stock.set(name, current);
      tf.unregisterKernel(name, this.backendName);
      tf.registerKernel({ ...current, kernelFunc: kernelFunc as tf.KernelFunc });
    }
    return true;
  }

  /** Puts tfjs's own kernels back. */
  uninstall(): void {
    for (const [name, config] of this.#stock) {
      tf.unregisterKernel(name, this.backendName);
      tf.registerKernel(config);
    }
    this.#stock.clear();
  }

  /** tfjs's own kernel function for `name`, while the replacements are installed. */
  stock(name: string): tf.KernelFunc {
    const config = this.#stock.get(name);
    if (!config) throw new Error(`tfjs's ${name} kernel is not held: the replacements are not installed`);
    return config.kernelFunc;
  }
}
