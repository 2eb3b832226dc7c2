/**
 * The server's scheduler: continuous batching of concurrent requests over one model.
 *
 * Each request (a job) gets its own session, with its own attention method and KV dtype, whose cache holds
 * exactly its prompt and its token limit, taken from the model's cache pool (the server's KV memory limit).
 * The loop runs one step at a time, yielding to the event loop between steps so that requests arrive,
 * stream and disconnect while others decode:
 *   1. jobs whose client went away leave, and their memory returns to the pool at once;
 *   2. waiting jobs start, in order of arrival, while fewer than `parallel` run and their cache fits
 *      (finished conversations kept for prefix reuse give their memory up first);
 *   3. one chunk of one starting job's prompt is prefilled (evicting methods prefill the whole prompt: their
 *      compaction follows it), so a long prompt delays the others' next token by one chunk, not by all of it;
 *   4. every decoding job takes one token in one batched step: one pass over the weights for all of them,
 *      each session's attention over its own cache (Model.decodeBatch), the same bits as alone.
 *
 * Prefix reuse: a finished job's session (prompt + answer) is kept while memory allows; a new request whose
 * prompt begins with its tokens (same method and KV dtype) continues from it, rewound to the common part,
 * instead of computing those positions again. The least recently used kept session goes first.
 */
import { layoutFor, type AttentionSpec } from "../attention/method.js";
import { KvslimError, NumericError, OutOfMemoryError } from "../errors.js";
import { KvCache, type KvDType } from "../kvcache/cache.js";
import { allocSize } from "../memory/arena.js";
import { kvShape, type Model } from "../model/model.js";
import type { SamplerOptions } from "../model/sampler.js";
import { topIndices } from "../model/sampler.js";
import type { Session } from "../model/session.js";
import { TokenStream, type StopReason } from "../model/token-stream.js";
import { ApiError, invalid, type TokenLogprob } from "./api.js";

export interface EngineOptions {
  /** Most jobs prefilling or decoding at once. */
  parallel: number;
  /** Most jobs waiting to start; beyond that a request is refused with 503 and Retry-After. */
  queue: number;
  /** Keep finished sessions for prompt-prefix reuse. */
  prefixCache: boolean;
}

/** What a job reports as it runs (called from the engine's loop). */
export interface JobSink {
  /** Text that is safe to send, the token that completed it, and its log-probability if asked. */
  text(text: string, logprob: TokenLogprob | null): void;
  end(result: JobResult): void;
  error(e: ApiError): void;
}

export interface JobResult {
  finishReason: "stop" | "length";
  stopReason: StopReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt positions taken from a kept session instead of computed. */
  cachedTokens: number;
}

export interface JobSpec {
  prompt: number[];
  /** Tokens to generate at most (prompt + maxTokens fit the context: the caller checked). */
  maxTokens: number;
  sampler: SamplerOptions;
  stop: string[];
  attention: AttentionSpec;
  kvDtype: KvDType;
  /** Alternatives per token for log-probabilities, or null. */
  logprobs: number | null;
}

type State = "waiting" | "prefill" | "decode" | "done";

export class Job {
  state: State = "waiting";
  session: Session | null = null;
  /** Prompt positions already in the session. */
  filled = 0;
  cachedTokens = 0;
  /** The sampled token the next decode step evaluates. */
  pending = -1;
  cancelled = false;
  stream!: TokenStream;
  readonly queuedAt = performance.now();

  constructor(
    readonly spec: JobSpec,
    readonly sink: JobSink,
  ) {}
}

interface Kept {
  session: Session;
  key: string;
  usedAt: number;
}

export interface EngineStats {
  active: number;
  waiting: number;
  kept: number;
  kvBytesInUse: number;
  kvBytesLimit: number;
}

/** Counters the engine reports to (the server's metrics). */
export interface EngineEvents {
  promptTokens(n: number, cached: number): void;
  generatedTokens(n: number): void;
  step(tokens: number, seconds: number): void;
}

