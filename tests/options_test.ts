/**
 * Option schemas: parsing, validation, `--help` and unknown flags of all eight tasks, README's tables; the
 * new-user path of `train` (a checkpoint without `model`) and the summarised tensor mismatch.
 */
import assert from "node:assert/strict";
import { type Command, COMMANDS } from "../scripts/_commands.ts";
import { unpadTables, withOptionTables } from "../scripts/_readme_options.ts";
import {
  helpText,
  OptionError,
  parseCommandLine,
  readCommandLine,
  resolveOptions,
  type Schema,
  schemaDefaults,
} from "../lib/util/options.ts";
import { checkpointDefaults, DEFAULTS, explicitKeys, mergeConfig, modelConfig } from "../lib/train/config.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { checkStateDict, paramSpecs } from "../lib/vit/params.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const flagName = (c: Command, key: string): string => c.style === "kebab" ? key.replaceAll("_", "-") : key;

const SCHEMA = {
  "batch-size": { type: "integer", default: 8, range: [1, Infinity], help: "batch" },
  lr: { type: "number", default: 0.1, range: [0, 1], help: "learning rate" },
  opt: { type: "string", default: "sgd", range: ["sgd", "adamw"], help: "optimizer" },
  write: { type: "boolean", default: true, help: "print only" },
  scale: { type: "numbers", nargs: true, help: "two numbers" },
  model: { type: "string", multiple: true, aliases: ["-m"], env: "X_MODELS", help: "models" },
  mode: { type: "string", bare: "on", negate: "off", help: "a mode" },
} satisfies Schema;

Deno.test("options: spellings, --no-, bare flags, nargs lists, repeats, negative numbers", () => {
  const cl = readCommandLine(SCHEMA, [
    "--batch_size",
    "4",
    "--lr=-0.5",
    "--no-write",
    "--scale",
    "0.08",
    "1",
    "-m",
    "a",
    "--model=b",
    "--mode",
  ]);
  assert.deepEqual(cl.values, {
    "batch-size": "4",
    lr: "-0.5",
    write: false,
    scale: "0.08 1",
    model: ["a", "b"],
    mode: "on",
  });
  assert.equal(readCommandLine(SCHEMA, ["--no-mode"]).values.mode, "off");
  assert.equal(readCommandLine(SCHEMA, ["--help"]).help, true);
  assert.equal(readCommandLine(SCHEMA, ["-h"]).help, true);
  const { values } = parseCommandLine(SCHEMA, ["--batch-size", "4"], {
    env: (k) => (k === "X_MODELS" ? "z" : ""),
  });
  assert.deepEqual(values, { "batch-size": 4, lr: 0.1, opt: "sgd", write: true, model: ["z"] });
  assert.deepEqual(schemaDefaults(SCHEMA), { "batch-size": 8, lr: 0.1, opt: "sgd", write: true });
});

Deno.test("options: errors name the flag or key and what was expected", () => {
  const bad: [readonly string[], RegExp][] = [
    [["--bogus"], /unknown option "--bogus"/],
    [["--no-lr"], /unknown option "--no-lr"/],
    [["-x"], /unknown option "-x"/],
    [["--lr"], /"--lr" needs a value \(a number in \[0, 1\]\)/],
    [["stray"], /unexpected argument "stray"/],
    [["--batch-size", "2.5"], /command line: "batch-size" must be an integer, got "2.5"/],
    [["--batch-size", "0"], /"batch-size" must be positive, got "0"/],
    [["--lr", "2"], /"lr" must be in \[0, 1\], got "2"/],
    [["--opt", "lamb"], /"opt" must be sgd or adamw, got "lamb"/],
    [["--write=maybe"], /"write" must be true or false, got "maybe"/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseCommandLine(SCHEMA, args),
      (e: Error) => e instanceof OptionError && re.test(e.message),
    );
  }
  assert.throws(
    () => resolveOptions(SCHEMA, { lr: "x" }, "config a.yml"),
    /config a\.yml: "lr" must be a number/,
  );
  assert.throws(
    () => resolveOptions(SCHEMA, { lrr: 1 }, "config a.yml"),
    /config a\.yml: unknown option "lrr"/,
  );
});

Deno.test("options: --help lists every option with its default", () => {
  const text = helpText("Usage: x", SCHEMA);
  for (
    const flag of [
      "--batch-size <n>",
      "--lr <x>",
      "--opt <sgd|adamw>",
      "--no-write",
      "-m, --model",
      "-h, --help",
    ]
  ) {
    assert.ok(text.includes(flag), flag);
  }
  assert.match(text, /--batch-size <n> +batch \[default 8\]/);
});

