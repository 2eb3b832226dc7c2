/**
 * The attention methods against naive implementations written from the papers (test/helpers/naive-attention.ts),
 * on random queries, keys and values driven through one cache slot exactly as the model drives it; their
 * degenerate cases; and their byte counters against the transfer formulas in docs/attention.md.
 */
import { describe, expect, test } from "vitest";
import type { AttentionSpec } from "../src/attention/method.js";
import { layoutFor } from "../src/attention/index.js";
import { OutOfMemoryError } from "../src/errors.js";
import { createReferenceKernels } from "../src/kernels/reference.js";
import { KvCache, type KvDType } from "../src/kvcache/cache.js";
import { rotate, rotationBlocks } from "../src/kvcache/rotation.js";
import { ALIGN, Arena, PAGE, alignUp } from "../src/memory/arena.js";
import { Pool } from "../src/memory/pool.js";
import { Harness, type HarnessShape } from "./helpers/attention-harness.js";
import { gaussian, makeRandom } from "./helpers/kernels-helpers.js";
import {
  NaiveEvicting,
  naiveDense,
  naiveSparq,
  quantizedBlock,
  storedRow,
  topIndices,
  type Row,
} from "./helpers/naive-attention.js";

/** Random q (T, H·Hd), k and v (T, G·Hd); keys scaled so attention is peaked enough to matter. */
function randomStep(random: () => number, s: HarnessShape, T: number) {
  return {
    q: gaussian(random, T * s.H * s.Hd, 1),
    k: gaussian(random, T * s.G * s.Hd, 1),
    v: gaussian(random, T * s.G * s.Hd, 1),
  };
}

/** The rows of KV head kv as the cache stores them, from every step so far. */
class History {
  rows: Row[][];
  constructor(readonly s: HarnessShape) {
    this.rows = Array.from({ length: s.G }, () => []);
  }
  add(k: Float32Array, v: Float32Array): void {
    const { G, Hd, dtype } = this.s;
    const T = k.length / (G * Hd);
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const at = (t * G + g) * Hd;
        const pos = this.rows[g].length;
        this.rows[g].push({
          pos,
          k: storedRow(dtype, Array.from(k.subarray(at, at + Hd))),
          v: storedRow(dtype, Array.from(v.subarray(at, at + Hd))),
        });
      }
    }
  }
  /**
   * The rows of KV head g with the keys SparQ's approximate scores read: with a quantised cache and the
   * double layout, each channel of each whole group of 32 positions quantised again (KIVI-style); the
   * positions after the last whole group keep their rows' keys.
   */
  sparqRows(g: number, layout: "double" | "single"): Row[] {
    const { dtype, Hd } = this.s;
    const rows = this.rows[g];
    if ((dtype !== "q8_0" && dtype !== "q4_0") || layout === "single") return rows;
    const out = rows.map((r) => ({ ...r, kApprox: r.k }));
    for (let first = 0; first + 32 <= rows.length; first += 32) {
      const keys = out.slice(first, first + 32).map((r) => [...r.k]);
      for (let i = 0; i < Hd; i++) {
        const channel = quantizedBlock(
          dtype,
          keys.map((k) => k[i]),
        );
        channel.forEach((x, e) => (keys[e][i] = x));
      }
      keys.forEach((k, e) => (out[first + e].kApprox = k));
    }
    return out;
  }
  /** The query as a cache of this dtype's dot products see it: q8_0-quantised for q8_0 and q4_0 caches. */
  query(q: number[]): number[] {
    const dtype = this.s.dtype;
    return dtype === "q8_0" || dtype === "q4_0" ? storedRow("q8_0", q) : q;
  }
  vMean(g: number): number[] {
    const rows = this.rows[g];
    return rows[0].v.map((_, j) => rows.reduce((s, r) => s + r.v[j], 0) / rows.length);
  }
}

/** Query heads of KV head g at row t of q (T, H·Hd). */
function groupQueries(s: HarnessShape, q: Float32Array, t: number, g: number): number[][] {
  const gs = s.H / s.G;
  return Array.from({ length: gs }, (_, h) =>
    Array.from(q.subarray((t * s.H + g * gs + h) * s.Hd, (t * s.H + g * gs + h + 1) * s.Hd)),
  );
}