export class Engine {
  private readonly waiting: Job[] = [];
  private readonly active: Job[] = [];
  private readonly kept: Kept[] = [];
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];
  private clock = 0;

  constructor(
    readonly model: Model,
    private readonly options: EngineOptions,
    private readonly events: EngineEvents,
  ) {}

  get stats(): EngineStats {
    return {
      active: this.active.length,
      waiting: this.waiting.length,
      kept: this.kept.length,
      kvBytesInUse: this.model.pool.inUse,
      kvBytesLimit: this.model.pool.size,
    };
  }

  /** The KV bytes a session of `positions` positions with this method and dtype takes from the pool. */
  cacheBytes(attention: AttentionSpec, kvDtype: KvDType, positions: number): number {
    const c = this.model.config;
    return allocSize(KvCache.bytesFor(kvShape(c), layoutFor(attention, kvDtype, c.nHeads / c.nKvHeads), positions));
  }

  /**
   * Queues a job (it starts when there is room). Throws ApiError 400 if it can never fit the KV memory, 503
   * with Retry-After if the queue is full.
   */
  submit(spec: JobSpec, sink: JobSink): Job {
    const positions = spec.prompt.length + spec.maxTokens;
    const evicting = layoutFor(spec.attention, spec.kvDtype, 1).positions;
    // An evicting method's cache holds the whole prompt while it is prefilled, then shrinks to its budget.
    const need = this.cacheBytes(spec.attention, spec.kvDtype, evicting ? spec.prompt.length + 1 : positions);
    if (need > this.model.pool.size)
      throw invalid(
        `this request needs ${formatMiB(need)} of KV cache (${spec.prompt.length} prompt + ${spec.maxTokens} new tokens, ` +
          `${spec.kvDtype}, ${spec.attention.method}) and the server has ${formatMiB(this.model.pool.size)} in all ` +
          `(--kv-memory); ask for fewer tokens (max_tokens) or a smaller KV dtype`,
        "max_tokens",
        "kv_memory_exceeded",
      );
    // Jobs that start at the next step (while fewer than `parallel` run) do not count against the queue.
    const queued = this.waiting.length - Math.max(0, this.options.parallel - this.active.length);
    if (queued >= this.options.queue)
      throw new ApiError(
        503,
        `the server is busy: ${this.active.length} requests running and ${this.waiting.length} waiting (the queue's limit); retry later`,
        "server_error",
        null,
        "server_busy",
        { "retry-after": "1" },
      );
    const job = new Job(spec, sink);
    this.waiting.push(job);
    this.kick();
    return job;
  }

  /** Stops a job (its client went away): it leaves at the next step and its memory is freed. */
  cancel(job: Job): void {
    if (job.state === "done") return;
    job.cancelled = true;
    this.kick();
  }

  /** Resolves when no job is waiting or running. */
  idle(): Promise<void> {
    if (this.active.length === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Frees every kept session (their memory returns to the pool). */
  dropKept(): void {
    for (const k of this.kept.splice(0)) k.session.dispose();
  }

  private kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.tick();
    });
  }

  private tick(): void {
    try {
      this.step();
    } catch (e) {
      // A failure of the shared step (not of one job): every running job ends with it.
      const error = asApiError(e);
      for (const job of this.active.splice(0)) this.fail(job, error);
    }
    if (this.active.length > 0 || this.waiting.length > 0) this.kick();
    if (this.active.length === 0 && this.waiting.length === 0)
      for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private step(): void {
    // 1. Jobs whose client went away.
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i].cancelled) this.waiting.splice(i, 1)[0].state = "done";
    }
    for (let i = this.active.length - 1; i >= 0; i--) {
      const job = this.active[i];
      if (!job.cancelled) continue;
      this.active.splice(i, 1);
      job.state = "done";
      job.session?.dispose();
      job.session = null;
    }
    // 2. Start waiting jobs while there is room.
    while (this.waiting.length > 0 && this.active.length < this.options.parallel) {
      const job = this.waiting[0];
      let session: Session | null;
      try {
        session = this.acquire(job);
      } catch (e) {
        this.waiting.shift();
        this.fail(job, asApiError(e));
        continue;
      }
      if (session === null) {
        if (this.active.length > 0) break; // waits for a running job's memory
        // Nothing runs and nothing is kept, yet it does not fit: it never will.
        this.waiting.shift();
        this.fail(
          job,
          invalid(
            `this request's KV cache does not fit the server's KV memory (--kv-memory)`,
            "max_tokens",
            "kv_memory_exceeded",
          ),
        );
        continue;
      }
      this.waiting.shift();
      job.session = session;
      job.stream = new TokenStream(this.model.tokenizer, {
        ...job.spec.sampler,
        maxTokens: job.spec.maxTokens,
        stop: job.spec.stop,
      });
      job.state = "prefill";
      this.active.push(job);
      this.events.promptTokens(job.spec.prompt.length, job.cachedTokens);
    }
    // 3. One chunk of one starting job's prompt.
    const starting = this.active.find((j) => j.state === "prefill");
    if (starting !== undefined) this.prefill(starting);
    // 4. One token for every decoding job, in one pass over the weights.
    const decoding = this.active.filter((j) => j.state === "decode");
    if (decoding.length > 0) {
      const t0 = performance.now();
      const logits = this.model.decodeBatch(decoding.map((j) => ({ session: j.session!, token: j.pending })));
      this.events.step(decoding.length, (performance.now() - t0) / 1000);
      decoding.forEach((job, b) => this.take(job, logits[b]));
    }
  }

  /** A session for the job: a kept one that shares its prompt's beginning, else a new one; null if no room yet. */
  private acquire(job: Job): Session | null {
    const { prompt, maxTokens, attention, kvDtype } = job.spec;
    const key = sessionKey(attention, kvDtype);
    const positions = prompt.length + maxTokens;
    const evicting = layoutFor(attention, kvDtype, 1).positions;
    if (!evicting && this.options.prefixCache) {
      let best: Kept | null = null;
      let bestLength = 0;
      for (const k of this.kept) {
        if (k.key !== key) continue;
        const n = commonPrefix(k.session.tokens, prompt);
        if (n > bestLength) [best, bestLength] = [k, n];
      }
      // At least one prompt token is evaluated, for the logits of the first new token.
      const reuse = Math.min(bestLength, prompt.length - 1);
      if (best !== null && reuse > 0) {
        this.kept.splice(this.kept.indexOf(best), 1);
        const session = best.session;
        session.rewind(session.tokens.length - reuse);
        while (true) {
          try {
            session.reserve(positions);
            break;
          } catch (e) {
            if (!(e instanceof OutOfMemoryError)) throw e;
            if (!this.dropOldest()) {
              // No room to grow it now: keep it for later and wait.
              this.kept.push({ session, key, usedAt: ++this.clock });
              return null;
            }
          }
        }
        job.filled = reuse;
        job.cachedTokens = reuse;
        return session;
      }
    }
    while (true) {
      try {
        return this.model.createSession({ contextSize: positions, attention, kvDtype });
      } catch (e) {
        if (!(e instanceof OutOfMemoryError)) throw e;
        if (!this.dropOldest()) return null;
      }
    }
  }

  /** Frees the least recently used kept session; false if none is kept. */
  private dropOldest(): boolean {
    if (this.kept.length === 0) return false;
    let oldest = 0;
    for (let i = 1; i < this.kept.length; i++) if (this.kept[i].usedAt < this.kept[oldest].usedAt) oldest = i;
    this.kept.splice(oldest, 1)[0].session.dispose();
    return true;
  }

  private prefill(job: Job): void {
    const session = job.session!;
    const prompt = job.spec.prompt;
    const evicting = session.cache.layout.positions;
    const end = evicting ? prompt.length : Math.min(prompt.length, job.filled + this.model.chunk);
    let logits: Float32Array;
    try {
      logits = session.evaluate(prompt.slice(job.filled, end));
    } catch (e) {
      this.remove(job);
      this.fail(job, asApiError(e));
      return;
    }
    job.filled = end;
    if (end < prompt.length) return;
    job.state = "decode";
    this.take(job, logits);
  }

  /** Samples the job's next token from its logits, sends its text, and ends the job if it stops. */
  private take(job: Job, logits: Float32Array): void {
    let step;
    try {
      step = job.stream.next(logits, job.session!.tokens.length);
    } catch (e) {
      this.remove(job);
      this.fail(job, asApiError(e));
      return;
    }
    // The end-of-text token is not part of the completion (nor counted in its tokens): no log-probability for it.
    const logprob =
      job.spec.logprobs === null || step.stop === "eos" ? null : this.logprobOf(logits, step.token, job.spec.logprobs);
    if (step.text || logprob !== null) job.sink.text(step.text, logprob);
    if (step.stop === null) {
      job.pending = step.token;
      return;
    }
    this.remove(job);
    job.state = "done";
    const generated = job.stream.generated;
    const completionTokens = step.stop === "eos" ? generated - 1 : generated;
    this.events.generatedTokens(completionTokens);
    job.sink.end({
      finishReason: step.stop === "max-tokens" ? "length" : "stop",
      stopReason: step.stop,
      promptTokens: job.spec.prompt.length,
      completionTokens,
      cachedTokens: job.cachedTokens,
    });
    this.release(job);
  }

  private remove(job: Job): void {
    const i = this.active.indexOf(job);
    if (i >= 0) this.active.splice(i, 1);
  }

  /** A finished job's session: kept for prefix reuse (non-evicting methods), else freed. */
  private release(job: Job): void {
    const session = job.session;
    job.session = null;
    if (session === null) return;
    if (this.options.prefixCache && session.canRewind && session.tokens.length > 0) {
      this.kept.push({ session, key: sessionKey(job.spec.attention, job.spec.kvDtype), usedAt: ++this.clock });
    } else session.dispose();
  }

  private fail(job: Job, error: ApiError): void {
    job.state = "done";
    job.session?.dispose();
    job.session = null;
    job.sink.error(error);
  }

  /** log p of the token under the model (before temperature and truncation) and the top alternatives. */
  private logprobOf(logits: Float32Array, token: number, top: number): TokenLogprob {
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
    const lse = max + Math.log(sum);
    const entry = (id: number) => {
      const text = this.model.tokenizer.decode([id], { skipSpecial: false });
      return { token: text, logprob: logits[id] - lse, bytes: [...Buffer.from(text, "utf8")] };
    };
    return { ...entry(token), top: top > 0 ? topIndices(logits, top).map(entry) : [] };
  }
}

function sessionKey(attention: AttentionSpec, kvDtype: KvDType): string {
  return JSON.stringify([attention, kvDtype]);
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function formatMiB(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Errors from the library become the API's: a KvslimError is the request's fault or a limit (400), else a bug (500). */
export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof NumericError) return new ApiError(500, e.message, "server_error", null, "numeric_error");
  if (e instanceof KvslimError) return invalid(e.message);
  return new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, "server_error");
}
