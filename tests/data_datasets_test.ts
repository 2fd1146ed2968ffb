/**
 * Datasets and getting data: CIFAR-10 binary batches (synthetic), class folders, flat folders, subsets,
 * the cache, image sets (preprocessing, per-sample augmentation), tar extraction (round
 * trip, GNU/pax names, path traversal refused), the MD5-checked download from a loopback server, and the
 * real CIFAR-10 JPEG copy when /work/shared is present.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { CIFAR10_CLASSES, CifarBinaryDataset, encodeCifarBatch } from "../lib/data/cifar_binary.ts";
import { downloadCifar10Binary, openCifar10, prepareCifar10Jpeg } from "../lib/data/cifar10.ts";
import {
  CachedDataset,
  classBalancedSubset,
  type Dataset,
  holdoutSplit,
  type Sample,
  subsetDataset,
} from "../lib/data/dataset.ts";
import { encodeImage } from "../lib/data/decode.ts";
import { DownloadError } from "../lib/data/download.ts";
import type { RgbImage } from "../lib/data/image.ts";
import { openFlatFolder, openImageFolder } from "../lib/data/image_folder.ts";
import { carveHoldout, datasetImageSet, openSplit } from "../lib/data/image_set.ts";
import { type PreprocessConfig, preprocessEval } from "../lib/data/preprocess.ts";
import { encodeTar, extractTar, gzip, readTar, safeEntryPath, TarError } from "../lib/data/tar.ts";
import { CIFAR_JPEG, present } from "./_fixtures.ts";

const PRE: PreprocessConfig = {
  img_size: 40,
  crop_pct: 1,
  interpolation: "bilinear",
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
};

function tiny(seed: number, size = 32): RgbImage {
  const data = new Uint8Array(size * size * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + seed * 97) % 256;
  return { width: size, height: size, data };
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  // odd chunk sizes exercise the reader's buffering across header and data boundaries
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      const n = 97 + (off % 1000);
      c.enqueue(bytes.slice(off, off + n));
      off += n;
    },
  });
}

/** A synthetic in-memory dataset that counts decodes. */
class Synthetic implements Dataset {
  readonly classes = ["a", "b", "c"];
  readonly labels: Int32Array;
  calls = 0;
  constructor(readonly length: number) {
    this.labels = Int32Array.from({ length }, (_, i) => i % 3);
  }
  get(i: number): Promise<Sample> {
    this.calls++;
    return Promise.resolve({ image: tiny(i, 16), label: this.labels[i] });
  }
  describe(i: number): string {
    return `synthetic#${i}`;
  }
}

