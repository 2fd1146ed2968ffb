/**
 * timm's per-sample and per-batch regularisation in lib/data: RandAugment (parsing and every op on small
 * images, against hand-computed Pillow results), random erasing, mixup/CutMix (targets, boxes, modes), and
 * their determinism per seed.
 */
import assert from "node:assert/strict";
import type { RgbImage } from "../lib/data/image.ts";
import { cutmixBox, mixupBatch, type MixupOptions, mixupTargets } from "../lib/data/mixup.ts";
import { type Preprocessing, preprocessSample } from "../lib/data/preprocess.ts";
import {
  affine,
  applyOp,
  autoContrast,
  brightness,
  color,
  contrast,
  equalize,
  fillColor,
  invert,
  parseRandAugment,
  posterize,
  RAND_INCREASING_OPS,
  RAND_OPS,
  randAugment,
  rotate,
  sharpness,
  solarize,
  solarizeAdd,
} from "../lib/data/rand_augment.ts";
import { checkRandomErasing, randomErase } from "../lib/data/random_erasing.ts";
import { beta, Rng } from "../lib/data/rng.ts";

/** A `w`×`h` image whose channel c at (x, y) is `f(x, y, c)`. */
function image(w: number, h: number, f: (x: number, y: number, c: number) => number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(x, y, c);
  }
  return { width: w, height: h, data };
}

const px = (
  img: RgbImage,
  x: number,
  y: number,
) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];

Deno.test("aa: timm's RandAugment strings parse as timm's rand_augment_transform reads them", () => {
  assert.deepEqual(parseRandAugment("rand-m9-mstd0.5-inc1"), {
    spec: "rand-m9-mstd0.5-inc1",
    magnitude: 9,
    numLayers: 2,
    magnitudeStd: 0.5,
    magnitudeMax: 10,
    increasing: true,
  });
  const c = parseRandAugment("rand-m7-n3-mstd101-mmax12");
  assert.deepEqual([c.magnitude, c.numLayers, c.magnitudeStd, c.magnitudeMax, c.increasing], [
    7,
    3,
    Infinity,
    12,
    false,
  ]);
  assert.equal(parseRandAugment("rand").magnitude, 10);
  assert.equal(RAND_OPS.length, 15);
  assert.equal(RAND_INCREASING_OPS.length, 15);
  assert.throws(
    () => parseRandAugment("original-mstd0.5"),
    /aa: "original-mstd0.5" is not a RandAugment string/,
  );
  assert.throws(() => parseRandAugment("rand-m9-x3"), /unknown section "x3"/);
  assert.throws(() => parseRandAugment("rand-mfoo"), /section "mfoo" that is not <key><number>/);
  assert.throws(() => parseRandAugment("rand-m9.5"), /m takes an integer/);
  assert.throws(() => parseRandAugment("rand-m9-w0"), /op weights \(w\)/);
  assert.throws(() => parseRandAugment("rand-n0"), /n ≥ 1/);
});

Deno.test("RandAugment point ops match Pillow's ImageOps on a small image", () => {
  const img = image(4, 2, (x, y, c) => 40 * x + 100 * y + 10 * c); // values 0..250
  for (let i = 0; i < img.data.length; i++) {
    const v = img.data[i];
    assert.equal(invert(img).data[i], 255 - v);
    assert.equal(posterize(img, 2).data[i], v & 0xc0);
    assert.equal(posterize(img, 0).data[i], 0);
    assert.equal(solarize(img, 128).data[i], v < 128 ? v : 255 - v);
    assert.equal(solarizeAdd(img, 50).data[i], v < 128 ? Math.min(255, v + 50) : v);
  }
  assert.deepEqual(posterize(img, 8).data, img.data);
  // autocontrast: each band stretched from its own min/max (band 0 spans 0..220 → ×255/220).
  const ac = autoContrast(img);
  assert.deepEqual(px(ac, 0, 0), [0, 0, 0]);
  assert.deepEqual(px(ac, 3, 1), [255, 255, 255]);
  assert.equal(ac.data[(0 * 4 + 1) * 3], Math.trunc(40 * 255 / 220));
  // A flat image is left alone.
  const flat = image(2, 2, () => 77);
  assert.deepEqual(autoContrast(flat).data, flat.data);
  // equalize: 512 pixels at 10 and 512 at 20 → step (1024 − 512) // 255 = 2; lut[10] = 1 // 2 = 0,
  // lut[20] = 513 // 2 clipped to 255.
  const two = image(32, 32, (_x, y) => (y < 16 ? 10 : 20));
  const eq = equalize(two);
  assert.deepEqual(px(eq, 0, 0), [0, 0, 0]);
  assert.deepEqual(px(eq, 0, 31), [255, 255, 255]);
  assert.deepEqual(equalize(flat).data, flat.data);
});

