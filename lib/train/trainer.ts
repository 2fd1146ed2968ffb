/**
 * The training loop: builds (or resumes) the model and optimizer, walks a seeded data order with gradient
 * accumulation, clipping and the lr schedule, evaluates every epoch, logs `metrics.jsonl` and the curves,
 * checkpoints atomically, and writes the final model. Everything random is a function of the seed and the
 * position in the run, and checkpoints hold every piece of state, so a run killed at any point and resumed
 * ends with the same weights as an uninterrupted one.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { type BackendName, describeBackend, initBackend } from "../backend/backend.ts";
import { resolveConfig, timmConfig } from "../vit/config.ts";
import { createViT, type ViTModel } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { loadWeights } from "../weights/load.ts";
import type { Preprocessing, SourceInfo } from "../weights/manifest.ts";
import { resamplePosEmbed } from "../weights/resample.ts";
import { saveModel } from "../weights/shards.ts";
import { augmentBatch } from "./augment.ts";
import { loadLatestCheckpoint, saveCheckpoint, type TrainerState } from "./checkpoint.ts";
import { modelConfig, type TrainConfig } from "./config.ts";
import { type EvalResult, evaluate } from "./evaluate.ts";
import { balancedSubset, evalIndices, type ImageSet } from "./image_set.ts";
import { initStateDict } from "./init.ts";
import { MetricsLog, readMetrics } from "./metrics.ts";
import { clipGradNorm, Optimizer } from "./optimizer.ts";
import { curvesSvg } from "./plot.ts";
import { formatDuration, ProgressBar, progressLine } from "./progress.ts";
import { mixSeed, permutation } from "./rng.ts";
import { learningRate } from "./scheduler.ts";
import { writeFileAtomic } from "../weights/atomic.ts";

/** Inputs of {@linkcode train}. */
export interface TrainInputs {
  config: TrainConfig;
  train: ImageSet;
  /** Evaluated after every epoch when given. */
  val?: ImageSet;
  labels: string[];
  preprocessing: Preprocessing;
  /** Show the progress bar and messages on stderr; true by default. */
  verbose?: boolean;
}

/** What {@linkcode train} returns. */
export interface TrainResult {
  /** True when the run reached its last epoch (false when stopped by `max_updates`). */
  finished: boolean;
  state: TrainerState;
  /** The last evaluation, when there was one. */
  lastEval?: EvalResult;
  /** The final model folder (float32 weights), when finished. */
  finalDir?: string;
}

/** Options that may differ between a run and its resumption. */
const RESUMABLE = new Set([
  "resume",
  "max_updates",
  "backend",
  "output",
  "checkpoint_every",
  "checkpoint_keep",
]);

/**
 * Options a resume may change knowingly: the length of the run (the schedule is then re-planned from the
 * current update on, so the result is no longer bit-identical to any uninterrupted run; a warning says so).
 */
const RESCHEDULABLE = new Set(["epochs"]);

function comparable(c: TrainConfig): Record<string, unknown> {
  return Object.fromEntries(Object.entries(c).filter(([k]) => !RESUMABLE.has(k)));
}

function setFreeze(model: ViTModel, config: TrainConfig): void {
  const f = config.freeze;
  if (f === "none") return;
  for (const [name, v] of model.variables) {
    let frozen: boolean;
    if (f === "head-only") frozen = !name.startsWith("head.");
    else {
      const m = /^blocks\.(\d+)\./.exec(name);
      frozen = m ? Number(m[1]) < f.blocks : !(name.startsWith("head.") || name.startsWith("norm."));
    }
    (v as { trainable: boolean }).trainable = !frozen;
  }
}