Deno.test("CIFAR-10 binary batches: CHW planes become HWC, labels and class names read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const batches = [1, 2, 3, 4, 5].map((b) =>
      [0, 1, 2].map((r) => ({ image: tiny(b * 10 + r), label: (b + r) % 10 }))
    );
    for (let b = 0; b < 5; b++) {
      await Deno.writeFile(`${dir}/data_batch_${b + 1}.bin`, encodeCifarBatch(batches[b]));
    }
    await Deno.writeFile(`${dir}/test_batch.bin`, encodeCifarBatch([{ image: tiny(99), label: 9 }]));
    await Deno.writeTextFile(`${dir}/batches.meta.txt`, CIFAR10_CLASSES.join("\n") + "\n\n");
    const train = await CifarBinaryDataset.open(dir, "train");
    assert.equal(train.length, 15);
    assert.deepEqual(train.classes, CIFAR10_CLASSES);
    assert.deepEqual([...train.labels.subarray(0, 4)], [1, 2, 3, 2]);
    const s = await train.get(4);
    assert.equal(s.label, 3);
    assert.deepEqual(s.image, tiny(21));
    assert.match(train.describe(4), /data_batch_2\.bin#1$/);
    // the raw record really is planar: byte 1 + 1024 is the green value of pixel 0
    const raw = await Deno.readFile(`${dir}/data_batch_1.bin`);
    assert.equal(raw[1 + 1024], tiny(10).data[1]);
    const test = await CifarBinaryDataset.open(dir, "test");
    assert.equal(test.length, 1);
    assert.deepEqual((await test.get(0)).image, tiny(99));
    await assert.rejects(test.get(1), RangeError);

    await Deno.writeFile(`${dir}/test_batch.bin`, new Uint8Array(3000));
    await assert.rejects(
      CifarBinaryDataset.open(dir, "test"),
      /test_batch\.bin: 3000 bytes is not a whole number/,
    );
    await Deno.remove(`${dir}/data_batch_3.bin`);
    await assert.rejects(CifarBinaryDataset.open(dir, "train"), /data_batch_3\.bin is missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("class folders and flat folders: sorted classes, labels, decoded pixels, clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const png = (seed: number) => encodeImage(tiny(seed, 8), "png");
    for (const [c, n] of [["dog", 2], ["cat", 3], ["bird", 1]] as const) {
      await Deno.mkdir(`${dir}/tree/${c}`, { recursive: true });
      for (let i = 0; i < n; i++) {
        await Deno.writeFile(`${dir}/tree/${c}/${i}.png`, await png(c.length * 10 + i));
      }
    }
    await Deno.writeTextFile(`${dir}/tree/cat/notes.txt`, "not an image");
    await Deno.writeFile(`${dir}/tree/cat/.hidden.png`, await png(0));
    const tree = await openImageFolder(`${dir}/tree`);
    assert.deepEqual(tree.classes, ["bird", "cat", "dog"]);
    assert.deepEqual([...tree.labels], [0, 1, 1, 1, 2, 2]);
    assert.match(tree.files[2], /cat\/1\.png$/);
    const s = await tree.get(2);
    assert.equal(s.label, 1);
    assert.deepEqual(s.image, tiny(31, 8));

    await Deno.mkdir(`${dir}/flat`);
    for (const name of ["cat_10", "cat_2", "dog_1", "cat_1", "sea_lion_3"]) {
      await Deno.writeFile(`${dir}/flat/${name}.png`, await png(name.length));
    }
    const flat = await openFlatFolder(`${dir}/flat`);
    assert.deepEqual(flat.classes, ["cat", "dog", "sea_lion"]);
    assert.deepEqual(flat.files.map((f) => f.split("/").pop()), [
      "cat_1.png",
      "cat_2.png",
      "cat_10.png",
      "dog_1.png",
      "sea_lion_3.png",
    ]);
    assert.deepEqual([...flat.labels], [0, 0, 0, 1, 2]);

    await Deno.mkdir(`${dir}/num`);
    for (const name of ["2_0", "0_0", "0_1"]) await Deno.writeFile(`${dir}/num/${name}.png`, await png(1));
    const num = await openFlatFolder(`${dir}/num`);
    assert.deepEqual(num.classes, ["0", "1", "2"]);
    assert.deepEqual([...num.labels], [0, 0, 2]);
    const named = await openFlatFolder(`${dir}/num`, { classes: CIFAR10_CLASSES });
    assert.equal(named.classes[named.labels[2]], "bird");
    await assert.rejects(openFlatFolder(`${dir}/flat`, { classes: ["cat", "dog"] }), /"sea_lion" is not one/);

    await Deno.writeFile(`${dir}/num/oops.png`, await png(1));
    await assert.rejects(openFlatFolder(`${dir}/num`), /oops\.png: expected a file named <label>_<number>/);
    await Deno.writeFile(`${dir}/tree/dog/broken.png`, new Uint8Array([0x89, 0x50, 0x4e, 0x47]));
    const withBroken = await openImageFolder(`${dir}/tree`);
    assert.equal(withBroken.length, 7);
    await assert.rejects(withBroken.get(6), /tree\/dog\/broken\.png: /);
    await assert.rejects(openImageFolder(`${dir}/nope`), /does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("class-balanced subsets take the first N/k of each class; subset and cache datasets", async () => {
  const labels = Int32Array.from([2, 0, 1, 0, 2, 1, 0, 1, 2, 0, 1, 2]);
  assert.deepEqual([...classBalancedSubset(labels, 6)], [0, 1, 2, 3, 4, 5]);
  assert.deepEqual([...classBalancedSubset(labels, 3)], [0, 1, 2]);
  // 7 = 3 + 2 + 2: class 0 takes one more
  assert.deepEqual([...classBalancedSubset(labels, 7)], [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...classBalancedSubset(labels, 0)], [...labels.keys()], "0 = every sample");
  assert.throws(() => classBalancedSubset(Int32Array.from([0, 1, 1, 1]), 3), /class 0 has too few/);
  // seeded: a random choice, the same for the same seed, still balanced
  const s1 = classBalancedSubset(labels, 6, { seed: 3 });
  assert.deepEqual(s1, classBalancedSubset(labels, 6, { seed: 3 }));
  assert.deepEqual([...s1].map((i) => labels[i]).sort(), [0, 0, 1, 1, 2, 2]);

  const ds = new Synthetic(12);
  const sub = subsetDataset(ds, [5, 7]);
  assert.equal(sub.length, 2);
  assert.deepEqual([...sub.labels], [2, 1]);
  assert.deepEqual((await sub.get(1)).image, tiny(7, 16));
  assert.equal(sub.describe(0), "synthetic#5");

  const cached = new CachedDataset(ds);
  const before = ds.calls;
  await cached.get(3);
  await cached.get(3);
  await cached.get(4);
  assert.equal(ds.calls - before, 2);
  assert.equal(cached.cachedBytes, 2 * 16 * 16 * 3);
});

Deno.test("holdout:<n>: the last n/k of each class, disjoint from training, the same from train and eval", async () => {
  // Classes 0, 1, 2 in turn: the held-out images are the last 2 of each class, in sample order.
  const ds = new Synthetic(12);
  const { train, val } = holdoutSplit(ds, 6);
  assert.deepEqual([...val.labels], [0, 1, 2, 0, 1, 2]);
  assert.deepEqual(Array.from({ length: val.length }, (_, i) => val.describe(i)), [
    "synthetic#6",
    "synthetic#7",
    "synthetic#8",
    "synthetic#9",
    "synthetic#10",
    "synthetic#11",
  ]);
  assert.deepEqual(
    Array.from({ length: train.length }, (_, i) => train.describe(i)),
    Array.from({ length: 6 }, (_, i) => `synthetic#${i}`),
  );
  assert.throws(() => holdoutSplit(ds, 12), /holdout:12: expected between 1 and 11/);
  // What `deno task eval --split holdout:<n>` opens is what training validates on (scripts/train.ts).
  const dir = await Deno.makeTempDir();
  try {
    for (const [c, n] of [["cat", 4], ["dog", 5]] as const) {
      await Deno.mkdir(`${dir}/train/${c}`, { recursive: true });
      for (let i = 0; i < n; i++) {
        await Deno.writeFile(`${dir}/train/${c}/${i}.png`, await encodeImage(tiny(i, 8), "png"));
      }
    }
    const opened = await openSplit(dir, "holdout:4");
    const carved = carveHoldout(await openSplit(dir, "train"), 4);
    const files = (d: Dataset) => Array.from({ length: d.length }, (_, i) => d.describe(i).replace(dir, ""));
    assert.deepEqual(files(opened.dataset), files(carved.val.dataset));
    assert.deepEqual(files(opened.dataset), [
      "/train/cat/2.png",
      "/train/cat/3.png",
      "/train/dog/3.png",
      "/train/dog/4.png",
    ]);
    assert.match(opened.name, /\(held out: the last 4 class-balanced\)$/);
    assert.equal(carved.train.dataset.length, 5);
    // ...and what `deno task train` trains and validates on with `val_split: holdout:4`.
    await Deno.writeTextFile(
      `${dir}/config.yml`,
      `model: { patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2 }\nnum_classes: 2\nimg_size: 8\n` +
        `batch_size: 5\nepochs: 1\ndata_dir: ${dir}\ntrain_split: train\nval_split: "holdout:4"\n` +
        `output: ${dir}/run\nbackend: wasm\n`,
    );
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/train.ts", "--config", `${dir}/config.yml`],
      cwd: new URL("..", import.meta.url).pathname,
      env: { VIT_QUIET: "1", VIT_TRAIN_WORKERS: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const log = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, log.slice(-2000));
    assert.match(log, /data: image folder .*, 5 training and 4 validation images/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("image sets: eval images equal per-image preprocessing; augmentation by (seed, epoch, id); errors name the sample", async () => {
  const ds = new Synthetic(23);
  const set = datasetImageSet(ds, PRE);
  assert.equal(set.size, 23);
  assert.deepEqual(set.shape, [3, 40, 40]);
  const per = 3 * 40 * 40;
  const x = await set.images([5, 6, 7, 8, 9]);
  assert.equal(x.length, 5 * per);
  assert.deepEqual(x.subarray(2 * per, 3 * per), preprocessEval(tiny(7, 16), PRE));
  const augment = { augment: { random_resized_crop: true as const, hflip: 0.5 }, seed: 42, epoch: 1 };
  // A sample's augmentation depends on (seed, epoch, id), not on the batch it is in.
  const a = await set.images([3, 4], augment), b = await set.images([4, 3], augment);
  assert.deepEqual(a.subarray(0, per), b.subarray(per, 2 * per));
  assert.notDeepEqual(a.subarray(0, per), await set.images([3], { ...augment, epoch: 2 }));
  // a subset selection maps back to dataset indices
  assert.deepEqual([...classBalancedSubset(ds.labels, 6)], [0, 1, 2, 3, 4, 5]);
  const failing: Dataset = {
    ...ds,
    get: (i) => Promise.reject(new Error(`bad pixels in f${i}`)),
    describe: (i) => `f${i}`,
  };
  await assert.rejects(datasetImageSet(failing, PRE).images([0, 1]), /bad pixels in f0/);
});

Deno.test("tar: round trip with gzip and odd chunking", async () => {
  const data = new Uint8Array(1500).map((_, i) => i & 255);
  const tar = encodeTar([
    { path: "root/", type: "directory" },
    { path: "root/a.bin", data },
    { path: "./root/empty.txt", data: new Uint8Array(0) },
  ]);
  const dir = await Deno.makeTempDir();
  try {
    const r = await extractTar(streamOf(await gzip(tar)), `${dir}/out`);
    assert.deepEqual(r, { files: 2, directories: 1, bytes: 1500, skipped: [] });
    assert.deepEqual(await Deno.readFile(`${dir}/out/root/a.bin`), data);
    assert.equal((await Deno.stat(`${dir}/out/root/empty.txt`)).size, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const systemTar = await new Deno.Command("tar", { args: ["--version"], stdout: "null", stderr: "null" })
  .output().then((r) => r.success, () => false);
if (!systemTar) console.warn("SKIP tar GNU/pax long names: no system tar to write them");

Deno.test({
  name: "tar: GNU long names and pax paths written by the system tar",
  ignore: !systemTar,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const longDir = "d".repeat(90), longName = `${longDir}/${"f".repeat(60)}.txt`;
      await Deno.mkdir(`${dir}/src/${longDir}`, { recursive: true });
      await Deno.writeTextFile(`${dir}/src/${longName}`, "long");
      for (const format of ["gnu", "pax"]) {
        const out = await new Deno.Command("tar", {
          args: [`--format=${format}`, "-C", `${dir}/src`, "-cf", "-", longName],
          stdout: "piped",
        }).output();
        assert.ok(out.success, `tar --format=${format} failed`);
        const entries = [];
        for await (const e of readTar(streamOf(out.stdout))) entries.push(e);
        assert.equal(entries.length, 1, format);
        assert.equal(entries[0].path, longName, format);
        assert.equal(new TextDecoder().decode(entries[0].data), "long");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("tar: path traversal, absolute paths, bad checksums and truncation are refused", async () => {
  for (const bad of ["../evil.txt", "a/../../evil.txt", "/etc/evil", "a\\..\\evil", "ok/..", "x\0y"]) {
    assert.throws(
      () => safeEntryPath(bad),
      (e: unknown) => e instanceof TarError && e.code === "unsafe_path",
    );
  }
  assert.equal(safeEntryPath("./a//b/./c.jpg"), "a/b/c.jpg");
  const dir = await Deno.makeTempDir();
  try {
    const evil = encodeTar([{ path: "fine.txt", data: new Uint8Array(1) }, {
      path: "../evil.txt",
      data: new Uint8Array(1),
    }]);
    await assert.rejects(extractTar(streamOf(evil), `${dir}/dest`), /"\.\.\/evil\.txt" has a "\.\." segment/);
    await assert.rejects(Deno.stat(`${dir}/evil.txt`), Deno.errors.NotFound);

    const broken = encodeTar([{ path: "a.txt", data: new Uint8Array(700) }]);
    broken[10] ^= 1;
    await assert.rejects(extractTar(streamOf(broken), `${dir}/d2`), /checksum mismatch/);
    const cut = encodeTar([{ path: "a.txt", data: new Uint8Array(700) }]).subarray(0, 900);
    await assert.rejects(
      extractTar(streamOf(cut), `${dir}/d3`),
      (e: unknown) => e instanceof TarError && e.code === "truncated",
    );
    const big = encodeTar([{ path: "a.txt", data: new Uint8Array(5000) }]);
    await assert.rejects(
      extractTar(streamOf(big), `${dir}/d4`, { maxEntryBytes: 4096 }),
      /exceeds the 4096-byte limit/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("binary CIFAR-10 download from a loopback server: MD5 checked, extracted, idempotent", async () => {
  const members = [
    { path: "cifar-10-batches-bin/", type: "directory" as const },
    {
      path: "cifar-10-batches-bin/batches.meta.txt",
      data: new TextEncoder().encode(CIFAR10_CLASSES.join("\n")),
    },
    ...[1, 2, 3, 4, 5].map((b) => ({
      path: `cifar-10-batches-bin/data_batch_${b}.bin`,
      data: encodeCifarBatch([{ image: tiny(b), label: b }, { image: tiny(b + 50), label: 0 }]),
    })),
    {
      path: "cifar-10-batches-bin/test_batch.bin",
      data: encodeCifarBatch([{ image: tiny(7), label: 7 }, { image: tiny(8), label: 8 }]),
    },
  ];
  const archive = await gzip(encodeTar(members));
  const md5 = createHash("md5").update(archive).digest("hex");
  let hits = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    hits++;
    return new URL(req.url).pathname === "/cifar.tar.gz"
      ? new Response(archive as BodyInit)
      : new Response("nope", { status: 404 });
  });
  const url = `http://127.0.0.1:${server.addr.port}/cifar.tar.gz`;
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      downloadCifar10Binary(`${dir}/bad`, { url, md5: "0".repeat(32), recordsPerBatch: 2 }),
      (e: unknown) => e instanceof DownloadError && /MD5 [0-9a-f]{32} does not match/.test(e.message),
    );
    assert.deepEqual([...Deno.readDirSync(`${dir}/bad`)], [], "nothing left behind");
    await assert.rejects(
      downloadCifar10Binary(`${dir}/404`, { url: url.replace("cifar", "x"), md5, recordsPerBatch: 2 }),
      /HTTP 404/,
    );

    assert.equal(await downloadCifar10Binary(dir, { url, md5, recordsPerBatch: 2 }), "downloaded");
    const test = await CifarBinaryDataset.open(`${dir}/cifar-10-batches-bin`, "test");
    assert.deepEqual([...test.labels], [7, 8]);
    assert.deepEqual((await test.get(0)).image, tiny(7));
    const h = hits;
    assert.equal(await downloadCifar10Binary(dir, { url, md5, recordsPerBatch: 2 }), "present");
    // the kept archive is reused (MD5 verified) when the folder has to be rebuilt
    await Deno.remove(`${dir}/cifar-10-batches-bin/test_batch.bin`);
    assert.equal(await downloadCifar10Binary(dir, { url, md5, recordsPerBatch: 2 }), "downloaded");
    assert.equal(hits, h);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "CIFAR-10 JPEG copy: test split extracted, verified, idempotent; 1,000-image balanced subset",
  ignore: !present(`${CIFAR_JPEG}/test.tar.gz`, "CIFAR-10 JPEG extraction"),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const to = `${dir}/cifar10-jpeg`;
      assert.deepEqual(await prepareCifar10Jpeg(CIFAR_JPEG, to, { splits: ["test"] }), { test: "extracted" });
      assert.deepEqual(await prepareCifar10Jpeg(CIFAR_JPEG, to, { splits: ["test"] }), { test: "present" });
      const { dataset, source } = await openCifar10(dir, "test");
      assert.equal(source, "jpeg");
      assert.equal(dataset.length, 10_000);
      assert.deepEqual(dataset.classes, CIFAR10_CLASSES);
      const subset = classBalancedSubset(dataset.labels, 1000);
      assert.equal(subset.length, 1000);
      const counts = new Array(10).fill(0);
      for (const i of subset) counts[dataset.labels[i]]++;
      assert.deepEqual(counts, new Array(10).fill(100));
      assert.match(dataset.describe(subset[100]), /test\/automobile\/0000\.jpg$/);
      const first = await datasetImageSet(dataset, { ...PRE, img_size: 224 }).images(subset.subarray(0, 4));
      assert.equal(first.length, 4 * 3 * 224 * 224);
      assert.deepEqual([...subset.subarray(0, 4)].map((i) => dataset.labels[i]), [0, 0, 0, 0]);
      assert.ok(first.every((v) => v >= -1.0001 && v <= 1.0001));
      await assert.rejects(openCifar10(`${dir}/none`, "train"), /run `deno task data`/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
