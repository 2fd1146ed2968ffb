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
import {
  installWasmBatchMatMul,
  uninstallWasmBatchMatMul,
  wasmBatchMatMulInstalled,
} from "./wasm_batch_matmul.ts";
import { installWasmSlice, uninstallWasmSlice, wasmSliceInstalled } from "./wasm_slice.ts";
import { installWasmSum, uninstallWasmSum, wasmSumInstalled } from "./wasm_sum.ts";
import { installWasmGelu, uninstallWasmGelu, wasmGeluInstalled } from "./wasm_gelu.ts";
import { installWasmHeads, uninstallWasmHeads, wasmHeadsInstalled } from "./wasm_heads.ts";
import { installWasmIdentity, uninstallWasmIdentity, wasmIdentityInstalled } from "./wasm_identity.ts";
import { installWasmLayerNorm, uninstallWasmLayerNorm, wasmLayerNormInstalled } from "./wasm_layer_norm.ts";
import { installWebGPUGelu, uninstallWebGPUGelu, webgpuGeluInstalled } from "./webgpu_gelu.ts";
import {
  installWebGPULayerNorm,
  uninstallWebGPULayerNorm,
  webgpuLayerNormInstalled,
} from "./webgpu_layer_norm.ts";
import { installWebGPUMatMul, uninstallWebGPUMatMul, webgpuMatMulInstalled } from "./webgpu_matmul.ts";
import { installWebGPUSoftmax, uninstallWebGPUSoftmax, webgpuSoftmaxInstalled } from "./webgpu_softmax.ts";

interface ProjectKernel {
  backend: "wasm" | "webgpu";
  label: string;
  /** Registers it (idempotent); false when it does not apply here. */
  install(softwareAdapter: boolean, force: boolean): boolean;
  uninstall(): void;
  installed(): boolean;
}

const KERNELS: readonly ProjectKernel[] = [
  {
    backend: "wasm",
    label: "wasm BatchMatMul",
    install: installWasmBatchMatMul,
    uninstall: uninstallWasmBatchMatMul,
    installed: wasmBatchMatMulInstalled,
  },
  {
    backend: "wasm",
    label: "wasm Slice/SplitV",
    install: installWasmSlice,
    uninstall: uninstallWasmSlice,
    installed: wasmSliceInstalled,
  },
  {
    backend: "wasm",
    label: "wasm LayerNorm",
    install: installWasmLayerNorm,
    uninstall: uninstallWasmLayerNorm,
    installed: wasmLayerNormInstalled,
  },
  {
    backend: "wasm",
    label: "wasm GELU",
    install: installWasmGelu,
    uninstall: uninstallWasmGelu,
    installed: wasmGeluInstalled,
  },
  {
    backend: "wasm",
    label: "wasm attention head split",
    install: installWasmHeads,
    uninstall: uninstallWasmHeads,
    installed: wasmHeadsInstalled,
  },
  {
    backend: "wasm",
    label: "wasm Sum over rows",
    install: installWasmSum,
    uninstall: uninstallWasmSum,
    installed: wasmSumInstalled,
  },
  {
    backend: "wasm",
    label: "wasm Identity/Cast",
    install: installWasmIdentity,
    uninstall: uninstallWasmIdentity,
    installed: wasmIdentityInstalled,
  },
  {
    backend: "webgpu",
    label: "WGSL matmul",
    install: installWebGPUMatMul,
    uninstall: uninstallWebGPUMatMul,
    installed: webgpuMatMulInstalled,
  },
  {
    backend: "webgpu",
    label: "WGSL softmax",
    install: installWebGPUSoftmax,
    uninstall: uninstallWebGPUSoftmax,
    installed: webgpuSoftmaxInstalled,
  },
  {
    backend: "webgpu",
    label: "WGSL LayerNorm",
    install: installWebGPULayerNorm,
    uninstall: uninstallWebGPULayerNorm,
    installed: webgpuLayerNormInstalled,
  },
  {
    backend: "webgpu",
    label: "WGSL GELU",
    install: installWebGPUGelu,
    uninstall: uninstallWebGPUGelu,
    installed: webgpuGeluInstalled,
  },
];

/**
 * Registers the project's kernels for `backend`; returns the labels of those installed. On webgpu they need
 * `softwareAdapter` (the adapter's `isFallbackAdapter`) or `force`.
 */
export function installProjectKernels(backend: string, softwareAdapter = false, force = false): string[] {
  return KERNELS.filter((k) => k.backend === backend && k.install(softwareAdapter, force)).map((k) =>
    k.label
  );
}

/**
 * Puts tfjs's own kernels back on `backend`; returns a function that registers again exactly the project's
 * kernels that were installed (for before/after measurements).
 */
export function uninstallProjectKernels(backend: string): () => void {
  const removed = KERNELS.filter((k) => k.backend === backend && k.installed());
  for (const k of removed) k.uninstall();
  return () => {
    for (const k of removed) k.install(true, true);
  };
}