/** max |actual − expected| / max |expected| over the group outputs of one row. */
function relError(s: HarnessShape, out: Float32Array, t: number, expected: number[][][]): number {
  const gs = s.H / s.G;
  let diff = 0;
  let scale = 0;
  for (let g = 0; g < s.G; g++) {
    for (let h = 0; h < gs; h++) {
      for (let j = 0; j < s.Hd; j++) {
        const e = expected[g][h][j];
        diff = Math.max(diff, Math.abs(out[(t * s.H + g * gs + h) * s.Hd + j] - e));
        scale = Math.max(scale, Math.abs(e));
      }
    }
  }
  return diff / scale;
}

const QUANTIZED = ["q8_0", "q4_0"] as const;
const MHA = (dtype: KvDType): HarnessShape => ({ H: 4, G: 4, Hd: 32, maxRows: 512, dtype });
/** A quantised cache needs whole blocks of 32: head dim 32 for those, 24 otherwise. */
const GQA = (dtype: KvDType): HarnessShape => ({
  H: 6,
  G: 2,
  Hd: dtype.startsWith("q") ? 32 : 24,
  maxRows: 512,
  dtype,
});

describe("SparQ", () => {
  const cases = [];
  for (const shape of ["MHA", "GQA"] as const) {
    for (const dtype of ["f32", "bf16", ...QUANTIZED] as const) {
      for (const reallocation of [true, false]) {
        for (const layout of ["double", "single"] as const) cases.push({ shape, dtype, reallocation, layout });
      }
    }
  }
  test.each(cases)(
    "$shape $dtype reallocation=$reallocation layout=$layout: fast path == naive spec SparQ at every decode step (rel 1e-5)",
    ({ shape, dtype, reallocation, layout }) => {
      const s = shape === "MHA" ? MHA(dtype) : GQA(dtype);
      const spec: AttentionSpec = { method: "sparq", r: 8, k: 40, reallocation, layout };
      const harness = new Harness(s, spec);
      const history = new History(s);
      const random = makeRandom(11);
      for (let chunk = 0; chunk < 4; chunk++) {
        const { q, k, v } = randomStep(random, s, 50);
        harness.step(q, k, v);
        history.add(k, v);
      }
      for (let step = 0; step < 12; step++) {
        const { q, k, v } = randomStep(random, s, 1);
        const out = harness.step(q, k, v);
        history.add(k, v);
        const expected = Array.from({ length: s.G }, (_, g) =>
          naiveSparq(groupQueries(s, q, 0, g), history.sparqRows(g, layout), history.vMean(g), {
            r: 8,
            k: 40,
            l: 10,
            reallocation,
            groupRanking: "logits",
            query: (x) => history.query(x),
          }),
        );
        expect(relError(s, out, 0, expected)).toBeLessThan(1e-5);
      }
    },
  );

  test("GQA with groupRanking = probabilities == naive (rel 1e-5)", () => {
    const s = GQA("f32");
    const harness = new Harness(s, { method: "sparq", r: 6, k: 30, groupRanking: "probabilities", reallocation: true });
    const history = new History(s);
    const random = makeRandom(5);
    const first = randomStep(random, s, 60);
    harness.step(first.q, first.k, first.v);
    history.add(first.k, first.v);
    for (let step = 0; step < 5; step++) {
      const { q, k, v } = randomStep(random, s, 1);
      const out = harness.step(q, k, v);
      history.add(k, v);
      const expected = Array.from({ length: s.G }, (_, g) =>
        naiveSparq(groupQueries(s, q, 0, g), history.rows[g], history.vMean(g), {
          r: 6,
          k: 30,
          l: 7,
          reallocation: true,
          groupRanking: "probabilities",
        }),
      );
      expect(relError(s, out, 0, expected)).toBeLessThan(1e-5);
    }
  });

  test.each(["f32", "bf16", ...QUANTIZED] as const)(
    "%s: k + 1 ≥ S selects everything and equals dense attention, bit for bit",
    (dtype) => {
      for (const s of [MHA(dtype), GQA(dtype)]) {
        const sparq = new Harness(s, { method: "sparq", r: 4, k: 200, reallocation: true });
        const dense = new Harness(s, { method: "dense" });
        const random = makeRandom(3);
        for (const T of [64, 1, 1, 1, 64, 1]) {
          const { q, k, v } = randomStep(random, s, T);
          expect(sparq.step(q, k, v)).toEqual(dense.step(q, k, v));
        }
        expect(sparq.cache.length).toBeLessThanOrEqual(200);
      }
    },
  );

  test("r = Hd: the approximate scores rank positions exactly as dense attention does; the step == exact top-(k+1) attention (rel 1e-5)", () => {
    const s = MHA("f32");
    const harness = new Harness(s, { method: "sparq", r: s.Hd, k: 24, localWindow: 0, reallocation: false });
    const history = new History(s);
    const random = makeRandom(21);
    const first = randomStep(random, s, 150);
    harness.step(first.q, first.k, first.v);
    history.add(first.k, first.v);
    for (let step = 0; step < 4; step++) {
      const { q, k, v } = randomStep(random, s, 1);
      const out = harness.step(q, k, v);
      history.add(k, v);
      const expected = Array.from({ length: s.G }, (_, g) => {
        const [qh] = groupQueries(s, q, 0, g);
        const rows = history.rows[g];
        // With r = Hd, τ = sqrt(Hd): the approximation is the dense softmax itself, so rank by exact scores.
        const exact = rows.map((r) => r.k.reduce((a, x, i) => a + x * qh[i], 0));
        const scores = exact.slice();
        scores[rows.length - 1] = Infinity; // the current token is always selected
        const chosen = topIndices(scores, 25);
        return [
          naiveDense(
            qh,
            chosen.map((i) => rows[i]),
          ).out,
        ];
      });
      expect(relError(s, out, 0, expected)).toBeLessThan(1e-5);
    }
  });
});

