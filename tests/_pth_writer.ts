/**
 * Test-only writers: a minimal `torch.save` (zip archive, pickle protocol 2, storages by persistent id,
 * `_rebuild_tensor_v2`, `OrderedDict`) and the zip container under it, so tests can make `.pth` files of
 * any size — up to the full 344 MB ViT-B/16 — and odd cases (strided, shared, half-precision storages,
 * hostile pickles, ZIP64 directories) without Python.
 *
 * @module
 */
import * as zlib from "node:zlib";
import type { HostTensor, StateDict } from "../lib/vit/params.ts";
import { crc32 } from "../lib/weights/zip.ts";

/** A tensor to write: a view (`shape`, `stride`, `offset`, in elements) of a storage array. */
export class PthTensor {
  constructor(
    readonly shape: number[],
    /** The storage: float32 values, or float16/bfloat16 bits. The same array object shares a storage. */
    readonly storage: Float32Array | Uint16Array,
    readonly options: { dtype?: "F32" | "F16" | "BF16"; stride?: number[]; offset?: number } = {},
  ) {}
}

/** `cls.__new__(cls)` then `BUILD` with `state` (how `argparse.Namespace` pickles). */
export class PyInstance {
  constructor(readonly cls: string, readonly state: PyIn) {}
}

/** `callable(*args)` by `REDUCE` — e.g. a hostile `os.system("…")`. */
export class PyCall {
  constructor(readonly callable: string, readonly args: PyIn[]) {}
}

/** A Python float even when the value is integral. */
export class PyFloat {
  constructor(readonly value: number) {}
}

/**
 * What the writer can pickle. Maps become `OrderedDict`s, plain objects `dict`s, arrays lists, and a
 * {@linkcode PthTensor} or a state dict's `{shape, data: Float32Array}` a tensor — so a `StateDict` can be
 * passed as it is.
 */
export type PyIn =
  | null
  | HostTensor
  | boolean
  | number
  | string
  | PyIn[]
  | Map<string | number, PyIn>
  | { [key: string]: PyIn }
  | PthTensor
  | PyInstance
  | PyCall
  | PyFloat;

const STORAGE_CLASS = { F32: "FloatStorage", F16: "HalfStorage", BF16: "BFloat16Storage" } as const;

function isHostTensor(v: object): v is HostTensor {
  return (v as HostTensor).data instanceof Float32Array && Array.isArray((v as HostTensor).shape);
}

class Bytes {
  #buf = new Uint8Array(1024);
  length = 0;
  push(...values: number[]): void {
    this.#reserve(values.length);
    for (const v of values) this.#buf[this.length++] = v;
  }
  append(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#buf.set(bytes, this.length);
    this.length += bytes.length;
  }
  u32(v: number): void {
    this.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
  #reserve(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.length + n));
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
  }
}