async function initialState(
  config: TrainConfig,
  log: (m: string) => void,
): Promise<{ state: StateDict; source: SourceInfo }> {
  const vit = resolveConfig(modelConfig(config));
  const fresh = initStateDict(timmConfig(vit), config.seed);
  if (!config.initial_checkpoint) {
    return {
      state: fresh,
      source: {
        file: "trained from scratch by deno task train",
        arch: typeof config.model === "string" ? config.model : undefined,
      },
    };
  }
  const { manifest, state } = await loadWeights(config.initial_checkpoint);
  const source: SourceInfo = {
    ...manifest.source,
    file: `${config.initial_checkpoint} (fine-tuned by deno task train)`,
  };
  const pos = state.get("pos_embed")!;
  if (pos.shape[1] !== vit.tokens) {
    state.set("pos_embed", resamplePosEmbed(pos, vit.grid));
    source.pos_embed_resampled = { from: Math.round(Math.sqrt(pos.shape[1] - 1)), to: vit.grid };
    log(`pos_embed resampled to a ${vit.grid}×${vit.grid} grid`);
  }
  const head = state.get("head.weight");
  if (!head || head.shape[0] !== vit.num_classes) {
    // A zero head, as the ViT paper's fine-tuning (and `deno task convert --num-classes`).
    state.set("head.weight", {
      shape: [vit.num_classes, vit.embed_dim],
      data: new Float32Array(vit.num_classes * vit.embed_dim),
    });
    state.set("head.bias", { shape: [vit.num_classes], data: new Float32Array(vit.num_classes) });
    source.head_reinitialized = { num_classes: vit.num_classes, init: "zeros" };
    log(`classifier head re-initialised for ${vit.num_classes} classes`);
  }
  return { state, source };
}