describe("evicting baselines", () => {
  const cases = [
    { policy: "h2o" as const, dtype: "f32" as const, shape: "MHA" },
    { policy: "h2o" as const, dtype: "bf16" as const, shape: "GQA" },
    { policy: "streaming" as const, dtype: "f32" as const, shape: "GQA" },
    { policy: "streaming" as const, dtype: "bf16" as const, shape: "MHA" },
    { policy: "h2o" as const, dtype: "q8_0" as const, shape: "GQA" },
    { policy: "h2o" as const, dtype: "q4_0" as const, shape: "MHA" },
    { policy: "streaming" as const, dtype: "q8_0" as const, shape: "MHA" },
    { policy: "streaming" as const, dtype: "q4_0" as const, shape: "GQA" },
  ];
  test.each(cases)(
    "$policy $shape $dtype: == naive simulation over prefill + 30 decode steps (rel 1e-5); the cache never holds more than budget + 1 rows",
    ({ policy, dtype, shape }) => {
      const s = shape === "MHA" ? MHA(dtype) : GQA(dtype);
      const budget = 48;
      const spec: AttentionSpec =
        policy === "h2o" ? { method: "h2o", budget } : { method: "streaming", budget, sinks: 4 };
      const harness = new Harness(s, spec);
      const query = (x: number[]) => (dtype === "q8_0" || dtype === "q4_0" ? storedRow("q8_0", x) : x);
      const naive = Array.from(
        { length: s.G },
        () => new NaiveEvicting(policy, budget, policy === "h2o" ? 12 : 4, query),
      );
      const random = makeRandom(8);
      const feed = (T: number) => {
        const { q, k, v } = randomStep(random, s, T);
        const out = harness.step(q, k, v);
        const expected: number[][][][] = naive.map((n, g) => {
          const keys = Array.from({ length: T }, (_, t) =>
            storedRow(dtype, Array.from(k.subarray((t * s.G + g) * s.Hd, (t * s.G + g + 1) * s.Hd))),
          );
          const values = Array.from({ length: T }, (_, t) =>
            storedRow(dtype, Array.from(v.subarray((t * s.G + g) * s.Hd, (t * s.G + g + 1) * s.Hd))),
          );
          return n.step(
            Array.from({ length: T }, (_, t) => groupQueries(s, q, t, g)),
            keys,
            values,
          );
        });
        for (let t = 0; t < T; t++) {
          expect(
            relError(
              s,
              out,
              t,
              expected.map((e) => e[t]),
            ),
          ).toBeLessThan(1e-5);
        }
        expect(harness.cache.capacity).toBeLessThanOrEqual(Math.max(budget + 1, harness.cache.length));
      };
      feed(100); // prompt longer than the budget: dense, then compacted
      expect(harness.cache.capacity).toBe(budget + 1);
      expect(harness.cache.heldRows).toBe(budget);
      for (let i = 0; i < 30; i++) {
        feed(1);
        expect(harness.cache.capacity).toBe(budget + 1);
        expect(harness.cache.heldRows).toBe(budget);
      }
      feed(20); // a second prompt: the cache grows for it, then shrinks back
      expect(harness.cache.heldRows).toBe(budget);
      feed(1);
    },
  );

  test.each(["h2o", "streaming"] as const)(
    "%s with budgets around the context (C − 14, C − 1, C, C + 36; C = 64): == naive simulation up to the context (rel 1e-5); the cache never exceeds C rows; it evicts exactly when budget < positions",
    (policy) => {
      const C = 64;
      const s: HarnessShape = { H: 6, G: 2, Hd: 24, maxRows: C, dtype: "f32" };
      for (const budget of [C - 14, C - 1, C, C + 36]) {
        const spec: AttentionSpec =
          policy === "h2o" ? { method: "h2o", budget } : { method: "streaming", budget, sinks: 4 };
        const harness = new Harness(s, spec);
        const naive = Array.from(
          { length: s.G },
          () => new NaiveEvicting(policy, budget, policy === "h2o" ? Math.floor(budget / 4) : 4),
        );
        const random = makeRandom(budget);
        for (const T of [40, ...Array<number>(C - 40).fill(1)]) {
          const { q, k, v } = randomStep(random, s, T);
          const out = harness.step(q, k, v);
          const expected = naive.map((n, g) => {
            const rowsOf = (x: Float32Array) =>
              Array.from({ length: T }, (_, t) =>
                Array.from(x.subarray((t * s.G + g) * s.Hd, (t * s.G + g + 1) * s.Hd)),
              );
            return n.step(
              Array.from({ length: T }, (_, t) => groupQueries(s, q, t, g)),
              rowsOf(k),
              rowsOf(v),
            );
          });
          for (let t = 0; t < T; t++)
            expect(
              relError(
                s,
                out,
                t,
                expected.map((e) => e[t]),
              ),
              `budget ${budget}`,
            ).toBeLessThan(1e-5);
          expect(harness.cache.capacity, `budget ${budget}`).toBeLessThanOrEqual(C);
        }
        expect(harness.cache.length).toBe(C);
        // Rows held after the last step: the budget once positions passed it, else every position.
        expect(harness.cache.heldRows, `budget ${budget}`).toBe(Math.min(budget, C));
      }
    },
  );

  test.each(["h2o", "streaming"] as const)("%s with budget ≥ S == dense attention, bit for bit", (policy) => {
    const s = GQA("f32");
    const spec: AttentionSpec =
      policy === "h2o" ? { method: "h2o", budget: 200 } : { method: "streaming", budget: 200 };
    const method = new Harness(s, spec);
    const dense = new Harness(s, { method: "dense" });
    const random = makeRandom(4);
    for (const T of [70, 1, 1, 1, 30, 1, 1]) {
      const { q, k, v } = randomStep(random, s, T);
      expect(method.step(q, k, v)).toEqual(dense.step(q, k, v));
    }
  });
});

