/**
 * A training run (`deno task train`): builds (or resumes) the model and optimizer, runs the shared training
 * loop (loop.ts: seeded data order, augmentation, gradient accumulation, clipping, the lr schedule) over the
 * configured epochs, evaluates every epoch, logs `metrics.jsonl` and the curves, checkpoints atomically, and
 * writes the final model (with `model_ema`, the EMA of the weights, evaluated every epoch beside the raw
 * weights, checkpointed, and exported in their place). Everything random is a function of the seed and the
 * position in the run, and checkpoints hold every piece of state, so a run killed at any point and resumed
 * ends with the same weights as an uninterrupted one.
 *
 * @module
 */
import { describeBackend, type EngineName, initBackend } from "../backend/backend.ts";
import { resolveConfig, timmConfig } from "../vit/config.ts";
import { checkImageShape, createViT } from "../vit/model.ts";
import { checkStateDict, type ParamSpec, paramSpecs, type StateDict } from "../vit/params.ts";
import { loadWeights } from "../weights/load.ts";
import type { Preprocessing, SourceInfo } from "../weights/manifest.ts";
import { adaptForFineTuning } from "../weights/adapt.ts";
import { saveModel } from "../weights/shards.ts";
import {
  EMA_FILE,
  loadLatestCheckpoint,
  readEma,
  saveCheckpoint,
  type TrainerState,
  type TrainingRecord,
} from "./checkpoint.ts";
import { modelConfig, type TrainConfig, trainEmaDecay, trainRecipe } from "./config.ts";
import { ModelEma } from "./ema.ts";
import { type EvalResult, evaluate } from "./evaluate.ts";
import { setUpTraining } from "./freeze.ts";
import { classBalancedSubset } from "../data/dataset.ts";
import type { ImageSet } from "../data/image_set.ts";
import { initStateDict } from "./init.ts";
import { MetricsLog, readMetrics } from "./metrics.ts";
import { trainLoop, updatesPerEpoch } from "./loop.ts";
import { curvesSvg } from "./plot.ts";
import { formatDuration, ProgressBar, progressLine } from "./progress.ts";
import { mixSeed } from "./rng.ts";
import { writeFileAtomic } from "../util/fs.ts";

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
  /** The last evaluation, when there was one (of the EMA weights with `model_ema`, which are exported). */
  lastEval?: EvalResult;
  /** The final model folder (float32 weights; the EMA's with `model_ema`), when finished. */
  finalDir?: string;
  /**
   * The checkpoint taken where the run stopped (its model folder holds the raw weights), when not finished.
   */
  checkpointDir?: string;
}

/** Options that may differ between a run and its resumption. */
const RESUMABLE = new Set([
  "resume",
  "max_updates",
  "backend",
  "output",
  "checkpoint_every",
  "checkpoint_keep",
  // The cache changes how the frozen prefix is computed, not what: a resume may toggle it.
  "frozen_cache",
  "frozen_cache_mb",
  "frozen_cache_dir",
]);

/**
 * Options a resume may change knowingly: the length of the run (the schedule is then re-planned from the
 * current update on, so the result is no longer bit-identical to any uninterrupted run; a warning says so).
 */
const RESCHEDULABLE = new Set(["epochs"]);

function comparable(c: TrainConfig): Record<string, unknown> {
  return Object.fromEntries(Object.entries(c).filter(([k]) => !RESUMABLE.has(k)));
}

async function initialState(
  config: TrainConfig,
  log: (m: string) => void,
): Promise<{ state: StateDict; source: SourceInfo; ema?: StateDict }> {
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
  const adapted = adaptForFineTuning(state, vit, { fresh });
  Object.assign(source, adapted.changes);
  if (adapted.changes.patch_embed_resampled) {
    const { from, to } = adapted.changes.patch_embed_resampled;
    log(`patch embedding resampled from ${from}×${from} to ${to}×${to} kernels`);
  }
  if (adapted.changes.pos_embed_resampled) log(`pos_embed resampled to a ${vit.grid}×${vit.grid} grid`);
  if (adapted.changes.head_reinitialized) {
    log(`classifier head re-initialised for ${vit.num_classes} classes`);
  }
  if (adapted.changes.blocks_added) {
    const { from, to } = adapted.changes.blocks_added;
    log(`blocks ${from}…${to - 1} added as identities (the network computes what the checkpoint did)`);
  }
  return { state: adapted.state, source, ...await continuedEma(config, paramSpecs(vit), log) };
}

