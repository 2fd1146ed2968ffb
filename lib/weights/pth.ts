/**
 * PyTorch `.pth` / `.pth.tar` checkpoints in the zip format `torch.save` has written since 1.6:
 * `<prefix>/data.pkl` (a pickle whose tensors refer to storages by persistent id) and `<prefix>/data/<key>`
 * (each storage's raw little-endian bytes). Finds the state dict (bare, under `state_dict` as timm's
 * `train.py` saves it, or under `model`), the EMA weights and the training metadata beside it.
 *
 * Float32 tensors that are contiguous are views of the archive's bytes (PyTorch aligns storages to 64
 * bytes), so a checkpoint costs about its own size in memory; other float dtypes and strided tensors are
 * copied once, to float32.
 *
 * @module
 */
import type { StateDict } from "../vit/params.ts";
import { type FloatDtype, floatsFromBytes, stridedBounds } from "./npy.ts";
import { describe, PickledTensor, PyObject, toPlain, torchDtype, unpickle } from "./pickle.ts";
import { ZipArchive } from "./zip.ts";

/** A storage a persistent id named: which `data/<key>` entry, its dtype and length in elements. */
export class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: string,
    readonly numel: number,
    readonly location: string,
  ) {}
}

/** A tensor left out of a state dict, and why. */
export interface SkippedTensor {
  name: string;
  /** The dtype (F32, I64, …), or `not a tensor: …` for a non-tensor entry. */
  dtype: string;
  shape: number[];
}

/** What a `.pth` checkpoint holds besides the weights. */
export interface PthMeta {
  /** The archive's record folder (`micro/` in `micro/data.pkl`). */
  archivePrefix: string;
  /** The key the state dict was under: `""` for a bare state dict, else `state_dict`, `model`, … */
  stateKey: string;
  /** The key of the EMA state dict, when there is one. */
  emaKey?: string;
  /** `module.` when every name had DataParallel's prefix, which was removed. */
  strippedPrefix?: string;
  /** Top-level keys of the checkpoint dict (empty for a bare state dict). */
  keys: string[];
  epoch?: number;
  arch?: string;
  /** The training arguments (`argparse.Namespace`) as a plain object. */
  args?: Record<string, unknown>;
  version?: unknown;
  metric?: unknown;
  /** Other top-level entries that hold no tensors, as plain values (the optimizer state is left out). */
  extra: Record<string, unknown>;
  /** Entries of the state dict that are not float tensors, left out of `state`. */
  skipped: SkippedTensor[];
}

/** A loaded `.pth` checkpoint. */
export interface PthCheckpoint {
  state: StateDict;
  /** The EMA weights (`state_dict_ema`, `model_ema`), when the checkpoint has them. */
  ema?: StateDict;
  meta: PthMeta;
}

/** A `.pth` archive's pickle, unpickled, with a way to read the tensors in it. */
export interface PthPickle {
  /** The unpickled top-level object (tensors are {@linkcode PickledTensor}s). */
  root: unknown;
  archivePrefix: string;
  /** A tensor's values: float32 for float dtypes, null for others (integers, bools). */
  tensorData(t: PickledTensor, name: string): { dtype: string; data: Float32Array | null };
}

const WIDTH: Record<string, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const FLOAT = new Set(["F32", "F16", "BF16", "F64"]);
const STATE_KEYS = ["state_dict", "model", "module", "model_state_dict", "net"];
const EMA_KEYS = ["state_dict_ema", "model_ema", "ema"];

/**
 * True for PyTorch's serialization before the zip format (1.6): a raw pickle stream starting with the
 * legacy magic number, or a tar archive of `storages`/`tensors`/`pickle`.
 */
export function isLegacyTorch(bytes: Uint8Array): boolean {
  if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] >= 2 && bytes[1] <= 5) return true;
  return bytes.length >= 262 && new TextDecoder().decode(bytes.subarray(257, 262)) === "ustar";
}

function legacyError(source: string): Error {
  return new Error(
    `${source}: a legacy PyTorch checkpoint (pre-1.6 serialization: raw pickle or tar, not a zip archive), ` +
      `which is not read. Re-save it with a modern torch: ` +
      `torch.save(torch.load(path, map_location="cpu"), "resaved.pth")`,
  );
}

