/**
 * `deno run -A scripts/_readme_options.ts [--check]`: writes README's option tables (the blocks between
 * `<!-- options:<task> -->` and `<!-- /options:<task> -->`) from the tasks' schemas; `--check` only says
 * whether README is up to date (exit 1 when not). tests/options_test.ts runs the check.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { markdownOptions } from "../lib/util/options.ts";
import { COMMANDS } from "./_commands.ts";

/** README with every task's block regenerated; throws when a block's markers are missing. */
export function withOptionTables(readme: string): string {
  let text = readme;
  for (const c of COMMANDS) {
    const open = `<!-- options:${c.task} -->`, close = `<!-- /options:${c.task} -->`;
    const a = text.indexOf(open), b = text.indexOf(close);
    if (a < 0 || b < a) throw new Error(`README.md has no ${open} … ${close} block`);
    text = text.slice(0, a + open.length) + "\n\n" + markdownOptions(c.schema, { style: c.style }) + "\n\n" +
      text.slice(b);
  }
  return text;
}

/** Markdown tables without their alignment padding (what `deno fmt` adds), to compare by content. */
export function unpadTables(text: string): string {
  return text.split("\n").map((l) =>
    l.startsWith("|") ? l.replace(/ *\| */g, "|").replace(/\|-{3,}(?=\|)/g, "|---") : l
  ).join("\n");
}

if (import.meta.main) {
  const path = fileURLToPath(new URL("../README.md", import.meta.url));
  const readme = await Deno.readTextFile(path);
  const next = withOptionTables(readme);
  const same = unpadTables(next) === unpadTables(readme);
  if (Deno.args.includes("--check")) {
    console.log(same ? "README's option tables are up to date" : "README's option tables are stale");
    Deno.exit(same ? 0 : 1);
  }
  if (!same) {
    await Deno.writeTextFile(path, next);
    await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", path] }).output();
  }
  console.log(same ? "README's option tables were up to date" : "README's option tables rewritten");
}
