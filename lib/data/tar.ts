/**
 * Reading and safely extracting tar archives (optionally gzip-compressed), streaming, in TypeScript.
 *
 * Understands v7, ustar (prefix field), GNU long names (`L`) and pax headers (`x`: path, size); checks every
 * header's checksum. Extraction writes only regular files and directories: links, devices and FIFOs are
 * skipped, and an entry whose path is absolute, contains `..`, a backslash or a NUL is rejected with a
 * `TarError` before anything is written for it — so an archive (e.g. an uploaded dataset) can never write
 * outside the destination folder. Limits on entry size, total size, entry count, inflated size and
 * inflation ratio guard against bombs; extraction streams members to disk in chunks of at most 1 MiB.
 *
 * @module
 */
import { concatBytes } from "../util/bytes.ts";

/** A malformed or unsafe archive. `code` classifies it for callers (e.g. an HTTP layer answering 4xx). */
export class TarError extends Error {
  readonly code: "corrupt" | "truncated" | "unsafe_path" | "too_large";

  constructor(code: TarError["code"], message: string) {
    super(message);
    this.name = "TarError";
    this.code = code;
  }
}

/**
 * One archive member. `data` is read for regular files only (empty for the others), unless the archive is
 * read with `streamData`: then `data` stays empty and `chunks` yields the file's content (at most 1 MiB at a
 * time; unread content is skipped when the next member is read).
 */
export interface TarEntry {
  /** Path inside the archive, as stored (not yet checked: see `safeEntryPath`). */
  path: string;
  type: "file" | "directory" | "link" | "other";
  size: number;
  mode: number;
  data: Uint8Array;
  chunks?: () => AsyncGenerator<Uint8Array>;
}

/** Limits applied while reading. */
export interface TarLimits {
  /** Largest single member in bytes (default 1 GiB). */
  maxEntryBytes?: number;
  /** Largest sum of member sizes (default 16 GiB). */
  maxTotalBytes?: number;
  /** Most members (default 10,000,000). */
  maxEntries?: number;
  /** Most bytes a gzip stream may inflate to, headers and padding included (default 2 × `maxTotalBytes`). */
  maxInflatedBytes?: number;
  /**
   * Largest inflated/compressed ratio once more than `ratioGraceBytes` (default 16 MiB) are inflated: a
   * gzip bomb is refused early, whatever it declares (default: unlimited).
   */
  maxRatio?: number;
  ratioGraceBytes?: number;
}

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #fill(n: number): Promise<void> {
    while (this.#buffered < n && !this.#done) {
      const { value, done } = await this.#reader.read();
      if (done) this.#done = true;
      else if (value.length) {
        this.#chunks.push(value);
        this.#buffered += value.length;
      }
    }
  }

  /** Exactly `n` bytes, or fewer at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    await this.#fill(n);
    const take = Math.min(n, this.#buffered);
    const first = this.#chunks[0];
    if (first && first.length >= take) {
      const out = first.subarray(0, take);
      if (first.length === take) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(take);
      this.#buffered -= take;
      return out;
    }
    const out = new Uint8Array(take);
    let filled = 0;
    while (filled < take) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, take - filled);
      out.set(c.subarray(0, k), filled);
      filled += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= take;
    return out;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

const decoder = new TextDecoder();

function field(h: Uint8Array, at: number, len: number): string {
  const s = h.subarray(at, at + len);
  const nul = s.indexOf(0);
  return decoder.decode(nul < 0 ? s : s.subarray(0, nul));
}

function octal(h: Uint8Array, at: number, len: number, what: string, source: string): number {
  if (h[at] & 0x80) {
    // GNU base-256 for sizes ≥ 8 GiB.
    let v = 0;
    for (let i = 1; i < len; i++) v = v * 256 + h[at + i];
    return v;
  }
  const s = field(h, at, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError("corrupt", `${source}: header ${what} "${s}" is not octal`);
  return parseInt(s, 8);
}

function checksumOk(h: Uint8Array, stored: number): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return sum === stored;
}

function parsePax(data: Uint8Array, source: string): Record<string, string> {
  // Records are "<length> <key>=<value>\n", the length counting the record's bytes.
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length) {
    let sp = i;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = parseInt(decoder.decode(data.subarray(i, sp)), 10);
    if (sp >= data.length || !(len > sp - i) || i + len > data.length) {
      throw new TarError("corrupt", `${source}: malformed pax header record`);
    }
    const kv = decoder.decode(data.subarray(sp + 1, i + len - 1));
    const eq = kv.indexOf("=");
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1);
    i += len;
  }
  return out;
}

/**
 * The members of a tar stream (already decompressed; see `gunzipIfNeeded`), in order. Member data is read
 * into memory, one member at a time. `source` names the archive in errors.
 */