Deno.test("RandAugment enhancers blend as Pillow's ImageEnhance (float32, truncated)", () => {
  const img = image(3, 3, (x, y, c) => [201, 30, 90][c] + 10 * x + 5 * y);
  // Brightness 0.5: blend(black, img, 0.5) = trunc(v / 2).
  assert.deepEqual([...brightness(img, 0.5).data], [...img.data].map((v) => Math.trunc(v / 2)));
  assert.deepEqual(brightness(img, 1).data, img.data);
  // Brightness 1.9 clips at 255.
  assert.equal(brightness(img, 1.9).data[0], 255);
  // Color 0: Pillow's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, replicated.
  const grey = color(img, 0);
  const [r, g, b] = px(img, 1, 1);
  const l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  assert.deepEqual(px(grey, 1, 1), [l, l, l]);
  // Contrast 0: flat at the rounded mean luma.
  let sum = 0;
  for (let y = 0; y < 3; y++) {
    for (let x = 0; x < 3; x++) {
      const [r2, g2, b2] = px(img, x, y);
      sum += (r2 * 19595 + g2 * 38470 + b2 * 7471 + 0x8000) >> 16;
    }
  }
  const mean = Math.floor(sum / 9 + 0.5);
  assert.deepEqual([...new Set(contrast(img, 0).data)], [mean]);
  // Sharpness 0: the SMOOTH filter; the centre is round((Σ neighbours + 5·centre) / 13), borders kept.
  const smooth = sharpness(img, 0);
  for (let c = 0; c < 3; c++) {
    let s = 0;
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 3; x++) s += px(img, x, y)[c] * (x === 1 && y === 1 ? 5 : 1);
    }
    assert.equal(px(smooth, 1, 1)[c], Math.floor(s / 13 + 0.5));
  }
  assert.deepEqual(px(smooth, 0, 0), px(img, 0, 0));
  assert.deepEqual(sharpness(img, 1).data, img.data);
});

Deno.test("RandAugment geometric ops: Pillow's affine mapping, fill colour outside, both resamplings", () => {
  const img = image(3, 3, (x, y, c) => 10 * (y * 3 + x) + c);
  const fill = [1, 2, 3];
  for (const resample of ["bilinear", "bicubic"] as const) {
    // Translate by +1 px: output x reads input x + 1; the last column is outside → fill.
    const t = affine(img, [1, 0, 1, 0, 1, 0], resample, fill);
    for (let y = 0; y < 3; y++) {
      assert.deepEqual(px(t, 0, y), px(img, 1, y));
      assert.deepEqual(px(t, 1, y), px(img, 2, y));
      assert.deepEqual(px(t, 2, y), fill);
    }
    // Rotate 90° counter-clockwise about the centre: out(x, y) = in(2 − y, x).
    const rot = rotate(img, 90, resample, fill);
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 3; x++) assert.deepEqual(px(rot, x, y), px(img, 2 - y, x));
    }
  }
  // Bilinear at a half-pixel shift averages neighbours, truncating: (0 + 10) / 2 = 5.
  const half = affine(img, [1, 0, 0.5, 0, 1, 0], "bilinear", fill);
  assert.equal(half.data[0], 5);
  // The shear factor is level × 0.3 with a random sign; TranslateXRel moves by level × 0.45 of the width.
  const wide = image(20, 1, (x) => x * 10);
  const rng = new Rng(3);
  const moved = applyOp(wide, "TranslateXRel", 10, { fill, rng: new Rng(3) });
  const sign = rng.uniform() > 0.5 ? -1 : 1;
  const shift = sign * 9; // 0.45 × 20 px
  const x0 = shift > 0 ? 0 : 19;
  const src = x0 + shift;
  assert.deepEqual(px(moved, x0, 0), px(wide, src, 0));
  assert.deepEqual(fillColor([0.5, 0.5, 0.5]), [128, 128, 128]);
  assert.deepEqual(fillColor([0.485, 0.456, 0.406]), [124, 116, 104]);
});

