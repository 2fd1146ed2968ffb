/**
 * Image files (JPEG, PNG, WebP) → 8-bit RGB pixels, safely.
 *
 * The format and declared size are read from the file header here, in TypeScript, *before* any decoder
 * runs: an empty file, an unknown format or a declared size above `maxPixels` (a decompression bomb) is
 * rejected at once without allocating pixels. Decoding itself is done by sharp (libvips, prebuilt native
 * binaries shipped as npm packages; no install script), loaded on first use, with the same pixel limit
 * passed down as a second guard. Grayscale, palette, 16-bit and CMYK images become sRGB 8-bit; an alpha
 * channel is dropped (as PIL's `convert("RGB")`, which timm uses). EXIF orientation is not applied, as in
 * timm/PIL.
 *
 * Every failure is an `ImageDecodeError` whose `code` tells an HTTP layer which 4xx to answer.
 *
 * @module
 */
import type { RgbImage } from "./image.ts";

/** Why an image could not be decoded. */
export type ImageDecodeErrorCode =
  /** zero bytes */
  | "empty"
  /** not a JPEG, PNG or WebP file (by its magic bytes) */
  | "unsupported_format"
  /** declared width·height above the limit, or a dimension above 65,535 */
  | "too_large"
  /** the file ends before its header or data does */
  | "truncated"
  /** the header or the compressed data is invalid */
  | "corrupt"
  /** the native decoder (sharp) could not be loaded on this machine */
  | "decoder_unavailable";

/** A clear, classified decode failure: `code` says what kind, `message` names the file and the problem. */
export class ImageDecodeError extends Error {
  /** What went wrong, for mapping to an HTTP status (e.g. too_large → 413, unsupported_format → 415). */
  readonly code: ImageDecodeErrorCode;

  constructor(code: ImageDecodeErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ImageDecodeError";
    this.code = code;
  }
}

/** Image formats the data layer accepts. */
export type ImageFormat = "jpeg" | "png" | "webp";

/** What the header declares, read without decoding. */
export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
}

/** Decode options. */
export interface DecodeOptions {
  /** Largest accepted width·height, checked on the header before decoding. Default 40,000,000. */
  maxPixels?: number;
  /** Names the input in error messages (a file name or "upload"). Default "image". */
  source?: string;
}

/** The default `maxPixels`: 40 megapixels (120 MB of RGB). */
export const DEFAULT_MAX_PIXELS = 40_000_000;

const MAX_SIDE = 65535;

function be16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}

function be32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function le16(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8);
}

function le24(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
}

function startsWith(b: Uint8Array, sig: number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

function pngHeader(b: Uint8Array, src: string): ImageHeader {
  if (b.length < 24) throw new ImageDecodeError("truncated", `${src}: PNG file ends inside its IHDR header`);
  if (!startsWith(b, ascii("IHDR"), 12)) {
    throw new ImageDecodeError("corrupt", `${src}: PNG file does not start with an IHDR chunk`);
  }
  return { format: "png", width: be32(b, 16), height: be32(b, 20) };
}

// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
function isSof(m: number): boolean {
  return m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
}

function jpegHeader(b: Uint8Array, src: string): ImageHeader {
  let i = 2;
  while (true) {
    while (i < b.length && b[i] !== 0xff) i++; // tolerate junk between segments, as libjpeg does
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    if (i >= b.length) {
      throw new ImageDecodeError("truncated", `${src}: JPEG file ends before its frame header`);
    }
    const marker = b[i++];
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9 || marker === 0xda) {
      throw new ImageDecodeError("corrupt", `${src}: JPEG has no frame header (SOF) before its image data`);
    }
    if (i + 2 > b.length) throw new ImageDecodeError("truncated", `${src}: JPEG file ends inside a segment`);
    const len = be16(b, i);
    if (len < 2) throw new ImageDecodeError("corrupt", `${src}: JPEG segment length ${len} is invalid`);
    if (isSof(marker)) {
      if (i + 7 > b.length) throw new ImageDecodeError("truncated", `${src}: JPEG file ends inside its SOF`);
      return { format: "jpeg", height: be16(b, i + 3), width: be16(b, i + 5) };
    }
    i += len;
  }
}

