/**
 * Prometheus metrics, kept in process and rendered in the text exposition format (version 0.0.4): counters,
 * gauges and histograms with labels. Small on purpose: the service needs a handful of series, not a client
 * library.
 *
 * @module
 */

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  const escape = (v: string) => v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
  return `{${keys.map((k) => `${k}="${escape(labels[k])}"`).join(",")}}`;
}

function withLabel(key: string, extra: string): string {
  return key === "" ? `{${extra}}` : `${key.slice(0, -1)},${extra}}`;
}

function fmt(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return Number.isNaN(n) ? "NaN" : String(n);
}

/** A monotonically increasing count per label set. */
export class Counter {
  readonly #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}

  /** Adds `by` (1 by default) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  /** The current value of one series (0 when never incremented). */
  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join("\n");
  }
}

/** A value that goes up and down, set directly or read from a callback at render time. */
export class Gauge {
  readonly #values = new Map<string, number>();
  readonly #collect?: () => Array<[Labels, number]>;
  constructor(readonly name: string, readonly help: string, collect?: () => Array<[Labels, number]>) {
    this.#collect = collect;
  }

  set(labels: Labels, value: number): void {
    this.#values.set(labelKey(labels), value);
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    const values = new Map(this.#values);
    for (const [labels, v] of this.#collect?.() ?? []) values.set(labelKey(labels), v);
    for (const [k, v] of values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join("\n");
  }
}

/** Observations bucketed by upper bound, with their sum and count, per label set. */
export class Histogram {
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {}

  observe(labels: Labels, value: number): void {
    const k = labelKey(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  /** Number of observations of one series. */
  count(labels: Labels = {}): number {
    return this.#series.get(labelKey(labels))?.count ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.#series) {
      this.buckets.forEach((b, i) =>
        lines.push(`${this.name}_bucket${withLabel(k, `le="${fmt(b)}"`)} ${s.counts[i]}`)
      );
      lines.push(`${this.name}_bucket${withLabel(k, 'le="+Inf"')} ${s.count}`);
      lines.push(`${this.name}_sum${k} ${fmt(s.sum)}`);
      lines.push(`${this.name}_count${k} ${s.count}`);
    }
    return lines.join("\n");
  }
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128];

/** Every metric the service exports. Gauges whose value lives elsewhere read it through callbacks. */
export class ServeMetrics {
  readonly requests = new Counter("vit_http_requests_total", "HTTP requests by route, method and status.");
  readonly latency = new Histogram(
    "vit_http_request_duration_seconds",
    "HTTP request latency by route.",
    LATENCY_BUCKETS,
  );
  readonly images = new Counter("vit_classified_images_total", "Images classified, by model.");
  readonly batchSize = new Histogram(
    "vit_inference_batch_size",
    "Images per inference batch.",
    BATCH_BUCKETS,
  );
  readonly inferSeconds = new Histogram(
    "vit_inference_batch_seconds",
    "Device time of one inference batch.",
    LATENCY_BUCKETS,
  );
  readonly rejected = new Counter("vit_rejected_total", "Requests refused by a limit, by reason.");
  readonly trainSteps = new Counter("vit_finetune_steps_total", "Fine-tuning optimizer steps run.");
  readonly deviceSeconds = new Counter("vit_device_busy_seconds_total", "Device time by job kind.");
  readonly #gauges: Gauge[] = [];

  /** Adds a gauge read at render time. */
  gauge(name: string, help: string, collect: () => Array<[Labels, number]>): void {
    this.#gauges.push(new Gauge(name, help, collect));
  }

  /** The whole exposition, as served at `GET /metrics`. */
  render(): string {
    const all = [
      this.requests,
      this.latency,
      this.images,
      this.batchSize,
      this.inferSeconds,
      this.rejected,
      this.trainSteps,
      this.deviceSeconds,
      ...this.#gauges,
    ];
    return all.map((m) => m.render()).join("\n") + "\n";
  }
}