Deno.test("randAugment: deterministic per draw sequence, changes about half of the images (two ops at p 0.5), input untouched", () => {
  const img = image(8, 8, (x, y, c) => (x * 31 + y * 17 + c * 50) % 256);
  const c = parseRandAugment("rand-m9-mstd0.5-inc1");
  const copy = img.data.slice();
  const a = randAugment(img, c, new Rng(11), [128, 128, 128]);
  assert.deepEqual(a.data, randAugment(img, c, new Rng(11), [128, 128, 128]).data);
  let changed = 0;
  for (let s = 0; s < 20; s++) {
    if (randAugment(img, c, new Rng(s), [128, 128, 128]).data.some((v, i) => v !== img.data[i])) changed++;
  }
  // Each of 2 ops runs with probability 0.5 and almost every op changes this image.
  assert.ok(changed >= 10 && changed < 20, `${changed} of 20 images changed`);
  assert.deepEqual(img.data, copy, "the input image was modified");
});

Deno.test("random erasing: timm's box sizes and fills, off at prob 0, errors name the key", () => {
  const H = 16, W = 16, n = 3 * H * W;
  const base = Float32Array.from({ length: n }, (_, i) => 1 + (i % 7));
  const untouched = base.slice();
  assert.deepEqual(randomErase(untouched, 0, 3, H, W, { prob: 0, mode: "const", count: 1 }, new Rng(1)), []);
  assert.deepEqual(untouched, base);
  for (const mode of ["const", "rand", "pixel"] as const) {
    for (let seed = 0; seed < 10; seed++) {
      const x = base.slice();
      const boxes = randomErase(x, 0, 3, H, W, { prob: 1, mode, count: 1 }, new Rng(seed));
      assert.equal(boxes.length, 1);
      const { top, left, h, w } = boxes[0];
      assert.ok(h >= 1 && w >= 1 && h < H && w < W && top + h <= H && left + w <= W);
      // Area fraction within timm's [0.02, 1/3] up to rounding of the sides.
      assert.ok(h * w <= (Math.sqrt(H * W / 3 * 3.34) + 1) ** 2 && h * w >= 1);
      for (let c = 0; c < 3; c++) {
        const inside: number[] = [];
        for (let y = 0; y < H; y++) {
          for (let xx = 0; xx < W; xx++) {
            const i = c * H * W + y * W + xx;
            const isIn = y >= top && y < top + h && xx >= left && xx < left + w;
            if (isIn) inside.push(x[i]);
            else assert.equal(x[i], base[i]);
          }
        }
        if (mode === "const") assert.ok(inside.every((v) => v === 0));
        if (mode === "rand") assert.equal(new Set(inside).size, 1, "one value per channel");
        if (mode === "pixel" && inside.length > 2) assert.ok(new Set(inside).size > 1, "a value per pixel");
      }
      const again = base.slice();
      randomErase(again, 0, 3, H, W, { prob: 1, mode, count: 1 }, new Rng(seed));
      assert.deepEqual(again, x);
    }
  }
  // recount N: timm draws the number of boxes in [1, N], each with 1/k of the area.
  const counts = new Set<number>();
  for (let seed = 0; seed < 30; seed++) {
    counts.add(
      randomErase(base.slice(), 0, 3, H, W, { prob: 1, mode: "const", count: 3 }, new Rng(seed)).length,
    );
  }
  assert.deepEqual([...counts].sort(), [1, 2, 3]);
  assert.throws(() => checkRandomErasing({ prob: 1.5, mode: "pixel", count: 1 }), /reprob/);
  assert.throws(
    () => checkRandomErasing({ prob: 0.5, mode: "zero" as never, count: 1 }),
    /remode: .*const, rand, pixel/,
  );
  assert.throws(() => checkRandomErasing({ prob: 0.5, mode: "pixel", count: 0 }), /recount/);
});