function webpHeader(b: Uint8Array, src: string): ImageHeader {
  if (b.length < 30) throw new ImageDecodeError("truncated", `${src}: WebP file ends inside its header`);
  const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
  if (chunk === "VP8X") return { format: "webp", width: le24(b, 24) + 1, height: le24(b, 27) + 1 };
  if (chunk === "VP8L") {
    if (b[20] !== 0x2f) throw new ImageDecodeError("corrupt", `${src}: WebP lossless signature missing`);
    const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
    return { format: "webp", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === "VP8 ") {
    if (!startsWith(b, [0x9d, 0x01, 0x2a], 23)) {
      throw new ImageDecodeError("corrupt", `${src}: WebP lossy frame start code missing`);
    }
    return { format: "webp", width: le16(b, 26) & 0x3fff, height: le16(b, 28) & 0x3fff };
  }
  throw new ImageDecodeError("corrupt", `${src}: WebP file has an unknown first chunk "${chunk}"`);
}

/**
 * Reads the format and declared size from the file header only (no pixels decoded).
 * Throws `ImageDecodeError` (empty, unsupported_format, truncated, corrupt).
 */
export function probeImage(bytes: Uint8Array, source = "image"): ImageHeader {
  if (bytes.length === 0) throw new ImageDecodeError("empty", `${source}: the file is empty (0 bytes)`);
  let h: ImageHeader;
  if (startsWith(bytes, PNG_SIG)) h = pngHeader(bytes, source);
  else if (startsWith(bytes, [0xff, 0xd8, 0xff])) h = jpegHeader(bytes, source);
  else if (startsWith(bytes, ascii("RIFF")) && startsWith(bytes, ascii("WEBP"), 8)) {
    h = webpHeader(bytes, source);
  } else if (bytes.length < 12) {
    throw new ImageDecodeError(
      "truncated",
      `${source}: ${bytes.length} bytes is too short for an image file`,
    );
  } else {
    throw new ImageDecodeError(
      "unsupported_format",
      `${source}: not a JPEG, PNG or WebP file (starts with ${
        [...bytes.subarray(0, 8)].map((x) => x.toString(16).padStart(2, "0")).join(" ")
      })`,
    );
  }
  if (h.width < 1 || h.height < 1) {
    throw new ImageDecodeError(
      "corrupt",
      `${source}: ${h.format} header declares size ${h.width}x${h.height}`,
    );
  }
  return h;
}

/** Throws `truncated` when the container says more bytes follow than there are (PNG chunks, WebP RIFF). */
function checkComplete(b: Uint8Array, h: ImageHeader, source: string): void {
  if (h.format === "png") {
    for (let i = 8; i + 8 <= b.length;) {
      const end = i + 12 + be32(b, i);
      if (end > b.length) {
        throw new ImageDecodeError(
          "truncated",
          `${source}: PNG file ends inside a chunk (${b.length} bytes)`,
        );
      }
      if (startsWith(b, ascii("IEND"), i + 4)) return;
      i = end;
    }
  } else if (h.format === "webp") {
    const riff = 8 + (b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] << 24)) >>> 0;
    if (riff > b.length) {
      throw new ImageDecodeError(
        "truncated",
        `${source}: WebP file is ${b.length} bytes, its header says ${riff}`,
      );
    }
  }
}

/** Throws `too_large` when the declared size exceeds `maxPixels` or a side exceeds 65,535. */
function checkSize(h: ImageHeader, maxPixels: number, source: string): void {
  if (h.width * h.height > maxPixels || h.width > MAX_SIDE || h.height > MAX_SIDE) {
    throw new ImageDecodeError(
      "too_large",
      `${source}: ${h.format} declares ${h.width}x${h.height} = ${
        h.width * h.height
      } pixels, above the limit of ${maxPixels} pixels (sides at most ${MAX_SIDE})`,
    );
  }
}

// deno-lint-ignore no-explicit-any
type SharpModule = any;
let sharpModule: Promise<SharpModule> | undefined;

/** Loads sharp once; libvips' operation cache is turned off (decoded inputs are never reused). */
function loadSharp(): Promise<SharpModule> {
  sharpModule ??= import("sharp").then((m) => {
    const sharp = m.default;
    sharp.cache(false);
    return sharp;
  }).catch((e) => {
    sharpModule = undefined;
    throw new ImageDecodeError(
      "decoder_unavailable",
      `the image decoder (npm:sharp) could not be loaded: ${(e as Error).message}`,
      { cause: e },
    );
  });
  return sharpModule;
}

function classify(e: unknown, source: string, format: ImageFormat): ImageDecodeError {
  const msg = (e as Error)?.message ?? String(e);
  const truncated = !/corrupt/i.test(msg) &&
    /premature end|truncat|unexpected end|not enough data|end of (file|stream|data)/i.test(msg);
  return new ImageDecodeError(
    truncated ? "truncated" : /pixel limit/i.test(msg) ? "too_large" : "corrupt",
    `${source}: ${truncated ? "truncated" : "invalid"} ${format} data (${msg.trim().split("\n")[0]})`,
    { cause: e },
  );
}

/**
 * Decodes a JPEG, PNG or WebP file to 8-bit RGB (HWC). The header is checked first: an empty, unknown,
 * truncated, corrupt or oversized (`maxPixels`) input throws `ImageDecodeError` without decoding pixels.
 */
export async function decodeImage(bytes: Uint8Array, options: DecodeOptions = {}): Promise<RgbImage> {
  const source = options.source ?? "image";
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  const header = probeImage(bytes, source);
  checkSize(header, maxPixels, source);
  checkComplete(bytes, header, source);
  const sharp = await loadSharp();
  let out: { data: Uint8Array; info: { width: number; height: number; channels: number } };
  try {
    out = await sharp(bytes, { limitInputPixels: maxPixels, failOn: "warning", pages: 1 })
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw classify(e, source, header.format);
  }
  const { width, height, channels } = out.info;
  if (channels !== 3 || out.data.length !== width * height * 3) {
    throw new ImageDecodeError(
      "corrupt",
      `${source}: decoder returned ${channels} channels, ${out.data.length} bytes for ${width}x${height}`,
    );
  }
  const data = new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.length);
  return { width, height, data };
}

/** Encodes an RGB image as PNG (lossless), JPEG or WebP, e.g. to write test images or thumbnails. */
export async function encodeImage(
  img: RgbImage,
  format: ImageFormat,
  options: { quality?: number } = {},
): Promise<Uint8Array> {
  const sharp = await loadSharp();
  const s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  const out = format === "png"
    ? s.png()
    : format === "jpeg"
    ? s.jpeg({ quality: options.quality ?? 90 })
    : s.webp({ quality: options.quality ?? 90 });
  const buf: Uint8Array = await out.toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}