/** Pickles `value` (protocol 2); tensors' storages are collected into `storages` by key. */
export function encodePickle(
  value: PyIn,
  storages = new Map<Float32Array | Uint16Array, string>(),
): Uint8Array {
  const out = new Bytes();
  const text = (s: string) => {
    const b = new TextEncoder().encode(s);
    out.push(0x58); // BINUNICODE
    out.u32(b.length);
    out.append(b);
  };
  const global = (qualname: string) => {
    const dot = qualname.lastIndexOf(".");
    out.push(0x63); // GLOBAL
    out.append(new TextEncoder().encode(`${qualname.slice(0, dot)}\n${qualname.slice(dot + 1)}\n`));
  };
  const int = (n: number) => {
    if (n >= 0 && n < 256) out.push(0x4b, n);
    else if (n >= -(2 ** 31) && n < 2 ** 31) {
      out.push(0x4a);
      out.u32(n >>> 0);
    } else {
      let big = BigInt(n);
      const bytes: number[] = [];
      for (let i = 0; i < 8; i++, big >>= 8n) bytes.push(Number(big & 0xffn));
      out.push(0x8a, 8, ...bytes); // LONG1
    }
  };
  const float = (x: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, x, false);
    out.push(0x47);
    out.append(b);
  };
  const tuple = (items: (() => void)[]) => {
    out.push(0x28); // MARK
    for (const item of items) item();
    out.push(0x74); // TUPLE
  };
  const walk = (v: PyIn): void => {
    if (v === null) out.push(0x4e);
    else if (v === true) out.push(0x88);
    else if (v === false) out.push(0x89);
    else if (typeof v === "number") Number.isInteger(v) ? int(v) : float(v);
    else if (typeof v === "string") text(v);
    else if (v instanceof PyFloat) float(v.value);
    else if (Array.isArray(v)) {
      out.push(0x5d, 0x28); // EMPTY_LIST MARK
      v.forEach(walk);
      out.push(0x65); // APPENDS
    } else if (v instanceof PthTensor) tensor(v);
    else if (isHostTensor(v)) tensor(new PthTensor(v.shape, v.data));
    else if (v instanceof PyInstance) {
      global(v.cls);
      out.push(0x29, 0x81); // EMPTY_TUPLE NEWOBJ
      walk(v.state);
      out.push(0x62); // BUILD
    } else if (v instanceof PyCall) {
      global(v.callable);
      tuple(v.args.map((a) => () => walk(a)));
      out.push(0x52); // REDUCE
    } else if (v instanceof Map) {
      global("collections.OrderedDict");
      out.push(0x29, 0x52, 0x28); // EMPTY_TUPLE REDUCE MARK
      for (const [k, x] of v) {
        walk(k);
        walk(x);
      }
      out.push(0x75); // SETITEMS
    } else {
      out.push(0x7d, 0x28); // EMPTY_DICT MARK
      for (const [k, x] of Object.entries(v)) {
        text(k);
        walk(x);
      }
      out.push(0x75);
    }
  };
  const tensor = (t: PthTensor) => {
    const dtype = t.options.dtype ?? (t.storage instanceof Float32Array ? "F32" : "F16");
    let key = storages.get(t.storage);
    if (key === undefined) storages.set(t.storage, key = String(storages.size));
    const stride = t.options.stride ?? t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    global("torch._utils._rebuild_tensor_v2");
    tuple([
      () => {
        tuple([
          () => text("storage"),
          () => global(`torch.${STORAGE_CLASS[dtype]}`),
          () => text(key),
          () => text("cpu"),
          () => int(t.storage.length),
        ]);
        out.push(0x51); // BINPERSID
      },
      () => int(t.options.offset ?? 0),
      () => tuple(t.shape.map((s) => () => int(s))),
      () => tuple(stride.map((s) => () => int(s))),
      () => out.push(0x89),
      () => {
        global("collections.OrderedDict");
        out.push(0x29, 0x52);
      },
    ]);
    out.push(0x52);
  };
  out.push(0x80, 2); // PROTO 2
  walk(value);
  out.push(0x2e); // STOP
  return out.result();
}

/** One file of a zip archive to write. */
export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** Deflate it (default: stored, as PyTorch does). */
  deflate?: boolean;
}

/**
 * A zip archive of `entries`, each entry's data aligned to `align` bytes (PyTorch uses 64) by padding the
 * local header's extra field. `zip64` writes ZIP64 central-directory fields even when sizes fit in 32 bits.
 */
