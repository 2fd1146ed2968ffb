/**
 * Learning-rate schedules with timm's names (`--sched cosine|step|constant`, `--warmup-epochs`,
 * `--warmup-lr`), evaluated per optimizer update (timm's `sched_on_updates`): a linear warmup from
 * `warmup_lr` to `lr`, then the schedule over the remaining updates.
 *
 * @module
 */

/** The schedule's parameters, in updates (optimizer steps). */
export interface ScheduleOptions {
  sched: "cosine" | "step" | "constant";
  lr: number;
  /** Total optimizer updates of the run. */
  totalUpdates: number;
  /** Updates of linear warmup. */
  warmupUpdates: number;
  warmupLr: number;
  /** Floor of the cosine schedule (timm's `min_lr`). */
  minLr: number;
  /** Updates between decays of the step schedule (timm's `decay_epochs` in updates). */
  decayUpdates: number;
  /** Factor of each step decay (timm's `decay_rate`). */
  decayRate: number;
}

/** The learning rate for optimizer update `update` (0-based). */
export function learningRate(o: ScheduleOptions, update: number): number {
  if (update < o.warmupUpdates) {
    return o.warmupLr + (o.lr - o.warmupLr) * (update / o.warmupUpdates);
  }
  const t = update - o.warmupUpdates;
  const span = Math.max(1, o.totalUpdates - o.warmupUpdates);
  switch (o.sched) {
    case "constant":
      return o.lr;
    case "step":
      return o.lr * Math.pow(o.decayRate, Math.floor(t / Math.max(1, o.decayUpdates)));
    case "cosine":
      return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos(Math.PI * Math.min(1, t / span)));
  }
}
