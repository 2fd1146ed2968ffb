/**
 * The exact (erf) GELU for tfjs-wasm in one pass in JS over views of tfjs-wasm's heap, in place of the ops
 * the model composes it from (forward: mul, erf, add, mul, mul; gradient: square, mul, exp, mul, mul, mul,
 * add, mul; each a full pass over the MLP activation, the model's largest tensor, and a new tensor). A
 * training step's profile had GELU's ops among the largest costs outside the dense products
 * (docs/benchmarks.md).
 *
 * `x·Φ(x)` and the slope `Φ(x) + x·φ(x)` come from tables of cubic polynomials on cells of 1/128 over
 * [−8, 8], built once from Φ integrated by Gauss–Legendre in float64 (interpolation error below 1e-10, far
 * under float32's resolution), evaluated in float64 and rounded once. tfjs's composite rounds each of its ops
 * to float32 and uses the C library's float32 `erf`, so results agree with it to an ulp or two. Under a
 * gradient the forward kernel also writes the slope, and the gradient is `dy·slope`, one tfjs multiply: no
 * second pass over the tables, and only the slope is kept for backward instead of `x` and `1 + erf(x/√2)`.
 *
 * Registered under the WGSL kernel's name (`VitGelu`; tfjs has no GELU kernel) and {@linkcode
 * GELU_WITH_SLOPE_KERNEL}, for backend wasm; the model asks for them through {@linkcode wasmGelu}, which
 * answers `undefined` where they are not installed on the current backend. Checked against tfjs's composite
 * in tests/kernels_wasm_fused_test.ts and, installed, by the timm parity tests.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { NamedKernels } from "./named_kernels.ts";
import "@tensorflow/tfjs-backend-wasm";
import type { WasmHeapBackend } from "./wasm_slice.ts";
import { GELU_KERNEL } from "./webgpu_gelu.ts";

type Info = tf.TensorInfo;
const BACKEND = "wasm";

/**
 * The tables' grid: cells of 1/STEPS on [−LIMIT, LIMIT]; beyond it Φ is 0 or 1 in float32 (and xφ(x) nil).
 */
const STEPS = 128, LIMIT = 8, CELLS = 2 * LIMIT * STEPS;
/** The last position inside the grid (clamping to it keeps the cell index in range without a branch). */
const TOP = CELLS - 1e-9;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
/** Cubic coefficients per cell (4 each) of Φ(x) and of Φ(x) + x·φ(x), built on first use. */
let tables: { cdf: Float64Array; grad: Float64Array } | undefined;

const pdf = (x: number) => INV_SQRT_2PI * Math.exp(-0.5 * x * x);

/**
 * Φ and GELU's slope `Φ(x) + x·φ(x)` at the grid points, from Φ(0) = ½ outwards by 5-point Gauss–Legendre on
 * each cell (exact for polynomials of degree 9: each cell's integral of the smooth φ is exact to float64
 * rounding), then cubic Hermite coefficients per cell from the values and the exact slopes φ(x) and
 * φ(x)·(2 − x²). Interpolation error: below 1e-10 on both.
 */
function buildTables(): { cdf: Float64Array; grad: Float64Array } {
  const nodes = [0, -0.5384693101056831, 0.5384693101056831, -0.906179845938664, 0.906179845938664];
  const weights = [
    0.5688888888888889,
    0.4786286704993665,
    0.4786286704993665,
    0.2369268850561891,
    0.2369268850561891,
  ];
  const h = 1 / STEPS, mid = LIMIT * STEPS;
  const cell = (a: number) => {
    let s = 0;
    for (let k = 0; k < 5; k++) s += weights[k] * pdf(a + h / 2 + (h / 2) * nodes[k]);
    return (h / 2) * s;
  };
  const phi = new Float64Array(CELLS + 1);
  phi[mid] = 0.5;
  for (let i = mid; i < CELLS; i++) phi[i + 1] = phi[i] + cell((i - mid) * h);
  for (let i = mid; i > 0; i--) phi[i - 1] = phi[i] - cell((i - 1 - mid) * h);
  const at = (i: number) => (i - mid) * h;
  const hermite = (out: Float64Array, value: (i: number) => number, slope: (x: number) => number) => {
    for (let i = 0; i < CELLS; i++) {
      const y0 = value(i), y1 = value(i + 1), d0 = slope(at(i)) * h, d1 = slope(at(i + 1)) * h;
      out.set([y0, d0, 3 * (y1 - y0) - 2 * d0 - d1, 2 * (y0 - y1) + d0 + d1], 4 * i);
    }
    return out;
  };
  return {
    cdf: hermite(new Float64Array(4 * CELLS), (i) => phi[i], pdf),
    grad: hermite(
      new Float64Array(4 * CELLS),
      (i) => phi[i] + at(i) * pdf(at(i)),
      (x) => pdf(x) * (2 - x * x),
    ),
  };
}