export function encodeZip(
  entries: ZipInput[],
  options: { align?: number; zip64?: boolean } = {},
): Uint8Array {
  const align = options.align ?? 64;
  const enc = new TextEncoder();
  const prepared = entries.map((e) => {
    const body = e.deflate ? zlib.deflateRawSync(e.data) : e.data;
    return {
      name: enc.encode(e.name),
      body,
      size: e.data.length,
      crc: crc32(e.data),
      method: e.deflate ? 8 : 0,
    };
  });
  let offset = 0;
  const layout = prepared.map((p) => {
    const base = offset + 30 + p.name.length + 4;
    const pad = (align - (base % align)) % align;
    const at = offset;
    offset = base + pad + p.body.length;
    return { at, extra: 4 + pad };
  });
  const cdStart = offset;
  const cdSize = prepared.reduce((a, p) => a + 46 + p.name.length + (options.zip64 ? 28 : 0), 0);
  const total = cdStart + cdSize + (options.zip64 ? 56 + 20 : 0) + 22;
  if (total > 0xffffffff && !options.zip64) throw new Error("encodeZip: archives over 4 GiB need zip64");
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  prepared.forEach((p, i) => {
    const { at, extra } = layout[i];
    v.setUint32(at, 0x04034b50, true);
    v.setUint16(at + 4, 20, true);
    v.setUint16(at + 8, p.method, true);
    v.setUint32(at + 14, p.crc, true);
    v.setUint32(at + 18, p.body.length, true);
    v.setUint32(at + 22, p.size, true);
    v.setUint16(at + 26, p.name.length, true);
    v.setUint16(at + 28, extra, true);
    out.set(p.name, at + 30);
    v.setUint16(at + 30 + p.name.length, 0x4246, true); // "FB", PyTorch's padding field
    v.setUint16(at + 32 + p.name.length, extra - 4, true);
    out.set(p.body, at + 30 + p.name.length + extra);
  });
  let c = cdStart;
  prepared.forEach((p, i) => {
    const z = options.zip64;
    v.setUint32(c, 0x02014b50, true);
    v.setUint16(c + 4, z ? 45 : 20, true);
    v.setUint16(c + 6, z ? 45 : 20, true);
    v.setUint16(c + 10, p.method, true);
    v.setUint32(c + 16, p.crc, true);
    v.setUint32(c + 20, z ? 0xffffffff : p.body.length, true);
    v.setUint32(c + 24, z ? 0xffffffff : p.size, true);
    v.setUint16(c + 28, p.name.length, true);
    v.setUint16(c + 30, z ? 28 : 0, true);
    v.setUint32(c + 42, z ? 0xffffffff : layout[i].at, true);
    out.set(p.name, c + 46);
    c += 46 + p.name.length;
    if (z) {
      v.setUint16(c, 1, true);
      v.setUint16(c + 2, 24, true);
      v.setBigUint64(c + 4, BigInt(p.size), true);
      v.setBigUint64(c + 12, BigInt(p.body.length), true);
      v.setBigUint64(c + 20, BigInt(layout[i].at), true);
      c += 28;
    }
  });
  if (options.zip64) {
    v.setUint32(c, 0x06064b50, true);
    v.setBigUint64(c + 4, 44n, true);
    v.setUint16(c + 12, 45, true);
    v.setUint16(c + 14, 45, true);
    v.setBigUint64(c + 24, BigInt(entries.length), true);
    v.setBigUint64(c + 32, BigInt(entries.length), true);
    v.setBigUint64(c + 40, BigInt(cdSize), true);
    v.setBigUint64(c + 48, BigInt(cdStart), true);
    v.setUint32(c + 56, 0x07064b50, true);
    v.setBigUint64(c + 64, BigInt(c), true);
    v.setUint32(c + 72, 1, true);
    c += 76;
  }
  v.setUint32(c, 0x06054b50, true);
  v.setUint16(c + 8, options.zip64 ? 0xffff : entries.length, true);
  v.setUint16(c + 10, options.zip64 ? 0xffff : entries.length, true);
  v.setUint32(c + 12, options.zip64 ? 0xffffffff : cdSize, true);
  v.setUint32(c + 16, options.zip64 ? 0xffffffff : cdStart, true);
  return out;
}

/**
 * `torch.save(value)`: a PyTorch zip archive with `<name>/data.pkl`, `<name>/data/<key>`, version, byteorder.
 */
export function encodePth(value: PyIn, options: { name?: string; zip64?: boolean } = {}): Uint8Array {
  const name = options.name ?? "archive";
  const storages = new Map<Float32Array | Uint16Array, string>();
  const pkl = encodePickle(value, storages);
  const entries: ZipInput[] = [{ name: `${name}/data.pkl`, data: pkl }];
  for (const [storage, key] of storages) {
    entries.push({
      name: `${name}/data/${key}`,
      data: new Uint8Array(storage.buffer, storage.byteOffset, storage.byteLength),
    });
  }
  entries.push(
    { name: `${name}/version`, data: new TextEncoder().encode("3\n") },
    { name: `${name}/byteorder`, data: new TextEncoder().encode("little") },
  );
  return encodeZip(entries, { zip64: options.zip64 });
}

/** `torch.save(model.state_dict())` for a float32 state dict. */
export function stateDictToPth(
  state: StateDict,
  options: { name?: string; zip64?: boolean } = {},
): Uint8Array {
  return encodePth(state, options);
}