describe("byte counters", () => {
  /**
   * What each method's kernels are given per KV head per decode step (MHA, g = 1), in bytes: b per K/V
   * element, 4 per f32 extra. The spec's transfer model counts the same rows and columns but leaves the
   * current token's row, the mean's upkeep and the positions out: dense 2·S·Hd + 2·Hd, SparQ S·r + 2·k·Hd +
   * 4·Hd, H2O 2·k·Hd + 2·Hd + 2·S, streaming 2·k·Hd + 2·Hd elements.
   */
  const formula = {
    // S rows of K and V read; the new K and V row written.
    dense: (S: number, Hd: number, b: number) => 2 * S * Hd * b + 2 * Hd * b,
    // r columns over S rows, k + 1 rows of K and V (the current token's included), v̄ for the mix; the new
    // rows of K, V and Kᵀ written, v̄ read and written to update it.
    sparq: (S: number, Hd: number, b: number, r: number, k: number) =>
      S * r * b + 2 * (k + 1) * Hd * b + 4 * Hd + 3 * Hd * b + 2 * 4 * Hd,
    // The k + 1 rows held (the current token's included); the scores of those rows read and written; the
    // new rows, their position and zeroed score written.
    h2o: (_S: number, Hd: number, b: number, k: number) => 2 * (k + 1) * Hd * b + 2 * (k + 1) * 4 + 2 * Hd * b + 4 + 4,
    streaming: (_S: number, Hd: number, b: number, k: number) => 2 * (k + 1) * Hd * b + 2 * Hd * b + 4,
  };

  test.each(["f32", "bf16"] as const)(
    "%s: counted bytes per step == the bytes each method's kernels are given (dense, sparq, h2o, streaming)",
    (dtype) => {
      const s = MHA(dtype);
      const b = dtype === "f32" ? 4 : 2;
      const prompt = 200;
      const steps = 10;
      const sum = (per: (S: number) => number) => {
        let total = 0;
        for (let i = 0; i < steps; i++) total += s.G * per(prompt + i + 1);
        return total;
      };
      const run = (spec: AttentionSpec) => {
        const h = new Harness(s, spec);
        const random = makeRandom(2);
        const p = randomStep(random, s, prompt);
        h.step(p.q, p.k, p.v);
        for (let i = 0; i < steps; i++) {
          const d = randomStep(random, s, 1);
          h.step(d.q, d.k, d.v);
        }
        const t = h.cache.traffic;
        expect(t.steps).toBe(steps);
        return t;
      };
      const dense = run({ method: "dense" });
      expect(dense.read + dense.written).toBe(sum((S) => formula.dense(S, s.Hd, b)));
      const sparq = run({ method: "sparq", r: 8, k: 32, reallocation: true });
      expect(sparq.read + sparq.written).toBe(sum((S) => formula.sparq(S, s.Hd, b, 8, 32)));
      expect(sparq.denseRead + sparq.denseWritten).toBe(dense.read + dense.written);
      const h2o = run({ method: "h2o", budget: 64 });
      expect(h2o.read + h2o.written).toBe(sum((S) => formula.h2o(S, s.Hd, b, 64)));
      expect(h2o.denseRead + h2o.denseWritten).toBe(dense.read + dense.written);
      const streaming = run({ method: "streaming", budget: 64 });
      expect(streaming.read + streaming.written).toBe(sum((S) => formula.streaming(S, s.Hd, b, 64)));
    },
  );

  test.each(QUANTIZED)(
    "%s: counted bytes per step == the blocks each method's kernels are given (rows of Hd/32 blocks with their scales; SparQ's Kᵀ codes, a scale per 32 positions, the unfinished group from the rows)",
    (dtype) => {
      const s = MHA(dtype);
      const Hd = s.Hd;
      const R = (Hd / 32) * (dtype === "q8_0" ? 34 : 18); // one K or V row
      const code = dtype === "q8_0" ? 1 : 0.5; // one Kᵀ code
      const prompt = 220;
      const steps = 10; // S = 221 … 230: the step with S = 224 completes a group of Kᵀ
      const sum = (per: (S: number) => number) => {
        let total = 0;
        for (let i = 0; i < steps; i++) total += s.G * per(prompt + i + 1);
        return total;
      };
      const run = (spec: AttentionSpec) => {
        const h = new Harness(s, spec);
        const random = makeRandom(2);
        const p = randomStep(random, s, prompt);
        h.step(p.q, p.k, p.v);
        for (let i = 0; i < steps; i++) {
          const d = randomStep(random, s, 1);
          h.step(d.q, d.k, d.v);
        }
        return h.cache.traffic;
      };
      const dense = run({ method: "dense" });
      expect(dense.read + dense.written).toBe(sum((S) => 2 * S * R + 2 * R));
      const r = 8;
      const k = 32;
      const sparq = run({ method: "sparq", r, k, reallocation: true });
      const columns = (S: number) => {
        const grouped = Math.floor(S / 32) * 32;
        return r * grouped * code + r * (grouped / 32) * 2 + (S - grouped) * (r * code + 2 * Math.min(r, Hd / 32));
      };
      // A step whose row completes a group reads the group's 32 K rows and writes Hd codes of 32 and their scales.
      const group = (S: number) => (S % 32 === 0 ? 32 * R + Hd * (32 * code + 2) : 0);
      expect(sparq.read + sparq.written).toBe(
        sum((S) => columns(S) + 2 * (k + 1) * R + 4 * Hd + 2 * R + 2 * 4 * Hd + group(S)),
      );
      expect(sparq.denseRead + sparq.denseWritten).toBe(dense.read + dense.written);
      const single = run({ method: "sparq", r, k, reallocation: true, layout: "single" });
      expect(single.read + single.written).toBe(
        sum((S) => S * (r * code + 2 * Math.min(r, Hd / 32)) + 2 * (k + 1) * R + 4 * Hd + 2 * R + 2 * 4 * Hd),
      );
      const h2o = run({ method: "h2o", budget: 64 });
      expect(h2o.read + h2o.written).toBe(sum(() => 2 * 65 * R + 2 * 65 * 4 + 2 * R + 4 + 4));
      const streaming = run({ method: "streaming", budget: 64 });
      expect(streaming.read + streaming.written).toBe(sum(() => 2 * 65 * R + 2 * R + 4));
    },
  );

  test("sparq with compression c: r = Hd/c and k = S/(2c) track S; ratio ≈ 1/c at long context (±15%)", () => {
    const s: HarnessShape = { H: 2, G: 2, Hd: 64, maxRows: 4200, dtype: "f32" };
    const h = new Harness(s, { method: "sparq", compression: 8 });
    const random = makeRandom(9);
    for (let i = 0; i < 64; i++) {
      const p = randomStep(random, s, 64);
      h.step(p.q, p.k, p.v);
    }
    for (let i = 0; i < 3; i++) {
      const d = randomStep(random, s, 1);
      h.step(d.q, d.k, d.v);
    }
    const t = h.cache.traffic;
    const ratio = (t.read + t.written) / (t.denseRead + t.denseWritten);
    expect(ratio).toBeGreaterThan(0.85 / 8);
    expect(ratio).toBeLessThan(1.15 / 8);
  });
});

