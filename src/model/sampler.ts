/**
 * Picking the next token from logits: greedy (temperature 0) or sampling with temperature, top-k and
 * top-p (nucleus), from a seeded generator so a seed reproduces a run.
 */
import { UsageError } from "../errors.js";

export interface SamplerOptions {
  /** 0 = greedy (argmax). Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = all). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = all). Default 0.95. */
  topP?: number;
  /** Seed of the random generator; default: from the clock. */
  seed?: number;
}

/** xoshiro128** — small, fast, good enough for sampling; state from splitmix32 of the seed. */
export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    let z = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      z = (z + 0x9e3779b9) >>> 0;
      let t = z;
      t = Math.imul(t ^ (t >>> 16), 0x85ebca6b);
      t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35);
      this.s[i] = (t ^ (t >>> 16)) >>> 0;
    }
  }

  /** The generator's state (four u32), for checkpoints. */
  get state(): number[] {
    return Array.from(this.s);
  }

  /** A generator continuing from a saved state. */
  static fromState(state: readonly number[]): Rng {
    const rng = new Rng(0);
    rng.s.set(state.map((x) => x >>> 0));
    return rng;
  }

  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export function checkSamplerOptions(o: SamplerOptions): Required<SamplerOptions> {
  const temperature = o.temperature ?? 0.8;
  const topK = o.topK ?? 40;
  const topP = o.topP ?? 0.95;
  if (!(temperature >= 0) || !Number.isFinite(temperature))
    throw new UsageError(`temperature must be ≥ 0, got ${o.temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new UsageError(`top-k must be an integer ≥ 0, got ${o.topK}`);
  if (!(topP > 0 && topP <= 1)) throw new UsageError(`top-p must be in (0, 1], got ${o.topP}`);
  return { temperature, topK, topP, seed: o.seed ?? Date.now() % 2 ** 32 };
}

export class Sampler {
  private readonly o: Required<SamplerOptions>;
  private readonly rng: Rng;

  constructor(options: SamplerOptions = {}) {
    this.o = checkSamplerOptions(options);
    this.rng = new Rng(this.o.seed);
  }

  sample(logits: Float32Array): number {
    if (this.o.temperature === 0) return argmax(logits);
    const { topK, topP, temperature } = this.o;
    // Candidates: the top-k by logit (all when topK = 0), most likely first.
    const k = topK === 0 ? logits.length : Math.min(topK, logits.length);
    const ids = topIndices(logits, k);
    const max = logits[ids[0]];
    const probs = ids.map((id) => Math.exp((logits[id] - max) / temperature));
    const total = probs.reduce((a, b) => a + b, 0);
    // Nucleus: keep the shortest prefix whose mass reaches topP.
    let keep = 0;
    let mass = 0;
    while (keep < ids.length && mass < topP * total) mass += probs[keep++];
    let r = this.rng.next() * mass;
    for (let i = 0; i < keep; i++) {
      r -= probs[i];
      if (r < 0) return ids[i];
    }
    return ids[keep - 1];
  }
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Indices of the k largest values, largest first (ties: lower index first). */
export function topIndices(x: ArrayLike<number>, k: number): number[] {
  if (k >= x.length) return Array.from({ length: x.length }, (_, i) => i).sort((a, b) => x[b] - x[a] || a - b);
  // Keep a sorted list of the best k seen so far: O(V·k) worst case, fast for the small k used here.
  const best: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (best.length === k && x[i] <= x[best[k - 1]]) continue;
    let j = best.length < k ? best.length : k - 1;
    while (j > 0 && x[best[j - 1]] < x[i]) {
      if (j < k) best[j] = best[j - 1];
      j--;
    }
    best[j] = i;
  }
  return best;
}
