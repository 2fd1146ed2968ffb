/**
 * The onnx engine cache (lib/onnx/engine_cache.ts, lib/weights/engine.ts): an entry opened instead of the
 * shards gives the logits the shards give; every stale entry is refused (a changed manifest, a changed shard,
 * another key part), a corrupt one is rebuilt, an entry inside a model folder survives copying the folder,
 * `VIT_ONNX_CACHE=off` writes nothing, entries of deleted folders are pruned, and an opened entry switches
 * from its ahead-of-time packed graph to the full-speed one with the same logits, never mid-run.
 */
import assert from "node:assert/strict";
import { initBackend } from "../lib/backend/backend.ts";
import {
  ENGINE_UNPACKED,
  engineKey,
  findEngine,
  openEngine,
  stampFiles,
  upgradingSession,
} from "../lib/onnx/engine_cache.ts";
import type { OrtSession } from "../lib/onnx/ort.ts";
import { loadOrt } from "../lib/onnx/ort.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { initStateDict } from "../lib/train/init.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import { loadModel, writeModelFolderEngine } from "../lib/weights/load.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { withTempEnv } from "./_fixtures.ts";

const ort = await loadOrt();
const noOrt = "error" in ort;
if (noOrt) console.warn(`SKIP onnx engine cache tests: ${ort.error}`);

const MICRO = archConfig(MICRO_ARCH)!;
const C = resolveConfig(MICRO);
const INPUT = new Float32Array(2 * C.in_chans * C.img_size * C.img_size).map((_, i) => Math.sin(i * 0.01));
const SHAPE = [2, C.in_chans, C.img_size, C.img_size];

async function writeMicro(dir: string, seed = 1, labels?: string[]): Promise<void> {
  await saveModel(dir, {
    config: MICRO,
    state: initStateDict(C, seed),
    preprocessing: defaultPreprocessing(C.img_size),
    labels: labels ?? Array.from({ length: C.num_classes }, (_, i) => `c${i}`),
    source: { file: "init", sha256: "-", format: "init" },
    dtype: "float16",
    shardMB: 0.05,
  });
}

/**
 * Loads `dir` for inference (user cache `cache`, every model cached) and returns its logits and cache use.
 */
async function classify(dir: string, cache: string) {
  Deno.env.set("VIT_ONNX_CACHE", cache);
  const { model, engineCache } = await loadModel(dir, { trainable: false, engineCacheMinBytes: 0 });
  try {
    return { logits: await model.logits(INPUT, SHAPE), engineCache };
  } finally {
    model.dispose();
  }
}

async function withTemp(fn: (tmp: string) => Promise<void>): Promise<void> {
  await initBackend("onnx");
  await withTempEnv({ VIT_QUIET: "1", VIT_ONNX_CACHE: undefined }, fn);
}

Deno.test({
  name: "[onnx cache] the first load writes an entry, the next opens it: same logits, shards not read",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      const first = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.equal(first.engineCache?.opened, false, "the first load writes the entry");
      assert.ok(first.engineCache!.entry.startsWith(`${tmp}/cache/`));
      const second = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.deepEqual(second.engineCache, { entry: first.engineCache!.entry, opened: true });
      assert.deepEqual(second.logits, first.logits);
      // Without the cache, from the shards: the same logits.
      const plain = await classify(`${tmp}/m`, "off");
      assert.equal(plain.engineCache, undefined);
      assert.deepEqual(plain.logits, first.logits);
      // A hit does not read the shards: one overwritten with the same size and modification time (which only
      // a deliberate act does; the sha256 check would refuse it) goes unnoticed, and the entry's weights,
      // those model.json names, are served.
      const name = JSON.parse(await Deno.readTextFile(`${tmp}/m/model.json`)).weightsManifest[0].paths[0];
      const info = await Deno.stat(`${tmp}/m/${name}`);
      await Deno.writeFile(`${tmp}/m/${name}`, new Uint8Array(info.size));
      await Deno.utime(`${tmp}/m/${name}`, info.atime!, info.mtime!);
      const blind = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.equal(blind.engineCache?.opened, true);
      assert.deepEqual(blind.logits, first.logits);
      await assert.rejects(() => classify(`${tmp}/m`, "off"), /sha256/);
    });
  },
});

