/**
 * `metrics.jsonl`: one JSON object per line (`{"type":"train",...}` every few updates, `{"type":"eval",...}`
 * every epoch, plus `{"type":"eval_ema",...}` with `model_ema`). Lines are appended as they come; a resumed
 * run first cuts the file back to the lines its checkpoint had seen, so the file always describes one
 * consistent run.
 *
 * @module
 */

/** One metrics record (`eval_ema`: the same evaluation of the weights' EMA, with `model_ema`). */
export type MetricsRecord = Record<string, unknown> & { type: "train" | "eval" | "eval_ema" | "info" };

/** Appends records to a `metrics.jsonl` file and counts its lines. */
export class MetricsLog {
  readonly path: string;
  lines = 0;

  private constructor(path: string, lines: number) {
    this.path = path;
    this.lines = lines;
  }

  /**
   * Opens `path`, keeping only its first `keepLines` lines (all of them when undefined; none for a new run).
   */
  static async open(path: string, keepLines?: number): Promise<MetricsLog> {
    let kept: string[] = [];
    try {
      kept = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim() !== "");
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (keepLines !== undefined) kept = kept.slice(0, keepLines);
    await Deno.writeTextFile(path, kept.map((l) => l + "\n").join(""));
    return new MetricsLog(path, kept.length);
  }

  /** Appends one record. */
  async append(record: MetricsRecord): Promise<void> {
    await Deno.writeTextFile(this.path, JSON.stringify(record) + "\n", { append: true });
    this.lines++;
  }
}

/** Reads every record of a `metrics.jsonl` file. */
export async function readMetrics(path: string): Promise<MetricsRecord[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((l) => l.trim() !== "").map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      throw new Error(`${path}: line ${i + 1} is not valid JSON`);
    }
  });
}
