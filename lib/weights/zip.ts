/**
 * A read-only zip archive over bytes already in memory: the central directory (ZIP64 where sizes or offsets
 * overflow 32 bits, as PyTorch writes for large checkpoints), stored and deflated entries, CRC-32 checked.
 *
 * Stored entries are returned as views of the archive's bytes, never copied, so a 344 MB checkpoint costs
 * its own size in memory once.
 *
 * @module
 */
import * as zlib from "node:zlib";

/** One file inside a zip archive, as its central directory describes it. */
export interface ZipEntry {
  /** The path inside the archive (UTF-8). */
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  /** Where the entry's local header starts. */
  localHeaderOffset: number;
}

/** Options of {@linkcode ZipArchive.read}. */
export interface ZipReadOptions {
  /** Check the entry's CRC-32 (default true). */
  verify?: boolean;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const EOCD_SIZE = 22;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

let crcTable: Uint32Array | undefined;

/** The zip/gzip CRC-32 of `bytes`, continuing from `crc` (native zlib where the runtime has it). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
  if (typeof native === "function") return native(bytes, crc) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~crc;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** True when `bytes` begins like a zip archive (a local file header, or the end record of an empty one). */
export function isZip(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const sig = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24);
  return (sig >>> 0) === SIG_LOCAL || (sig >>> 0) === SIG_EOCD;
}

/** A zip archive in memory. Open one with {@linkcode ZipArchive.open}. */
export class ZipArchive {
  /** Every entry, in central-directory order. */
  readonly entries: ZipEntry[];
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #byName = new Map<string, ZipEntry>();

