/**
 * The command-line front of every task (private to scripts/): parses `args` by the task's option schema,
 * answers `-h`/`--help` with the generated help and exit status 0, and turns a bad or unknown flag into
 * one line naming it and exit status 2.
 *
 * @module
 */
import { helpText, OptionError, parseCommandLine, type Schema } from "../lib/util/options.ts";

/** The resolved options and positionals; exits for `--help` (0) and bad flags (2). */
export function commandLine(
  task: string,
  usage: string,
  schema: Schema,
  args: readonly string[] = Deno.args,
  opts: { allowPositionals?: boolean; env?: (name: string) => string | undefined; epilog?: string } = {},
): { values: Record<string, unknown>; positionals: string[] } {
  try {
    const { values, positionals, help } = parseCommandLine(schema, args, opts);
    if (help) {
      console.log(helpText(usage, schema, { epilog: opts.epilog }));
      Deno.exit(0);
    }
    return { values, positionals };
  } catch (e) {
    if (!(e instanceof OptionError)) throw e;
    console.error(`${task}: ${e.message} (see deno task ${task} --help)`);
    Deno.exit(2);
  }
}

/**
 * Runs a task's `main` and exits with its status: an option error is 2, any other error one line
 * `<task>: <message>` and 1 (the stack too when `VIT_DEBUG` is set).
 */
export async function runTask(task: string, main: () => Promise<number>): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`${task}: ${(e as Error).message}`);
    if (Deno.env.get("VIT_DEBUG")) console.error(e);
    Deno.exit(e instanceof OptionError ? 2 : 1);
  }
}
