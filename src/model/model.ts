/**
 * A loaded model: its config, tokenizer, weights in the arena, the activation buffers and a pool of
 * KV-cache memory that sessions take their caches from.
 *
 * Memory plan (planMemory, the one sizing function), in arena order:
 *   weights        every tensor, matrices in file dtype, vectors f32
 *   run state      activation buffers for chunks of CHUNK tokens and contexts up to contextSize
 *   cache pool     `sessions` KV caches of contextSize positions
 * A model whose plan exceeds 4 GiB is refused before any tensor is read.
 */
import { availableParallelism } from "node:os";
import { createAttention, layoutFor, type AttentionMethod, type AttentionSpec } from "../attention/index.js";
import { UsageError, formatBytes } from "../errors.js";
import type { Kernels } from "../kernels/kernels.js";
import { createReferenceKernels } from "../kernels/reference.js";
import { type KernelBuild, kernelBuildOf, loadWasmKernels } from "../kernels/wasm.js";
import { KV_DTYPES, KvCache, isQuantizedKv, kvDtypeProblem, type KvDType, type KvLayout } from "../kvcache/cache.js";
import { rotationBlocks } from "../kvcache/rotation.js";
import { Arena, allocSize } from "../memory/arena.js";
import { Pool } from "../memory/pool.js";
import { Parallel } from "../threads/parallel.js";
import { MAX_WORKERS } from "../threads/pool.js";
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import { derive, type Derived, type ModelConfig } from "./config.js";
import { CHUNK, Forward, createRunState, runStateBuffers, type F16Activations } from "./forward.js";
import { Session, type SessionOptions } from "./session.js";
import { openModelSource, type ModelSource } from "./source.js";
import type { TensorSpec } from "./tensor-names.js";
import { checkTensors, loadWeights, weightBytes, type Weights } from "./weights.js";

/** The kernels a model may run on (LoadOptions.kernels). */
export const KERNEL_CHOICES = ["wasm", "portable", "relaxed", "reference"] as const;
export type KernelChoice = (typeof KERNEL_CHOICES)[number];

export interface LoadOptions {
  /** Longest context a session may use. Default: the model's trained context, at most 4096. */
  contextSize?: number;
  /** How many sessions' KV caches of contextSize the cache pool holds. Default 1. */
  sessions?: number;
  /** The cache pool's size in bytes, instead of `sessions` caches of contextSize (a server's KV memory limit). */
  cacheBytes?: number;
  /**
   * Which kernels run: "wasm" (default: the relaxed-SIMD build where the runtime has it, else the
   * portable one; the KVSLIM_KERNELS environment variable can force either), "portable" or "relaxed"
   * (that build, or an error if the runtime cannot run it), or "reference" (the plain-TypeScript
   * twins: slow; for checking).
   */
  kernels?: KernelChoice;
  /** Default KV storage dtype of sessions ("f32" unless given); sizes the cache pool. */
  kvDtype?: KvDType;
  /** Default Hadamard rotation of quantised caches (kvcache/rotation.ts); see SessionOptions.kvRotation. */
  kvRotation?: KvRotation;
  /** Default attention method of sessions (dense unless given); its cache layout sizes the pool. */
  attention?: AttentionSpec;
  /**
   * Threads the kernels run on: the caller's and threads − 1 kernel workers over the same memory.
   * Default: the machine's cores (os.availableParallelism()). Any count gives the same results.
   */
  threads?: number;
  /**
   * Activations meeting f16 weights: "f32" (default) or "f16" (rounded to f16 first, as llama.cpp's CPU
   * backend does on x86; for agreement with it rather than accuracy).
   */
  f16Activations?: F16Activations;
}

export interface MemoryPlan {
  weights: number;
  runState: number;
  cachePool: number;
  total: number;
}

export function planMemory(
  source: ModelSource,
  specs: TensorSpec[],
  contextSize: number,
  sessions: number,
  layout: KvLayout,
  threads: number,
  cacheBytes?: number,
): MemoryPlan {
  const rows = Math.min(CHUNK, contextSize);
  const weights = weightBytes(source, specs);
  const runState = runStateBuffers(source.config, rows, contextSize, threads).reduce((a, b) => a + allocSize(b), 0);
  const cachePool = cacheBytes ?? sessions * allocSize(KvCache.bytesFor(kvShape(source.config), layout, contextSize));
  return { weights, runState, cachePool, total: weights + runState + cachePool };
}

export function kvShape(c: ModelConfig) {
  return { nSlots: derive(c).producers.length, nKvHeads: c.nKvHeads, headDim: c.headDim };
}

export function resolveContextSize(config: ModelConfig, requested: number | undefined): number {
  const contextSize = requested ?? Math.min(config.contextLength, 4096);
  if (!Number.isInteger(contextSize) || contextSize < 1) {
    throw new UsageError(`context size must be a positive integer, got ${requested}`);
  }
  return contextSize;
}

