/**
 * A session: one KV cache and the tokens in it. Prefill runs the prompt in chunks; decode runs one
 * token at a time. generate() streams text through an async iterator and returns the run's stats.
 */
import { layoutFor, type AttentionMethod, type AttentionSpec } from "../attention/method.js";
import { ContextOverflowError, UsageError } from "../errors.js";
import type { KvCache, KvDType } from "../kvcache/cache.js";
import type { Model } from "./model.js";
import type { SamplerOptions } from "./sampler.js";
import { TokenStream, type StopReason } from "./token-stream.js";
import type { KvRotation } from "./model.js";

export interface SessionOptions {
  /** Positions this session may reach; at most the model's loaded context size. */
  contextSize?: number;
  /** KV storage dtype: "f32", "bf16", "q8_0" or "q4_0" (default: the model's load option, else f32). */
  kvDtype?: KvDType;
  /**
   * A q8_0 / q4_0 cache's Walsh–Hadamard rotation (kvcache/rotation.ts): "auto" (default: rotate when the
   * head dim is a multiple of 64, as llama.cpp does), "hadamard" (rotate, or an error where it cannot) or
   * "none". Default: the model's load option.
   */
  kvRotation?: KvRotation;
  /** Decode-time attention method, e.g. { method: "sparq", compression: 8 } (default dense). */
  attention?: AttentionSpec;
}

/** KV traffic of the decode steps so far, as the cache counted it (what the kernels were given). */
export interface KvTrafficStats {
  /** Decode steps counted. */
  steps: number;
  /** KV bytes read + written per decode step. */
  bytesPerStep: number;
  /** The same for dense attention over the same positions. */
  denseBytesPerStep: number;
  /** bytesPerStep / denseBytesPerStep. */
  ratio: number;
}

export interface GenerateOptions extends SamplerOptions {
  /** Most tokens to generate. Default 128. */
  maxTokens?: number;
  /** Stop when the generated text contains one of these (the stop string is not emitted). */
  stop?: string[];
  /** Prepend BOS (default: what the tokenizer file says). */
  addBos?: boolean;
  /** Read special-token text (e.g. "<|im_start|>") in the prompt as those tokens; on for chat prompts. Default false. */
  parseSpecial?: boolean;
}

export interface GenerateStats {
  promptTokens: number;
  generatedTokens: number;
  promptSeconds: number;
  generateSeconds: number;
  promptTokensPerSecond: number;
  generatedTokensPerSecond: number;
  kvBytesInUse: number;
  kvBytesAllocated: number;
  /** The attention method and the KV traffic of this call's decode steps. */
  attention: string;
  kvTraffic: KvTrafficStats;
  stopReason: StopReason;
}

export interface GenerateChunk {
  token: number;
  text: string;
}

export class Session {
  /** Tokens whose K/V are in the cache, in order. */
  readonly tokens: number[] = [];
  private disposed = false;

  constructor(
    private readonly model: Model,
    readonly cache: KvCache,
    private method: AttentionMethod,
    /** Positions this session may reach. */
    private room: number,
    readonly options: SessionOptions,
    /** The method's spec, to rebuild it over a moved cache. */
    private spec: AttentionSpec,
  ) {}

  /** Positions this session may reach. */
  get capacity(): number {
    return this.room;
  }

  /**
   * Moves the cache into room for `capacity` positions (at most the model's loaded context), keeping its
   * context: for continuing a conversation past the room it was created with. Evicting methods size their
   * own cache and cannot.
   */
  reserve(capacity: number): void {
    this.assertAlive();
    if (capacity === this.room) return;
    if (!Number.isInteger(capacity) || capacity < this.tokens.length || capacity > this.model.contextSize)
      throw new UsageError(
        `reserve expects ${this.tokens.length} to ${this.model.contextSize} positions (the context held to the model's loaded context), got ${capacity}`,
      );
    if (this.cache.layout.positions) throw new UsageError(`a ${this.attention.name} session sizes its own cache`);
    this.cache.resize(capacity);
    this.room = capacity;
    this.method = this.model.createAttentionFor(this.cache, this.spec, capacity);
  }

