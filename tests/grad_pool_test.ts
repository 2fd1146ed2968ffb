/**
 * Data-parallel training steps (lib/vit/grad_pool.ts): a step run in two workers equals, bit for bit, the
 * same step run on one isolate cut into the same chunks, also after the weights changed, with a frozen part,
 * soft targets and drop path; nothing is left on the device.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { Optimizer } from "../lib/train/optimizer.ts";
import {
  cgroupAvailableBytes,
  cgroupLimitBytes,
  type GradChunk,
  GradPool,
  trainWorkersWanted,
  workersThatFit,
} from "../lib/vit/grad_pool.ts";
import { createViT, type DeviceGrads, type LossOptions, type ViTModel } from "../lib/vit/model.ts";
import type { ViTConfig } from "../lib/vit/config.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { Rng } from "../lib/train/rng.ts";

const MICRO: ViTConfig = {
  patch_size: 4,
  embed_dim: 32,
  depth: 2,
  num_heads: 2,
  mlp_ratio: 4,
  img_size: 16,
  num_classes: 10,
} as ViTConfig;
const N = 12;

/** Runs `f` with `VIT_TRAIN_WORKERS` set to `value`, restoring it after. */
async function withWorkers<T>(value: string, f: () => Promise<T>): Promise<T> {
  const before = Deno.env.get("VIT_TRAIN_WORKERS");
  Deno.env.set("VIT_TRAIN_WORKERS", value);
  try {
    return await f();
  } finally {
    if (before === undefined) Deno.env.delete("VIT_TRAIN_WORKERS");
    else Deno.env.set("VIT_TRAIN_WORKERS", before);
  }
}

async function hostGrads(step: DeviceGrads): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, g] of step.grads) out.set(name, await g.data() as Float32Array);
  for (const g of step.grads.values()) g.dispose();
  return out;
}