export async function* readTar(
  stream: ReadableStream<Uint8Array>,
  source = "archive",
  limits: TarLimits & { streamData?: boolean } = {},
): AsyncGenerator<TarEntry> {
  const maxEntry = limits.maxEntryBytes ?? 2 ** 30;
  const maxTotal = limits.maxTotalBytes ?? 16 * 2 ** 30;
  const maxEntries = limits.maxEntries ?? 10_000_000;
  const r = new ByteReader(stream);
  let total = 0, count = 0;
  let longName: string | undefined;
  let pax: Record<string, string> = {};
  try {
    while (true) {
      const h = await r.read(512);
      if (h.length === 0) return; // no end-of-archive blocks: accepted, as GNU tar does
      if (h.length < 512) throw new TarError("truncated", `${source}: archive ends inside a header`);
      if (h.every((b) => b === 0)) return;
      const stored = octal(h, 148, 8, "checksum", source);
      if (!checksumOk(h, stored)) throw new TarError("corrupt", `${source}: header checksum mismatch`);
      const flag = String.fromCharCode(h[156] || 0x30);
      let size = octal(h, 124, 12, "size", source);
      if (pax.size !== undefined) size = Number(pax.size);
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new TarError("corrupt", `${source}: bad member size`);
      }
      const isMeta = flag === "L" || flag === "K" || flag === "x" || flag === "g";
      if (size > maxEntry && (isMeta || flag === "0" || flag === "7")) {
        throw new TarError(
          "too_large",
          `${source}: a member of ${size} bytes exceeds the ${maxEntry}-byte limit`,
        );
      }
      total += size;
      if (total > maxTotal) {
        throw new TarError("too_large", `${source}: more than ${maxTotal} bytes of content`);
      }
      if (++count > maxEntries) throw new TarError("too_large", `${source}: more than ${maxEntries} members`);
      const isFile = flag === "0" || flag === "7";
      const keep = isMeta || (isFile && !limits.streamData);
      let data: Uint8Array = new Uint8Array(0);
      const padded = Math.ceil(size / 512) * 512;
      /** Bytes of this member (with its padding) not read yet. */
      let left = padded;
      const skip = async () => {
        while (left > 0) {
          const got = (await r.read(Math.min(left, 1 << 20))).length;
          if (got === 0) throw new TarError("truncated", `${source}: archive ends inside a member`);
          left -= got;
        }
      };
      if (keep) {
        data = await r.read(size);
        if (data.length < size) throw new TarError("truncated", `${source}: archive ends inside a member`);
        if ((await r.read(padded - size)).length < padded - size) {
          throw new TarError("truncated", `${source}: archive ends inside a member's padding`);
        }
        left = 0;
      } else if (!isFile) await skip();
      if (flag === "L") {
        longName = field(data, 0, data.length);
        continue;
      }
      if (flag === "x") {
        pax = parsePax(data, source);
        continue;
      }
      if (flag === "K" || flag === "g") continue;
      const magic = field(h, 257, 6);
      const prefix = magic === "ustar" ? field(h, 345, 155) : "";
      const name = field(h, 0, 100);
      const path = pax.path ?? longName ?? (prefix ? `${prefix}/${name}` : name);
      longName = undefined;
      pax = {};
      const type = flag === "0" || flag === "7"
        ? "file"
        : flag === "5"
        ? "directory"
        : flag === "1" || flag === "2"
        ? "link"
        : "other";
      const entry: TarEntry = {
        path,
        type,
        size: type === "file" ? size : 0,
        mode: octal(h, 100, 8, "mode", source),
        data,
      };
      if (left > 0) {
        entry.chunks = async function* () {
          let unread = size;
          while (unread > 0) {
            const chunk = await r.read(Math.min(unread, 1 << 20));
            if (chunk.length === 0) {
              throw new TarError("truncated", `${source}: archive ends inside a member`);
            }
            unread -= chunk.length;
            left -= chunk.length;
            yield chunk;
          }
        };
      }
      yield entry;
      await skip();
    }
  } finally {
    await r.cancel();
  }
}

