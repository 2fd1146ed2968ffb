/**
 * The project's own kernels, in one table: which backend each is for, its label in `BackendInfo.kernels`, and
 * how to register it in place of tfjs's and put tfjs's back. `initBackend` installs them; the bench removes
 * and reinstalls them to measure tfjs's own beside them.
 *
 * The WebGPU ones are installed only on a software adapter (where they were measured faster, see
 * docs/benchmarks.md) unless forced; the wasm ones everywhere.
 *
 * @module
 */
import { wasmBatchMatMulKernels } from "./wasm_batch_matmul.ts";
import { wasmSliceKernels } from "./wasm_slice.ts";
import { wasmSumKernels } from "./wasm_sum.ts";
import { wasmGeluKernels } from "./wasm_gelu.ts";
import { wasmHeadsKernels } from "./wasm_heads.ts";
import { wasmIdentityKernels } from "./wasm_identity.ts";
import { wasmLayerNormKernels } from "./wasm_layer_norm.ts";
import { webgpuGeluKernels } from "./webgpu_gelu.ts";
import { webgpuLayerNormKernels } from "./webgpu_layer_norm.ts";
import { webgpuMatMulKernels } from "./webgpu_matmul.ts";
import { webgpuSoftmaxKernels } from "./webgpu_softmax.ts";

/** What the table needs of a kernel set: a `ReplacedKernels` or a `NamedKernels`. */
interface KernelSet {
  readonly installed: boolean;
  /** Registers the set (idempotent); false when the backend lacks a kernel it replaces. */
  install(): boolean;
  uninstall(): void;
}

interface ProjectKernel {
  backend: "wasm" | "webgpu";
  /** Its name in `BackendInfo.kernels`. */
  label: string;
  set: KernelSet;
}

const KERNELS: readonly ProjectKernel[] = [
  { backend: "wasm", label: "wasm BatchMatMul", set: wasmBatchMatMulKernels },
  { backend: "wasm", label: "wasm Slice/SplitV", set: wasmSliceKernels },
  { backend: "wasm", label: "wasm LayerNorm", set: wasmLayerNormKernels },
  { backend: "wasm", label: "wasm GELU", set: wasmGeluKernels },
  { backend: "wasm", label: "wasm attention head split", set: wasmHeadsKernels },
  { backend: "wasm", label: "wasm Sum over rows", set: wasmSumKernels },
  { backend: "wasm", label: "wasm Identity/Cast", set: wasmIdentityKernels },
  { backend: "webgpu", label: "WGSL matmul", set: webgpuMatMulKernels },
  { backend: "webgpu", label: "WGSL softmax", set: webgpuSoftmaxKernels },
  { backend: "webgpu", label: "WGSL LayerNorm", set: webgpuLayerNormKernels },
  { backend: "webgpu", label: "WGSL GELU", set: webgpuGeluKernels },
];

/**
 * Registers the project's kernels for `backend`; returns the labels of those installed. On webgpu they need
 * `softwareAdapter` (the adapter's `isFallbackAdapter`) or `force`, or to be installed already.
 */
export function installProjectKernels(backend: string, softwareAdapter = false, force = false): string[] {
  const applies = (k: ProjectKernel) => k.backend === "wasm" || softwareAdapter || force || k.set.installed;
  return KERNELS.filter((k) => k.backend === backend && applies(k) && k.set.install()).map((k) => k.label);
}

/**
 * Puts tfjs's own kernels back on `backend`; returns a function that registers again exactly the project's
 * kernels that were installed (for before/after measurements).
 */
export function uninstallProjectKernels(backend: string): () => void {
  const removed = KERNELS.filter((k) => k.backend === backend && k.set.installed);
  for (const k of removed) k.set.uninstall();
  return () => {
    for (const k of removed) k.set.install();
  };
}
