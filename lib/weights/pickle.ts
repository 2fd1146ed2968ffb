/**
 * A safe unpickler for Python pickle protocols 0–5, enough for what `torch.save` writes and what a training
 * checkpoint holds around it (dicts, OrderedDicts, lists, tuples, numbers, strings, bytes,
 * `argparse.Namespace`).
 *
 * Nothing is ever executed. `GLOBAL`/`STACK_GLOBAL` only name a callable ({@linkcode PyGlobal}); calling one
 * (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`) interprets a short whitelist of known reconstructors — `OrderedDict`,
 * torch's tensor rebuilders, sets, `_codecs.encode` — and turns everything else, `os.system` included, into
 * an inert {@linkcode PyObject} record of the class name, arguments and state.
 *
 * Python values map to: `None` → null, bool → boolean, int → number (bigint past 2^53), float → number,
 * str → string, bytes → Uint8Array, list/tuple/set → array, dict/OrderedDict → Map.
 *
 * @module
 */

/** A named Python callable or class, never resolved: `module.name` as `GLOBAL` gave it. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`. */
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * An inert record of an object the unpickler did not reconstruct: the class (or callable) it names, the
 * arguments it would have been called with, and the state `BUILD` would have set.
 */
export class PyObject {
  /** What `BUILD` passed (usually the instance `__dict__` as a Map). */
  state?: unknown;
  /** Items `SETITEM(S)` added, for dict subclasses. */
  dictItems?: Map<unknown, unknown>;
  /** Items `APPEND(S)` added, for list subclasses. */
  listItems?: unknown[];

  constructor(
    /** The class or callable, `module.name`. */
    readonly __class__: string,
    /** Positional arguments of the call. */
    readonly args: unknown[],
    /**
     * How it was created: `reduce` = callable(*args), `newobj` = cls.__new__(cls, *args), `inst` = old-style.
     */
    readonly kind: "reduce" | "newobj" | "inst",
    /** Keyword arguments (`NEWOBJ_EX`). */
    readonly kwargs?: Map<unknown, unknown>,
  ) {}
}

/**
 * A tensor as `torch._utils._rebuild_tensor_v2` describes it: a storage (whatever the persistent-id
 * resolver returned), an element offset into it, a size and a stride (in elements).
 */
export class PickledTensor {
  constructor(
    readonly storage: unknown,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
    readonly requiresGrad: boolean,
  ) {}
}

/** Options of {@linkcode unpickle}. */
export interface UnpickleOptions {
  /** Resolves a persistent id (torch: `("storage", storage_type, key, location, numel)`). */
  persistentLoad?: (pid: unknown) => unknown;
  /** Names the data in error messages. */
  source?: string;
}

const TORCH_DTYPES: Record<string, string> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
  float64: "F64",
  double: "F64",
  int64: "I64",
  long: "I64",
  int32: "I32",
  int: "I32",
  int16: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

/**
 * The dtype (safetensors spelling: F32, F16, BF16, F64, I64, …) of a torch storage class or dtype global,
 * e.g. `torch.FloatStorage` or `torch.float16`; undefined for anything else.
 */
export function torchDtype(value: unknown): string | undefined {
  if (!(value instanceof PyGlobal)) return undefined;
  if (value.module !== "torch" && value.module !== "torch.storage") return undefined;
  return Object.hasOwn(TORCH_DTYPES, value.name) ? TORCH_DTYPES[value.name] : undefined;
}

type Reconstructor = (args: unknown[], where: string) => unknown;

function intArg(v: unknown, what: string, where: string): number {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  throw new Error(`${where}: ${what} should be an integer, got ${describe(v)}`);
}

function intList(v: unknown, what: string, where: string): number[] {
  if (!Array.isArray(v)) throw new Error(`${where}: ${what} should be a tuple, got ${describe(v)}`);
  return v.map((x, i) => intArg(x, `${what}[${i}]`, where));
}

function rebuildTensor(args: unknown[], where: string): PickledTensor {
  if (args.length < 4) throw new Error(`${where}: _rebuild_tensor needs 4+ arguments, got ${args.length}`);
  return new PickledTensor(
    args[0],
    intArg(args[1], "storage offset", where),
    intList(args[2], "size", where),
    intList(args[3], "stride", where),
    args[4] === true,
  );
}

