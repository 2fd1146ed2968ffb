/**
 * The optimizer's host placement (one JS pass over the values, used on tfjs-wasm) against its device
 * placement (tfjs ops): the same bits for every optimizer, with weight decay, clipping and several steps, and
 * the same state, so checkpoints written by either resume in the other.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { clipGradNorm, defaultPlacement, Optimizer, type Placement } from "../lib/train/optimizer.ts";

await initBackend("wasm");

const SHAPES: Record<string, number[]> = {
  "blocks.0.mlp.fc1.weight": [48, 64],
  "blocks.0.mlp.fc1.bias": [64],
  "pos_embed": [1, 5, 16],
};

/** Deterministic values of a few magnitudes (with exact zeros), seeded by `salt`. */
function values(n: number, salt: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => {
    const x = Math.sin((i + 1) * 12.9898 + salt * 78.233) * 43758.5453;
    return i % 97 === 0 ? 0 : (x - Math.floor(x) - 0.5) * scale * (1 + (i % 7));
  });
}

/** Runs `steps` updates (clipped to `clip` when > 0) and returns the weights, the state and the norms. */
async function run(opt: "sgd" | "momentum" | "adamw", placement: Placement, clip: number, steps: number) {
  const vars = new Map(
    Object.entries(SHAPES).map(([name, shape], i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return [name, tf.tidy(() => tf.variable(tf.tensor(values(n, i, 0.2), shape)))];
    }),
  );
  const o = new Optimizer(
    vars,
    new Map(Object.entries(SHAPES)),
    { opt, momentum: 0.9, weightDecay: 0.05 },
    placement,
  );
  const norms: number[] = [];
  for (let s = 0; s < steps; s++) {
    const grads = new Map(
      [...vars].map(([name, v], i) => [name, tf.tensor(values(v.size, 100 * s + i, 0.05), v.shape)]),
    );
    if (clip > 0) norms.push(await clipGradNorm(grads, clip, placement));
    o.apply(grads, 4e-3 / (s + 1));
    for (const g of grads.values()) g.dispose();
  }
  const weights = new Map<string, Float32Array>();
  for (const [name, v] of vars) weights.set(name, (await v.data()) as Float32Array);
  const state = await o.state();
  o.dispose();
  for (const v of vars.values()) v.dispose();
  return { weights, state, norms };
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}[${i}]: host ${b[i]} vs device ${a[i]}`);
  }
}

Deno.test("on wasm the optimizer runs on the host by default", () => {
  assert.equal(defaultPlacement(), "host");
});

for (const opt of ["sgd", "momentum", "adamw"] as const) {
  for (const clip of [0, 0.5, 1e3]) {
    Deno.test(`${opt}, clip ${clip}: the host pass gives the device ops' bits (weights, state, norms)`, async () => {
      const before = tf.memory().numTensors;
      const dev = await run(opt, "device", clip, 4);
      const host = await run(opt, "host", clip, 4);
      assert.equal(tf.memory().numTensors, before, "tensors left behind");
      assert.deepEqual(host.norms, dev.norms);
      if (clip === 0.5) assert.ok(dev.norms.every((n) => n > 0.5), "the clipping test must clip");
      for (const [name, w] of dev.weights) sameBits(w, host.weights.get(name)!, name);
      assert.equal(host.state.step, dev.state.step);
      assert.deepEqual([...host.state.slots.keys()], [...dev.state.slots.keys()]);
      for (const [key, s] of dev.state.slots) {
        assert.deepEqual(host.state.slots.get(key)!.shape, s.shape);
        sameBits(s.data, host.state.slots.get(key)!.data, key);
      }
    });
  }
}

Deno.test("a state saved by one placement continues in the other with the same bits", async () => {
  const shape = [32, 8];
  const start = values(256, 1, 0.3);
  const g = (s: number) => tf.tensor(values(256, 50 + s, 0.05), shape);
  const make = (placement: Placement) => {
    const w = tf.tidy(() => tf.variable(tf.tensor(start, shape)));
    const o = new Optimizer(
      new Map([["head.weight", w]]),
      new Map([["head.weight", shape]]),
      { opt: "adamw", momentum: 0.9, weightDecay: 0.05 },
      placement,
    );
    return { w, o };
  };
  const step = (x: ReturnType<typeof make>, s: number) => {
    const grad = g(s);
    x.o.apply(new Map([["head.weight", grad]]), 1e-3);
    grad.dispose();
  };
  // Straight on the device: 4 steps.
  const a = make("device");
  for (let s = 0; s < 4; s++) step(a, s);
  // 2 steps on the device, saved, loaded on the host with the weights, 2 more.
  const b = make("device");
  for (let s = 0; s < 2; s++) step(b, s);
  const saved = await b.o.state(), w2 = await b.w.data();
  const c = make("host");
  tf.tidy(() => c.w.assign(tf.tensor(w2, shape)));
  c.o.load(saved.step, saved.slots);
  for (let s = 2; s < 4; s++) step(c, s);
  sameBits((await a.w.data()) as Float32Array, (await c.w.data()) as Float32Array, "weights");
  for (const x of [a, b, c]) {
    x.o.dispose();
    x.w.dispose();
  }
});