function swapBytes(bytes: Uint8Array, width: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let j = 0; j < width; j++) out[i + j] = bytes[i + width - 1 - j];
  }
  return out;
}

/** Opens a `.pth` archive and unpickles its `data.pkl`; tensors are read on demand. */
export function loadPthPickle(input: Uint8Array | ZipArchive, source = "checkpoint"): PthPickle {
  if (input instanceof Uint8Array && isLegacyTorch(input)) throw legacyError(source);
  const zip = input instanceof ZipArchive ? input : ZipArchive.open(input, source);
  const pkl = zip.entries
    .filter((e) => /(^|\/)data\.pkl$/.test(e.name))
    .sort((a, b) => a.name.split("/").length - b.name.split("/").length)[0];
  if (!pkl) {
    throw new Error(`${source}: a zip archive without a data.pkl entry, so not a PyTorch checkpoint`);
  }
  const archivePrefix = pkl.name.slice(0, -"data.pkl".length);
  const orderEntry = zip.entry(`${archivePrefix}byteorder`);
  const bigEndian = orderEntry ? new TextDecoder().decode(zip.read(orderEntry)).trim() === "big" : false;

  const root = unpickle(zip.read(pkl), {
    source: `${source} (${pkl.name})`,
    persistentLoad(pid) {
      if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
        throw new Error(`${source}: unsupported persistent id ${describe(pid)} (expected a "storage" tuple)`);
      }
      const [, type, key, location, numel] = pid;
      const dtype = torchDtype(type) ?? `unsupported ${describe(type)}`;
      if (typeof numel !== "number") throw new Error(`${source}: storage "${key}" has no element count`);
      return new StorageRef(String(key), dtype, numel, String(location));
    },
  });

  const storages = new Map<string, Uint8Array>();
  const storageBytes = (ref: StorageRef, name: string): Uint8Array => {
    let bytes = storages.get(ref.key);
    if (!bytes) {
      const entry = `${archivePrefix}data/${ref.key}`;
      if (!zip.has(entry)) {
        throw new Error(`${source}: tensor "${name}" needs storage entry "${entry}", absent`);
      }
      bytes = zip.read(entry);
      const need = ref.numel * WIDTH[ref.dtype];
      if (bytes.length < need) {
        throw new Error(
          `${source}: storage "${entry}" holds ${bytes.length} bytes, ${ref.numel} × ${ref.dtype} needs ${need}`,
        );
      }
      bytes = bytes.subarray(0, need);
      if (bigEndian && WIDTH[ref.dtype] > 1) bytes = swapBytes(bytes, WIDTH[ref.dtype]);
      storages.set(ref.key, bytes);
    }
    return bytes;
  };

  return {
    root,
    archivePrefix,
    tensorData(t, name) {
      const ref = t.storage;
      if (!(ref instanceof StorageRef)) {
        throw new Error(`${source}: tensor "${name}" has no storage (got ${describe(ref)})`);
      }
      if (!FLOAT.has(ref.dtype)) return { dtype: ref.dtype, data: null };
      if (t.shape.length !== t.stride.length) {
        throw new Error(`${source}: tensor "${name}" has size [${t.shape}] but stride [${t.stride}]`);
      }
      const { min, max } = stridedBounds(t.shape, t.stride, t.offset);
      if (min <= max && (min < 0 || max >= ref.numel)) {
        throw new Error(
          `${source}: tensor "${name}" (size [${t.shape}], stride [${t.stride}], offset ${t.offset}) reaches ` +
            `element ${min < 0 ? min : max} of a storage of ${ref.numel}`,
        );
      }
      const data = floatsFromBytes(
        storageBytes(ref, name),
        ref.dtype as FloatDtype,
        t.shape,
        t.stride,
        t.offset,
      );
      return { dtype: ref.dtype, data };
    },
  };
}

function tensorCount(v: Map<unknown, unknown>): number {
  let n = 0;
  for (const x of v.values()) if (x instanceof PickledTensor) n++;
  return n;
}

function isStateDict(v: unknown): v is Map<string, unknown> {
  if (!(v instanceof Map) || v.size === 0) return false;
  for (const k of v.keys()) if (typeof k !== "string") return false;
  return tensorCount(v) * 2 >= v.size;
}

