/**
 * Option schemas: each command declares its options once, as `{type, default, range, help}`, and this
 * module derives the defaults, the validation (errors name the key and what was expected), the command-line
 * parsing (`node:util`'s `parseArgs`), the `--help` text and README's option table from that declaration
 * (timm's `add_argument`, in one object).
 *
 * Command-line conventions, the same for every task: `--key value` or `--key=value`; `_` and `-` are the
 * same in a key (`--batch-size`, `--batch_size`); a boolean `--flag` is negated with `--no-flag`; `-h` /
 * `--help` asks for the help text; an unknown flag is an error that names it.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** How an option's value is read: text, a number, an integer, a switch, or a list of numbers. */
export type OptionType = "string" | "number" | "integer" | "boolean" | "numbers";

/** One option, declared once. */
export interface OptionSpec {
  type: OptionType;
  /** The value when no source sets it; absent = the option stays unset. */
  default?: unknown;
  /** Numbers: inclusive `[min, max]`. Strings: the allowed values. */
  range?: readonly [number, number] | readonly string[];
  /** One line for `--help` and README (for a switch on by default: what `--no-<key>` does). */
  help: string;
  /** The value's placeholder in `--help` (`<dir>`); derived from the type when absent. */
  metavar?: string;
  /** The default as `--help` and README show it, when it is not the literal default (`automatic`). */
  defaultText?: string;
  /** Other names of the option (`data` for `data_dir`); `-x` names a one-letter short flag. */
  aliases?: readonly string[];
  /** What `--no-<key>` sets (booleans: `false`). */
  negate?: unknown;
  /** What a bare `--key` (no value) sets, for a non-boolean option that also reads as a switch. */
  bare?: unknown;
  /** The option may be given several times; its value is then the list of values. */
  multiple?: boolean;
  /** timm's nargs lists: the words after `--key` up to the next flag are one space-separated value. */
  nargs?: boolean;
  /** The environment variable read when no flag sets it (serve's workers read their options there). */
  env?: string;
  /** A conversion after the type check; throws an Error saying what was expected (without the key). */
  parse?: (value: unknown) => unknown;
  /** Only on the command line (`--config`, `--export`), not a configuration key. */
  cliOnly?: boolean;
  /** The command cannot run without it: unset (and not `--help`), {@linkcode parseCommandLine} throws. */
  required?: boolean;
}

/** A command's options by key. */
export type Schema = Readonly<Record<string, OptionSpec>>;

/** A bad option value or an unknown option: the message names the option and what was expected. */
export class OptionError extends Error {
  override name = "OptionError";
}

/** The defaults a schema declares (options without a default are left out). */
export function schemaDefaults(schema: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(schema)) {
    if (s.default !== undefined && !s.cliOnly) out[k] = structuredClone(s.default);
  }
  return out;
}

const squash = (name: string) => name.replace(/^-+/, "").replaceAll("-", "_");

/** The schema key `name` spells (`batch-size`, `--batch_size`, an alias), or undefined. */
export function optionKey(schema: Schema, name: string): string | undefined {
  const n = squash(name);
  for (const [k, s] of Object.entries(schema)) {
    if (squash(k) === n || s.aliases?.some((a) => squash(a) === n)) return k;
  }
  return undefined;
}

function isNumberRange(r: OptionSpec["range"]): r is readonly [number, number] {
  return r !== undefined && typeof r[0] === "number";
}

function numberText(n: number): string {
  return Number.isInteger(n) || !Number.isFinite(n) ? String(n) : String(+n.toPrecision(6));
}

/** A numeric range in words: "positive", "≥ 0", "in [0, 1]"; empty without one. */
function rangeText(spec: OptionSpec): string {
  const r = spec.range;
  if (!isNumberRange(r)) return "";
  const [lo, hi] = r;
  if (hi === Infinity) {
    if ((spec.type === "integer" && lo === 1) || lo === Number.MIN_VALUE) return "positive";
    return `≥ ${numberText(lo)}`;
  }
  return `in [${numberText(lo)}, ${numberText(hi)}]`;
}

