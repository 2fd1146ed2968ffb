/**
 * What timm's regularisation keys cost in training throughput: the same training loop (lib/train/loop.ts,
 * plus the model EMA's update where it is on) run side by side in one process for a baseline recipe and the
 * recipe with one key on, in interleaved rounds (each starting at the next variant), so the ratios compare
 * like with like on a shared machine. Besides wall-clock img/s it counts images per CPU-second of the process
 * (all its threads), which other jobs on a loaded machine disturb far less than wall time. Used by
 * `scripts/bench_regularization.ts`.
 *
 * @module
 */
import type { ImageSet } from "../data/image_set.ts";
import {
  mergeConfig,
  modelConfig,
  trainAugment,
  type TrainConfig,
  trainEmaDecay,
  trainMixup,
} from "../train/config.ts";
import { ModelEma } from "../train/ema.ts";
import { initStateDict } from "../train/init.ts";
import { type LoopPosition, trainLoop } from "../train/loop.ts";
import { Optimizer } from "../train/optimizer.ts";
import { resolveConfig, timmConfig } from "../vit/config.ts";
import { createViT, type ViTModel } from "../vit/model.ts";
import process from "node:process";
import { median } from "./stats.ts";

/** The keys measured, each on its own over the baseline, then all together (timm-style values). */
export const REGULARIZATION_VARIANTS: Record<string, Record<string, unknown>> = {
  baseline: {},
  "mixup 0.8 + cutmix 1.0": { mixup: 0.8, cutmix: 1.0 },
  "aa rand-m9-mstd0.5-inc1": { aa: "rand-m9-mstd0.5-inc1" },
  "reprob 0.25 (pixel)": { reprob: 0.25 },
  "drop_path 0.1": { drop_path: 0.1 },
  "model_ema": { model_ema: true },
  "all of them": {
    mixup: 0.8,
    cutmix: 1.0,
    aa: "rand-m9-mstd0.5-inc1",
    reprob: 0.25,
    drop_path: 0.1,
    model_ema: true,
  },
};

/** One variant's figures. */
export interface VariantResult {
  name: string;
  /** Median training throughput over the rounds. */
  imgPerSec: number;
  /** Median over the rounds of (this variant's img/s ÷ the baseline's in the same round). */
  ratio: number;
  /** Median images per CPU-second of the process (user + system, every thread). */
  imgPerCpuSec: number;
  /** Median over the rounds of (this variant's img per CPU-second ÷ the baseline's in the same round). */
  cpuRatio: number;
}

interface Runner {
  name: string;
  config: TrainConfig;
  model: ViTModel;
  opt: Optimizer;
  ema?: ModelEma;
  position: LoopPosition;
  rates: number[];
  ratios: number[];
  cpuRates: number[];
  cpuRatios: number[];
}

/**
 * Trains `updates` updates per variant per round, for `rounds` rounds (after one untimed warm-up round), on
 * `pool` of `data`, each variant from the same fresh weights of `base`'s architecture.
 */
export async function benchRegularization(
  base: TrainConfig,
  data: ImageSet,
  pool: Int32Array,
  { updates = 3, rounds = 3, log = (_: string) => {} }: {
    updates?: number;
    rounds?: number;
    log?: (m: string) => void;
  } = {},
): Promise<VariantResult[]> {
  const vit = timmConfig(resolveConfig(modelConfig(base)));
  const state = initStateDict(vit, base.seed);
  const runners: Runner[] = [];
  try {
    for (const [name, keys] of Object.entries(REGULARIZATION_VARIANTS)) {
      const config = mergeConfig(base, keys, `variant ${name}`);
      const model = await createViT(vit, state);
      const shapes = new Map(model.specs.map((s) => [s.name, s.shape]));
      const opt = new Optimizer(new Map(model.variables), shapes, {
        opt: config.opt,
        momentum: config.momentum,
        weightDecay: config.weight_decay,
      });
      const decay = trainEmaDecay(config);
      const ema = decay === undefined ? undefined : await ModelEma.create(model, decay);
      runners.push({
        name,
        config,
        model,
        opt,
        ema,
        position: { epoch: 0, updateInEpoch: 0, update: 0 },
        rates: [],
        ratios: [],
        cpuRates: [],
        cpuRatios: [],
      });
    }
    for (let round = 0; round <= rounds; round++) {
      const rates: number[] = [], cpuRates: number[] = [];
      // Each round starts at the next variant, so no variant always runs first (that slot measured slower).
      const order = runners.map((_, i) => (i + round) % runners.length);
      for (const i of order) {
        const r = runners[i];
        const start = performance.now(), cpu = process.cpuUsage();
        await trainLoop({
          model: r.model,
          optimizer: r.opt,
          data,
          pool,
          batchSize: r.config.batch_size,
          gradAccumSteps: r.config.grad_accum_steps,
          seed: r.config.seed,
          augment: trainAugment(r.config),
          smoothing: r.config.smoothing,
          mixup: trainMixup(r.config),
          dropPath: r.config.drop_path,
          clipGrad: r.config.clip_grad,
          schedule: {
            sched: "constant",
            lr: r.config.lr,
            totalUpdates: 1e9,
            warmupUpdates: 0,
            warmupLr: 0,
            minLr: 0,
            decayUpdates: 1,
            decayRate: 1,
          },
          totalUpdates: r.position.update + updates,
          position: r.position,
          onStep: () => r.ema?.update(r.model),
        });
        const images = updates * r.config.batch_size * r.config.grad_accum_steps;
        const used = process.cpuUsage(cpu);
        const rate = images / ((performance.now() - start) / 1000);
        const cpuRate = images / ((used.user + used.system) / 1e6);
        rates[i] = rate;
        cpuRates[i] = cpuRate;
        if (round > 0) {
          r.rates.push(rate);
          r.cpuRates.push(cpuRate);
        }
      }
      if (round > 0) {
        runners.forEach((r, i) => {
          r.ratios.push(rates[i] / rates[0]);
          r.cpuRatios.push(cpuRates[i] / cpuRates[0]);
        });
      }
      log(
        `round ${round}${round === 0 ? " (warm-up)" : ""}: ${
          runners.map((r, i) => `${r.name} ${rates[i].toFixed(1)} (${cpuRates[i].toFixed(1)}/CPU-s)`).join(
            ", ",
          )
        } img/s`,
      );
    }
    return runners.map((r) => ({
      name: r.name,
      imgPerSec: median(r.rates),
      ratio: median(r.ratios),
      imgPerCpuSec: median(r.cpuRates),
      cpuRatio: median(r.cpuRatios),
    }));
  } finally {
    for (const r of runners) {
      r.opt.dispose();
      r.ema?.dispose();
      r.model.dispose();
    }
  }
}
