/**
 * GET /metrics: Prometheus text from prom-client, one registry per server (several servers in one process
 * keep their own counts). Gauges that mirror the engine's state are read when scraped.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { EngineEvents, EngineStats } from "./engine.js";

export class Metrics implements EngineEvents {
  readonly registry = new Registry();
  readonly requests: Counter<"endpoint" | "status">;
  private readonly prompt: Counter;
  private readonly cached: Counter;
  private readonly generated: Counter;
  private readonly stepSeconds: Histogram;
  private readonly rate: Gauge;
  /** Tokens and seconds of the recent decode steps, for the tokens/s gauge. */
  private window: { tokens: number; seconds: number; at: number }[] = [];

  constructor(stats: () => EngineStats | null) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "kvslim_requests_total",
      help: "HTTP requests answered, by endpoint and status code",
      labelNames: ["endpoint", "status"],
      registers,
    });
    this.prompt = new Counter({
      name: "kvslim_prompt_tokens_total",
      help: "Prompt tokens of started requests",
      registers,
    });
    this.cached = new Counter({
      name: "kvslim_prompt_tokens_cached_total",
      help: "Prompt tokens taken from a kept conversation instead of computed",
      registers,
    });
    this.generated = new Counter({ name: "kvslim_generated_tokens_total", help: "Tokens generated", registers });
    this.stepSeconds = new Histogram({
      name: "kvslim_decode_step_seconds",
      help: "Time of one batched decode step (all running sequences)",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.rate = new Gauge({
      name: "kvslim_decode_tokens_per_second",
      help: "Tokens generated per second of decode steps over the last 10 s",
      registers,
      collect: () => {
        this.prune();
        const tokens = this.window.reduce((a, w) => a + w.tokens, 0);
        const seconds = this.window.reduce((a, w) => a + w.seconds, 0);
        this.rate.set(seconds > 0 ? tokens / seconds : 0);
      },
    });
    const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = stats();
          this.set(s === null ? 0 : read(s));
        },
      });
    gauge("kvslim_running_requests", "Requests prefilling or decoding", (s) => s.active);
    gauge("kvslim_queued_requests", "Requests waiting for room to start", (s) => s.waiting);
    gauge("kvslim_kept_sessions", "Finished conversations kept for prompt-prefix reuse", (s) => s.kept);
    gauge(
      "kvslim_kv_bytes_in_use",
      "KV cache bytes taken from the pool (running and kept sessions)",
      (s) => s.kvBytesInUse,
    );
    gauge("kvslim_kv_bytes_limit", "KV cache pool size (--kv-memory)", (s) => s.kvBytesLimit);
    collectDefaultMetrics({ register: this.registry, prefix: "kvslim_process_" });
  }

  promptTokens(n: number, cached: number): void {
    this.prompt.inc(n);
    if (cached > 0) this.cached.inc(cached);
  }

  generatedTokens(n: number): void {
    if (n > 0) this.generated.inc(n);
  }

  step(tokens: number, seconds: number): void {
    this.stepSeconds.observe(seconds);
    this.window.push({ tokens, seconds, at: performance.now() });
    this.prune();
  }

  private prune(): void {
    const since = performance.now() - 10_000;
    while (this.window.length > 0 && this.window[0].at < since) this.window.shift();
  }
}
