/**
 * Naive attention methods written from the algorithms as docs/attention.md states them, in float64 over plain arrays, with no code
 * shared with src/attention: the independent references the fast paths are tested against.
 *
 * A "head" here is one KV head: its rows (keys and values as the cache stores them, with positions) and the
 * g query heads that read it.
 */
const f = Math.fround;

export interface Row {
  pos: number;
  k: number[];
  v: number[];
  /** The key SparQ's approximate scores read, when it differs from k (a quantised d-major copy). */
  kApprox?: number[];
}

/** Softmax in float64. */
export function softmax(x: number[]): number[] {
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i], 0);

/** Dense attention of one query over rows: (output, probabilities). */
export function naiveDense(q: number[], rows: Row[]): { out: number[]; p: number[] } {
  const Hd = q.length;
  const p = softmax(rows.map((r) => dot(q, r.k) / Math.sqrt(Hd)));
  const out = new Array(Hd).fill(0);
  rows.forEach((r, i) => r.v.forEach((v, j) => (out[j] += p[i] * v)));
  return { out, p };
}

/** Indices of the n largest values (value descending, then lower index first), ascending. */
export function topIndices(x: number[], n: number): number[] {
  const order = x.map((_, i) => i).sort((a, b) => (x[b] !== x[a] ? x[b] - x[a] : a - b));
  return order.slice(0, n).sort((a, b) => a - b);
}

export interface NaiveSparqOptions {
  r: number;
  k: number;
  l: number;
  reallocation: boolean;
  groupRanking: "logits" | "probabilities";
  /** The query as the exact attention's dot products see it (a quantised cache quantises it to q8_0). */
  query?: (q: number[]) => number[];
}

/**
 * One SparQ step for one KV head: queries qs (g of Hd), rows = every cached position (the current token
 * last), vMean = mean of every stored V row. Approximate logits are computed in f32 in ascending component
 * order (mul, then add), as the spec of the sparqScores kernel defines them, so selections match exactly.
 */
export function naiveSparq(qs: number[][], rows: Row[], vMean: number[], o: NaiveSparqOptions): number[][] {
  const g = qs.length;
  const Hd = qs[0].length;
  const S = rows.length;
  // Step 1: top-r components of Σ_h |q_h|.
  const absQ = Array.from({ length: Hd }, (_, i) => f(qs.reduce((s, q) => s + Math.abs(q[i]), 0)));
  const i1 = topIndices(absQ, o.r);
  // Steps 2–3: τ per head and approximate logits from r columns of K.
  const logits = qs.map((q) => {
    const total = q.reduce((s, v) => s + Math.abs(v), 0);
    const covered = i1.reduce((s, i) => s + Math.abs(q[i]), 0);
    const scale = f(1 / Math.sqrt((Hd * covered) / total));
    return rows.map((row) => {
      let acc = 0;
      const key = row.kApprox ?? row.k;
      for (const i of i1) acc = f(acc + f(q[i] * key[i]));
      return f(acc * scale);
    });
  });
  const sHat = logits.map(softmax);
  // Steps 4–5: group ranking, local window and the current token forced, top k + 1.
  const rank = Array.from({ length: S }, (_, s) => {
    if (o.groupRanking === "probabilities") return sHat.reduce((sum, p) => f(sum + f(p[s])), 0);
    return logits.reduce((sum, x, h) => (h === 0 ? x[s] : f(sum + x[s])), 0);
  });
  for (let s = S - 1 - o.l; s < S; s++) rank[s] = Infinity;
  const i2 = topIndices(rank, o.k + 1);
  // Steps 6–8.
  return qs.map((q, h) => {
    const alpha = i2.reduce((s, i) => s + sHat[h][i], 0);
    const { out } = naiveDense(
      o.query?.(q) ?? q,
      i2.map((i) => rows[i]),
    );
    return o.reallocation ? out.map((y, j) => alpha * y + (1 - alpha) * vMean[j]) : out;
  });
}

/**
 * An evicting cache for one KV head, simulated: rows with accumulated attention (H2O) and a policy
 * choosing what to keep. Prefill is dense over the whole prompt, then compaction to the budget; each
 * decode step appends, attends over every kept row, then drops one.
 */
export class NaiveEvicting {
  rows: (Row & { acc: number })[] = [];
  length = 0;

