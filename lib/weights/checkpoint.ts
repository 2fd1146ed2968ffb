/**
 * One entry point for every checkpoint format the project reads — safetensors, PyTorch `.pth`/`.pth.tar`, and
 * Google's `.npz` — chosen by the file's bytes, not its name, and returned as a timm-named float32 state
 * dict.
 *
 * @module
 */
import type { StateDict } from "../vit/params.ts";
import { parseNpz } from "./npz.ts";
import { isNpy } from "./npy.ts";
import { isLegacyTorch, parsePth, type PthMeta, type SkippedTensor } from "./pth.ts";
import { parseSafetensors } from "./safetensors.ts";
import { isZip, ZipArchive } from "./zip.ts";

/** The checkpoint formats {@linkcode readCheckpoint} understands. */
export type CheckpointFormat = "safetensors" | "pth" | "npz";

/** What a checkpoint held besides its weights; which fields are set depends on the format. */
export interface CheckpointMeta extends Partial<Omit<PthMeta, "skipped" | "extra">> {
  /** Tensors that are not floats (or not tensors), left out of the state dict. */
  skipped: SkippedTensor[];
  /** `.pth`: top-level entries without tensors, as plain values; empty for other formats. */
  extra: Record<string, unknown>;
  /** safetensors: the header's `__metadata__`. */
  metadata?: Record<string, string>;
  /** npz: the key prefix, the block naming, and arrays with no timm counterpart. */
  npz?: { keyPrefix: string; naming: string; unmapped: string[] };
}

/** A checkpoint read into a timm state dict. */
export interface Checkpoint {
  state: StateDict;
  format: CheckpointFormat;
  meta: CheckpointMeta;
  /** EMA weights, when a `.pth` training checkpoint has them. */
  ema?: StateDict;
}

/** Options of {@linkcode readCheckpoint}. */
export interface ReadCheckpointOptions {
  /** Names the checkpoint in error messages (default: the path, or "checkpoint" for bytes). */
  name?: string;
}

const FLOATS = new Set(["F32", "F16", "BF16", "F64"]);

/**
 * The format of checkpoint bytes: a zip with a `data.pkl` is `.pth`, a zip of `.npy` arrays is `.npz`,
 * anything else is taken for safetensors. Throws on a legacy (non-zip) PyTorch file and on a lone `.npy`.
 */
export function detectFormat(bytes: Uint8Array, name = "checkpoint"): CheckpointFormat {
  if (isZip(bytes)) {
    const zip = ZipArchive.open(bytes, name);
    if (zip.entries.some((e) => /(^|\/)data\.pkl$/.test(e.name))) return "pth";
    if (zip.entries.some((e) => e.name.endsWith(".npy"))) return "npz";
    throw new Error(`${name}: a zip archive with neither data.pkl (PyTorch) nor .npy arrays (npz)`);
  }
  if (isLegacyTorch(bytes)) return "pth"; // parsePth explains how to re-save it
  if (isNpy(bytes)) throw new Error(`${name}: a single .npy array, not a checkpoint (expected .npz)`);
  return "safetensors";
}

function readSafetensorsState(bytes: Uint8Array, name: string): { state: StateDict; meta: CheckpointMeta } {
  const tensors = parseSafetensors(bytes, name);
  const state: StateDict = new Map();
  const skipped: SkippedTensor[] = [];
  for (const [key, t] of tensors) {
    if (FLOATS.has(t.dtype)) state.set(key, { shape: t.shape, data: t.data as Float32Array });
    else skipped.push({ name: key, dtype: t.dtype, shape: t.shape });
  }
  const meta: CheckpointMeta = { skipped, extra: {} };
  // parseSafetensors has validated the header already; only __metadata__ is read here.
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  if (header.__metadata__) meta.metadata = header.__metadata__;
  return { state, meta };
}

/** Reads checkpoint bytes of any supported format. */
export function parseCheckpoint(bytes: Uint8Array, name = "checkpoint"): Checkpoint {
  const format = detectFormat(bytes, name);
  if (format === "pth") {
    const { state, ema, meta } = parsePth(bytes, name);
    return { state, format, meta, ...(ema ? { ema } : {}) };
  }
  if (format === "npz") {
    const { state, meta } = parseNpz(bytes, name);
    const { skipped, ...npz } = meta;
    return { state, format, meta: { skipped, extra: {}, npz } };
  }
  return { format, ...readSafetensorsState(bytes, name) };
}

/**
 * Reads a checkpoint from a path or from bytes, detecting the format from its contents. Float16, bfloat16
 * and float64 weights are widened to float32; non-float tensors are listed in `meta.skipped`.
 */
export async function readCheckpoint(
  pathOrBytes: string | Uint8Array,
  options: ReadCheckpointOptions = {},
): Promise<Checkpoint> {
  if (typeof pathOrBytes === "string") {
    return parseCheckpoint(await Deno.readFile(pathOrBytes), options.name ?? pathOrBytes);
  }
  return parseCheckpoint(pathOrBytes, options.name ?? "checkpoint");
}
