/**
 * Kill-and-resume: a training subprocess is SIGKILLed mid-epoch after its first checkpoint, resumed with
 * `--resume`, and must end with exactly the weights (shard sha256s) of an uninterrupted run.
 */
import assert from "node:assert/strict";
import { EMA_FILE, readEma } from "../lib/train/checkpoint.ts";
import { loadWeights } from "../lib/weights/load.ts";
import type { StateDict } from "../lib/vit/params.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const CONFIG = `
model: { patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2 }
num_classes: 10
img_size: 16
batch_size: 16
grad_accum_steps: 2
opt: adamw
lr: 0.003
weight_decay: 0.05
sched: cosine
warmup_epochs: 0.5
epochs: 3
smoothing: 0.1
clip_grad: 1.0
seed: 7
data_dir: "synthetic:640"
eval_subset: 100
hflip: 0.5
crop_pad: 2
checkpoint_every: 4
backend: wasm
`;

function trainCmd(configPath: string, output: string, extra: string[] = [], workers = "2"): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/train.ts`, "--config", configPath, "--output", output, ...extra],
    cwd: ROOT,
    // Two wasm threads and two data-parallel training workers (explicit here; the default on this 2-core
    // machine for steps big enough): resume stays bit-exact with them.
    env: { VIT_QUIET: "1", VIT_WASM_THREADS: "2", VIT_TRAIN_WORKERS: workers },
    stdout: "null",
    stderr: "piped",
  });
}