  private constructor(bytes: Uint8Array, readonly source: string) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.entries = this.#readCentralDirectory();
    for (const e of this.entries) this.#byName.set(e.name, e);
  }

  /** Parses the central directory of `bytes`; `source` names the archive in errors. */
  static open(bytes: Uint8Array, source = "zip archive"): ZipArchive {
    return new ZipArchive(bytes, source);
  }

  /** The entry called `name`, if any. */
  entry(name: string): ZipEntry | undefined {
    return this.#byName.get(name);
  }

  /** Whether the archive has an entry called `name`. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /**
   * The contents of an entry: a view of the archive's bytes when stored, a new buffer when deflated.
   * Throws naming the archive and entry when it is missing, truncated, compressed with an unsupported
   * method, encrypted, or fails its CRC-32.
   */
  read(nameOrEntry: string | ZipEntry, options: ZipReadOptions = {}): Uint8Array {
    const entry = typeof nameOrEntry === "string" ? this.#byName.get(nameOrEntry) : nameOrEntry;
    if (!entry) throw new Error(`${this.source}: no entry "${nameOrEntry}" in the zip archive`);
    const where = `${this.source}: zip entry "${entry.name}"`;
    if (entry.flags & 1) throw new Error(`${where} is encrypted, which is not supported`);
    const at = entry.localHeaderOffset;
    if (at + 30 > this.#bytes.length || this.#view.getUint32(at, true) !== SIG_LOCAL) {
      throw new Error(`${where}: no local file header at byte ${at}; the archive is truncated or corrupt`);
    }
    const start = at + 30 + this.#view.getUint16(at + 26, true) + this.#view.getUint16(at + 28, true);
    const end = start + entry.compressedSize;
    if (end > this.#bytes.length) {
      throw new Error(
        `${where} ends at byte ${end}, past the end of the archive (${this.#bytes.length} bytes); truncated?`,
      );
    }
    const raw = this.#bytes.subarray(start, end);
    let data: Uint8Array;
    if (entry.method === 0) {
      data = raw;
    } else if (entry.method === 8) {
      try {
        data = zlib.inflateRawSync(raw);
      } catch (e) {
        throw new Error(`${where}: deflate data is corrupt (${(e as Error).message})`);
      }
    } else {
      throw new Error(
        `${where} uses compression method ${entry.method}; only stored (0) and deflate (8) are read`,
      );
    }
    if (data.length !== entry.size) {
      throw new Error(`${where} holds ${data.length} bytes, the directory says ${entry.size}`);
    }
    if (options.verify !== false) {
      const crc = crc32(data);
      if (crc !== entry.crc32) {
        throw new Error(
          `${where}: CRC-32 mismatch (computed ${hex(crc)}, recorded ${
            hex(entry.crc32)
          }); the archive is corrupt`,
        );
      }
    }
    return data;
  }

  #findEnd(): number {
    const b = this.#bytes;
    const lowest = Math.max(0, b.length - EOCD_SIZE - U16_MAX);
    for (let i = b.length - EOCD_SIZE; i >= lowest; i--) {
      if (b[i] === 0x50 && b[i + 1] === 0x4b && b[i + 2] === 0x05 && b[i + 3] === 0x06) {
        // A comment may contain the signature; the real record's comment length reaches the file end.
        if (i + EOCD_SIZE + this.#view.getUint16(i + 20, true) === b.length) return i;
      }
    }
    throw new Error(
      `${this.source}: no zip end-of-central-directory record; the file is truncated or not a zip archive`,
    );
  }

  #readCentralDirectory(): ZipEntry[] {
    const v = this.#view;
    const eocd = this.#findEnd();
    let count = v.getUint16(eocd + 10, true);
    let cdSize = v.getUint32(eocd + 12, true);
    let cdOffset = v.getUint32(eocd + 16, true);
    if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      const loc = eocd - 20;
      if (loc < 0 || v.getUint32(loc, true) !== SIG_ZIP64_LOCATOR) {
        throw new Error(
          `${this.source}: the end record needs ZIP64 but has no ZIP64 locator; corrupt archive`,
        );
      }
      const at = this.#u64(loc + 8, "ZIP64 end record offset");
      if (at + 56 > this.#bytes.length || v.getUint32(at, true) !== SIG_ZIP64_EOCD) {
        throw new Error(
          `${this.source}: no ZIP64 end-of-central-directory record at byte ${at}; corrupt archive`,
        );
      }
      count = this.#u64(at + 32, "entry count");
      cdSize = this.#u64(at + 40, "central directory size");
      cdOffset = this.#u64(at + 48, "central directory offset");
    }
    if (cdOffset + cdSize > eocd) {
      throw new Error(
        `${this.source}: the central directory (bytes ${cdOffset}..${cdOffset + cdSize}) overlaps its end ` +
          `record at ${eocd}; the archive is truncated or corrupt`,
      );
    }
    const decoder = new TextDecoder();
    const entries: ZipEntry[] = [];
    let p = cdOffset;
    for (let i = 0; i < count; i++) {
      if (p + 46 > eocd || v.getUint32(p, true) !== SIG_CENTRAL) {
        throw new Error(`${this.source}: central directory entry ${i} at byte ${p} is corrupt`);
      }
      const nameLen = v.getUint16(p + 28, true);
      const extraLen = v.getUint16(p + 30, true);
      const commentLen = v.getUint16(p + 32, true);
      const name = decoder.decode(this.#bytes.subarray(p + 46, p + 46 + nameLen));
      const entry: ZipEntry = {
        name,
        flags: v.getUint16(p + 8, true),
        method: v.getUint16(p + 10, true),
        crc32: v.getUint32(p + 16, true),
        compressedSize: v.getUint32(p + 20, true),
        size: v.getUint32(p + 24, true),
        localHeaderOffset: v.getUint32(p + 42, true),
      };
      this.#applyZip64(entry, p + 46 + nameLen, extraLen);
      entries.push(entry);
      p += 46 + nameLen + extraLen + commentLen;
    }
    return entries;
  }

  /** Replaces the 0xFFFFFFFF placeholders of an entry with its ZIP64 extra field's 64-bit values. */
  #applyZip64(entry: ZipEntry, extraStart: number, extraLen: number): void {
    const v = this.#view;
    let p = extraStart;
    const end = extraStart + extraLen;
    while (p + 4 <= end) {
      const id = v.getUint16(p, true), len = v.getUint16(p + 2, true);
      if (id === 0x0001) {
        let q = p + 4;
        const next = (what: string) => {
          if (q + 8 > p + 4 + len) {
            throw new Error(`${this.source}: zip entry "${entry.name}" has a short ZIP64 field (no ${what})`);
          }
          const value = this.#u64(q, what);
          q += 8;
          return value;
        };
        if (entry.size === U32_MAX) entry.size = next("size");
        if (entry.compressedSize === U32_MAX) entry.compressedSize = next("compressed size");
        if (entry.localHeaderOffset === U32_MAX) entry.localHeaderOffset = next("header offset");
        return;
      }
      p += 4 + len;
    }
  }

  #u64(at: number, what: string): number {
    const value = this.#view.getBigUint64(at, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new Error(`${this.source}: zip ${what} ${value} is too large; corrupt archive`);
    }
    return Number(value);
  }
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}