function assertSameBits(a: Map<string, Float32Array>, b: Map<string, Float32Array>, what: string): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: the same gradients`);
  for (const [name, x] of a) {
    const y = b.get(name)!;
    const i = x.findIndex((v, j) => !Object.is(v, y[j]));
    assert.equal(i, -1, `${what}: ${name}[${i}] is ${y[i]} in workers, ${x[i]} on one isolate`);
  }
}

function batch(seed: number): { input: Float32Array; shape: number[]; labels: Int32Array } {
  const rng = new Rng(seed);
  const shape = [N, 3, MICRO.img_size, MICRO.img_size];
  return {
    input: Float32Array.from({ length: N * 3 * MICRO.img_size ** 2 }, () => rng.uniform() * 2 - 1),
    shape,
    labels: Int32Array.from({ length: N }, () => Math.floor(rng.uniform() * 10)),
  };
}

/**
 * Two steps with an AdamW update between them, on `model`, with the options `options(step)` gives; returns
 * each step's loss and host gradients.
 */
async function twoSteps(
  model: ViTModel,
  options: (step: number) => LossOptions,
  soft = false,
): Promise<Array<{ loss: number; grads: Map<string, Float32Array> }>> {
  const trainable = new Map([...model.variables].filter(([, v]) => v.trainable));
  const opt = new Optimizer(trainable, new Map(model.specs.map((s) => [s.name, s.shape])), {
    opt: "adamw",
    momentum: 0.9,
    weightDecay: 0.05,
  });
  const out = [];
  try {
    for (let s = 0; s < 2; s++) {
      const b = batch(100 + s);
      const labels = soft
        ? Float32Array.from(
          { length: N * 10 },
          (_, i) => (i % 10 === b.labels[Math.floor(i / 10)] ? 0.55 : 0.05),
        )
        : b.labels;
      const step = await model.lossAndDeviceGrads(b.input, b.shape, labels, options(s));
      opt.apply(step.grads, 1e-2);
      out.push({ loss: step.loss, grads: await hostGrads(step) });
    }
  } finally {
    opt.dispose();
  }
  return out;
}

async function compare(
  what: string,
  prepare: (m: ViTModel) => void,
  options: (step: number) => LossOptions,
  soft = false,
): Promise<void> {
  await initBackend("wasm");
  const before = tf.memory().numTensors;
  // One isolate, cut into the chunks two workers get (N / 2 images each).
  const serial = await createViT(MICRO, formulaStateDict(MICRO, 5), { maxChunk: N / 2 });
  const parallel = await createViT(MICRO, formulaStateDict(MICRO, 5));
  try {
    prepare(serial);
    prepare(parallel);
    const a = await withWorkers("1", () => twoSteps(serial, options, soft));
    const b = await withWorkers("2", () => twoSteps(parallel, options, soft));
    assert.deepEqual([serial.stepWorkers, parallel.stepWorkers], [1, 2], "the isolates the steps ran on");
    for (let s = 0; s < 2; s++) {
      assert.equal(b[s].loss, a[s].loss, `${what}, step ${s}: loss`);
      assertSameBits(a[s].grads, b[s].grads, `${what}, step ${s}`);
    }
  } finally {
    serial.dispose();
    parallel.dispose();
  }
  assert.equal(tf.memory().numTensors, before, "no tensor left behind");
}

Deno.test("a step in two workers equals the same chunks on one isolate, bit for bit, across an update", async () => {
  await compare("hard labels", () => {}, () => ({ labelSmoothing: 0.1 }));
});

Deno.test("data-parallel steps stay exact with a frozen part, soft targets and drop path", async () => {
  await compare(
    "frozen blocks.0, soft targets, drop path",
    (m) => {
      for (const [name, v] of m.variables) {
        if (name.startsWith("blocks.0.") || name.startsWith("patch_embed.")) {
          (v as { trainable: boolean }).trainable = false;
        }
      }
    },
    (s) => {
      const rng = new Rng(900 + s);
      return { dropPath: { rate: 0.3, uniform: () => rng.uniform() } };
    },
    true,
  );
});

Deno.test("data-parallel steps from a frozen prefix's outputs equal the same chunks on one isolate", async () => {
  await initBackend("wasm");
  const before = tf.memory().numTensors;
  const serial = await createViT(MICRO, formulaStateDict(MICRO, 6), { maxChunk: N / 2 });
  const parallel = await createViT(MICRO, formulaStateDict(MICRO, 6));
  try {
    for (const m of [serial, parallel]) {
      for (const [name, v] of m.variables) {
        (v as { trainable: boolean }).trainable = name.startsWith("blocks.1.") || name.startsWith("norm.") ||
          name.startsWith("head.");
      }
    }
    const split = serial.frozenSplit();
    assert.equal(split, 1);
    const b = batch(300);
    const prefix = await serial.prefixOutputs(b.input, b.shape, split);
    const run = async (m: ViTModel) =>
      await hostGrads(
        await m.lossAndDeviceGradsFromPrefix(prefix, N, split, b.labels, { labelSmoothing: 0.1 }),
      );
    const a = await withWorkers("1", () => run(serial));
    const p = await withWorkers("2", () => run(parallel));
    assert.ok(a.has("blocks.1.mlp.fc1.weight") && !a.has("blocks.0.mlp.fc1.weight"));
    assertSameBits(a, p, "suffix from the prefix cache");
  } finally {
    serial.dispose();
    parallel.dispose();
  }
  assert.equal(tf.memory().numTensors, before, "no tensor left behind");
});

Deno.test("VIT_TRAIN_WORKERS: parsed, and the default pool only for steps worth it", () => {
  assert.equal(trainWorkersWanted("3"), 3);
  assert.equal(trainWorkersWanted("100"), 8);
  assert.throws(() => trainWorkersWanted("0"), /VIT_TRAIN_WORKERS: expected a positive integer, got "0"/);
  assert.throws(() => trainWorkersWanted("two"), /VIT_TRAIN_WORKERS/);
  const config = { ...MICRO, tokens: 17, mlp_hidden: 128, in_chans: 3 } as Parameters<
    typeof GradPool.workersFor
  >[0];
  // Set explicitly: used whenever there are images for the workers.
  assert.equal(GradPool.workersFor(config, 12, "2"), 2);
  assert.equal(GradPool.workersFor(config, 1, "2"), 1);
  // By default: a step of this tiny model is too small for the messages to pay off.
  assert.equal(GradPool.workersFor(config, 12, ""), 1);
  // A head-only step from cached features is tiny whatever the batch.
  assert.equal(GradPool.workersFor(config, 100_000, "", 3), 1);
  assert.ok(GradPool.workersFor(config, 100_000, "") >= Math.min(2, navigator.hardwareConcurrency));
  // No more than fit in memory, unless set explicitly.
  assert.equal(GradPool.workersFor(config, 100_000, "", undefined, 1), 1);
  assert.equal(GradPool.workersFor(config, 12, "2", undefined, 1), 2);
});

Deno.test("workers that fit: half of the memory available, each worker's share growing as there are fewer", () => {
  const gib = 2 ** 30;
  // A worker holds 1 GiB plus 1 GiB per 64 images of a 128-image batch.
  const perWorker = (s: number) => gib + Math.ceil(128 / s) / 64 * gib;
  assert.equal(workersThatFit(perWorker, 12 * gib), 4, "4 × 1.5 GiB fit in 6 GiB, 5 × 1.41 do not");
  assert.equal(workersThatFit(perWorker, 4 * gib), 1, "2 × 2 GiB do not fit in 2 GiB: this isolate alone");
  assert.equal(workersThatFit(perWorker, undefined), Infinity, "unknown memory: no bound");
  assert.equal(workersThatFit(() => 1, 2 ** 40), 8, "never more than the pool's maximum");
});

Deno.test("a cgroup v2 limit: the limit less the usage, inactive page cache not counted as used", () => {
  const stat = "anon 300\nfile 500\ninactive_file 400\nactive_file 100\n";
  assert.equal(cgroupAvailableBytes("1000\n", "900\n", stat), 500);
  assert.equal(cgroupAvailableBytes("1000", "900"), 100, "without memory.stat: the usage as it reads");
  assert.equal(cgroupAvailableBytes("1000", "1200"), 0);
  assert.equal(cgroupAvailableBytes("max\n", "900\n", stat), undefined, "no limit");
  assert.equal(cgroupAvailableBytes("\n", "900\n", stat), undefined, "an empty file is not a zero limit");
});

Deno.test("cgroup limits: the least over the process's cgroup and its ancestors, v2 and v1", () => {
  const files = (entries: Record<string, string>) => (f: string) => entries[f];
  const v2 = files({
    "/sys/fs/cgroup/cgroup.controllers": "memory\n",
    "/sys/fs/cgroup/a/b/memory.max": "max\n",
    "/sys/fs/cgroup/a/b/memory.current": "300\n",
    "/sys/fs/cgroup/a/memory.max": "1000\n",
    "/sys/fs/cgroup/a/memory.current": "700\n",
    "/sys/fs/cgroup/a/memory.stat": "inactive_file 200\n",
  });
  assert.equal(cgroupLimitBytes("0::/a/b\n", v2), 500, "the parent's limit binds the child without one");
  assert.equal(cgroupLimitBytes("0::/\n", v2), undefined, "the root sets no limit");
  const hybrid = files({
    "/sys/fs/cgroup/unified/x:y/memory.max": "max\n",
    "/sys/fs/cgroup/unified/x:y/memory.high": "800\n",
    "/sys/fs/cgroup/unified/x:y/memory.current": "600\n",
    "/sys/fs/cgroup/unified/memory.max": "1000\n",
    "/sys/fs/cgroup/unified/memory.high": "\n",
    "/sys/fs/cgroup/unified/memory.current": "100\n",
  });
  assert.equal(
    cgroupLimitBytes("1:memory:/\n0::/x:y\n", hybrid),
    200,
    "v2 under unified/, memory.high, a colon",
  );
  const v1 = files({
    "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712\n",
    "/sys/fs/cgroup/memory/job/memory.usage_in_bytes": "100\n",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": "2000\n",
    "/sys/fs/cgroup/memory/memory.usage_in_bytes": "900\n",
    "/sys/fs/cgroup/memory/memory.stat": "inactive_file 50\ntotal_inactive_file 400\n",
  });
  const self = "4:memory:/job\n3:cpu:/other\n0::/\n";
  assert.equal(
    cgroupLimitBytes(self, v1),
    1500,
    "v1: the hierarchy's inactive page cache, the tighter level",
  );
  assert.equal(cgroupLimitBytes("3:cpu:/job\n", v1), undefined, "no memory controller listed");
  assert.equal(cgroupLimitBytes("", v1), undefined);
});

Deno.test({
  name: "the default pool is no larger than the memory given to the model allows",
  // With one core the default pool is one worker whatever the memory: nothing here could fail.
  ignore: trainWorkersWanted("") < 2,
}, async () => {
  await initBackend("wasm");
  const cores = trainWorkersWanted("");
  // A batch that the default pool finds worth cutting for this model (from 187 images on).
  const b = batch(300), n = 256;
  const input = new Float32Array(n * 3 * MICRO.img_size ** 2).map((_, i) => b.input[i % b.input.length]);
  const labels = Int32Array.from({ length: n }, (_, i) => b.labels[i % N]);
  const cases = [[1, 1, 1], [2 ** 40, 1, Math.min(cores, n / 4)], [2 ** 40, 1e-12, 1]];
  for (const [memoryBytes, memoryShare, want] of cases) {
    const model = await createViT(MICRO, formulaStateDict(MICRO, 5), { memoryBytes, memoryShare });
    try {
      const step = await withWorkers(
        "",
        () => model.lossAndDeviceGrads(input, [n, 3, MICRO.img_size, MICRO.img_size], labels),
      );
      tf.dispose([...step.grads.values()]);
      assert.equal(model.stepWorkers, want, `${memoryBytes} bytes, share ${memoryShare}`);
    } finally {
      model.dispose();
    }
  }
});

Deno.test("a memory share outside (0, 1] is refused", async () => {
  await initBackend("wasm");
  for (const memoryShare of [0, 1.5, NaN]) {
    await assert.rejects(
      () => createViT(MICRO, formulaStateDict(MICRO, 5), { memoryShare }),
      /memoryShare: .*, expected a number in \(0, 1\]/,
    );
  }
});

Deno.test("a worker that had no chunk in a step still gets the weights that changed meanwhile", async () => {
  await initBackend("wasm");
  const model = await createViT(MICRO, formulaStateDict(MICRO, 7));
  const b = batch(400);
  const per = 3 * MICRO.img_size ** 2;
  const chunk = (lo: number, hi: number): GradChunk => ({
    input: b.input.slice(lo * per, hi * per),
    shape: [hi - lo, 3, MICRO.img_size, MICRO.img_size],
    labels: b.labels.slice(lo, hi),
    weight: (hi - lo) / N,
    labelSmoothing: 0,
  });
  const pool = new GradPool(model.config, model.specs, model.variables, 2);
  let fresh: GradPool | undefined;
  try {
    // Worker 1 gets nothing while the head changes under worker 0.
    await pool.run([chunk(0, 6)], model.variables);
    const bias = model.variables.get("head.bias")!;
    bias.assign(tf.tidy(() => bias.add(0.5)));
    await pool.run([chunk(0, 6)], model.variables);
    const [, late] = await pool.run([chunk(0, 6), chunk(6, 12)], model.variables);
    fresh = new GradPool(model.config, model.specs, model.variables, 2);
    const [, want] = await fresh.run([chunk(0, 6), chunk(6, 12)], model.variables);
    assert.equal(late.loss, want.loss, "worker 1 computed with the changed head");
    assertSameBits(want.grads, late.grads, "idle worker caught up");
  } finally {
    pool.terminate();
    fresh?.terminate();
    model.dispose();
  }
});
