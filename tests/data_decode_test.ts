/**
 * Image decoding: lossless round trips through PNG and WebP, channel conversions (gray, RGBA, palette), a
 * real CIFAR-10 JPEG from the shared tarball, and hostile inputs (empty, truncated, corrupt, unknown,
 * decompression bombs) rejected quickly with classified errors.
 */
import assert from "node:assert/strict";
import { decodeImage, encodeImage, ImageDecodeError, probeImage } from "../lib/data/decode.ts";
import type { RgbImage } from "../lib/data/image.ts";
import { fileStream, gunzipIfNeeded, readTar } from "../lib/data/tar.ts";
import { CIFAR_JPEG, present } from "./_fixtures.ts";

function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 7)) % 256;
  return { width, height, data };
}

async function rejects(
  bytes: Uint8Array,
  code: string,
  pattern: RegExp,
  maxPixels?: number,
): Promise<number> {
  const t0 = performance.now();
  await assert.rejects(decodeImage(bytes, { source: "test.img", maxPixels }), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError, `expected ImageDecodeError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, /^test\.img: /);
    assert.match(e.message, pattern);
    return true;
  });
  return performance.now() - t0;
}

// A PNG chunk with its CRC (crc32 over type and data).
function chunk(type: string, data: Uint8Array): Uint8Array {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const body = new Uint8Array(4 + data.length);
  body.set(new TextEncoder().encode(type), 0);
  body.set(data, 4);
  let crc = 0xffffffff;
  for (const b of body) crc = table[(crc ^ b) & 0xff] ^ (crc >>> 8);
  const out = new Uint8Array(12 + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  out.set(body, 4);
  v.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A 61-byte PNG whose IHDR declares `w`×`h` RGB pixels, with a token IDAT. */
function pngBomb(w: number, h: number): Uint8Array {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, w);
  v.setUint32(4, h);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return concat(
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", new Uint8Array([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    chunk("IEND", new Uint8Array(0)),
  );
}

Deno.test("PNG and lossless WebP round trips are exact; JPEG is close", async () => {
  const img = pattern(37, 23);
  for (const format of ["png", "webp"] as const) {
    const bytes = format === "png" ? await encodeImage(img, "png") : await losslessWebp(img);
    assert.deepEqual(probeImage(bytes), { format, width: 37, height: 23 });
    const out = await decodeImage(bytes);
    assert.equal(out.width, 37);
    assert.equal(out.height, 23);
    assert.deepEqual(out.data, img.data, format);
  }
  const smooth: RgbImage = { width: 40, height: 30, data: new Uint8Array(40 * 30 * 3) };
  for (let i = 0; i < smooth.data.length; i++) smooth.data[i] = 60 + ((i / 3) % 40) * 3;
  const jpeg = await encodeImage(smooth, "jpeg", { quality: 95 });
  assert.deepEqual(probeImage(jpeg), { format: "jpeg", width: 40, height: 30 });
  const back = await decodeImage(jpeg);
  let err = 0;
  for (let i = 0; i < back.data.length; i++) err = Math.max(err, Math.abs(back.data[i] - smooth.data[i]));
  assert.ok(err <= 8, `JPEG q95 max error ${err}`);
});

async function losslessWebp(img: RgbImage): Promise<Uint8Array> {
  const sharp = (await import("sharp")).default;
  const buf = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .webp({ lossless: true }).toBuffer();
  return new Uint8Array(buf);
}

Deno.test("grayscale, RGBA and palette PNGs become RGB (alpha dropped, not composited)", async () => {
  const sharp = (await import("sharp")).default;
  const gray = new Uint8Array(6 * 4).map((_, i) => i * 10);
  const grayPng = new Uint8Array(
    await sharp(gray, { raw: { width: 6, height: 4, channels: 1 } }).png().toBuffer(),
  );
  const g = await decodeImage(grayPng);
  for (let i = 0; i < 24; i++) {
    assert.deepEqual([...g.data.subarray(3 * i, 3 * i + 3)], [gray[i], gray[i], gray[i]]);
  }

  const rgba = new Uint8Array(5 * 5 * 4).map((_, i) => (i % 4 === 3 ? (i * 7) % 256 : (i * 13) % 256));
  const rgbaPng = new Uint8Array(
    await sharp(rgba, { raw: { width: 5, height: 5, channels: 4 } }).png().toBuffer(),
  );
  const r = await decodeImage(rgbaPng);
  for (let i = 0; i < 25; i++) {
    assert.deepEqual([...r.data.subarray(3 * i, 3 * i + 3)], [...rgba.subarray(4 * i, 4 * i + 3)]);
  }

  const few = new Uint8Array(8 * 8 * 3).map((_, i) => [0, 128, 255][(i >> 2) % 3]);
  const palPng = new Uint8Array(
    await sharp(few, { raw: { width: 8, height: 8, channels: 3 } }).png({
      palette: true,
      colours: 4,
      dither: 0,
    })
      .toBuffer(),
  );
  assert.equal(palPng[25], 3, "colour type 3 (palette)");
  assert.deepEqual((await decodeImage(palPng)).data, few);
});

Deno.test({
  name: "a real CIFAR-10 JPEG from the shared tarball decodes to 32x32 RGB",
  ignore: !present(`${CIFAR_JPEG}/test.tar.gz`, "CIFAR-10 JPEG decode"),
  async fn() {
    let found = 0;
    for await (const e of readTar(await gunzipIfNeeded(await fileStream(`${CIFAR_JPEG}/test.tar.gz`)))) {
      if (e.type !== "file" || !e.path.endsWith(".jpg")) continue;
      const img = await decodeImage(e.data, { source: e.path });
      assert.equal(img.width, 32);
      assert.equal(img.height, 32);
      assert.equal(img.data.length, 32 * 32 * 3);
      const mean = img.data.reduce((a, b) => a + b, 0) / img.data.length;
      assert.ok(mean > 5 && mean < 250, `${e.path}: mean ${mean}`);
      if (++found === 20) break;
    }
    assert.equal(found, 20);
  },
});

Deno.test("empty, unknown, truncated and corrupt inputs give classified errors", async () => {
  const img = pattern(64, 48);
  const png = await encodeImage(img, "png");
  const jpeg = await encodeImage(img, "jpeg");
  const webp = await encodeImage(img, "webp");
  await rejects(new Uint8Array(0), "empty", /empty/);
  await rejects(
    new TextEncoder().encode("GIF89a\x01\x00\x01\x00\x00\x00\x00"),
    "unsupported_format",
    /not a JPEG/,
  );
  await rejects(new TextEncoder().encode("hello"), "truncated", /too short/);
  await rejects(png.subarray(0, 20), "truncated", /PNG/);
  await rejects(png.subarray(0, png.length >> 1), "truncated", /PNG/);
  await rejects(jpeg.subarray(0, jpeg.length >> 1), "truncated", /jpeg/);
  await rejects(jpeg.subarray(0, 100), "truncated", /JPEG/);
  await rejects(webp.subarray(0, webp.length >> 1), "truncated", /WebP/);
  // IDAT payload scrambled, chunk lengths intact: the CRC / zlib stream is wrong
  const bad = png.slice();
  const idat = bad.findIndex((_, i) => String.fromCharCode(...bad.subarray(i, i + 4)) === "IDAT");
  const idatLen = new DataView(bad.buffer).getUint32(idat - 4);
  for (let i = idat + 6; i < idat + 4 + idatLen; i++) bad[i] ^= 0x5a;
  await rejects(bad, "corrupt", /png/);
  const badJpeg = jpeg.slice();
  for (let i = jpeg.length >> 1; i < badJpeg.length - 2; i++) badJpeg[i] = (i * 13) & 0xff;
  await rejects(badJpeg, "corrupt", /jpeg/);
  // a JPEG with no frame header before its scan
  await rejects(new Uint8Array([0xff, 0xd8, 0xff, 0xda, 0, 2, 0, 0, 0, 0, 0, 0]), "corrupt", /SOF/);
});

Deno.test("decompression bombs are refused from the header, fast, without decoding", async () => {
  const bomb = pngBomb(20000, 20000);
  assert.ok(bomb.length < 100);
  assert.deepEqual(probeImage(bomb), { format: "png", width: 20000, height: 20000 });
  const ms = await rejects(bomb, "too_large", /20000x20000 = 400000000 pixels, above the limit of 40000000/);
  assert.ok(ms < 100, `took ${ms} ms`);
  // JPEG frame header declaring 30000x30000
  const jpegBomb = new Uint8Array([
    0xff,
    0xd8,
    0xff,
    0xe0,
    0x00,
    0x04,
    0,
    0, // APP0 (dummy)
    0xff,
    0xc0,
    0x00,
    0x11,
    0x08,
    0x75,
    0x30,
    0x75,
    0x30,
    0x03,
    1,
    0x22,
    0,
    2,
    0x11,
    1,
    3,
    0x11,
    1,
  ]);
  await rejects(jpegBomb, "too_large", /30000x30000/);
  // WebP VP8X canvas of 16777216 x 2
  const vp8x = concat(
    new TextEncoder().encode("RIFF"),
    new Uint8Array([22, 0, 0, 0]),
    new TextEncoder().encode("WEBPVP8X"),
    new Uint8Array([10, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 1, 0, 0]),
  );
  await rejects(vp8x, "too_large", /16777216x2/);
  // the limit is configurable: a real 64x48 image over a 1000-pixel limit
  await rejects(await encodeImage(pattern(64, 48), "png"), "too_large", /3072 pixels/, 1000);
});