/**
 * Evaluates table `t` at `x`, in float64. Outside the grid the end cells' values hold (0 and 1, to 1e-15).
 * Exported for the tests.
 */
export function tableAt(t: Float64Array, x: number): number {
  const s = Math.min(Math.max((x + LIMIT) * STEPS, 0), TOP);
  const k = s | 0, f = s - k, b = 4 * k;
  return t[b] + f * (t[b + 1] + f * (t[b + 2] + f * t[b + 3]));
}

/** The tables (Φ, GELU's slope), built on first use. Exported for the tests. */
export function geluTables(): { cdf: Float64Array; grad: Float64Array } {
  return tables ??= buildTables();
}

/** The name of the forward kernel that also returns GELU's slope (for training; tfjs has no such kernel). */
export const GELU_WITH_SLOPE_KERNEL = "VitGeluWithSlope";

function gelu(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend }): Info {
  const x = args.inputs.x as Info;
  const backend = args.backend as unknown as WasmHeapBackend;
  const out = backend.makeOutput([...x.shape], "float32");
  // Views only after makeOutput: an allocation that grows the heap detaches views taken before it.
  const xs = backend.typedArrayFromHeap(x) as Float32Array,
    ys = backend.typedArrayFromHeap(out) as Float32Array;
  const t = geluTables().cdf;
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    // x·Φ(x), the table inlined (this loop is the kernel's whole cost).
    const s = Math.min(Math.max((v + LIMIT) * STEPS, 0), TOP);
    const k = s | 0, f = s - k, b = 4 * k;
    ys[i] = v * (t[b] + f * (t[b + 1] + f * (t[b + 2] + f * t[b + 3])));
  }
  return out;
}

function geluWithSlope(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend }): Info[] {
  const x = args.inputs.x as Info;
  const backend = args.backend as unknown as WasmHeapBackend;
  const out = backend.makeOutput([...x.shape], "float32"),
    slope = backend.makeOutput([...x.shape], "float32");
  const xs = backend.typedArrayFromHeap(x) as Float32Array,
    ys = backend.typedArrayFromHeap(out) as Float32Array;
  const ds = backend.typedArrayFromHeap(slope) as Float32Array;
  const { cdf: t, grad: u } = geluTables();
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    const s = Math.min(Math.max((v + LIMIT) * STEPS, 0), TOP);
    const k = s | 0, f = s - k, b = 4 * k;
    ys[i] = v * (t[b] + f * (t[b + 1] + f * (t[b + 2] + f * t[b + 3])));
    // Φ(x) + x·φ(x): the same cell of the second table.
    ds[i] = u[b] + f * (u[b + 1] + f * (u[b + 2] + f * u[b + 3]));
  }
  return [out, slope];
}

/**
 * The exact GELU of `x` by the wasm kernel, and with `slope` its derivative `Φ(x) + x·φ(x)` too (the gradient
 * is then `dy·slope`: one multiply, no second pass over the table); `undefined` where the kernel is not
 * installed on the current backend or `x` is not float32 (compose it from tfjs ops there). Not differentiable
 * by itself: wrap it in a `tf.customGrad`.
 */
export function wasmGelu(x: tf.Tensor, slope: boolean): { value: tf.Tensor; slope?: tf.Tensor } | undefined {
  if (!wasmGeluKernels.active() || x.dtype !== "float32") return undefined;
  if (!slope) return { value: tf.engine().runKernel(GELU_KERNEL, { x }) as tf.Tensor };
  const [value, s] = tf.engine().runKernel(GELU_WITH_SLOPE_KERNEL, { x }) as unknown as tf.Tensor[];
  return { value, slope: s };
}

/**
 * The GELU kernels on wasm; `active()` while they run (uninstalled, the model composes GELU from tfjs ops).
 */
export const wasmGeluKernels = new NamedKernels(BACKEND, [
  [GELU_KERNEL, gelu],
  [GELU_WITH_SLOPE_KERNEL, geluWithSlope],
]);
