/**
 * Preprocessing: the fixtures' timm inputs reproduced from their raw pixels, crop geometry, resize
 * numerics on images whose answer is known, and seeded training augmentation (the one implementation
 * training, fine-tuning and the batcher use).
 */
import assert from "node:assert/strict";
import { augmentRng, randomResizedCropBox, type TrainAugment } from "../lib/data/augment.ts";
import { imageFromNhwc, type RgbImage } from "../lib/data/image.ts";
import {
  checkPreprocessing,
  evalGeometry,
  type PreprocessConfig,
  preprocessEval,
  preprocessEvalBatch,
  preprocessSample,
  preprocessTrain,
} from "../lib/data/preprocess.ts";
import { mixSeed, permutation, Rng } from "../lib/data/rng.ts";
import { FIXTURES, golden, present } from "./_fixtures.ts";

const HALF: [number, number, number] = [0.5, 0.5, 0.5];
const FIXTURE_PRE: PreprocessConfig = {
  img_size: 224,
  crop_pct: 1,
  interpolation: "bilinear",
  mean: HALF,
  std: HALF,
};

function image(width: number, height: number, f: (x: number, y: number, c: number) => number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = f(x, y, c);
  }
  return { width, height, data };
}

/** Plane c of a CHW output at (x, y), de-normalised to the 0..255 pixel scale. */
function px(out: Float32Array, size: number, x: number, y: number, c: number, p = FIXTURE_PRE): number {
  return (out[c * size * size + y * size + x] * p.std[c] + p.mean[c]) * 255;
}

for (const model of ["tiny", "base"]) {
  const path = `${FIXTURES}/${model}/golden.safetensors`;
  Deno.test({
    name: `eval preprocessing reproduces ${model}/golden input within 1e-5`,
    ignore: !present(path, `${model} golden preprocessing`),
    async fn() {
      const g = await golden(`${model}/golden.safetensors`);
      const raw = g.get("raw_u8_nhwc")!, ref = g.get("input")!;
      assert.deepEqual(ref.shape, [2, 3, 224, 224]);
      const images = [0, 1].map((i) => imageFromNhwc(raw.data, raw.shape, i));
      const { input, shape } = preprocessEvalBatch(images, FIXTURE_PRE);
      assert.deepEqual(shape, ref.shape);
      let maxErr = 0;
      for (let i = 0; i < input.length; i++) maxErr = Math.max(maxErr, Math.abs(input[i] - ref.data[i]));
      assert.ok(maxErr <= 1e-5, `max abs error ${maxErr}`);
    },
  });
}

Deno.test("eval geometry follows timm: shorter side to floor(size/crop_pct), centred crop", () => {
  assert.deepEqual(evalGeometry(32, 32, { img_size: 224, crop_pct: 1 }), {
    resizeWidth: 224,
    resizeHeight: 224,
    crop: { x: 0, y: 0, w: 224, h: 224 },
  });
  // 224 / 0.875 = 256; landscape 640x480 → 341x256 (truncated), crop offset (341−224)/2 = 58.5 → 58
  // (half-even)
  assert.deepEqual(evalGeometry(640, 480, { img_size: 224, crop_pct: 0.875 }), {
    resizeWidth: 341,
    resizeHeight: 256,
    crop: { x: 58, y: 16, w: 224, h: 224 },
  });
  // portrait, crop 0.9: floor(248.9) = 248; 300x500 → 248x413; (413−224)/2 = 94.5 → 94
  assert.deepEqual(evalGeometry(300, 500, { img_size: 224, crop_pct: 0.9 }), {
    resizeWidth: 248,
    resizeHeight: 413,
    crop: { x: 12, y: 94, w: 224, h: 224 },
  });
  // (35 − 32) / 2 = 1.5 → 2 (half-even rounds 1.5 up to the even 2)
  assert.equal(evalGeometry(35, 32, { img_size: 32, crop_pct: 1 }).crop.x, 2);
});

Deno.test("same-size eval is exact normalisation; a wider image is centre-cropped without resampling", () => {
  const img = image(40, 32, (x, y, c) => (x * 5 + y * 3 + c * 50) % 256);
  const p: PreprocessConfig = { img_size: 32, crop_pct: 1, interpolation: "bilinear", mean: HALF, std: HALF };
  for (const interpolation of ["bilinear", "bicubic"] as const) {
    const out = preprocessEval(img, { ...p, interpolation });
    for (const [x, y, c] of [[0, 0, 0], [31, 31, 2], [10, 20, 1]]) {
      assert.ok(
        Math.abs(px(out, 32, x, y, c) - img.data[(y * 40 + x + 4) * 3 + c]) < 1e-3,
        `${interpolation}`,
      );
    }
  }
});