Deno.test("training preprocessing applies aa and reprob per (seed, epoch, id)", () => {
  const img = image(12, 12, (x, y, c) => (x * 20 + y * 7 + c * 40) % 256);
  const p: Preprocessing = {
    img_size: 12,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    interpolation: "bilinear",
    crop_pct: 1,
  };
  const plain = preprocessSample(img, p, 3, { augment: { hflip: 0.5 }, seed: 1, epoch: 0 });
  const aa = {
    augment: { hflip: 0.5, rand_augment: parseRandAugment("rand-m9-mstd0.5-inc1") },
    seed: 1,
    epoch: 0,
  };
  // RandAugment resamples through 8 bits; with no op drawn the image equals the plain one to within 8-bit
  // rounding, and the same sample is augmented identically.
  assert.deepEqual(preprocessSample(img, p, 3, aa), preprocessSample(img, p, 3, aa));
  let differs = 0;
  for (let id = 0; id < 12; id++) {
    const a = preprocessSample(img, p, id, aa),
      b = preprocessSample(img, p, id, { ...aa, augment: { hflip: 0.5 } });
    if (a.some((v, i) => Math.abs(v - b[i]) > 1e-6)) differs++;
  }
  assert.ok(differs > 0 && differs < 12, `${differs} of 12 samples changed by RandAugment`);
  const re = {
    augment: { hflip: 0.5, random_erasing: { prob: 1, mode: "const" as const, count: 1 } },
    seed: 1,
    epoch: 0,
  };
  const erased = preprocessSample(img, p, 3, re);
  assert.ok(erased.some((v, i) => v === 0 && plain[i] !== 0), "nothing erased");
  assert.deepEqual(erased, preprocessSample(img, p, 3, re));
});

const opts = (o: Partial<MixupOptions> = {}): MixupOptions => ({
  mixupAlpha: 0.8,
  cutmixAlpha: 0,
  prob: 1,
  switchProb: 0.5,
  mode: "batch",
  labelSmoothing: 0.1,
  numClasses: 5,
  ...o,
});

function batch(n: number, C = 3, H = 4, W = 4): Float32Array {
  return Float32Array.from(
    { length: n * C * H * W },
    (_, i) => Math.floor(i / (C * H * W)) + 0.001 * (i % 17),
  );
}

Deno.test("mixup (batch mode): x·λ + reversed·(1 − λ), soft targets with smoothing, rows sum to 1", () => {
  const shape = [4, 3, 4, 4], per = 48, labels = [0, 1, 2, 3];
  const x0 = batch(4), x = x0.slice();
  const t = mixupBatch(x, shape, labels, opts(), new Rng(5));
  // λ from the target of sample 0: on-off is 1 − s, target[y0] = off + (1 − s)·λ.
  const off = 0.1 / 5, lam = (t[0] - off) / 0.9;
  assert.ok(lam > 0 && lam < 1);
  for (let i = 0; i < 4; i++) {
    let sum = 0;
    for (let k = 0; k < 5; k++) sum += t[i * 5 + k];
    assert.ok(Math.abs(sum - 1) < 1e-6, `row ${i} sums to ${sum}`);
    assert.ok(Math.abs(t[i * 5 + labels[3 - i]] - (off + 0.9 * (1 - lam))) < 1e-6);
    for (let k = 0; k < per; k++) {
      assert.ok(
        Math.abs(x[i * per + k] - (x0[i * per + k] * lam + x0[(3 - i) * per + k] * (1 - lam))) < 1e-5,
      );
    }
  }
  // Deterministic per draw sequence; prob 0 leaves the batch and gives smoothed one-hot targets.
  const again = x0.slice();
  assert.deepEqual(mixupBatch(again, shape, labels, opts(), new Rng(5)), t);
  assert.deepEqual(again, x);
  const none = x0.slice();
  const tn = mixupBatch(none, shape, labels, opts({ prob: 0 }), new Rng(5));
  assert.deepEqual(none, x0);
  assert.ok(Math.abs(tn[labels[1] + 5] - (1 - 0.1 + off)) < 1e-6);
  assert.throws(
    () => mixupBatch(batch(3), [3, 3, 4, 4], [0, 1, 2], opts(), new Rng(1)),
    /batch size must be even/,
  );
});