function stripModulePrefix(state: StateDict): { state: StateDict; stripped: boolean } {
  const prefix = "module.";
  if (state.size === 0 || ![...state.keys()].every((k) => k.startsWith(prefix))) {
    return { state, stripped: false };
  }
  return { state: new Map([...state].map(([k, v]) => [k.slice(prefix.length), v])), stripped: true };
}

function buildState(
  pickle: PthPickle,
  dict: Map<string, unknown>,
  skipped: SkippedTensor[],
): { state: StateDict; stripped: boolean } {
  const state: StateDict = new Map();
  for (const [name, value] of dict) {
    if (!(value instanceof PickledTensor)) {
      skipped.push({ name, dtype: `not a tensor: ${describe(value)}`, shape: [] });
      continue;
    }
    const { dtype, data } = pickle.tensorData(value, name);
    if (data) state.set(name, { shape: value.shape, data });
    else skipped.push({ name, dtype, shape: value.shape });
  }
  return stripModulePrefix(state);
}

function plainArgs(v: unknown): Record<string, unknown> | undefined {
  const plain = toPlain(v instanceof PyObject ? (v.state ?? new Map()) : v);
  return plain && typeof plain === "object" && !Array.isArray(plain)
    ? plain as Record<string, unknown>
    : undefined;
}

function holdsTensor(v: unknown): boolean {
  let found = false;
  toPlain(v, { tensor: () => (found = true) });
  return found;
}

/**
 * Reads a `.pth` checkpoint: the state dict in timm's names (a leading `module.` removed), the EMA weights
 * when present, and the metadata. Non-float tensors are left out and listed in `meta.skipped`. Throws,
 * naming `source`, on a legacy (non-zip) file, a pickled model object instead of a state dict, or a dict
 * with no state dict in it.
 */
export function parsePth(input: Uint8Array | ZipArchive, source = "checkpoint"): PthCheckpoint {
  const pickle = loadPthPickle(input, source);
  const root = pickle.root;
  const meta: PthMeta = {
    archivePrefix: pickle.archivePrefix,
    stateKey: "",
    keys: [],
    extra: {},
    skipped: [],
  };
  if (isStateDict(root)) {
    const { state, stripped } = buildState(pickle, root, meta.skipped);
    if (stripped) meta.strippedPrefix = "module.";
    return { state, meta };
  }
  if (!(root instanceof Map)) {
    throw new Error(
      `${source}: the checkpoint holds ${describe(root)}, not a state dict` +
        (root instanceof PyObject ? " (a pickled model object? save model.state_dict() instead)" : ""),
    );
  }
  meta.keys = [...root.keys()].map(String);
  const stateKey = STATE_KEYS.find((k) => root.has(k));
  if (stateKey === undefined) {
    throw new Error(
      `${source}: no state dict found: the checkpoint is a dict of [${
        meta.keys.join(", ")
      }], expected a state ` +
        `dict or one under ${STATE_KEYS.map((k) => `"${k}"`).join(" / ")}`,
    );
  }
  const inner = root.get(stateKey);
  if (!isStateDict(inner)) {
    throw new Error(
      `${source}: "${stateKey}" holds ${describe(inner)}, not a state dict` +
        (inner instanceof PyObject ? " (a pickled model object? save model.state_dict() instead)" : ""),
    );
  }
  meta.stateKey = stateKey;
  const main = buildState(pickle, inner, meta.skipped);
  if (main.stripped) meta.strippedPrefix = "module.";
  const result: PthCheckpoint = { state: main.state, meta };
  const emaKey = EMA_KEYS.find((k) => isStateDict(root.get(k)));
  if (emaKey) {
    meta.emaKey = emaKey;
    result.ema = buildState(pickle, root.get(emaKey) as Map<string, unknown>, []).state;
  }
  for (const [key, value] of root) {
    const k = String(key);
    if (k === stateKey || k === emaKey) continue;
    if (k === "epoch" && typeof value === "number") meta.epoch = value;
    else if (k === "arch" && typeof value === "string") meta.arch = value;
    else if (k === "args") meta.args = plainArgs(value);
    else if (k === "version") meta.version = toPlain(value);
    else if (k === "metric") meta.metric = toPlain(value);
    else if (!holdsTensor(value)) meta.extra[k] = toPlain(value);
  }
  return result;
}