Deno.test("bilinear halving averages 2x2 blocks; antialiased halving uses the [1,3,3,1]/8 kernel", () => {
  const img = image(8, 8, (x, y, c) => x * 20 + y * 7 + c);
  const p: PreprocessConfig = {
    img_size: 4,
    crop_pct: 1,
    interpolation: "bilinear",
    mean: [0, 0, 0],
    std: [1, 1, 1],
  };
  const out = preprocessEval(img, p);
  const at = (o: Float32Array, x: number, y: number, c: number) => o[c * 16 + y * 4 + x] * 255;
  const src = (x: number, y: number, c: number) => img.data[(y * 8 + x) * 3 + c];
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) {
      const avg = (src(2 * x, 2 * y, 1) + src(2 * x + 1, 2 * y, 1) + src(2 * x, 2 * y + 1, 1) +
        src(2 * x + 1, 2 * y + 1, 1)) / 4;
      assert.ok(Math.abs(at(out, x, y, 1) - avg) < 1e-3);
    }
  }
  const aa = preprocessEval(img, { ...p, antialias: true });
  // interior pixel (1, 1): taps 1..4 in each axis with weights 1,3,3,1 / 8; a linear ramp keeps its value
  const w = [1, 3, 3, 1];
  let v = 0;
  for (let j = 0; j < 4; j++) for (let i = 0; i < 4; i++) v += (w[i] * w[j] * src(1 + i, 1 + j, 0)) / 64;
  assert.ok(Math.abs(at(aa, 1, 1, 0) - v) < 1e-3);
});

/** Keys' cubic kernel, a = −0.75 (PyTorch's bicubic), in the textbook form. */
function keys(x: number, a = -0.75): number {
  const t = Math.abs(x);
  if (t <= 1) return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1;
  if (t < 2) return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a;
  return 0;
}

Deno.test("bicubic upscaling keeps constants and matches Keys' kernel (a = −0.75) with clamped taps", () => {
  const flat = preprocessEval(image(7, 5, () => 77), {
    img_size: 31,
    crop_pct: 1,
    interpolation: "bicubic",
    mean: [0, 0, 0],
    std: [1, 1, 1],
  });
  for (const v of flat) assert.ok(Math.abs(v * 255 - 77) < 1e-3);
  const ramp = image(16, 16, (x) => x * 10);
  // the ramp has overshoot at its clamped ends, which is kept (no clamping to 0..255, as F.interpolate)
  const p: PreprocessConfig = {
    img_size: 64,
    crop_pct: 1,
    interpolation: "bicubic",
    mean: [0, 0, 0],
    std: [1, 1, 1],
  };
  const out = preprocessEval(ramp, p);
  for (let x = 0; x < 64; x++) {
    const srcX = (x + 0.5) / 4 - 0.5;
    const i0 = Math.floor(srcX);
    let want = 0;
    for (let k = i0 - 1; k <= i0 + 2; k++) want += keys(srcX - k) * Math.min(Math.max(k, 0), 15) * 10;
    assert.ok(Math.abs(out[20 * 64 + x] * 255 - want) < 1e-3, `x=${x}: ${out[20 * 64 + x] * 255} vs ${want}`);
  }
});

Deno.test("bad preprocessing configs are rejected naming the field", () => {
  assert.throws(() => checkPreprocessing({ ...FIXTURE_PRE, crop_pct: 1.5 }), /crop_pct/);
  assert.throws(() => checkPreprocessing({ ...FIXTURE_PRE, std: [0.5, 0, 0.5] }), /std/);
  assert.throws(
    () => checkPreprocessing({ ...FIXTURE_PRE, interpolation: "nearest" as "bilinear" }),
    /interpolation/,
  );
});

Deno.test("RandomResizedCrop boxes stay inside the image with timm's scale and ratio", () => {
  const rng = new Rng(7);
  let fallbacks = 0;
  for (let i = 0; i < 2000; i++) {
    const b = randomResizedCropBox(64, 48, rng);
    assert.ok(b.x >= 0 && b.y >= 0 && b.w >= 1 && b.h >= 1 && b.x + b.w <= 64 && b.y + b.h <= 48);
    const frac = (b.w * b.h) / (64 * 48);
    if (b.w === 64 && b.h === 48) fallbacks++;
    else assert.ok(frac > 0.06 && frac < 1.05 && b.w / b.h > 0.7 && b.w / b.h < 1.45, JSON.stringify(b));
  }
  assert.ok(fallbacks < 200);
});