describe("KV cache rewind and traffic", () => {
  test.each(["f32", "bf16", ...QUANTIZED] as const)(
    "%s: rewind(5) after 5 decode steps (across a group of 32 positions) leaves rows, length and K/V as a cache that never took them, v̄ the float64 mean of the rows left (≤ 1e-6 relative), and the next SparQ step equal to that cache's (≤ 1e-5); traffic is counted for decode steps only",
    (dtype) => {
      const s: HarnessShape = { H: 2, G: 2, Hd: 32, maxRows: 128, dtype };
      const spec: AttentionSpec = { method: "sparq", r: 4, k: 8, reallocation: true };
      const a = new Harness(s, spec);
      const b = new Harness(s, spec);
      const random = makeRandom(5);
      const P = 62; // the decode steps complete the group of positions 32–63, the rewind reopens it
      const prompt = randomStep(random, s, P);
      a.step(prompt.q, prompt.k, prompt.v);
      b.step(prompt.q, prompt.k, prompt.v);
      expect(a.cache.traffic).toEqual({ steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 }); // prefill is not counted
      for (let i = 0; i < 5; i++) {
        const d = randomStep(random, s, 1);
        a.step(d.q, d.k, d.v);
      }
      const counted = { ...a.cache.traffic };
      expect(counted.steps).toBe(5);
      a.cache.rewind(5);
      expect(a.cache.traffic).toEqual(counted);
      expect([a.cache.rows, a.cache.length]).toEqual([P, P]);
      const bytes = (h: Harness, g: number) =>
        h.arena.u8.slice(h.cache.keys(0, g), h.cache.keys(0, g) + P * h.cache.rowBytes);
      for (let g = 0; g < s.G; g++) {
        const mean = a.arena.f32.slice(a.cache.valueMean(0, g) >> 2, (a.cache.valueMean(0, g) >> 2) + s.Hd);
        const rows = Array.from({ length: P }, (_, t) =>
          storedRow(dtype, Array.from(prompt.v.subarray((t * s.G + g) * s.Hd, (t * s.G + g + 1) * s.Hd))),
        );
        for (let j = 0; j < s.Hd; j++) {
          const m = rows.reduce((sum, r) => sum + r[j], 0) / P;
          expect(Math.abs(mean[j] - m)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(m)));
        }
        expect(bytes(a, g)).toEqual(bytes(b, g));
      }
      for (let i = 0; i < 4; i++) {
        const next = randomStep(random, s, 1);
        const outA = a.step(next.q, next.k, next.v);
        const outB = b.step(next.q, next.k, next.v);
        for (let j = 0; j < outA.length; j++) expect(Math.abs(outA[j] - outB[j])).toBeLessThanOrEqual(1e-5);
      }
    },
  );

  test("an evicting cache refuses to rewind; rewinding more rows than held is refused", () => {
    const h = new Harness(
      { H: 2, G: 2, Hd: 16, maxRows: 64, dtype: "f32" },
      { method: "streaming", budget: 8, sinks: 4 },
    );
    const p = randomStep(makeRandom(1), h.shape, 12);
    h.step(p.q, p.k, p.v);
    expect(() => h.cache.rewind(1)).toThrow(/an evicting cache cannot rewind/);
    const d = new Harness({ H: 2, G: 2, Hd: 16, maxRows: 64, dtype: "f32" }, { method: "dense" });
    d.step(p.q, p.k, p.v);
    expect(() => d.cache.rewind(13)).toThrow(/cannot rewind 13 of 12 rows/);
  });
});

