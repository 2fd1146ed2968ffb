/**
 * What a model id may be: 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit. One rule
 * for `--model <id>=<path>`, the ids the registry serves and the names of their files in the state dir.
 *
 * @example
 * ```ts
 * MODEL_ID_RE.test("cifar10-vit"); // true
 * new RegExp(`^(${MODEL_ID_PATTERN})\\.json$`).exec("cifar10-vit.json")?.[1]; // "cifar10-vit"
 * ```
 *
 * @module
 */

/** The rule as a pattern source, to be embedded in other patterns. */
export const MODEL_ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";

/** A whole model id. */
export const MODEL_ID_RE: RegExp = new RegExp(`^${MODEL_ID_PATTERN}$`);