Deno.test("training augmentation is a pure function of the seed; the rng state resumes", () => {
  const img = image(32, 32, (x, y, c) => (x * 8 + y * 3 + c * 40) & 255);
  const p = { ...FIXTURE_PRE, img_size: 48 };
  const aug = { random_resized_crop: true, hflip: 0.5, crop_padding: 4 };
  const a = preprocessTrain(img, p, aug, Rng.derive(1, 0, 5));
  const b = preprocessTrain(img, p, aug, Rng.derive(1, 0, 5));
  const c = preprocessTrain(img, p, aug, Rng.derive(1, 1, 5));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);

  // flip with probability 1 and no crop: the eval output mirrored
  const ev = preprocessEval(img, p);
  const fl = preprocessTrain(img, p, { hflip: 1 }, new Rng(3));
  for (let y = 0; y < 48; y += 7) {
    for (let x = 0; x < 48; x++) assert.equal(fl[y * 48 + x], ev[y * 48 + 47 - x]);
  }

  // pad-crop at the source size is a shifted copy with black (normalised −1) where the shift uncovers padding
  for (const seed of [11, 12, 13]) {
    const padded = preprocessTrain(
      image(32, 32, () => 200),
      { ...p, img_size: 32 },
      { crop_padding: 4 },
      new Rng(seed),
    );
    const draws = new Rng(seed);
    const dy = draws.int(9) - 4, dx = draws.int(9) - 4;
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const inside = x + dx >= 0 && x + dx < 32 && y + dy >= 0 && y + dy < 32;
        const want = inside ? (200 / 255 - 0.5) / 0.5 : -1;
        assert.ok(Math.abs(padded[y * 32 + x] - want) < 1e-6, `seed ${seed} (${x}, ${y})`);
      }
    }
  }

  const r = new Rng(99);
  r.nextU32();
  const saved = r.state;
  const seq = [r.nextU32(), r.nextU32(), r.nextU32()];
  const resumed = new Rng(saved);
  assert.deepEqual([resumed.nextU32(), resumed.nextU32(), resumed.nextU32()], seq);
  assert.deepEqual(permutation(10, mixSeed(1, 2)), permutation(10, mixSeed(1, 2)));
  assert.deepEqual([...permutation(10, 5)].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("per-sample augmentation: keyed by (seed, epoch, sample id); black padding; flips at the hflip rate", () => {
  const S = 32;
  const CIFAR: PreprocessConfig = {
    img_size: S,
    crop_pct: 1,
    interpolation: "bicubic",
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
  };
  const img = image(S, S, (x, y, c) => (x * 7 + y * 13 + c * 50 + 30) & 255);
  const aug: TrainAugment = { crop_padding: 4, hflip: 0.5 };
  const at = (id: number, epoch: number, seed = 7) =>
    preprocessSample(img, CIFAR, id, { augment: aug, seed, epoch });

  // A pure function of (seed, epoch, sample id): nothing else (call order, batch) enters.
  assert.deepEqual(at(5, 2), at(5, 2));
  const variants = [at(5, 3), at(6, 2), at(5, 2, 8)];
  for (const v of variants) assert.notDeepEqual(v, at(5, 2));
  // Runs checkpointed before the two augmentations were unified drew from exactly this generator.
  assert.equal(augmentRng(7, 2, 5).state, new Rng(mixSeed(7, 2, 5, 0xa0a0)).state);

  // At the model's own size the augmented image is the evaluation image shifted by the drawn offsets,
  // mirrored when the flip is drawn, and a black source pixel ((0 − mean) / std) where padding shows.
  const ev = preprocessEval(img, CIFAR);
  const plane = S * S;
  let flipped = 0, padded = 0;
  for (let id = 0; id < 24; id++) {
    const got = at(id, 1);
    const r = augmentRng(7, 1, id);
    const dy = r.int(9) - 4, dx = r.int(9) - 4;
    const flip = r.uniform() < 0.5;
    if (flip) flipped++;
    for (let c = 0; c < 3; c++) {
      const black = Math.fround((0 - CIFAR.mean[c]) / CIFAR.std[c]);
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const sx = (flip ? S - 1 - x : x) + dx, sy = y + dy;
          const inside = sx >= 0 && sx < S && sy >= 0 && sy < S;
          if (!inside) padded++;
          const want = inside ? ev[c * plane + sy * S + sx] : black;
          assert.equal(got[c * plane + y * S + x], want, `sample ${id} channel ${c} (${x}, ${y})`);
        }
      }
    }
  }
  assert.ok(flipped > 4 && flipped < 20, `${flipped} of 24 flipped`);
  assert.ok(padded > 0, "no draw uncovered padding");

  // hflip is the flip probability; nothing to do means the evaluation transform.
  let flips = 0;
  const mirrored = (v: Float32Array) => v[0] === ev[S - 1] && v[S - 1] === ev[0];
  for (let id = 0; id < 400; id++) {
    if (mirrored(preprocessSample(img, CIFAR, id, { augment: { hflip: 0.5 }, seed: 1, epoch: 0 }))) flips++;
  }
  assert.ok(flips > 160 && flips < 240, `${flips} of 400 flipped at hflip 0.5`);
  for (let id = 0; id < 20; id++) {
    assert.ok(mirrored(preprocessSample(img, CIFAR, id, { augment: { hflip: 1 }, seed: 1, epoch: 0 })));
  }
  assert.deepEqual(preprocessSample(img, CIFAR, 3, { augment: { hflip: 0 }, seed: 1, epoch: 0 }), ev);
  assert.deepEqual(preprocessSample(img, CIFAR, 3), ev);
  assert.throws(
    () => preprocessSample(img, CIFAR, 3, { augment: { hflip: 2 }, seed: 1, epoch: 0 }),
    /augment\.hflip/,
  );
});