  constructor(
    readonly policy: "h2o" | "streaming",
    readonly budget: number,
    readonly recentOrSinks: number,
    /** The query as the dot products see it (a quantised cache quantises it to q8_0). */
    readonly query: (q: number[]) => number[] = (q) => q,
  ) {}

  /** T tokens: qs[t] (g of Hd), keys[t], values[t] → outputs[t] (g of Hd). */
  step(qs: number[][][], keys: number[][], values: number[][]): number[][][] {
    const T = keys.length;
    const outs: number[][][] = [];
    for (let t = 0; t < T; t++) {
      this.rows.push({ pos: this.length + t, k: keys[t], v: values[t], acc: 0 });
      outs.push(
        qs[t].map((q) => {
          const { out, p } = naiveDense(this.query(q), this.rows);
          p.forEach((pi, i) => (this.rows[i].acc += pi));
          return out;
        }),
      );
    }
    this.length += T;
    if (T > 1 || this.rows.length > this.budget) this.compact();
    return outs;
  }

  private compact(): void {
    if (this.rows.length <= this.budget) return;
    const byPos = [...this.rows].sort((a, b) => a.pos - b.pos);
    let kept: typeof this.rows;
    if (this.policy === "streaming") {
      const sinks = byPos.filter((r) => r.pos < this.recentOrSinks).slice(0, this.budget);
      const rest = byPos.filter((r) => r.pos >= this.recentOrSinks);
      kept = sinks.concat(rest.slice(rest.length - (this.budget - sinks.length)));
    } else {
      const recent = byPos.slice(byPos.length - Math.min(this.recentOrSinks, this.budget));
      const older = byPos.slice(0, byPos.length - recent.length).sort((a, b) => b.acc - a.acc || b.pos - a.pos);
      kept = recent.concat(older.slice(0, this.budget - recent.length));
    }
    this.rows = kept.sort((a, b) => a.pos - b.pos);
  }
}

/** A value rounded to binary16 and back (round to nearest even), in plain arithmetic. */
function f16Round(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const e = Math.max(Math.floor(Math.log2(Math.abs(x))), -14); // subnormals share the exponent −14
  const step = 2 ** (e - 10);
  const q = x / step;
  const r = Math.round(q);
  const even = r - q === 0.5 && r % 2 !== 0 ? r - 1 : r;
  return even * step;
}

/** Round half to even. */
const roundEven = (x: number) => {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/**
 * What a q8_0 or q4_0 block stores for 32 values, dequantised (ggml's formulas, written out here rather than
 * taken from src/): q8_0 d = f16(max|x| / 127), codes nearest-even(x · 127/max|x|); q4_0 d = f16(m / −8) for
 * the value m of largest magnitude, codes min(15, trunc(x / d + 8.5)), value (c − 8)·d.
 */
export function quantizedBlock(dtype: "q8_0" | "q4_0", x: readonly number[]): number[] {
  if (dtype === "q8_0") {
    const amax = Math.max(...x.map(Math.abs));
    const d = f16Round(f(amax / 127));
    const id = amax !== 0 ? f(127 / amax) : 0;
    return x.map((v) => d * roundEven(f(v * id)));
  }
  let m = 0;
  for (const v of x) if (Math.abs(v) > Math.abs(m)) m = v;
  const dx = f(m / -8);
  const id = dx !== 0 ? f(1 / dx) : 0;
  const d = f16Round(dx);
  // x·id + 8.5 rounded once, as ggml's C compiles it with multiply-add contraction (float64 holds it exactly).
  return x.map((v) => d * (Math.min(15, Math.trunc(v * id + 8.5)) - 8));
}

/** A row as a cache of `dtype` stores it: each value rounded (f32, bf16) or each block of 32 quantised. */
export function storedRow(dtype: "f32" | "bf16" | "q8_0" | "q4_0", row: readonly number[]): number[] {
  if (dtype === "f32") return row.map((v) => f(v));
  if (dtype === "bf16") {
    const buf = new Float32Array(1);
    const bits = new Uint32Array(buf.buffer);
    return row.map((v) => {
      buf[0] = v;
      const b = bits[0];
      bits[0] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
      return buf[0];
    });
  }
  const out: number[] = [];
  for (let i = 0; i < row.length; i += 32) out.push(...quantizedBlock(dtype, row.slice(i, i + 32).map(f)));
  return out;
}