Deno.test("cutmix: the reversed sample's box pasted, λ corrected to the pasted area; pair and elem modes", () => {
  const shape = [4, 3, 8, 8], per = 3 * 64, labels = [0, 1, 2, 3];
  for (const mode of ["batch", "pair", "elem"] as const) {
    for (let seed = 0; seed < 8; seed++) {
      const x0 = batch(4, 3, 8, 8), x = x0.slice();
      const t = mixupBatch(
        x,
        shape,
        labels,
        opts({ mixupAlpha: 0, cutmixAlpha: 1, mode, labelSmoothing: 0 }),
        new Rng(seed),
      );
      for (let i = 0; i < 4; i++) {
        const j = 3 - i;
        // Pixels equal to the partner's count the pasted area.
        let pasted = 0;
        for (let k = 0; k < per; k++) {
          if (x[i * per + k] === x0[j * per + k]) pasted++;
          else assert.equal(x[i * per + k], x0[i * per + k]);
        }
        const lam = t[i * 5 + labels[i]];
        assert.ok(
          Math.abs(lam - (1 - pasted / per)) < 1e-6,
          `${mode} seed ${seed} sample ${i}: λ ${lam}, pasted ${pasted}`,
        );
        assert.ok(Math.abs(t[i * 5 + labels[j]] - (1 - lam)) < 1e-6);
        if (mode !== "elem") assert.ok(Math.abs(t[j * 5 + labels[j]] - lam) < 1e-6, "pair partners share λ");
      }
    }
  }
  const b = cutmixBox(10, 10, 0.75, new Rng(2));
  assert.ok(b.yh - b.yl <= 5 && b.xh - b.xl <= 5);
  assert.equal(b.lam, 1 - ((b.yh - b.yl) * (b.xh - b.xl)) / 100);
});

Deno.test("mixup + cutmix: switch_prob picks CutMix; targets are distributions in every mode", () => {
  let cut = 0;
  for (let seed = 0; seed < 40; seed++) {
    const x0 = batch(2, 1, 4, 4), x = x0.slice();
    mixupBatch(x, [2, 1, 4, 4], [0, 1], opts({ cutmixAlpha: 1, switchProb: 0.5 }), new Rng(seed));
    // CutMix copies values exactly; mixup blends every pixel.
    if (x.some((v, i) => v === x0[i])) cut++;
  }
  assert.ok(cut > 8 && cut < 32, `${cut} of 40 batches used CutMix`);
  const t = mixupTargets([0, 4, 2, 1], [0.3, 1, 0.6, 0.7], 5, 0.2);
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(t.subarray(i * 5, i * 5 + 5).reduce((a, v) => a + v, 0) - 1) < 1e-6);
  }
  // Beta(α, α) samples are in (0, 1) and centred.
  const rng = new Rng(9);
  const s = Array.from({ length: 2000 }, () => beta(rng, 0.8, 0.8));
  assert.ok(s.every((v) => v >= 0 && v <= 1));
  assert.ok(Math.abs(s.reduce((a, v) => a + v, 0) / s.length - 0.5) < 0.03);
});