  /** The decode-time attention method and its traffic counters. */
  get attention(): AttentionMethod {
    return this.method;
  }

  /**
   * Switches the decode-time attention method, keeping the context: for comparing methods on one prefill.
   * Only between methods that do not evict, and only to one whose cache needs this cache holds (dense runs
   * on any; SparQ needs a cache created for SparQ: its d-major K copy and V mean).
   */
  setAttention(spec: AttentionSpec): void {
    this.assertAlive();
    const need = layoutFor(spec, this.cache.layout.dtype, this.model.config.nHeads / this.model.config.nKvHeads);
    const have = this.cache.layout;
    const missing = (["kTransposed", "vMean", "accumulated", "positions"] as const).filter(
      (key) => need[key] && !have[key],
    );
    if (have.positions || need.positions || missing.length > 0) {
      throw new UsageError(
        `cannot switch this session from ${this.attention.name} to ${spec.method}: ` +
          (have.positions || need.positions
            ? "evicting methods keep their own cache"
            : `its cache lacks ${missing.join(", ")}`) +
          `; create a session with attention ${spec.method} instead`,
      );
    }
    this.method = this.model.createAttentionFor(this.cache, spec, this.capacity);
    this.spec = spec;
  }

  /** KV traffic of the decode steps since the session began (or since `since`, an earlier snapshot). */
  kvTraffic(since?: {
    steps: number;
    read: number;
    written: number;
    denseRead: number;
    denseWritten: number;
  }): KvTrafficStats {
    const t = this.cache.traffic;
    const s = since ?? { steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 };
    const steps = t.steps - s.steps;
    const bytes = t.read + t.written - s.read - s.written;
    const dense = t.denseRead + t.denseWritten - s.denseRead - s.denseWritten;
    return {
      steps,
      bytesPerStep: steps > 0 ? bytes / steps : 0,
      denseBytesPerStep: steps > 0 ? dense / steps : 0,
      ratio: dense > 0 ? bytes / dense : 1,
    };
  }

  /**
   * Appends tokens to the context and returns the logits after the last one (a copy, V floats).
   * With all = true returns (T, V) logits, one row per token.
   */
  evaluate(tokens: readonly number[], all = false): Float32Array {
    this.assertAlive();
    if (tokens.length === 0) throw new UsageError("evaluate needs at least one token");
    this.checkRoom(tokens.length, 0);
    for (const t of tokens) this.checkToken(t);
    const V = this.model.config.vocabSize;
    const out = new Float32Array((all ? tokens.length : 1) * V);
    const chunk = this.model.chunk;
    this.attention.beforePrefill(tokens.length);
    for (let i = 0; i < tokens.length; i += chunk) {
      const part = tokens.slice(i, i + chunk);
      const last = i + chunk >= tokens.length;
      this.model.forward.run(this.cache, this.attention, part, all ? "all" : last ? "last" : "none");
      if (all) out.set(this.model.arena.f32View(this.model.forward.logitsPtr, part.length * V), i * V);
      else if (last) out.set(this.model.arena.f32View(this.model.forward.logitsPtr, V));
      this.tokens.push(...part);
    }
    this.attention.afterPrefill();
    return out;
  }

  /** Throws what evaluate([token]) would refuse (Model.decodeBatch checks every step before running any). */
  checkStep(token: number): void {
    this.assertAlive();
    this.checkRoom(1, 0);
    this.checkToken(token);
  }

  /** Prepares one decode step that Model.decodeBatch runs with other sessions' steps (after checkStep). */
  beginBatchedStep(): void {
    this.attention.beforePrefill(1);
  }

  /** Ends a step begun with beginBatchedStep, after the batched forward pass appended its K/V. */
  endBatchedStep(token: number): void {
    this.attention.afterPrefill();
    this.tokens.push(token);
  }