/**
 * The relative path an entry may be written to, or a `TarError` (code "unsafe_path") when it is absolute,
 * has a `..` segment, a backslash or a NUL. Leading `./` and empty segments are dropped.
 */
export function safeEntryPath(path: string, source = "archive"): string {
  const bad = (why: string) => {
    throw new TarError("unsafe_path", `${source}: member "${path}" ${why}; refusing to extract it`);
  };
  if (path.includes("\0")) bad("contains a NUL byte");
  if (path.includes("\\")) bad("contains a backslash");
  if (path.startsWith("/")) bad("is an absolute path");
  const parts = path.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.some((s) => s === "..")) bad('has a ".." segment');
  return parts.join("/");
}

/** Compressed bytes handed to the inflater at a time: at most ~1032× as many come out of one. */
const INFLATE_SLICE = 4096;

/**
 * A stream decompressed when it starts with the gzip magic bytes, passed through otherwise. The compressed
 * bytes go to the inflater in small slices and the inflated ones are counted as they come out, so a gzip
 * bomb is stopped (`TarError` "too_large") at `maxInflatedBytes` or `maxRatio` having cost a few MiB of
 * memory, never its declared size.
 */
export async function gunzipIfNeeded(
  stream: ReadableStream<Uint8Array>,
  limits: Pick<TarLimits, "maxInflatedBytes" | "maxRatio" | "ratioGraceBytes"> & { source?: string } = {},
): Promise<ReadableStream<Uint8Array>> {
  const reader = stream.getReader();
  const first = await reader.read();
  const head = first.done ? new Uint8Array(0) : first.value;
  const gz = head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  let compressed = 0;
  let pending: Uint8Array | undefined = head.length ? head : undefined;
  const rest = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (!pending) {
        const { value, done } = await reader.read();
        if (done) return c.close();
        pending = value;
      }
      const n = gz ? Math.min(pending.length, INFLATE_SLICE) : pending.length;
      c.enqueue(pending.subarray(0, n));
      compressed += n;
      pending = n < pending.length ? pending.subarray(n) : undefined;
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  if (!gz) return rest;
  const source = limits.source ?? "archive";
  const maxInflated = limits.maxInflatedBytes ?? Infinity;
  const maxRatio = limits.maxRatio ?? Infinity;
  const grace = limits.ratioGraceBytes ?? 16 * 2 ** 20;
  let inflated = 0;
  const count = new TransformStream<Uint8Array, Uint8Array>(
    {
      transform(chunk, c) {
        inflated += chunk.length;
        if (inflated > maxInflated) {
          throw new TarError("too_large", `${source}: inflates to more than ${maxInflated} bytes`);
        }
        if (inflated > grace && inflated > maxRatio * compressed) {
          throw new TarError(
            "too_large",
            `${source}: inflates more than ${maxRatio}-fold (${inflated} bytes from ${compressed}); ` +
              `refusing a likely decompression bomb`,
          );
        }
        c.enqueue(chunk);
      },
    },
    { highWaterMark: 1 },
    { highWaterMark: 0 },
  );
  return rest
    .pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>)
    .pipeThrough(count);
}

/** What `extractTar` wrote. */
export interface ExtractResult {
  files: number;
  directories: number;
  bytes: number;
  /** Links, devices and other members not written. */
  skipped: string[];
}

