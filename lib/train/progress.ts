/**
 * A one-line progress bar for training (loss, lr, img/s, ETA). On a terminal it redraws in place; otherwise
 * (logs, nohup) it prints a plain line at most every `intervalMs`.
 *
 * @module
 */

/** Formats seconds as `1h02m`, `3m05s` or `12s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** The progress line. */
export function progressLine(
  p: {
    epoch: number;
    epochs: number;
    done: number;
    total: number;
    loss: number;
    lr: number;
    imgPerSec: number;
    eta: number;
  },
  width = 24,
): string {
  const frac = p.total ? p.done / p.total : 0;
  const fill = Math.round(frac * width);
  const bar = "█".repeat(fill) + "░".repeat(width - fill);
  return `epoch ${p.epoch + 1}/${p.epochs} ${bar} ${p.done}/${p.total} loss ${p.loss.toFixed(4)} ` +
    `lr ${p.lr.toExponential(2)} ${p.imgPerSec.toFixed(1)} img/s ETA ${formatDuration(p.eta)}`;
}

/** Writes progress lines to stderr. */
export class ProgressBar {
  readonly #tty = Deno.stderr.isTerminal();
  #last = 0;
  readonly intervalMs: number;
  readonly enabled: boolean;

  constructor(enabled = true, intervalMs = 15000) {
    this.enabled = enabled;
    this.intervalMs = intervalMs;
  }

  /** Shows a line (throttled when not on a terminal unless `force`). */
  update(line: string, force = false): void {
    if (!this.enabled) return;
    const now = performance.now();
    const enc = new TextEncoder();
    if (this.#tty) {
      Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}`));
    } else if (force || now - this.#last >= this.intervalMs) {
      this.#last = now;
      Deno.stderr.writeSync(enc.encode(`${new Date().toISOString().slice(11, 19)} ${line}\n`));
    }
  }

  /** Prints a message on its own line. */
  log(message: string): void {
    if (!this.enabled) return;
    const enc = new TextEncoder();
    Deno.stderr.writeSync(enc.encode(this.#tty ? `\r\x1b[2K${message}\n` : `${message}\n`));
  }
}