export async function loadModel(path: string, options: LoadOptions = {}): Promise<Model> {
  const source = openModelSource(path);
  const specs = checkTensors(source);
  const contextSize = resolveContextSize(source.config, options.contextSize);
  const sessions = options.sessions ?? 1;
  if (!Number.isInteger(sessions) || sessions < 1)
    throw new UsageError(`sessions must be a positive integer, got ${sessions}`);
  if (options.cacheBytes !== undefined && !(Number.isSafeInteger(options.cacheBytes) && options.cacheBytes >= 0))
    throw new UsageError(`cacheBytes must be a whole number of bytes ≥ 0, got ${options.cacheBytes}`);
  const kvDtype = checkKvDtype(options.kvDtype ?? "f32", source.config.headDim);
  const kvRotation = checkKvRotation(options.kvRotation);
  const attention = options.attention ?? { method: "dense" };
  const threads = resolveThreads(options.threads);
  const f16Activations = options.f16Activations ?? "f32";
  if (f16Activations !== "f32" && f16Activations !== "f16") {
    throw new UsageError(`f16Activations must be "f32" or "f16", got ${JSON.stringify(f16Activations)}`);
  }
  const plan = planMemory(
    source,
    specs,
    contextSize,
    sessions,
    layoutFor(attention, kvDtype, source.config.nHeads / source.config.nKvHeads),
    threads,
    options.cacheBytes,
  );
  const arena = new Arena(
    plan.total,
    options.cacheBytes === undefined
      ? `${source.name} with ${sessions} × ${contextSize}-token KV caches`
      : `${source.name} with ${formatBytes(options.cacheBytes)} of KV cache memory`,
  );
  const choice = options.kernels ?? "wasm";
  if (!(KERNEL_CHOICES as readonly string[]).includes(choice)) {
    throw new UsageError(`kernels must be one of ${KERNEL_CHOICES.join(", ")}, got ${JSON.stringify(choice)}`);
  }
  const kind = choice === "reference" ? "reference" : "wasm";
  const kernels =
    choice === "reference"
      ? createReferenceKernels(arena.memory)
      : await loadWasmKernels(arena.memory, choice === "wasm" ? undefined : choice);
  const weights = loadWeights(source, specs, arena);
  const state = createRunState(arena, source.config, Math.min(CHUNK, contextSize), contextSize, threads);
  const poolBase = arena.alloc(plan.cachePool);
  const pool = new Pool(poolBase, plan.cachePool);
  const parallel = await Parallel.create(kernels, arena.memory, kind, threads);
  const forward = new Forward(kernels, parallel, arena, source.config, weights, state, f16Activations);
  return new Model(source, arena, kernels, parallel, weights, forward, state.rows, pool, contextSize, plan, {
    kvDtype,
    kvRotation,
    attention,
  });
}

/** How a session's quantised cache is rotated: "auto" (default), "hadamard" or "none". */
export type KvRotation = "auto" | "hadamard" | "none";
export const KV_ROTATIONS: readonly KvRotation[] = ["auto", "hadamard", "none"];

function checkKvRotation(rotation: string | undefined): KvRotation {
  if (rotation !== undefined && !(KV_ROTATIONS as readonly string[]).includes(rotation))
    throw new UsageError(`KV rotation must be one of ${KV_ROTATIONS.join(", ")}, got ${JSON.stringify(rotation)}`);
  return (rotation ?? "auto") as KvRotation;
}

/**
 * Whether a cache of `dtype` rotates: "auto" rotates q8_0 and q4_0 caches whose head dim is a multiple of 64
 * (llama.cpp's default), "hadamard" asks for it (an error where it does not apply), "none" never rotates.
 */
export function rotates(rotation: KvRotation, dtype: KvDType, headDim: number): boolean {
  if (rotation === "none") return false;
  if (rotation === "hadamard") return true;
  return isQuantizedKv(dtype) && rotationBlocks(headDim) !== null;
}

/** The thread count: `requested`, or the machine's cores; 1 to 64. */
export function resolveThreads(requested: number | undefined): number {
  const threads = requested ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_WORKERS + 1) {
    throw new UsageError(`threads must be an integer from 1 to ${MAX_WORKERS + 1}, got ${requested}`);
  }
  return threads;
}

/** `dtype` as a KvDType if it is one that a model of head dim Hd can use. */
export function checkKvDtype(dtype: string, headDim: number): KvDType {
  if (!(KV_DTYPES as readonly string[]).includes(dtype)) {
    throw new UsageError(`KV dtype "${dtype}" is not supported; expected one of ${KV_DTYPES.join(", ")}`);
  }
  const problem = kvDtypeProblem(dtype as KvDType, headDim);
  if (problem !== null) throw new UsageError(problem);
  return dtype as KvDType;
}