/**
 * Extracts a (possibly gzipped) tar stream into `dest`, which is created if needed. Every member path is
 * checked with `safeEntryPath` first; `filter` may drop members (it gets the checked relative path).
 * An unsafe path aborts the extraction with `TarError` (files already written stay).
 */
export async function extractTar(
  stream: ReadableStream<Uint8Array>,
  dest: string,
  options: TarLimits & { source?: string; filter?: (path: string, entry: TarEntry) => boolean } = {},
): Promise<ExtractResult> {
  const source = options.source ?? "archive";
  const result: ExtractResult = { files: 0, directories: 0, bytes: 0, skipped: [] };
  const made = new Set<string>();
  const mkdir = async (dir: string) => {
    if (made.has(dir)) return;
    await Deno.mkdir(dir, { recursive: true });
    made.add(dir);
  };
  await mkdir(dest);
  const inflated = await gunzipIfNeeded(stream, {
    maxInflatedBytes: options.maxInflatedBytes ?? 2 * (options.maxTotalBytes ?? 16 * 2 ** 30),
    maxRatio: options.maxRatio,
    ratioGraceBytes: options.ratioGraceBytes,
    source,
  });
  // Member content goes to disk as it is read, never whole into memory.
  for await (const entry of readTar(inflated, source, { ...options, streamData: true })) {
    const rel = safeEntryPath(entry.path, source);
    if (rel === "" || (options.filter && !options.filter(rel, entry))) continue;
    const target = `${dest}/${rel}`;
    if (entry.type === "directory") {
      await mkdir(target);
      result.directories++;
    } else if (entry.type === "file") {
      const slash = target.lastIndexOf("/");
      await mkdir(target.slice(0, slash));
      const file = await Deno.open(target, { write: true, create: true, truncate: true });
      try {
        for await (const chunk of entry.chunks?.() ?? []) {
          for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
        }
      } finally {
        file.close();
      }
      result.files++;
      result.bytes += entry.size;
    } else {
      result.skipped.push(rel);
    }
  }
  return result;
}

/** Opens a file as a byte stream for `extractTar` / `readTar` (gzip is detected there). */
export async function fileStream(path: string): Promise<ReadableStream<Uint8Array>> {
  const f = await Deno.open(path, { read: true });
  return f.readable;
}

/** A member to write with `encodeTar`: a file (with `data`) or a directory. */
export interface TarInput {
  path: string;
  data?: Uint8Array;
  type?: "file" | "directory";
}

/**
 * Encodes members as an uncompressed ustar archive (paths up to 100 bytes, stored as given — unchecked, so
 * tests can build hostile archives). Gzip it with `CompressionStream("gzip")` when needed.
 */
export function encodeTar(members: readonly TarInput[]): Uint8Array {
  const enc = new TextEncoder();
  const blocks: Uint8Array[] = [];
  const put = (h: Uint8Array, at: number, len: number, s: string) =>
    h.set(enc.encode(s).subarray(0, len), at);
  const oct = (n: number, width: number) => n.toString(8).padStart(width - 1, "0") + "\0";
  for (const m of members) {
    const type = m.type ?? "file";
    const data = type === "file" ? m.data ?? new Uint8Array(0) : new Uint8Array(0);
    const name = enc.encode(m.path);
    if (name.length > 100) throw new Error(`tar: path "${m.path}" is longer than 100 bytes`);
    const h = new Uint8Array(512);
    h.set(name, 0);
    put(h, 100, 8, oct(type === "file" ? 0o644 : 0o755, 8));
    put(h, 108, 8, oct(0, 8));
    put(h, 116, 8, oct(0, 8));
    put(h, 124, 12, oct(data.length, 12));
    put(h, 136, 12, oct(0, 12));
    h[156] = type === "file" ? 0x30 : 0x35;
    put(h, 257, 6, "ustar\0");
    put(h, 263, 2, "00");
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    put(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
    blocks.push(h, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  return concatBytes(blocks);
}

/** Gzips bytes (e.g. an `encodeTar` archive). */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