  /** Streams generated text; the iterator's return value holds the stats. */
  async *generate(
    prompt: string | readonly number[],
    options: GenerateOptions = {},
  ): AsyncGenerator<GenerateChunk, GenerateStats> {
    this.assertAlive();
    const tok = this.model.tokenizer;
    const maxTokens = options.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0)
      throw new UsageError(`max tokens must be an integer ≥ 0, got ${maxTokens}`);
    const promptIds =
      typeof prompt === "string"
        ? tok.encode(prompt, {
            addBos: options.addBos ?? (this.tokens.length === 0 && tok.addBos),
            parseSpecial: options.parseSpecial ?? false,
          })
        : [...prompt];
    if (promptIds.length === 0) throw new UsageError("the prompt is empty (no tokens); give some text");
    this.checkRoom(promptIds.length, maxTokens);
    const stream = new TokenStream(tok, { ...options, maxTokens });

    const before = { ...this.cache.traffic };
    const t0 = performance.now();
    let logits = this.evaluate(promptIds);
    const t1 = performance.now();
    while (stream.generated < maxTokens) {
      const step = stream.next(logits, this.tokens.length);
      if (step.text) yield { token: step.token, text: step.text };
      if (step.stop !== null) break;
      logits = this.evaluate([step.token]);
      // Let consumers of the stream run between tokens.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const stopReason = stream.stopReason ?? "max-tokens";
    const t2 = performance.now();
    const genSeconds = (t2 - t1) / 1000;
    return {
      promptTokens: promptIds.length,
      generatedTokens: stream.generated,
      promptSeconds: (t1 - t0) / 1000,
      generateSeconds: genSeconds,
      promptTokensPerSecond: promptIds.length / ((t1 - t0) / 1000),
      generatedTokensPerSecond: stream.generated / genSeconds,
      kvBytesInUse: this.cache.usedBytes,
      kvBytesAllocated: this.cache.allocatedBytes,
      attention: this.attention.name,
      kvTraffic: this.kvTraffic(before),
      stopReason,
    };
  }

  /**
   * Forgets the last n tokens (their K/V and positions), as if they had not been evaluated: for asking
   * several questions against one prefilled context. Sessions whose method evicts cannot rewind.
   */
  rewind(n: number): void {
    this.assertAlive();
    if (!Number.isInteger(n) || n < 0 || n > this.tokens.length)
      throw new UsageError(`rewind expects 0 to ${this.tokens.length} tokens, got ${n}`);
    if (this.cache.layout.positions)
      throw new UsageError(`a ${this.attention.name} session cannot rewind: what it evicted is gone`);
    this.cache.rewind(n);
    this.tokens.length -= n;
  }

  /** Whether rewind() works: the method does not evict. */
  get canRewind(): boolean {
    return !this.cache.layout.positions;
  }

  /** Forgets the context (the cache memory stays with the session). */
  reset(): void {
    this.tokens.length = 0;
    this.cache.clear();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cache.free();
  }

  private checkRoom(prompt: number, generate: number): void {
    const used = this.tokens.length;
    if (used + prompt + generate > this.capacity) {
      throw new ContextOverflowError(
        `${used > 0 ? `${used} tokens already in context + ` : ""}${prompt} prompt tokens` +
          `${generate > 0 ? ` + ${generate} to generate` : ""} = ${used + prompt + generate} ` +
          `exceed the context size of ${this.capacity}; shorten the prompt, generate fewer tokens or raise the context size`,
      );
    }
  }

  private checkToken(t: number): void {
    const V = this.model.config.vocabSize;
    if (!Number.isInteger(t) || t < 0 || t >= V)
      throw new UsageError(`token id ${t} is outside the vocabulary [0, ${V})`);
  }

  private assertAlive(): void {
    if (this.disposed) throw new UsageError("this session was disposed");
  }
}