/** What `spec` expects, in words ("an integer ≥ 0", "sgd, momentum or adamw"). */
export function expected(spec: OptionSpec): string {
  const r = spec.range;
  if (r && !isNumberRange(r)) return r.length > 1 ? `${r.slice(0, -1).join(", ")} or ${r.at(-1)}` : r[0];
  const base = {
    string: "text",
    number: "a number",
    integer: "an integer",
    boolean: "true or false",
    numbers: "a list of numbers",
  }[spec.type];
  const range = rangeText(spec);
  return range ? `${base} ${range}` : base;
}

function fail(source: string, key: string, what: string, value: unknown): never {
  throw new OptionError(`${source}: "${key}" must be ${what}, got ${JSON.stringify(value)}`);
}

/**
 * One value of option `key`, from YAML, the environment or the command line (text), checked against its
 * type and range and converted; `source` opens the error ("config x.yml", "command line").
 */
export function optionValue(schema: Schema, key: string, value: unknown, source: string): unknown {
  const spec = schema[key];
  if (!spec) throw new OptionError(`${source}: unknown option "${key}"`);
  if (spec.multiple && Array.isArray(value)) {
    return value.map((v) => optionValue({ [key]: { ...spec, multiple: false } }, key, v, source));
  }
  let v = value;
  switch (spec.type) {
    case "number":
    case "integer": {
      const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
      if (typeof n !== "number" || !Number.isFinite(n) || (spec.type === "integer" && !Number.isInteger(n))) {
        fail(source, key, spec.type === "integer" ? "an integer" : "a number", value);
      }
      if (isNumberRange(spec.range) && !(n >= spec.range[0] && n <= spec.range[1])) {
        throw new OptionError(`${source}: "${key}" must be ${rangeText(spec)}, got ${JSON.stringify(value)}`);
      }
      v = n;
      break;
    }
    case "boolean":
      if (v === "true" || v === "" || v === "1" || v === "yes") v = true;
      else if (v === "false" || v === "0" || v === "no") v = false;
      if (typeof v !== "boolean" && !spec.parse) fail(source, key, "true or false", value);
      break;
    case "string":
      if (typeof v === "number" && !spec.parse) v = String(v);
      if (typeof v !== "string" && !spec.parse) fail(source, key, "a string", value);
      if (
        spec.range && !isNumberRange(spec.range) && v !== spec.default && !spec.range.includes(v as string)
      ) {
        fail(source, key, expected(spec), value);
      }
      break;
    case "numbers":
      break;
  }
  if (spec.parse) {
    try {
      v = spec.parse(v);
    } catch (e) {
      fail(source, key, (e as Error).message, value);
    }
  }
  return v;
}

/**
 * Checks and converts every pair of `raw` (keys in any spelling) over `base`; unknown keys are an error
 * (a misspelt option must not silently do something else).
 */
export function resolveOptions(
  schema: Schema,
  raw: Record<string, unknown>,
  source: string,
  base: Record<string, unknown> = schemaDefaults(schema),
): Record<string, unknown> {
  const out = { ...base };
  for (const [name, value] of Object.entries(raw)) {
    const key = optionKey(schema, name);
    if (key === undefined) throw new OptionError(`${source}: unknown option "${name}"`);
    out[key] = optionValue(schema, key, value, source);
  }
  return out;
}

/** A word that is a value, not a flag: `-` (stdout, none) and negative numbers are values. */
const isValueWord = (w: string) => !w.startsWith("-") || w === "-" || /^-[\d.]/.test(w);

/** What the command line said: raw values by schema key, the words that are not options, and `--help`. */
export interface CommandLine {
  /** Values as typed (text, `true`/`false` for switches, lists for `multiple`), by schema key. */
  values: Record<string, unknown>;
  positionals: string[];
  help: boolean;
}

