/**
 * The nine tasks and their option schemas (private to scripts/ and tests): what README's generated option
 * tables and tests/options_test.ts walk over.
 *
 * @module
 */
import { SERVE_OPTIONS } from "../lib/serve/options.ts";
import { TRAIN_CLI } from "../lib/train/config.ts";
import type { Schema } from "../lib/util/options.ts";
import { BENCH_OPTIONS } from "./bench.ts";
import { CLASSIFY_OPTIONS } from "./classify.ts";
import { CONVERT_OPTIONS } from "./convert.ts";
import { DATA_OPTIONS } from "./data.ts";
import { EVAL_OPTIONS } from "./eval.ts";
import { EXPORT_OPTIONS } from "./export.ts";
import { LOADTEST_OPTIONS } from "./loadtest.ts";

/** A task of deno.json and its schema; `style` is how README spells its flags (train: timm's underscores). */
export interface Command {
  task: string;
  script: string;
  schema: Schema;
  style: "kebab" | "snake";
}

/** Every task with options, in README's order. */
export const COMMANDS: readonly Command[] = [
  { task: "train", script: "scripts/train.ts", schema: TRAIN_CLI, style: "snake" },
  { task: "eval", script: "scripts/eval.ts", schema: EVAL_OPTIONS, style: "kebab" },
  { task: "serve", script: "scripts/serve.ts", schema: SERVE_OPTIONS, style: "kebab" },
  { task: "classify", script: "scripts/classify.ts", schema: CLASSIFY_OPTIONS, style: "kebab" },
  { task: "convert", script: "scripts/convert.ts", schema: CONVERT_OPTIONS, style: "kebab" },
  { task: "export", script: "scripts/export.ts", schema: EXPORT_OPTIONS, style: "kebab" },
  { task: "data", script: "scripts/data.ts", schema: DATA_OPTIONS, style: "kebab" },
  { task: "bench", script: "scripts/bench.ts", schema: BENCH_OPTIONS, style: "kebab" },
  { task: "loadtest", script: "scripts/loadtest.ts", schema: LOADTEST_OPTIONS, style: "kebab" },
];
