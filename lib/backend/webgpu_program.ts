/**
 * The slice of tfjs-webgpu's backend that the project's WGSL kernels use. tfjs-webgpu does not export its
 * backend class's program-running method in its public types, so the kernels see the backend through this.
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs";

/** A WebGPU backend that runs a tfjs `WebGPUProgram` (an object with `getUserCode`, dispatch, uniforms). */
export interface WebGPUBackendLike extends tf.KernelBackend {
  runWebGPUProgram(
    program: unknown,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
    uniforms?: Array<{ type: string; data: number[] }>,
  ): tf.TensorInfo;
}