export class Model {
  readonly config: ModelConfig;
  readonly derived: Derived;
  readonly tokenizer: TextTokenizer;
  readonly name: string;
  private disposed = false;

  constructor(
    readonly source: ModelSource,
    readonly arena: Arena,
    readonly kernels: Kernels,
    /** The threads the kernels run on. */
    readonly parallel: Parallel,
    readonly weights: Weights,
    readonly forward: Forward,
    /** Tokens per prefill chunk. */
    readonly chunk: number,
    readonly pool: Pool,
    readonly contextSize: number,
    readonly plan: MemoryPlan,
    /** What sessions use unless their options say otherwise. */
    readonly defaults: { kvDtype: KvDType; kvRotation: KvRotation; attention: AttentionSpec },
  ) {
    this.config = source.config;
    this.derived = derive(source.config);
    this.tokenizer = source.tokenizer;
    this.name = source.name;
  }

  /** The kernels this model runs: a WebAssembly build, or "reference" for the plain-TypeScript twins. */
  get kernelBuild(): KernelBuild | "reference" {
    return kernelBuildOf(this.kernels) ?? "reference";
  }

  createSession(options: SessionOptions = {}): Session {
    this.assertAlive();
    const capacity = options.contextSize ?? this.contextSize;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > this.contextSize) {
      throw new UsageError(
        `session context ${capacity} must be between 1 and the model's loaded context size ${this.contextSize}; ` +
          `load the model with a larger contextSize`,
      );
    }
    const kvDtype = checkKvDtype(options.kvDtype ?? this.defaults.kvDtype, this.config.headDim);
    const spec = options.attention ?? this.defaults.attention;
    const rotation = rotates(
      checkKvRotation(options.kvRotation ?? this.defaults.kvRotation),
      kvDtype,
      this.config.headDim,
    );
    const layout = { ...layoutFor(spec, kvDtype, this.config.nHeads / this.config.nKvHeads), rotation };
    const evicting = layout.positions;
    // An evicting cache starts small and grows for a prompt (see attention/evicting.ts).
    const cache = new KvCache(
      this.arena,
      this.pool,
      this.kernels,
      kvShape(this.config),
      layout,
      evicting ? 1 : capacity,
    );
    try {
      return new Session(this, cache, this.createAttentionFor(cache, spec, capacity), capacity, options, spec);
    } catch (e) {
      cache.free();
      throw e;
    }
  }

  /** An attention method of this model over `cache` (Session.setAttention uses it too). */
  createAttentionFor(cache: KvCache, spec: AttentionSpec, contextSize: number): AttentionMethod {
    const c = this.config;
    return createAttention(
      {
        kernels: this.kernels,
        arena: this.arena,
        cache,
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        headDim: c.headDim,
        scale: Math.fround(1 / Math.sqrt(c.headDim)),
        contextSize,
        parallel: this.parallel,
        scratches: this.forward.attentionScratch,
      },
      spec,
    );
  }

  /**
   * One decode step for several sessions at once: steps[i].session takes steps[i].token. The weights are read
   * once per group of up to `chunk` sessions (matrix–matrix products over their tokens); each session's
   * attention runs its own method over its own cache. Returns each session's logits (copies, V floats): the
   * same bits as steps[i].session.evaluate([steps[i].token]) would give alone.
   */
  decodeBatch(steps: readonly { session: Session; token: number }[]): Float32Array[] {
    this.assertAlive();
    if (new Set(steps.map((s) => s.session)).size !== steps.length)
      throw new UsageError("decodeBatch: a session can take only one token per step");
    const V = this.config.vocabSize;
    const out: Float32Array[] = [];
    for (let i = 0; i < steps.length; i += this.chunk) {
      const group = steps.slice(i, i + this.chunk);
      for (const { session, token } of group) session.checkStep(token);
      for (const { session } of group) session.beginBatchedStep();
      this.forward.runBatch(
        group.map(({ session, token }) => ({ cache: session.cache, attention: session.attention, token })),
      );
      const logits = this.arena.f32View(this.forward.logitsPtr, group.length * V);
      for (let b = 0; b < group.length; b++) {
        out.push(logits.slice(b * V, (b + 1) * V));
        group[b].session.endBatchedStep(group[b].token);
      }
    }
    return out;
  }

  /** Human-readable memory plan line. */
  describeMemory(): string {
    const p = this.plan;
    return `weights ${formatBytes(p.weights)}, activations ${formatBytes(p.runState)}, KV cache pool ${formatBytes(p.cachePool)}`;
  }

  /** Threads the kernels run on. */
  get threads(): number {
    return this.parallel.threads;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.parallel.dispose();
  }

  private assertAlive(): void {
    if (this.disposed) throw new UsageError("this model was disposed");
  }
}
