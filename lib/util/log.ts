/**
 * The library's lines on stderr, prefixed `vit-deno:` so they stand apart from a program's own output.
 *
 * @example
 * ```ts
 * import { notice } from "./log.ts";
 * notice("backend wasm (1 thread)"); // stderr: "vit-deno: backend wasm (1 thread)", unless VIT_QUIET=1
 * ```
 *
 * @module
 */

/** An informational line (which engine, which cache): silenced by `VIT_QUIET=1`. */
export function notice(line: string): void {
  if (Deno.env.get("VIT_QUIET") !== "1") console.error(`vit-deno: ${line}`);
}

/** A line the user should see even when quiet (a fallback that costs speed, say). */
export function warn(line: string): void {
  console.error(`vit-deno: ${line}`);
}