/** Runs (or resumes) training as `config` says. */
export async function train(inputs: TrainInputs): Promise<TrainResult> {
  const { config, labels, preprocessing } = inputs;
  const bar = new ProgressBar(inputs.verbose ?? true);
  const backend = await initBackend((config.backend || undefined) as BackendName | undefined);
  const run = config.output;
  await Deno.mkdir(run, { recursive: true });
  const vit = timmConfig(resolveConfig(modelConfig(config)));
  const [C, H, W] = inputs.train.shape;
  if (C !== 3 || H !== vit.img_size || W !== vit.img_size) {
    throw new Error(
      `training images are [${inputs.train.shape}], the model expects [3, ${vit.img_size}, ${vit.img_size}]`,
    );
  }

  // Where to start: the newest checkpoint on --resume, else fresh or initial weights.
  const ck = config.resume ? await loadLatestCheckpoint(run) : undefined;
  if (config.resume && !ck) {
    bar.log(`resume: no checkpoint in ${run}/checkpoints, starting from the beginning`);
  }
  let trainer: TrainerState;
  let state: StateDict;
  let source: SourceInfo;
  if (ck) {
    const want = JSON.stringify(comparable(config)), had = JSON.stringify(ck.trainer.config);
    if (want !== had) {
      const a = comparable(config), b = ck.trainer.config;
      const diff = Object.keys({ ...a, ...b }).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
      const fixed = diff.filter((k) => !RESCHEDULABLE.has(k));
      if (fixed.length) {
        throw new Error(
          `resume: ${ck.dir} was trained with different options (${fixed.join(", ")}); use a new --output`,
        );
      }
      bar.log(
        `resume: ${diff.map((k) => `${k} ${JSON.stringify(b[k])} → ${JSON.stringify(a[k])}`).join(", ")}; ` +
          `the schedule is re-planned from here (not bit-identical to an uninterrupted run)`,
      );
      ck.trainer.config = a;
    }
    trainer = ck.trainer;
    state = ck.state;
    source = ck.manifest.source;
    bar.log(`resuming from ${ck.dir} (epoch ${trainer.epoch + 1}, update ${trainer.update})`);
  } else {
    ({ state, source } = await initialState(config, (m) => bar.log(m)));
    trainer = {
      epoch: 0,
      updateInEpoch: 0,
      update: 0,
      metricsLines: 0,
      elapsed: 0,
      config: comparable(config),
    };
  }
  const metrics = await MetricsLog.open(`${run}/metrics.jsonl`, ck ? trainer.metricsLines : 0);
  const model = await createViT(vit, state);
  setFreeze(model, config);
  const trainable = new Map([...model.variables].filter(([, v]) => v.trainable));
  const timmShapes = new Map(model.specs.map((s) => [s.name, s.shape]));
  const opt = new Optimizer(trainable, timmShapes, {
    opt: config.opt,
    momentum: config.momentum,
    weightDecay: config.weight_decay,
  });
  if (ck) opt.load(ck.optimizer.step, ck.optimizer.slots);
  if (!ck) {
    await metrics.append({
      type: "info",
      backend: describeBackend(backend),
      params: model.specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0),
      trainable: opt.names.length,
      vit,
      config: comparable(config),
    });
  }

  const pool = balancedSubset(inputs.train.labels, config.train_subset, mixSeed(config.seed, 0x5b5e7));
  const eff = config.batch_size * config.grad_accum_steps;
  const perEpoch = Math.floor(pool.length / eff);
  if (perEpoch < 1) {
    throw new Error(`the training set has ${pool.length} images, fewer than one effective batch (${eff})`);
  }
  const total = perEpoch * config.epochs;
  const schedule = {
    sched: config.sched,
    lr: config.lr,
    totalUpdates: total,
    warmupUpdates: Math.round(config.warmup_epochs * perEpoch),
    warmupLr: config.warmup_lr,
    minLr: config.min_lr,
    decayUpdates: Math.round(config.decay_epochs * perEpoch),
    decayRate: config.decay_rate,
  };
  const fill = preprocessing.mean.map((m, c) => (0 - m) / preprocessing.std[c]);
  const valIdx = inputs.val ? evalIndices(inputs.val.labels, config.eval_subset) : undefined;
  bar.log(
    `training ${config.epochs} epochs × ${perEpoch} updates (batch ${config.batch_size} × ${config.grad_accum_steps}) ` +
      `on ${pool.length} images, ${describeBackend(backend)}, ${opt.names.length} trainable tensors`,
  );

  const checkpoint = async () => {
    trainer.metricsLines = metrics.lines;
    await saveCheckpoint(run, `step-${String(trainer.update).padStart(8, "0")}`, {
      vit,
      state: await model.stateDict(),
      optimizer: await opt.state(),
      trainer,
      preprocessing,
      labels,
      source,
    }, config.checkpoint_keep);
  };

  let lastEval: EvalResult | undefined;
  let stopped = false;
  let updatesThisProcess = 0;
  const startedAt = performance.now();
  const startElapsed = trainer.elapsed;
  let windowLoss = 0, windowUpdates = 0, windowStart = performance.now();
  const shape4 = [config.batch_size, C, H, W] as [number, number, number, number];
  try {
    while (trainer.epoch < config.epochs && !stopped) {
      const order = permutation(pool.length, mixSeed(config.seed, trainer.epoch, 0x0de7));
      const epochStart = performance.now();
      const epochStartUpdate = trainer.updateInEpoch;
      while (trainer.updateInEpoch < perEpoch) {
        const lr = learningRate(schedule, trainer.update);
        let grads: Map<string, tf.Tensor> | undefined;
        let loss = 0;
        try {
          for (let k = 0; k < config.grad_accum_steps; k++) {
            const at = trainer.updateInEpoch * eff + k * config.batch_size;
            const ids = Array.from({ length: config.batch_size }, (_, i) => pool[order[at + i]]);
            const x = await inputs.train.images(ids);
            augmentBatch(x, shape4, ids, config.seed, trainer.epoch, {
              cropPad: config.crop_pad,
              hflip: config.hflip,
              fill,
            });
            const y = Int32Array.from(ids, (i) => inputs.train.labels[i]);
            const step = await model.lossAndDeviceGrads(x, shape4, y, { labelSmoothing: config.smoothing });
            loss += step.loss / config.grad_accum_steps;
            if (!grads) grads = step.grads;
            else {
              for (const [name, g] of step.grads) {
                const sum = tf.add(grads.get(name)!, g);
                grads.get(name)!.dispose();
                g.dispose();
                grads.set(name, sum);
              }
            }
          }
          if (config.grad_accum_steps > 1) {
            for (const [name, g] of grads!) {
              grads!.set(name, tf.mul(g, 1 / config.grad_accum_steps));
              g.dispose();
            }
          }
          const gradNorm = config.clip_grad > 0 ? await clipGradNorm(grads!, config.clip_grad) : undefined;
          opt.apply(grads!, lr);
          if (!Number.isFinite(loss)) throw new Error(`the loss became ${loss} at update ${trainer.update}`);
          windowLoss += loss;
          windowUpdates++;
          trainer.update++;
          trainer.updateInEpoch++;
          updatesThisProcess++;
          const now = performance.now();
          trainer.elapsed = startElapsed + (now - startedAt) / 1000;
          const done = trainer.updateInEpoch - epochStartUpdate;
          const imgPerSec = (done * eff) / ((now - epochStart) / 1000);
          const eta = ((total - trainer.update) * eff) / imgPerSec;
          bar.update(progressLine({
            epoch: trainer.epoch,
            epochs: config.epochs,
            done: trainer.updateInEpoch,
            total: perEpoch,
            loss,
            lr,
            imgPerSec,
            eta,
          }));
          if (
            windowUpdates >= Math.max(1, Math.min(20, Math.floor(perEpoch / 10))) ||
            trainer.updateInEpoch === perEpoch
          ) {
            await metrics.append({
              type: "train",
              epoch: trainer.epoch + trainer.updateInEpoch / perEpoch,
              update: trainer.update,
              loss: windowLoss / windowUpdates,
              lr,
              ...(gradNorm !== undefined ? { grad_norm: gradNorm } : {}),
              img_per_sec: (windowUpdates * eff) / ((now - windowStart) / 1000),
              elapsed: trainer.elapsed,
            });
            windowLoss = 0;
            windowUpdates = 0;
            windowStart = now;
          }
        } finally {
          for (const g of grads?.values() ?? []) g.dispose();
        }
        if (trainer.updateInEpoch === perEpoch) break;
        if (config.checkpoint_every > 0 && trainer.update % config.checkpoint_every === 0) await checkpoint();
        if (config.max_updates > 0 && updatesThisProcess >= config.max_updates) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      // End of epoch: evaluate, then checkpoint the start of the next epoch.
      if (inputs.val && valIdx) {
        lastEval = await evaluate(model, inputs.val, {
          indices: valIdx,
          batchSize: Math.max(config.batch_size, 100),
        });
        await metrics.append({
          type: "eval",
          epoch: trainer.epoch + 1,
          update: trainer.update,
          top1: lastEval.top1,
          top5: lastEval.top5,
          loss: lastEval.loss,
          n: lastEval.n,
          elapsed: trainer.elapsed,
        });
        bar.log(
          `epoch ${trainer.epoch + 1}: val top-1 ${(100 * lastEval.top1).toFixed(2)}% top-5 ${
            (100 * lastEval.top5).toFixed(2)
          }% ` +
            `loss ${lastEval.loss.toFixed(4)} on ${lastEval.n} images (${
              formatDuration(trainer.elapsed)
            } so far)`,
        );
      }
      trainer.epoch++;
      trainer.updateInEpoch = 0;
      await checkpoint();
      await writeFileAtomic(`${run}/curves.svg`, curvesSvg(await readMetrics(metrics.path)));
      if (config.max_updates > 0 && updatesThisProcess >= config.max_updates) stopped = true;
    }
    if (stopped && trainer.epoch < config.epochs) {
      await checkpoint();
      return { finished: false, state: trainer, lastEval };
    }
    const finalDir = `${run}/final`;
    await saveModel(finalDir, {
      config: vit,
      state: await model.stateDict(),
      preprocessing,
      labels,
      source,
      dtype: "float32",
      extra: {
        training: {
          config: comparable(config),
          epochs: config.epochs,
          updates: trainer.update,
          seconds: trainer.elapsed,
          eval: lastEval ? { top1: lastEval.top1, top5: lastEval.top5, n: lastEval.n } : undefined,
        },
      },
    });
    await writeFileAtomic(`${run}/curves.svg`, curvesSvg(await readMetrics(metrics.path)));
    bar.log(
      `done: ${trainer.update} updates in ${formatDuration(trainer.elapsed)}; final model in ${finalDir}`,
    );
    return { finished: true, state: trainer, lastEval, finalDir };
  } finally {
    opt.dispose();
    model.dispose();
  }
}