/**
 * Splits `args` by `schema` with `node:util`'s `parseArgs` (strict: an unknown flag is an error naming
 * it). Values stay as typed; {@linkcode resolveOptions} checks them. Positionals are an error unless
 * `allowPositionals`.
 */
export function readCommandLine(
  schema: Schema,
  args: readonly string[],
  { allowPositionals = false }: { allowPositionals?: boolean } = {},
): CommandLine {
  // Spellings, `--no-key` and bare flags are resolved to canonical `--key=value` words first, so that
  // parseArgs sees one name per option.
  const words: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      words.push(...args.slice(i));
      break;
    }
    if (a === "-h" || a === "--help") {
      words.push("--help");
      continue;
    }
    if (isValueWord(a)) {
      words.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq >= 0 ? a.slice(0, eq) : a;
    let key = optionKey(schema, name);
    if (!a.startsWith("--") && key !== undefined && !schema[key].aliases?.includes(name)) key = undefined;
    const negated = key === undefined && name.startsWith("--no-")
      ? optionKey(schema, name.slice(5))
      : undefined;
    if (negated !== undefined) {
      const spec = schema[negated];
      const off = spec.negate ?? (spec.type === "boolean" ? false : undefined);
      if (off === undefined || eq >= 0) throw new OptionError(`unknown option "${a}"`);
      words.push(`--${negated}=${off}`);
      continue;
    }
    if (key === undefined) throw new OptionError(`unknown option "${name}"`);
    const spec = schema[key];
    const next = args[i + 1];
    const hasValue = eq >= 0 || (next !== undefined && isValueWord(next));
    if (spec.type === "boolean") words.push(eq >= 0 ? `--${key}=${a.slice(eq + 1)}` : `--${key}`);
    else if (eq >= 0) words.push(`--${key}=${a.slice(eq + 1)}`);
    else if (!hasValue && spec.bare !== undefined) words.push(`--${key}=${spec.bare}`);
    else if (!hasValue) throw new OptionError(`option "--${key}" needs a value (${expected(spec)})`);
    else {
      // A value word is taken as is, even when it starts with "-" (a negative number).
      words.push(`--${key}=${next}`);
      i++;
      if (spec.nargs) {
        const list = [next];
        while (i + 1 < args.length && isValueWord(args[i + 1])) {
          list.push(args[++i]);
        }
        words[words.length - 1] = `--${key}=${list.join(" ")}`;
      }
    }
  }
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    help: { type: "boolean" },
  };
  for (const [k, s] of Object.entries(schema)) {
    // Booleans are strings here too when given as `--key=value`, so `--resume=false` reads as written.
    options[k] = { type: s.type === "boolean" ? "boolean" : "string", multiple: s.multiple ?? false };
  }
  const boolWithValue = words.map((w) => {
    const m = /^--([^=]+)=(.*)$/s.exec(w);
    return m && schema[m[1]]?.type === "boolean" ? { key: m[1], value: m[2] } : undefined;
  });
  const values: Record<string, unknown> = {};
  for (const b of boolWithValue) {
    if (b) values[b.key] = b.value === "true" ? true : b.value === "false" ? false : b.value;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: words.filter((_, i) => !boolWithValue[i]),
      options,
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    throw new OptionError((e as Error).message);
  }
  const { help, ...rest } = parsed.values as Record<string, unknown>;
  Object.assign(values, rest);
  if (!allowPositionals && parsed.positionals.length && !help) {
    throw new OptionError(`unexpected argument "${parsed.positionals[0]}" (options are --key value)`);
  }
  return { values, positionals: parsed.positionals, help: help === true };
}

/**
 * The command line resolved over the defaults and, for options that name one, the environment: what most
 * commands need in one call. `--help` returns `help: true` with the defaults.
 */