async function finalShards(output: string): Promise<Record<string, string>> {
  return JSON.parse(await Deno.readTextFile(`${output}/final/model.json`)).shards;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Trains `config` straight and killed-then-resumed; both must end with the same weights and curves. */
async function killAndResume(config: string): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vit-resume-" });
  try {
    const configPath = `${dir}/micro.yml`;
    await Deno.writeTextFile(configPath, config);

    const straight = await trainCmd(configPath, `${dir}/a`).output();
    assert.equal(straight.code, 0, new TextDecoder().decode(straight.stderr));

    // Start again, kill as soon as a checkpoint exists and training has gone on past it.
    const child = trainCmd(configPath, `${dir}/b`).spawn();
    const latest = `${dir}/b/checkpoints/latest.json`;
    const deadline = Date.now() + 120_000;
    while (!(await exists(latest)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(await exists(latest), "the run never wrote a checkpoint");
    await new Promise((r) => setTimeout(r, 150));
    child.kill("SIGKILL");
    const killed = await child.output();
    assert.equal(killed.signal, "SIGKILL", "the run ended before it could be killed; make it longer");
    assert.equal(await exists(`${dir}/b/final/model.json`), false);
    const at = JSON.parse(await Deno.readTextFile(latest)).checkpoint;
    const trainer = JSON.parse(await Deno.readTextFile(`${dir}/b/checkpoints/${at}/trainer.json`));
    assert.ok(trainer.update < 60, `killed at update ${trainer.update}, expected before the end (60)`);
    assert.equal(trainer.trainWorkers, 2, "the checkpoint records the isolates its steps ran on");

    const resumed = await trainCmd(configPath, `${dir}/b`, ["--resume"]).output();
    const log = new TextDecoder().decode(resumed.stderr);
    assert.equal(resumed.code, 0, log);
    assert.match(log, /resuming from/);
    assert.doesNotMatch(log, /no longer bit-identical/);

    assert.deepEqual(await finalShards(`${dir}/b`), await finalShards(`${dir}/a`));
    // The metrics of the resumed run describe one run: same number of eval lines as the straight one.
    const evals = async (o: string) =>
      (await Deno.readTextFile(`${o}/metrics.jsonl`)).split("\n").filter((l) => l.includes('"eval'));
    assert.deepEqual(
      (await evals(`${dir}/b`)).map((l) => [JSON.parse(l).type, JSON.parse(l).top1]),
      (await evals(`${dir}/a`)).map((l) => [JSON.parse(l).type, JSON.parse(l).top1]),
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("training killed with SIGKILL mid-epoch resumes to the same weights as an uninterrupted run", async () => {
  await killAndResume(CONFIG);
});

Deno.test("with timm's mixup, cutmix, aa, reprob, drop_path and model_ema on, a killed run still resumes bit-exactly", async () => {
  await killAndResume(
    CONFIG + `mixup: 0.8
cutmix: 1.0
mixup_mode: pair
aa: rand-m9-mstd0.5-inc1
reprob: 0.25
drop_path: 0.1
model_ema: true
model_ema_decay: 0.99
`,
  );
});

Deno.test("a resume whose steps run on another number of workers says it is no longer bit-exact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-resume-" });
  try {
    const configPath = `${dir}/micro.yml`;
    await Deno.writeTextFile(configPath, CONFIG);
    const first = await trainCmd(configPath, `${dir}/a`, ["--max_updates", "4"]).output();
    assert.equal(first.code, 0, new TextDecoder().decode(first.stderr));
    const again = await trainCmd(configPath, `${dir}/a`, ["--resume", "--max_updates", "1"], "1").output();
    const log = new TextDecoder().decode(again.stderr);
    assert.equal(again.code, 0, log);
    assert.match(
      log,
      /resume: the steps before ran on 2 data-parallel workers, now on 1: .*no longer bit-identical.*VIT_TRAIN_WORKERS=2/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a run stopped by max_updates exports the weights it reached; a fresh run goes on from them with start_epoch", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-export-stop-" });
  try {
    const configPath = `${dir}/micro.yml`;
    await Deno.writeTextFile(configPath, CONFIG);
    // 640 images, 16 × 2 a update: 20 updates an epoch; stop in the second epoch.
    const stopped = await trainCmd(configPath, `${dir}/a`, ["--max_updates", "22", "--export", `${dir}/x`])
      .output();
    const log = new TextDecoder().decode(stopped.stderr);
    assert.equal(stopped.code, 0, log);
    assert.match(
      log,
      /update 22, in epoch 2\).*--initial_checkpoint .*x --start_epoch 1 --output <a new folder> \(its 2 updates in epoch 2 are done again\)/,
    );
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/x/model.json`));
    assert.deepEqual(
      [manifest.extra.training.stopped_at.epoch, manifest.extra.training.stopped_at.update],
      [1, 22],
    );
    // A resume starts where its checkpoint is: start_epoch does not count among its options.
    const resumed = await trainCmd(configPath, `${dir}/a`, [
      "--resume",
      "--start_epoch",
      "2",
      "--max_updates",
      "1",
    ])
      .output();
    const resumedLog = new TextDecoder().decode(resumed.stderr);
    assert.equal(resumed.code, 0, resumedLog);
    assert.match(
      resumedLog,
      /resume: start_epoch 2 ignored; the run goes on from its checkpoint \(epoch 2, update 22\)/,
    );
    assert.match(resumedLog, /stopped at update 23/);
    const resumedAt = JSON.parse(await Deno.readTextFile(`${dir}/a/checkpoints/step-00000023/trainer.json`));
    assert.equal("start_epoch" in resumedAt.config, false, "the ignored start_epoch is not recorded");
    // A stop on an epoch's last update: its checkpoint, complete, is where the next slice starts.
    const boundary = await trainCmd(configPath, `${dir}/c`, ["--max_updates", "20", "--export", `${dir}/y`])
      .output();
    const boundaryLog = new TextDecoder().decode(boundary.stderr);
    assert.equal(boundary.code, 0, boundaryLog);
    assert.match(boundaryLog, /update 20, after epoch 1\).*--start_epoch 1 --output <a new folder>$/m);
    const names = [];
    for await (const e of Deno.readDir(`${dir}/c/checkpoints/step-00000020`)) names.push(e.name);
    assert.deepEqual(
      names.filter((n) => !n.endsWith(".bin")).sort(),
      ["model.json", "optimizer.safetensors", "trainer.json"],
    );
    const on = await trainCmd(configPath, `${dir}/b`, [
      "--initial_checkpoint",
      `${dir}/x`,
      "--start_epoch",
      "1",
      "--max_updates",
      "2",
    ]).output();
    assert.equal(on.code, 0, new TextDecoder().decode(on.stderr));
    const lines = (await Deno.readTextFile(`${dir}/b/metrics.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    // Train lines every 2 updates here: the first is the second epoch's second update.
    const first = lines.find((m) => m.type === "train");
    assert.deepEqual([first.update, first.epoch], [22, 1.1], "the schedule goes on at the second epoch");
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("with model_ema, a stopped run's export keeps the EMA beside its weights and a start_epoch continuation carries it on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-export-ema-" });
  try {
    const configPath = `${dir}/micro.yml`;
    await Deno.writeTextFile(configPath, CONFIG + "model_ema: true\nmodel_ema_decay: 0.99\n");
    const stopped = await trainCmd(configPath, `${dir}/a`, ["--max_updates", "20", "--export", `${dir}/x`])
      .output();
    assert.equal(stopped.code, 0, new TextDecoder().decode(stopped.stderr));
    const exported = await readEma(`${dir}/x`);
    assert.ok(exported, `${dir}/x has no ${EMA_FILE}`);
    // `deno task export` writes the same folder from the run (its newest checkpoint) or the checkpoint itself,
    // without training; a folder that is neither is an error naming it.
    const exportCmd = (from: string, output: string, extra: string[] = []) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}scripts/export.ts`, "--from", from, "--output", output, ...extra],
        cwd: ROOT,
        stdout: "null",
        stderr: "piped",
      }).output();
    for (
      const [from, output] of [[`${dir}/a`, `${dir}/z1`], [`${dir}/a/checkpoints/step-00000020`, `${dir}/z2`]]
    ) {
      const r = await exportCmd(from, output);
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const read = async (d: string) => JSON.parse(await Deno.readTextFile(`${d}/model.json`));
      const [want, got] = [await read(`${dir}/x`), await read(output)];
      assert.deepEqual(
        [got.shards, got.extra],
        [want.shards, want.extra],
        `${output} differs from the export`,
      );
      assert.deepEqual(
        await Deno.readFile(`${output}/${EMA_FILE}`),
        await Deno.readFile(`${dir}/x/${EMA_FILE}`),
      );
    }
    // --ema: the EMA is the model (the same float16 values as the export's ema.safetensors), nothing beside it.
    const asModel = await exportCmd(`${dir}/a`, `${dir}/z4`, ["--ema"]);
    assert.equal(asModel.code, 0, new TextDecoder().decode(asModel.stderr));
    const emaModel = await loadWeights(`${dir}/z4`);
    for (const [name, t] of exported) assert.deepEqual(emaModel.state.get(name)!.data, t.data, name);
    const record = (emaModel.manifest.extra as { training?: { weights?: string } } | undefined)?.training;
    assert.match(record?.weights ?? "", /^EMA of the weights \(decay 0\.99\)$/);
    assert.equal(await exists(`${dir}/z4/${EMA_FILE}`), false);
    const neither = await exportCmd(dir, `${dir}/z3`);
    assert.equal(neither.code, 1);
    assert.match(
      new TextDecoder().decode(neither.stderr),
      /is neither a training checkpoint .* nor a run folder/,
    );
    assert.equal(await exists(`${dir}/z3`), false);
    const raw = (await loadWeights(`${dir}/x`)).state;
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/x/model.json`));
    assert.match(manifest.extra.training.weights, /the raw weights \(their EMA in ema\.safetensors/);
    // Mean absolute difference over every tensor.
    const gap = (a: StateDict, b: StateDict) => {
      let sum = 0, n = 0;
      for (const [k, t] of a) {
        const u = b.get(k)!.data;
        for (let i = 0; i < t.data.length; i++) sum += Math.abs(t.data[i] - u[i]);
        n += t.data.length;
      }
      return sum / n;
    };
    const apart = gap(exported, raw);
    assert.ok(apart > 0, "the EMA differs from the raw weights");
    // One more update from the export: the EMA goes on from the exported one (decay 0.99: it moves 1% of the
    // way), and a run that is not a continuation (no start_epoch) starts its EMA at the raw weights.
    const emaAfter = async (out: string, extra: string[]) => {
      const run = await trainCmd(configPath, out, [
        "--initial_checkpoint",
        `${dir}/x`,
        ...extra,
        "--max_updates",
        "1",
      ])
        .output();
      const log = new TextDecoder().decode(run.stderr);
      assert.equal(run.code, 0, log);
      return { log, ema: (await readEma(`${out}/checkpoints/step-${String(21).padStart(8, "0")}`))! };
    };
    const on = await emaAfter(`${dir}/b`, ["--start_epoch", "1"]);
    assert.match(on.log, /the EMA goes on from .*x\/ema\.safetensors/);
    assert.ok(gap(on.ema, exported) < 0.1 * apart, `carried on: ${gap(on.ema, exported)} against ${apart}`);
    const fresh = await trainCmd(configPath, `${dir}/c`, [
      "--initial_checkpoint",
      `${dir}/x`,
      "--max_updates",
      "1",
    ])
      .output();
    const freshLog = new TextDecoder().decode(fresh.stderr);
    assert.equal(fresh.code, 0, freshLog);
    assert.doesNotMatch(freshLog, /the EMA goes on/);
    const freshEma = (await readEma(`${dir}/c/checkpoints/step-00000001`))!;
    assert.ok(gap(freshEma, raw) < 0.1 * apart, `fresh EMA at the raw weights: ${gap(freshEma, raw)}`);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