/**
 * A start_epoch continuation with model_ema carries on the EMA that a stopped run's export keeps beside its
 * weights, when it fits them; any other run starts its EMA at its initial weights (as timm's).
 */
async function continuedEma(
  config: TrainConfig,
  specs: ParamSpec[],
  log: (m: string) => void,
): Promise<{ ema?: StateDict }> {
  if (!config.initial_checkpoint || !config.start_epoch || trainEmaDecay(config) === undefined) return {};
  const ema = await readEma(config.initial_checkpoint);
  if (!ema) return {};
  const path = `${config.initial_checkpoint}/${EMA_FILE}`;
  try {
    checkStateDict(specs, ema, path);
  } catch (e) {
    log(`${(e as Error).message}; the EMA starts at the initial weights`);
    return {};
  }
  log(`the EMA goes on from ${path}`);
  return { ema };
}

/** Runs (or resumes) training as `config` says. */
export async function train(inputs: TrainInputs): Promise<TrainResult> {
  const { config, labels, preprocessing } = inputs;
  const bar = new ProgressBar(inputs.verbose ?? true);
  const backend = await initBackend((config.backend || undefined) as EngineName | undefined);
  const run = config.output;
  await Deno.mkdir(run, { recursive: true });
  const vit = timmConfig(resolveConfig(modelConfig(config)));
  checkImageShape(inputs.train.shape, vit, "training images");

  // Where to start: the newest checkpoint on --resume, else fresh or initial weights.
  const ck = config.resume ? await loadLatestCheckpoint(run) : undefined;
  if (config.resume && !ck) {
    bar.log(`resume: no checkpoint in ${run}/checkpoints, starting from the beginning`);
  }
  let trainer: TrainerState;
  let state: StateDict;
  let source: SourceInfo;
  let initialEma: StateDict | undefined;
  if (ck) {
    // start_epoch places a fresh run; a resume starts where its checkpoint is, whatever it says, and keeps
    // the start_epoch its run was placed with.
    const placed = ({ start_epoch: _, ...rest }: Record<string, unknown>) => rest;
    const a = placed(comparable(config)), b = placed(ck.trainer.config);
    const startEpoch = ck.trainer.config.start_epoch;
    if (config.start_epoch !== undefined && config.start_epoch !== startEpoch) {
      bar.log(
        `resume: start_epoch ${config.start_epoch} ignored; the run goes on from its checkpoint ` +
          `(epoch ${ck.trainer.epoch + 1}, update ${ck.trainer.update})`,
      );
    }
    if (JSON.stringify(a) !== JSON.stringify(b)) {
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
      ck.trainer.config = { ...a, ...(startEpoch !== undefined ? { start_epoch: startEpoch } : {}) };
    }
    trainer = ck.trainer;
    state = ck.state;
    source = ck.manifest.source;
    bar.log(`resuming from ${ck.dir} (epoch ${trainer.epoch + 1}, update ${trainer.update})`);
  } else {
    ({ state, source, ema: initialEma } = await initialState(config, (m) => bar.log(m)));
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
  const recipe = trainRecipe(config);
  const { optimizer: opt, prefixCache, note } = await setUpTraining(model, {
    freeze: config.freeze,
    optimizer: { opt: config.opt, momentum: config.momentum, weightDecay: config.weight_decay },
    augment: recipe.augment,
    ...(recipe.varies ? { varies: recipe.varies } : {}),
    cache: config.frozen_cache && {
      memoryBytes: config.frozen_cache_mb * 2 ** 20,
      ...(config.frozen_cache_dir ? { dir: config.frozen_cache_dir } : {}),
    },
  });
  if (note) bar.log(note);
  if (ck) opt.load(ck.optimizer.step, ck.optimizer.slots);
  const emaDecay = trainEmaDecay(config);
  if (ck && emaDecay !== undefined && !ck.ema) {
    throw new Error(`resume: ${ck.dir} has no ${EMA_FILE}, but model_ema is on`);
  }
  const ema = emaDecay === undefined
    ? undefined
    : await ModelEma.create(model, emaDecay, ck?.ema ?? initialEma);
  if (!ck) {
    await metrics.append({
      type: "info",
      backend: describeBackend(backend),
      params: model.specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0),
      trainable: opt.names.length,
      vit,
      config: comparable(config),
      ...(ema ? { exported_weights: `EMA of the weights (model_ema, decay ${ema.decay})` } : {}),
    });
  }

  const pool = classBalancedSubset(inputs.train.labels, config.train_subset, {
    seed: mixSeed(config.seed, 0x5b5e7),
  });
  const eff = config.batch_size * config.grad_accum_steps;
  const perEpoch = updatesPerEpoch(pool.length, config.batch_size, config.grad_accum_steps);
  const total = perEpoch * config.epochs;
  if (!ck && config.start_epoch) {
    // timm's --start-epoch: the schedule and the data order pick up at that epoch.
    trainer.epoch = config.start_epoch;
    trainer.update = config.start_epoch * perEpoch;
    const from = config.start_epoch + 1;
    bar.log(`starting at epoch ${from} of ${config.epochs} (start_epoch), update ${trainer.update}`);
  }
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
  const valIdx = inputs.val ? classBalancedSubset(inputs.val.labels, config.eval_subset) : undefined;
  bar.log(
    `training ${config.epochs} epochs × ${perEpoch} updates (batch ${config.batch_size} × ${config.grad_accum_steps}) ` +
      `on ${pool.length} images, ${describeBackend(backend)}, ${opt.names.length} trainable tensors`,
  );

  // A stop at an epoch's end (or at a checkpoint_every update) finds its checkpoint already written.
  let lastCheckpoint: { update: number; dir: string } | undefined;
  const checkpoint = async () => {
    if (lastCheckpoint?.update === trainer.update) return lastCheckpoint.dir;
    trainer.metricsLines = metrics.lines;
    // Before this process's first step there is nothing new to record.
    if (updatesThisProcess > 0) trainer.trainWorkers = model.stepWorkers;
    const dir = await saveCheckpoint(run, `step-${String(trainer.update).padStart(8, "0")}`, {
      vit,
      state: await model.stateDict(),
      optimizer: await opt.state(),
      trainer,
      preprocessing,
      labels,
      source,
      ...(ema ? { ema: await ema.stateDict() } : {}),
    }, config.checkpoint_keep);
    lastCheckpoint = { update: trainer.update, dir };
    return dir;
  };

  let lastEval: EvalResult | undefined;
  let updatesThisProcess = 0;
  const startedAt = performance.now();
  // Known once a step has run: how many isolates it was cut for (the cores, or fewer where memory is short).
  const recordedWorkers = ck?.trainer.trainWorkers;
  const checkResumedWorkers = () => {
    if (recordedWorkers === undefined || recordedWorkers === model.stepWorkers) return;
    bar.log(
      `resume: the steps before ran on ${recordedWorkers} data-parallel workers, now on ${model.stepWorkers}: ` +
        `each batch is cut differently, so the run is no longer bit-identical to an uninterrupted one ` +
        `(VIT_TRAIN_WORKERS=${recordedWorkers} keeps it so)`,
    );
  };
  const startElapsed = trainer.elapsed;
  let windowLoss = 0, windowUpdates = 0, windowStart = performance.now();
  let epochStart = performance.now(), epochStartUpdate = trainer.updateInEpoch;
  const limitReached = () => config.max_updates > 0 && updatesThisProcess >= config.max_updates;
  try {
    const { stopped } = await trainLoop({
      model,
      optimizer: opt,
      data: inputs.train,
      pool,
      batchSize: config.batch_size,
      gradAccumSteps: config.grad_accum_steps,
      seed: config.seed,
      augment: recipe.augment,
      ...(prefixCache ? { prefixCache } : {}),
      smoothing: recipe.smoothing,
      mixup: recipe.mixup,
      dropPath: recipe.dropPath,
      clipGrad: config.clip_grad,
      schedule,
      totalUpdates: total,
      position: trainer,
      onStep: async (s) => {
        ema?.update(model);
        if (updatesThisProcess++ === 0) checkResumedWorkers();
        const now = performance.now();
        trainer.elapsed = startElapsed + (now - startedAt) / 1000;
        windowLoss += s.loss;
        windowUpdates++;
        const imgPerSec = ((s.updateInEpoch - epochStartUpdate) * eff) / ((now - epochStart) / 1000);
        const eta = ((total - s.update) * eff) / imgPerSec;
        bar.update(progressLine({
          epoch: s.epoch,
          epochs: config.epochs,
          done: s.updateInEpoch,
          total: perEpoch,
          loss: s.loss,
          lr: s.lr,
          imgPerSec,
          eta,
        }));
        const epochDone = s.updateInEpoch === perEpoch;
        if (windowUpdates >= Math.max(1, Math.min(20, Math.floor(perEpoch / 10))) || epochDone) {
          await metrics.append({
            type: "train",
            epoch: s.epoch + s.updateInEpoch / perEpoch,
            update: s.update,
            loss: windowLoss / windowUpdates,
            lr: s.lr,
            ...(s.gradNorm !== undefined ? { grad_norm: s.gradNorm } : {}),
            img_per_sec: (windowUpdates * eff) / ((now - windowStart) / 1000),
            elapsed: trainer.elapsed,
          });
          windowLoss = 0;
          windowUpdates = 0;
          windowStart = now;
        }
        // The end of an epoch is handled (evaluated, checkpointed) in onEpochEnd.
        if (epochDone) return false;
        if (config.checkpoint_every > 0 && s.update % config.checkpoint_every === 0) await checkpoint();
        return limitReached();
      },
      // The position already points at the next epoch, so the checkpoint resumes there.
      onEpochEnd: async (epoch) => {
        if (inputs.val && valIdx) {
          const opts = { indices: valIdx, batchSize: Math.max(config.batch_size, 100) };
          const raw = await evaluate(model, inputs.val, opts);
          const averaged = ema ? await evaluate(ema.model, inputs.val, opts) : undefined;
          // With model_ema the EMA is what gets exported, so it is the run's reported figure (as timm's).
          lastEval = averaged ?? raw;
          for (const [type, r] of [["eval", raw], ["eval_ema", averaged]] as const) {
            if (!r) continue;
            await metrics.append({
              type,
              epoch: epoch + 1,
              update: trainer.update,
              top1: r.top1,
              top5: r.top5,
              loss: r.loss,
              n: r.n,
              elapsed: trainer.elapsed,
            });
            bar.log(
              `epoch ${epoch + 1}: ${type === "eval" ? "val" : "EMA val"} top-1 ${
                (100 * r.top1).toFixed(2)
              }% ` +
                `top-5 ${(100 * r.top5).toFixed(2)}% loss ${r.loss.toFixed(4)} on ${r.n} images (${
                  formatDuration(trainer.elapsed)
                } so far)`,
            );
          }
        }
        await checkpoint();
        await writeFileAtomic(`${run}/curves.svg`, curvesSvg(await readMetrics(metrics.path)));
        epochStart = performance.now();
        epochStartUpdate = 0;
        return limitReached();
      },
    });
    if (stopped && trainer.epoch < config.epochs) {
      return { finished: false, state: trainer, lastEval, checkpointDir: await checkpoint() };
    }
    const finalDir = `${run}/final`;
    await saveModel(finalDir, {
      config: vit,
      state: ema ? await ema.stateDict() : await model.stateDict(),
      preprocessing,
      labels,
      source,
      dtype: "float32",
      extra: {
        training: {
          config: trainer.config,
          epochs: config.epochs,
          updates: trainer.update,
          seconds: trainer.elapsed,
          eval: lastEval ? { top1: lastEval.top1, top5: lastEval.top5, n: lastEval.n } : undefined,
          ...(ema ? { weights: `EMA of the weights (decay ${ema.decay})` } : {}),
        } satisfies TrainingRecord,
      },
    });
    await writeFileAtomic(`${run}/curves.svg`, curvesSvg(await readMetrics(metrics.path)));
    bar.log(
      `done: ${trainer.update} updates in ${formatDuration(trainer.elapsed)}; final model in ${finalDir}`,
    );
    return { finished: true, state: trainer, lastEval, finalDir };
  } finally {
    opt.dispose();
    ema?.dispose();
    model.dispose();
  }
}