Deno.test("README's option tables are the schemas' (deno run -A scripts/_readme_options.ts)", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  for (const c of COMMANDS) {
    for (const key of Object.keys(c.schema)) {
      const flag = flagName(c, key);
      assert.ok(new RegExp(`\`--(no-)?${flag}[ \`]`).test(readme), `README lacks ${c.task}'s --${flag}`);
    }
  }
  assert.ok(
    unpadTables(withOptionTables(readme)) === unpadTables(readme),
    "README's option tables are stale: run deno run -A scripts/_readme_options.ts",
  );
});

async function run(script: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { VIT_QUIET: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("every task answers --help with exit 0 and refuses an unknown flag, naming it", async () => {
  assert.equal(COMMANDS.length, 9);
  // Two at a time: each run loads tfjs.
  const queue = [...COMMANDS];
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      const help = await run(c.script, ["--help"]);
      assert.equal(help.code, 0, `${c.task} --help: exit ${help.code}\n${help.err}`);
      assert.match(help.out, new RegExp(`Usage: deno task ${c.task}`), c.task);
      for (const key of Object.keys(c.schema)) {
        const flag = flagName(c, key);
        assert.ok(
          help.out.includes(`--${flag}`) || help.out.includes(`--no-${flag}`),
          `${c.task} --help: --${flag}`,
        );
      }
      const bad = await run(c.script, ["--no-such-flag", "1"]);
      assert.equal(bad.code, 2, `${c.task} --no-such-flag: exit ${bad.code}\n${bad.err}`);
      assert.match(bad.err, /unknown option "--no-such-flag"/, c.task);
    }
  };
  await Promise.all([worker(), worker()]);
});

Deno.test("train: initial_checkpoint without model fine-tunes the checkpoint's architecture", () => {
  const vit = { ...archConfig(MICRO_ARCH)!, num_classes: 7 };
  const yaml = { initial_checkpoint: "weights", lr: 0.01 }, cli = { "batch-size": "8" };
  const merged = mergeConfig(mergeConfig(DEFAULTS, yaml, "config c.yml"), cli, "command line");
  const c = checkpointDefaults(merged, vit, explicitKeys(yaml, cli));
  const m = modelConfig(c);
  assert.deepEqual([m.embed_dim, m.depth, m.patch_size, m.img_size, m.num_classes], [64, 2, 4, 32, 7]);
  // What the config sets wins; a named model is never replaced.
  const sized = checkpointDefaults({ ...merged, img_size: 48 }, vit, explicitKeys(yaml, { img_size: 48 }));
  assert.equal(modelConfig(sized).img_size, 48);
  assert.equal(modelConfig(sized).embed_dim, 64);
  const named = checkpointDefaults(merged, vit, explicitKeys({ ...yaml, model: "vit_base_patch16_224" }));
  assert.equal(modelConfig(named).embed_dim, 768);
});

Deno.test("a state dict of another architecture: the mismatch is summarised, not listed in full", () => {
  const base = resolveConfig(archConfig("vit_base_patch16_224")!);
  const specs = paramSpecs(resolveConfig(archConfig(MICRO_ARCH)!));
  assert.throws(() => checkStateDict(specs, formulaStateDict(base), "weights"), (e: Error) => {
    const lines = e.message.split("\n");
    assert.match(lines[0], /^weights does not match the ViT config \(\d+ problems\):$/);
    assert.ok(lines.length <= 8, `${lines.length} lines`);
    assert.match(lines.at(-1)!, /… and \d+ more$/);
    return true;
  });
});

Deno.test("a required option: unset is an OptionError naming it, --help still answers, help and README say so", () => {
  const schema = {
    out: { type: "string", required: true, metavar: "dir", help: "output folder" },
    n: { type: "integer", default: 2, help: "count" },
  } satisfies Schema;
  assert.throws(
    () => parseCommandLine(schema, ["--n", "3"]),
    (e) => e instanceof OptionError && /--out is required/.test(e.message),
  );
  assert.throws(() => parseCommandLine(schema, ["--out", ""]), /--out is required/);
  assert.equal(parseCommandLine(schema, ["--out", "x"]).values.out, "x");
  assert.equal(parseCommandLine(schema, ["--help"]).help, true);
  assert.match(helpText("Usage: t", schema), /--out <dir> +output folder \[required\]/);
});
