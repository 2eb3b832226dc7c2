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
import { UsageError, formatBytes } from "../errors.js";
import type { Kernels } from "../kernels/kernels.js";
import { createReferenceKernels } from "../kernels/reference.js";
import { loadWasmKernels } from "../kernels/wasm.js";
import { KvCache } from "../kvcache/cache.js";
import { Arena, allocSize } from "../memory/arena.js";
import { Pool } from "../memory/pool.js";
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import { derive, type Derived, type ModelConfig } from "./config.js";
import { CHUNK, Forward, createRunState, runStateSizes } from "./forward.js";
import { Session, type SessionOptions } from "./session.js";
import { openModelSource, type ModelSource } from "./source.js";
import type { TensorSpec } from "./tensor-names.js";
import { checkTensors, loadWeights, weightBytes, type Weights } from "./weights.js";

export interface LoadOptions {
  /** Longest context a session may use. Default: the model's trained context, at most 4096. */
  contextSize?: number;
  /** How many sessions' KV caches of contextSize the cache pool holds. Default 1. */
  sessions?: number;
  /** "wasm" (default) or the plain-TypeScript reference kernels (slow; for checking). */
  kernels?: "wasm" | "reference";
}

export interface MemoryPlan {
  weights: number;
  runState: number;
  cachePool: number;
  total: number;
}

export function planMemory(source: ModelSource, specs: TensorSpec[], contextSize: number, sessions: number): MemoryPlan {
  const rows = Math.min(CHUNK, contextSize);
  const weights = weightBytes(source, specs);
  const runState = Object.values(runStateSizes(source.config, rows, contextSize)).reduce((a, b) => a + allocSize(b), 0);
  const cachePool = sessions * allocSize(KvCache.bytesFor(kvShape(source.config), contextSize));
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
  if (!Number.isInteger(sessions) || sessions < 1) throw new UsageError(`sessions must be a positive integer, got ${sessions}`);
  const plan = planMemory(source, specs, contextSize, sessions);
  const arena = new Arena(plan.total, `${source.name} with ${sessions} × ${contextSize}-token KV caches`);
  const kernels =
    options.kernels === "reference" ? createReferenceKernels(arena.memory) : await loadWasmKernels(arena.memory);
  const weights = loadWeights(source, specs, arena);
  const state = createRunState(arena, source.config, Math.min(CHUNK, contextSize), contextSize);
  const poolBase = arena.alloc(plan.cachePool);
  const pool = new Pool(poolBase, plan.cachePool);
  return new Model(source, arena, kernels, weights, new Forward(kernels, arena, source.config, weights, state), state.rows, pool, contextSize, plan);
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
    readonly weights: Weights,
    readonly forward: Forward,
    /** Tokens per prefill chunk. */
    readonly chunk: number,
    readonly pool: Pool,
    readonly contextSize: number,
    readonly plan: MemoryPlan,
  ) {
    this.config = source.config;
    this.derived = derive(source.config);
    this.tokenizer = source.tokenizer;
    this.name = source.name;
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
    return new Session(this, new KvCache(this.arena, this.pool, kvShape(this.config), capacity), options);
  }

  /** Human-readable memory plan line. */
  describeMemory(): string {
    const p = this.plan;
    return `weights ${formatBytes(p.weights)}, activations ${formatBytes(p.runState)}, KV cache pool ${formatBytes(p.cachePool)}`;
  }

  dispose(): void {
    this.disposed = true;
  }

  private assertAlive(): void {
    if (this.disposed) throw new UsageError("this model was disposed");
  }
}