describe("KV cache resize", () => {
  test.each(["f32", "bf16"] as const)(
    "%s: a resize the pool cannot hold throws OutOfMemoryError and leaves the cache exactly as it was (capacity, rows, every byte); free() then returns all of the pool",
    (dtype) => {
      const shape = { nSlots: 2, nKvHeads: 2, headDim: 8 };
      const layout = layoutFor({ method: "h2o", budget: 8 }, dtype, 1);
      const C = 16;
      const bytes = alignUp(KvCache.bytesFor(shape, layout, C), ALIGN);
      const arena = new Arena(bytes + 4 * PAGE, "a KV cache test");
      const kernels = createReferenceKernels(arena.memory);
      const io = arena.alloc(2 * 4 * shape.nKvHeads * shape.headDim);
      const pool = new Pool(arena.alloc(bytes), bytes); // room for one cache of C rows and no more
      const cache = new KvCache(arena, pool, kernels, shape, layout, C);
      const random = makeRandom(3);
      for (let t = 0; t < 10; t++) {
        arena.f32.set(gaussian(random, 2 * shape.nKvHeads * shape.headDim, 1), io >> 2);
        for (let slot = 0; slot < shape.nSlots; slot++)
          cache.store(slot, 0, io, io + 4 * shape.nKvHeads * shape.headDim);
        cache.advance(1);
      }
      const before = arena.u8.slice(cache.keys(0, 0), cache.keys(0, 0) + bytes);
      expect(() => cache.resize(C + 20)).toThrow(OutOfMemoryError);
      expect(cache.capacity).toBe(C);
      expect(cache.rows).toBe(10);
      expect(cache.heldRows).toBe(10);
      expect(arena.u8.slice(cache.keys(0, 0), cache.keys(0, 0) + bytes)).toEqual(before);
      cache.free();
      expect(pool.inUse).toBe(0);
      // The pool is whole again: a cache of C rows fits.
      new KvCache(arena, pool, kernels, shape, layout, C).free();
    },
  );
});

