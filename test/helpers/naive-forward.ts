/**
 * A naive float64 forward pass written straight from the architecture (docs/cla.md), independent of
 * kvslim's kernels, buffers and cache: the reference for models llama.cpp cannot run (CLA, kv norm).
 * Weights come as GGUF-layout f32 arrays (randomWeights); Q/K rows are interleaved for llama.
 */
import type { ModelConfig } from "../../src/model/config.js";

type W = Map<string, { shape: number[]; values: Float32Array }>;

function matvec(w: Float32Array, x: Float64Array, rows: number, cols: number, bias?: Float32Array): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = bias ? bias[r] : 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
    out[r] = s;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * scale * w[i]);
}

function rope(x: Float64Array, nHeads: number, c: ModelConfig, pos: number): void {
  const half = c.ropeDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      const theta = pos * Math.pow(c.ropeTheta, (-2 * i) / c.ropeDim);
      const [a, b] =
        c.ropeStyle === "interleaved"
          ? [h * c.headDim + 2 * i, h * c.headDim + 2 * i + 1]
          : [h * c.headDim + i, h * c.headDim + i + half];
      const x0 = x[a];
      const x1 = x[b];
      x[a] = x0 * Math.cos(theta) - x1 * Math.sin(theta);
      x[b] = x0 * Math.sin(theta) + x1 * Math.cos(theta);
    }
  }
}

/** Logits (T, V) for every position of `tokens`, no cache: each layer sees the whole sequence. */
export function naiveForward(c: ModelConfig, w: W, tokens: number[]): Float64Array[] {
  const get = (name: string) => w.get(name)?.values;
  const T = tokens.length;
  const D = c.dModel;
  const Hd = c.headDim;
  let xs = tokens.map((t) => Float64Array.from(get("token_embd.weight")!.subarray(t * D, (t + 1) * D)));
  const kvOf: { k: Float64Array[]; v: Float64Array[] }[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const xn = xs.map((x) => rmsnorm(x, get(p + "attn_norm.weight")!, c.normEps));
    const qs = xn.map((x, t) => {
      const q = matvec(get(p + "attn_q.weight")!, x, c.nHeads * Hd, D, get(p + "attn_q.bias"));
      rope(q, c.nHeads, c, t);
      return q;
    });
    if (c.kvSource[l] === l) {
      const kvIn = get(p + "attn_kv_norm.weight")
        ? xs.map((x) => rmsnorm(x, get(p + "attn_kv_norm.weight")!, c.normEps))
        : xn;
      const k = kvIn.map((x, t) => {
        const kk = matvec(get(p + "attn_k.weight")!, x, c.nKvHeads * Hd, D, get(p + "attn_k.bias"));
        rope(kk, c.nKvHeads, c, t);
        return kk;
      });
      const v = kvIn.map((x) => matvec(get(p + "attn_v.weight")!, x, c.nKvHeads * Hd, D, get(p + "attn_v.bias")));
      kvOf[l] = { k, v };
    }
    const { k, v } = kvOf[c.kvSource[l]];
    const group = c.nHeads / c.nKvHeads;
    xs = xs.map((x, t) => {
      const att = new Float64Array(c.nHeads * Hd);
      for (let h = 0; h < c.nHeads; h++) {
        const g = Math.floor(h / group);
        const scores: number[] = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < Hd; i++) dot += qs[t][h * Hd + i] * k[s][g * Hd + i];
          scores.push(dot / Math.sqrt(Hd));
        }
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) for (let i = 0; i < Hd; i++) att[h * Hd + i] += (e[s] / sum) * v[s][g * Hd + i];
      }
      const o = matvec(get(p + "attn_output.weight")!, att, D, c.nHeads * Hd);
      const x1 = x.map((xi, i) => xi + o[i]);
      const xf = rmsnorm(x1, get(p + "ffn_norm.weight")!, c.normEps);
      const gate = matvec(get(p + "ffn_gate.weight")!, xf, c.ffnDim, D);
      const up = matvec(get(p + "ffn_up.weight")!, xf, c.ffnDim, D);
      const hmid = gate.map((gv, i) => (gv / (1 + Math.exp(-gv))) * up[i]);
      const down = matvec(get(p + "ffn_down.weight")!, hmid, D, c.ffnDim);
      return x1.map((xi, i) => xi + down[i]);
    });
  }
  const out = get("output.weight") ?? get("token_embd.weight")!;
  return xs.map((x) => matvec(out, rmsnorm(x, get("output_norm.weight")!, c.normEps), c.vocabSize, D));
}