function latin1(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** The only callables whose calls are interpreted; each builds plain data and nothing else. */
const RECONSTRUCTORS: Record<string, Reconstructor> = {
  "collections.OrderedDict": (args) => {
    const out = new Map<unknown, unknown>();
    if (Array.isArray(args[0])) {
      for (const pair of args[0]) if (Array.isArray(pair)) out.set(pair[0], pair[1]);
    }
    return out;
  },
  "builtins.set": (args) => (Array.isArray(args[0]) ? [...args[0]] : []),
  "builtins.frozenset": (args) => (Array.isArray(args[0]) ? [...args[0]] : []),
  "__builtin__.set": (args) => (Array.isArray(args[0]) ? [...args[0]] : []),
  "__builtin__.frozenset": (args) => (Array.isArray(args[0]) ? [...args[0]] : []),
  "builtins.bytearray": (args) =>
    args[0] instanceof Uint8Array
      ? args[0].slice()
      : typeof args[0] === "string"
      ? latin1(args[0])
      : new Uint8Array(),
  "_codecs.encode": (args, where) => {
    // Protocol 2 pickles bytes as _codecs.encode(text, "latin1").
    const [text, encoding] = args;
    if (typeof text !== "string") throw new Error(`${where}: _codecs.encode of ${describe(text)}`);
    return encoding === "utf-8" || encoding === "utf8" ? new TextEncoder().encode(text) : latin1(text);
  },
  "torch.Size": (args, where) => intList(args[0] ?? [], "torch.Size", where),
  "torch._utils._rebuild_tensor": rebuildTensor,
  "torch._utils._rebuild_tensor_v2": rebuildTensor,
  "torch._utils._rebuild_parameter": (args) => args[0],
  "torch._utils._rebuild_parameter_with_state": (args) => args[0],
  "torch._tensor._rebuild_from_type_v2": (args, where) => {
    // (func, type, func_args, state): a tensor subclass (e.g. Parameter) — rebuild the plain tensor.
    const [func, , funcArgs] = args;
    return call(func, Array.isArray(funcArgs) ? funcArgs : [], where, "reduce");
  },
};

const RECONSTRUCTOR_OF_CLASS = new Set(["copy_reg._reconstructor", "copyreg._reconstructor"]);

function call(callable: unknown, args: unknown[], where: string, kind: "reduce" | "newobj"): unknown {
  if (
    callable instanceof PyGlobal && RECONSTRUCTOR_OF_CLASS.has(callable.qualname) &&
    args[0] instanceof PyGlobal
  ) {
    // Protocol 0/1 spelling of cls.__new__(cls): copyreg._reconstructor(cls, object, None).
    return call(args[0], [], where, "newobj");
  }
  if (callable instanceof PyGlobal) {
    const rebuild = Object.hasOwn(RECONSTRUCTORS, callable.qualname)
      ? RECONSTRUCTORS[callable.qualname]
      : undefined;
    if (rebuild && (kind === "reduce" || callable.qualname === "collections.OrderedDict")) {
      return rebuild(kind === "newobj" ? [] : args, where);
    }
    return new PyObject(callable.qualname, args, kind);
  }
  const name = callable instanceof PyObject ? `<result of ${callable.__class__}>` : `<${describe(callable)}>`;
  return new PyObject(name, args, kind);
}

/** A short description of a Python value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return "None";
  if (Array.isArray(v)) return `a sequence of ${v.length}`;
  if (v instanceof Map) return `a dict of ${v.size}`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (v instanceof PyObject) return `a ${v.__class__} object`;
  if (v instanceof PyGlobal) return `the global ${v.qualname}`;
  if (v instanceof PickledTensor) return `a tensor of shape [${v.shape}]`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return `${typeof v} ${String(v)}`;
}

function signedLE(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  if (bytes[bytes.length - 1] & 0x80) n -= 1n << BigInt(8 * bytes.length);
  return toNumber(n);
}

function toNumber(n: bigint): number | bigint {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** Python `repr` of a str (protocol 0 `STRING`) → its characters. */
function unquote(text: string, where: string): string {
  const q = text[0];
  if ((q !== "'" && q !== '"') || text[text.length - 1] !== q || text.length < 2) {
    throw new Error(`${where}: STRING argument ${JSON.stringify(text)} is not quoted`);
  }
  return unescapePython(text.slice(1, -1), false);
}

function unescapePython(body: string, rawUnicode: boolean): string {
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c !== "\\" || i + 1 >= body.length) {
      out += c;
      continue;
    }
    const n = body[++i];
    if (rawUnicode) {
      if (n === "u" || n === "U") {
        const len = n === "u" ? 4 : 8;
        out += String.fromCodePoint(parseInt(body.slice(i + 1, i + 1 + len), 16));
        i += len;
      } else out += "\\" + n;
      continue;
    }
    const simple: Record<string, string> = {
      n: "\n",
      t: "\t",
      r: "\r",
      "\\": "\\",
      "'": "'",
      '"': '"',
      a: "\x07",
    };
    if (n in simple) out += simple[n];
    else if (n === "b") out += "\b";
    else if (n === "f") out += "\f";
    else if (n === "v") out += "\v";
    else if (n === "x") {
      out += String.fromCharCode(parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (n >= "0" && n <= "7") {
      let digits = n;
      while (digits.length < 3 && body[i + 1] >= "0" && body[i + 1] <= "7") digits += body[++i];
      out += String.fromCharCode(parseInt(digits, 8));
    } else out += "\\" + n;
  }
  return out;
}

/**
 * Unpickles `bytes` without executing anything. Throws, naming the source, the opcode and its byte offset,
 * on a truncated or malformed stream or an unsupported feature (extension registry, out-of-band buffers).
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions = {}): unknown {
  const source = options.source ?? "pickle";
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin = new TextDecoder("latin1");
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let opAt = 0;
  let op = 0;
  const where = () => `${source}: pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${opAt}`;

  const need = (n: number) => {
    if (n < 0 || pos + n > bytes.length) {
      throw new Error(`${where()} needs ${n} bytes past the end of the data (${bytes.length}); truncated?`);
    }
  };
  const take = (n: number) => {
    need(n);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u8 = () => (need(1), bytes[pos++]);
  const u16 = () => (need(2), pos += 2, view.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, view.getUint32(pos - 4, true));
  const u64 = () => {
    need(8);
    const n = view.getBigUint64(pos, true);
    pos += 8;
    if (n > BigInt(bytes.length)) throw new Error(`${where()}: length ${n} exceeds the data; truncated?`);
    return Number(n);
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw new Error(`${where()}: unterminated text argument; truncated?`);
    const text = latin.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return text;
  };
  const str = (n: number) => {
    try {
      return utf8.decode(take(n));
    } catch (e) {
      throw new Error(`${where()}: invalid UTF-8 (${(e as Error).message})`);
    }
  };
  const pop = () => {
    if (stack.length === 0) throw new Error(`${where()}: stack underflow; corrupt pickle`);
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) throw new Error(`${where()}: stack underflow; corrupt pickle`);
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) throw new Error(`${where()}: no MARK to pop; corrupt pickle`);
    stack = prev;
    return items;
  };
  const memoGet = (key: number) => {
    if (!memo.has(key)) throw new Error(`${where()}: memo key ${key} was never stored; corrupt pickle`);
    return memo.get(key);
  };
  const persistent = (pid: unknown) => {
    if (!options.persistentLoad) throw new Error(`${where()}: a persistent id, but no resolver was given`);
    return options.persistentLoad(pid);
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (items.length % 2) throw new Error(`${where()}: odd number of items for SETITEMS`);
    if (target instanceof Map) {
      for (let i = 0; i < items.length; i += 2) target.set(items[i], items[i + 1]);
    } else if (target instanceof PyObject) {
      target.dictItems ??= new Map();
      for (let i = 0; i < items.length; i += 2) target.dictItems.set(items[i], items[i + 1]);
    } else throw new Error(`${where()}: SETITEM on ${describe(target)}`);
  };
  const appendItems = (target: unknown, items: unknown[]) => {
    if (Array.isArray(target)) target.push(...items);
    else if (target instanceof PyObject) (target.listItems ??= []).push(...items);
    else throw new Error(`${where()}: APPEND on ${describe(target)}`);
  };
  const pushInt = (text: string) => {
    const t = text.endsWith("L") ? text.slice(0, -1) : text;
    if (!/^[-+]?\d+$/.test(t)) throw new Error(`${where()}: ${JSON.stringify(text)} is not an integer`);
    stack.push(toNumber(BigInt(t)));
  };

  while (true) {
    opAt = pos;
    op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const proto = u8();
        if (proto > 5) throw new Error(`${where()}: pickle protocol ${proto} is newer than 5`);
        break;
      }
      case 0x95: // FRAME: the frame length is only a read-ahead hint
        take(8);
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        metastack.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length) stack.pop();
        else popMark();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x49: { // INT
        const text = line();
        if (text === "01") stack.push(true);
        else if (text === "00") stack.push(false);
        else pushInt(text);
        break;
      }
      case 0x4c: // LONG
        pushInt(line());
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(signedLE(take(u8())));
        break;
      case 0x8b: { // LONG4
        const n = u32();
        // Nothing a checkpoint holds is this large, and converting it costs quadratic time.
        if (n > 1024) throw new Error(`${where()}: a ${n}-byte integer is too large to read`);
        stack.push(signedLE(take(n)));
        break;
      }
      case 0x46: { // FLOAT
        const text = line();
        const value = Number(text);
        if (Number.isNaN(value) && !/nan/i.test(text)) throw new Error(`${where()}: bad float ${text}`);
        stack.push(value);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x53: // STRING
        stack.push(unquote(line(), where()));
        break;
      case 0x54: // BINSTRING
        stack.push(latin.decode(take(u32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin.decode(take(u8())));
        break;
      case 0x56: // UNICODE (raw-unicode-escape)
        stack.push(unescapePython(line(), true));
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(take(u64()).slice());
        break;
      case 0x96: // BYTEARRAY8
        stack.push(take(u64()).slice());
        break;
      case 0x97: // NEXT_BUFFER
        throw new Error(`${where()}: out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported`);
      case 0x98: // READONLY_BUFFER
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x74: // TUPLE
      case 0x6c: // LIST
      case 0x91: { // FROZENSET
        const items = popMark(); // before `stack` is read: popMark replaces it
        stack.push(items);
        break;
      }
      case 0x5d: // EMPTY_LIST
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: { // DICT
        const items = popMark();
        const d = new Map();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: // APPENDS
      case 0x90: { // ADDITEMS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x67: // GET
        stack.push(memoGet(Number(line())));
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x70: // PUT
        memo.set(Number(line()), top());
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(new PyGlobal(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          throw new Error(`${where()}: STACK_GLOBAL needs two strings`);
        }
        stack.push(new PyGlobal(module, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), callable = pop();
        if (!Array.isArray(args)) throw new Error(`${where()}: REDUCE arguments are ${describe(args)}`);
        stack.push(call(callable, args, where(), "reduce"));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop(), cls = pop();
        if (!Array.isArray(args)) throw new Error(`${where()}: NEWOBJ arguments are ${describe(args)}`);
        stack.push(call(cls, args, where(), "newobj"));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop(), args = pop(), cls = pop();
        if (!Array.isArray(args)) throw new Error(`${where()}: NEWOBJ_EX arguments are ${describe(args)}`);
        const obj = call(cls, args, where(), "newobj");
        stack.push(
          obj instanceof PyObject && kwargs instanceof Map && kwargs.size
            ? new PyObject(obj.__class__, obj.args, "newobj", kwargs)
            : obj,
        );
        break;
      }
      case 0x69: { // INST
        const module = line(), name = line();
        const args = popMark();
        stack.push(new PyObject(`${module}.${name}`, args, "inst"));
        break;
      }
      case 0x6f: { // OBJ
        const items = popMark();
        const cls = items.shift();
        stack.push(
          new PyObject(cls instanceof PyGlobal ? cls.qualname : `<${describe(cls)}>`, items, "inst"),
        );
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = top();
        // Only records keep state; a dict's attributes (a state_dict's _metadata) are not data.
        if (obj instanceof PyObject) obj.state = state;
        break;
      }
      case 0x50: // PERSID
        stack.push(persistent(line()));
        break;
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      case 0x82: // EXT1
      case 0x83: // EXT2
      case 0x84: // EXT4
        throw new Error(`${where()}: the copyreg extension registry (EXT1/2/4) is not supported`);
      default:
        throw new Error(`${where()}: unknown opcode; not a pickle, or a corrupt one`);
    }
  }
}

/** Options of {@linkcode toPlain}. */
export interface PlainOptions {
  /** How a tensor appears (default: `{tensor: [shape]}`). */
  tensor?: (t: PickledTensor) => unknown;
}

/**
 * A JSON-friendly copy of an unpickled value: Maps with string or number keys become objects, records
 * become `{__class__, args?, ...state}`, bytes become `{bytes: length}`, bigints become strings, and a
 * cycle becomes the string `"<cycle>"`.
 */
export function toPlain(value: unknown, options: PlainOptions = {}): unknown {
  const seen = new Set<unknown>();
  const tensor = options.tensor ?? ((t: PickledTensor) => ({ tensor: t.shape }));
  const walk = (v: unknown): unknown => {
    if (v === null || typeof v !== "object") return typeof v === "bigint" ? v.toString() : v;
    if (v instanceof PickledTensor) return tensor(v);
    if (v instanceof Uint8Array) return { bytes: v.length };
    if (v instanceof PyGlobal) return { global: v.qualname };
    if (seen.has(v)) return "<cycle>";
    seen.add(v);
    try {
      if (Array.isArray(v)) return v.map(walk);
      if (v instanceof Map) {
        const out: Record<string, unknown> = {};
        for (const [k, x] of v) {
          out[typeof k === "string" || typeof k === "number" ? String(k) : describe(k)] = walk(x);
        }
        return out;
      }
      if (v instanceof PyObject) {
        const out: Record<string, unknown> = { __class__: v.__class__ };
        if (v.args.length) out.args = walk(v.args);
        if (v.kwargs) out.kwargs = walk(v.kwargs);
        const state = walk(v.state);
        if (state && typeof state === "object" && !Array.isArray(state)) Object.assign(out, state);
        else if (v.state !== undefined) out.state = state;
        if (v.dictItems) out.items = walk(v.dictItems);
        if (v.listItems) out.list = walk(v.listItems);
        return out;
      }
      return String(v);
    } finally {
      seen.delete(v);
    }
  };
  return walk(value);
}