Deno.test({
  name: "[onnx cache] stale entries are never used: changed manifest, changed shard, other key parts",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = `${tmp}/m`, cache = `${tmp}/cache`;
      await writeMicro(dir, 1);
      const a = await classify(dir, cache);
      // Other weights in the same folder (the manifest names other shard hashes): a miss, new logits.
      await writeMicro(dir, 2);
      const b = await classify(dir, cache);
      assert.equal(b.engineCache?.opened, false, "a changed model.json is a miss");
      assert.notDeepEqual(b.logits, a.logits);
      assert.deepEqual((await classify(dir, cache)).logits, b.logits);
      // A shard changed in place (same size): the entry is not used, and the shard check reports it.
      const first = JSON.parse(await Deno.readTextFile(`${dir}/model.json`)).weightsManifest[0].paths[0];
      assert.ok(first);
      const shard = `${dir}/${first}`;
      const bytes = await Deno.readFile(shard);
      bytes[100] ^= 0xff;
      await Deno.writeFile(shard, bytes);
      await Deno.utime(shard, new Date(), new Date(Date.now() + 5000));
      await assert.rejects(
        () => classify(dir, cache),
        new RegExp(`shard ${first.replace(".", "\\.")}: sha256`),
      );
      // Any other part of the key (ONNX Runtime version, CPU, graph sources, weight storage) misses.
      const stamps = await stampFiles([`${dir}/model.json`]);
      const key = await engineKey({ manifest: "x", weights: "float32", graph: "g" });
      const entryDir = `${tmp}/entry`;
      const { writeEngine } = await import("../lib/onnx/engine_cache.ts");
      const { openSession } = await import("../lib/onnx/ort.ts");
      const { vitOnnxModel } = await import("../lib/vit/onnx_graph.ts");
      const s = await writeEngine(
        entryDir,
        dir,
        key,
        stamps,
        (saveTo) => openSession(vitOnnxModel(C, initStateDict(C, 1)), { saveTo }),
      );
      await s.release();
      assert.ok(await findEngine(entryDir, key, stamps), "the same key and stamps hit");
      for (const part of ["ort", "cpu", "graph", "weights", "manifest", "optimization"]) {
        assert.equal(await findEngine(entryDir, { ...key, [part]: "other" }, stamps), undefined, part);
      }
      const { [`ort`]: _dropped, ...fewer } = key;
      assert.equal(await findEngine(entryDir, fewer, stamps), undefined, "a key with a part missing");
      assert.equal(await findEngine(entryDir, key, [{ ...stamps[0], size: stamps[0].size + 1 }]), undefined);
    });
  },
});

Deno.test({
  name: "[onnx cache] a corrupt entry is rebuilt from the shards",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      const first = await classify(`${tmp}/m`, `${tmp}/cache`);
      await Deno.writeTextFile(`${first.engineCache!.entry}/model.onnx`, "not a model");
      const again = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.equal(again.engineCache?.opened, false, "rebuilt");
      assert.deepEqual(again.logits, first.logits);
      assert.equal((await classify(`${tmp}/m`, `${tmp}/cache`)).engineCache?.opened, true);
    });
  },
});

Deno.test({
  name: "[onnx cache] a broken entry in the model folder gives way to the user cache's, before any rebuild",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      const first = await classify(`${tmp}/m`, `${tmp}/cache`);
      const folder = await writeModelFolderEngine(`${tmp}/m`, { onnxWeights: "float32" });
      // Unreadable: the next entry (the user cache's) is opened instead.
      await Deno.writeTextFile(`${folder}/model.onnx`, "not a model");
      const next = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.deepEqual(next.engineCache, { entry: first.engineCache!.entry, opened: true });
      assert.deepEqual(next.logits, first.logits);
      // Without its data file an entry does not match at all.
      await Deno.remove(`${folder}/model.onnx.data`);
      const again = await classify(`${tmp}/m`, `${tmp}/cache`);
      assert.deepEqual(again.engineCache, { entry: first.engineCache!.entry, opened: true });
    });
  },
});

Deno.test({
  name: "[onnx cache] an entry inside the model folder (convert --onnx-engine) opens there and after copying",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      const plain = await classify(`${tmp}/m`, "off");
      const entry = await writeModelFolderEngine(`${tmp}/m`, { onnxWeights: "float32" });
      assert.equal(entry, `${tmp}/m/onnx-engine/float32`);
      const hit = await classify(`${tmp}/m`, "off");
      assert.deepEqual(hit.engineCache, { entry, opened: true });
      assert.deepEqual(hit.logits, plain.logits);
      const cp = new Deno.Command("cp", { args: ["-a", `${tmp}/m`, `${tmp}/copy`] });
      assert.equal((await cp.output()).code, 0);
      const copied = await classify(`${tmp}/copy`, "off");
      assert.deepEqual(copied.engineCache, { entry: `${tmp}/copy/onnx-engine/float32`, opened: true });
      assert.deepEqual(copied.logits, plain.logits);
    });
  },
});

Deno.test({
  name: "[onnx cache] VIT_ONNX_CACHE=off writes nothing; entries of deleted model folders are pruned",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      assert.equal((await classify(`${tmp}/m`, "off")).engineCache, undefined);
      await writeMicro(`${tmp}/gone`, 3);
      const gone = await classify(`${tmp}/gone`, `${tmp}/cache`);
      await Deno.remove(`${tmp}/gone`, { recursive: true });
      const kept = await classify(`${tmp}/m`, `${tmp}/cache`);
      const entries = [];
      for await (const e of Deno.readDir(`${tmp}/cache`)) entries.push(`${tmp}/cache/${e.name}`);
      assert.deepEqual(entries, [kept.engineCache!.entry], `${gone.engineCache!.entry} pruned`);
    });
  },
});