export function parseCommandLine(
  schema: Schema,
  args: readonly string[],
  opts: { allowPositionals?: boolean; env?: (name: string) => string | undefined } = {},
): { values: Record<string, unknown>; positionals: string[]; help: boolean } {
  const cl = readCommandLine(schema, args, opts);
  const base = schemaDefaults(schema);
  for (const [k, s] of Object.entries(schema)) {
    const v = s.env ? opts.env?.(s.env) : undefined;
    // A repeatable option's variable is a comma-separated list.
    const value = s.multiple ? v?.split(",").map((x) => x.trim()).filter(Boolean) : v;
    if (value !== undefined && value.length) base[k] = optionValue(schema, k, value, `environment ${s.env}`);
  }
  const values = resolveOptions(schema, cl.values, "command line", base);
  if (!cl.help) {
    for (const [k, s] of Object.entries(schema)) {
      if (s.required && (values[k] === undefined || values[k] === "")) {
        throw new OptionError(`--${k.replaceAll("_", "-")} is required`);
      }
    }
  }
  return { values, positionals: cl.positionals, help: cl.help };
}

function flagOf(key: string, spec: OptionSpec, style: "kebab" | "snake"): string {
  const name = style === "kebab" ? key.replaceAll("_", "-") : key;
  // A switch that is on by default is documented by how to turn it off.
  if (spec.type === "boolean") return spec.default === true ? `--no-${name}` : `--${name}`;
  const meta = spec.metavar ??
    (spec.range && !isNumberRange(spec.range)
      ? spec.range.join("|")
      : { string: "text", number: "x", integer: "n", numbers: "x y", boolean: "" }[spec.type]);
  return `--${name} <${meta}>`;
}

function defaultOf(spec: OptionSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  const d = spec.default;
  if (d === undefined || d === "" || typeof d === "boolean") return "";
  if (Array.isArray(d)) return d.join(" ");
  if (typeof d === "object") return JSON.stringify(d);
  return String(d);
}

const HELP_COLUMNS = 110;

function wrap(text: string, columns: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > columns) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line];
}

/** The `--help` text: the usage line(s), then one line per option with its default. */
export function helpText(
  usage: string,
  schema: Schema,
  { style = "kebab", epilog }: { style?: "kebab" | "snake"; epilog?: string } = {},
): string {
  const rows = Object.entries(schema).map(([k, s]) => {
    const short = s.aliases?.find((a) => /^-\w$/.test(a));
    return [`${short ? `${short}, ` : ""}${flagOf(k, s, style)}`, s, defaultOf(s)] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([f]) => f.length)) + 2);
  const lines = [usage, "", "Options:"];
  const indent = " ".repeat(width + 2);
  for (const [flag, s, d] of rows) {
    const extra = [s.required ? "required" : "", d ? `default ${d}` : "", s.env ? `env ${s.env}` : ""]
      .filter(Boolean).join("; ");
    const text = wrap(`${s.help}${extra ? ` [${extra}]` : ""}`, HELP_COLUMNS - indent.length).join(
      `\n${indent}`,
    );
    lines.push(flag.length + 2 > width ? `  ${flag}\n${indent}${text}` : `  ${flag.padEnd(width)}${text}`);
  }
  lines.push(`  ${"-h, --help".padEnd(width)}this text`);
  if (epilog) lines.push("", epilog);
  return lines.join("\n");
}

/** README's option table of a command (generated; tests/options_test.ts checks README against it). */
export function markdownOptions(
  schema: Schema,
  { style = "kebab" }: { style?: "kebab" | "snake" } = {},
): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  const lines = ["| option | meaning | default |", "| --- | --- | --- |"];
  for (const [k, s] of Object.entries(schema)) {
    const d = defaultOf(s);
    const env = s.env ? ` (env \`${s.env}\`)` : "";
    const dflt = s.required ? "required" : d ? `\`${esc(d)}\`` : "";
    lines.push(`| \`${esc(flagOf(k, s, style))}\` | ${esc(s.help)}${env} | ${dflt} |`);
  }
  return lines.join("\n");
}