describe("Hadamard rotation of a quantised cache", () => {
  /** Sylvester's Hadamard matrix of size n, normalised, built from its definition H[i][j] = (−1)^popcount(i & j) / √n. */
  const hadamard = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      Array.from({ length: n }, (_, j) => {
        let bits = i & j;
        let parity = 0;
        for (; bits > 0; bits &= bits - 1) parity ^= 1;
        return (parity ? -1 : 1) / Math.sqrt(n);
      }),
    );
  /** x (Hd) times the block-diagonal matrix of n × n Hadamard blocks, in float64. */
  const rotateNaive = (x: number[], n: number) => {
    const h = hadamard(n);
    return x.map((_, i) => {
      const b = i - (i % n);
      return h[i % n].reduce((sum, hij, j) => sum + hij * x[b + j], 0);
    });
  };

  test("rotate == the block-diagonal Hadamard matrix product (|Δ| ≤ 4e-6 on N(0, 1) values), twice == identity; blocks for head dims 64, 96, 128, 192, 256: K the largest power of two dividing Hd, V 64, none below 64", () => {
    expect([64, 96, 128, 192, 256, 32, 80].map((Hd) => rotationBlocks(Hd))).toEqual([
      { k: 64, v: 64 },
      null,
      { k: 128, v: 64 },
      { k: 64, v: 64 },
      { k: 256, v: 64 },
      null,
      null,
    ]);
    const random = makeRandom(31);
    for (const [Hd, block] of [
      [64, 64],
      [128, 128],
      [128, 64],
      [256, 256],
    ]) {
      const x = gaussian(random, 3 * Hd, 1);
      const y = Float32Array.from(x);
      rotate(y, 0, 3, Hd, block);
      for (let h = 0; h < 3; h++) {
        const want = rotateNaive(Array.from(x.subarray(h * Hd, (h + 1) * Hd)), block);
        for (let i = 0; i < Hd; i++) expect(Math.abs(y[h * Hd + i] - want[i])).toBeLessThanOrEqual(1e-6 * 4);
      }
      rotate(y, 0, 3, Hd, block);
      for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(1e-6 * 4);
    }
  });

  test.each(QUANTIZED)(
    "%s: dense, SparQ and H2O over a rotated cache == naive attention of the rotated q, k, v (quantised rows, q8_0 query) rotated back (rel 1e-5); != the unrotated cache",
    (dtype) => {
      const s: HarnessShape = { H: 4, G: 2, Hd: 128, maxRows: 256, dtype, rotation: true };
      const blocks = rotationBlocks(s.Hd)!;
      for (const spec of [
        { method: "dense" },
        { method: "sparq", r: 16, k: 24, reallocation: true },
        { method: "h2o", budget: 48 },
      ] as AttentionSpec[]) {
        const harness = new Harness(s, spec);
        const plain = new Harness({ ...s, rotation: false }, spec);
        const history = new History(s);
        const naive = Array.from({ length: s.G }, () => new NaiveEvicting("h2o", 48, 12, (x) => history.query(x)));
        const random = makeRandom(17);
        // The rotation itself is checked against the matrix above; here the inputs go through the same f32
        // transform, so the quantised codes are the cache's and the test is about where it is applied.
        const rotateRows = (x: Float32Array, n: number) => {
          const y = Float32Array.from(x);
          rotate(y, 0, x.length / s.Hd, s.Hd, n);
          return y;
        };
        for (const T of [80, 1, 1, 1]) {
          const { q, k, v } = randomStep(random, s, T);
          const out = harness.step(Float32Array.from(q), Float32Array.from(k), Float32Array.from(v));
          const unrotated = plain.step(q, k, v);
          const [qr, kr, vr] = [rotateRows(q, blocks.k), rotateRows(k, blocks.k), rotateRows(v, blocks.v)];
          history.add(kr, vr);
          if (spec.method === "h2o") {
            const outs = naive.map((n, g) =>
              n.step(
                Array.from({ length: T }, (_, t) => groupQueries(s, qr, t, g)),
                Array.from({ length: T }, (_, t) => history.rows[g][history.rows[g].length - T + t].k),
                Array.from({ length: T }, (_, t) => history.rows[g][history.rows[g].length - T + t].v),
              ),
            );
            for (let t = 0; t < T; t++) {
              const back = outs.map((o) => o[t].map((y) => rotateNaive(y, blocks.v)));
              expect(relError(s, out, t, back), `${spec.method} row ${t}`).toBeLessThan(1e-5);
            }
          } else if (T === 1) {
            const expected = Array.from({ length: s.G }, (_, g) => {
              const qs = groupQueries(s, qr, 0, g);
              const ys =
                spec.method === "dense"
                  ? qs.map((x) => naiveDense(history.query(x), history.rows[g]).out)
                  : naiveSparq(qs, history.sparqRows(g, "double"), history.vMean(g), {
                      r: 16,
                      k: 24,
                      l: 6,
                      reallocation: true,
                      groupRanking: "logits",
                      query: (x) => history.query(x),
                    });
              return ys.map((y) => rotateNaive(y, blocks.v));
            });
            expect(relError(s, out, 0, expected), spec.method).toBeLessThan(1e-5);
          }
          let apart = 0;
          for (let i = 0; i < s.H * s.Hd; i++) apart = Math.max(apart, Math.abs(out[i] - unrotated[i]));
          expect(apart, "rotated ≠ unrotated").toBeGreaterThan(1e-4);
        }
      }
    },
  );

  test("a rotation is refused for an f32 cache or a head dim that is not a multiple of 64", () => {
    expect(
      () => new Harness({ H: 2, G: 2, Hd: 64, maxRows: 64, dtype: "f32", rotation: true }, { method: "dense" }),
    ).toThrow(
      /the Hadamard rotation is for a q8_0 or q4_0 cache with a head dimension that is a multiple of 64; this one is f32 with head dimension 64/,
    );
    expect(
      () => new Harness({ H: 2, G: 2, Hd: 96, maxRows: 64, dtype: "q8_0", rotation: true }, { method: "dense" }),
    ).toThrow(/this one is q8_0 with head dimension 96/);
  });
});

describe("SparQ options from the library", () => {
  test("a groupRanking, layout or reallocation outside their values is refused with the value named", () => {
    const make = (spec: object) => () =>
      new Harness({ H: 4, G: 2, Hd: 16, maxRows: 64, dtype: "f32" }, { method: "sparq", compression: 4, ...spec });
    expect(make({ groupRanking: "probs" })).toThrow(
      /sparq groupRanking must be "logits" or "probabilities", got "probs"/,
    );
    expect(make({ layout: "triple" })).toThrow(/sparq layout must be "double" or "single", got "triple"/);
    expect(make({ reallocation: "yes" })).toThrow(/sparq reallocation must be true or false, got "yes"/);
    expect(make({ groupRanking: "probabilities", layout: "single", reallocation: false })).not.toThrow();
  });
});