Deno.test({
  name: "[onnx cache] an opened entry switches to its unpacked graph when idle: the same logits",
  ignore: noOrt,
  async fn() {
    await withTemp(async (tmp) => {
      await writeMicro(`${tmp}/m`);
      const { engineCache } = await classify(`${tmp}/m`, `${tmp}/cache`);
      const entry = engineCache!.entry;
      await Deno.stat(`${entry}/${ENGINE_UNPACKED}`);
      const key = JSON.parse(await Deno.readTextFile(`${entry}/engine.json`)).key;
      const session = await openEngine(`${entry}/model.onnx`, key);
      try {
        const before = await session.run(INPUT, SHAPE);
        assert.equal(await alive(session.upgraded), true);
        assert.deepEqual(await session.run(INPUT, SHAPE), before);
      } finally {
        await session.release();
      }
      // Another key (the entry was replaced by another model's since it was found): refused.
      await assert.rejects(
        () => openEngine(`${entry}/model.onnx`, { ...key, manifest: "other" }),
        /another model/,
      );
      // The entry replaced after the first session opened: the switch is given up, the first keeps answering.
      const errors: string[] = [];
      const kept = await openEngine(`${entry}/model.onnx`, key, (e) => errors.push(e.message));
      try {
        const before = await kept.run(INPUT, SHAPE);
        const record = JSON.parse(await Deno.readTextFile(`${entry}/engine.json`));
        await Deno.writeTextFile(`${entry}/engine.json`, JSON.stringify({ ...record, created: "later" }));
        assert.equal(await alive(kept.upgraded), false);
        assert.match(errors.join(), /replaced while it was being opened/);
        assert.deepEqual(await kept.run(INPUT, SHAPE), before);
      } finally {
        await kept.release();
      }
    });
  },
});

/**
 * Awaits `p` with the event loop held open (the switch's timers are unref'd, as a server keeps the loop
 * alive).
 */
async function alive<T>(p: Promise<T>): Promise<T> {
  const keep = setInterval(() => {}, 1000);
  try {
    return await p;
  } finally {
    clearInterval(keep);
  }
}

/** A stand-in session: answers `value`, can be held mid-run, counts its releases. */
function fake(value: number) {
  let hold: Promise<void> | undefined, releases = 0;
  const session: OrtSession = {
    async run() {
      await hold;
      return new Float32Array([value]);
    },
    release() {
      releases++;
      return Promise.resolve();
    },
  };
  return {
    session,
    releases: () => releases,
    holdRuns(): () => void {
      let open!: () => void;
      hold = new Promise((r) => (open = r));
      return () => {
        hold = undefined;
        open();
      };
    },
  };
}

Deno.test("upgradingSession: switches once idle after the first run, never releases a session mid-run, keeps the first on failure", async () => {
  const timing = { idleMs: 20, maxWaitMs: 10_000 };
  const x = new Float32Array(1), shape = [1];
  // A run in flight on the first session when the second opens: the first is released only after it.
  const a = fake(1), b = fake(2);
  let openLater!: (s: OrtSession) => void;
  let asked = false;
  const s = upgradingSession(
    a.session,
    () => {
      asked = true;
      return new Promise((r) => (openLater = r));
    },
    undefined,
    timing,
  );
  await alive(new Promise((r) => setTimeout(r, 60)));
  assert.equal(asked, false, "nothing is opened before the first run");
  assert.deepEqual(await s.run(x, shape), new Float32Array([1]));
  await alive(new Promise((r) => setTimeout(r, 60))); // idle: the second starts opening
  const free = a.holdRuns();
  const running = s.run(x, shape);
  openLater(b.session);
  assert.equal(await alive(s.upgraded), true);
  assert.equal(a.releases(), 0, "not while a run is in flight");
  free();
  assert.deepEqual(await running, new Float32Array([1]));
  assert.equal(a.releases(), 1);
  assert.deepEqual(await s.run(x, shape), new Float32Array([2]));
  await s.release();
  assert.equal(b.releases(), 1);
  assert.equal(a.releases(), 1);
  // The second fails to open: the first keeps answering, and the error is reported.
  const c = fake(3), errors: string[] = [];
  const t = upgradingSession(
    c.session,
    () => Promise.reject(new Error("boom")),
    (e) => errors.push(e.message),
    {
      idleMs: 0,
      maxWaitMs: 10_000,
    },
  );
  assert.deepEqual(await t.run(x, shape), new Float32Array([3]));
  assert.equal(await alive(t.upgraded), false);
  assert.deepEqual(errors, ["boom"]);
  assert.deepEqual(await t.run(x, shape), new Float32Array([3]));
  await t.release();
  assert.equal(c.releases(), 1);
  // Busy all the time: the switch still happens by maxWaitMs.
  const d = fake(4), e = fake(5);
  const u = upgradingSession(d.session, () => Promise.resolve(e.session), undefined, {
    idleMs: 50,
    maxWaitMs: 80,
  });
  const until = performance.now() + 400;
  let last = 4;
  while (performance.now() < until && last === 4) {
    last = (await u.run(x, shape))[0];
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(last, 5);
  await u.release();
});
