/**
 * The training forward and backward of the Llama-style decoder kvslim runs (RMSNorm, RoPE, SwiGLU, MHA /
 * GQA / MQA, Cross-Layer Attention through kvSource), over a batch of B sequences of T tokens, written as
 * llm.c writes GPT-2: the forward saves exactly what the backward needs, and the backward walks the same
 * steps in reverse, each quoting the forward line it differentiates.
 *
 * Shapes: B sequences, T positions, BT = B·T rows, D model dim, H query heads, G KV heads, g = H / G,
 * Hd head dim, F FFN dim, V vocab, L layers. Row bt = b·T + t.
 *
 * CLA (docs/cla.md): a consumer layer attends over its producer's saved K and V; the backward adds every
 * consumer's dK, dV into the producer's buffers (layers run in reverse, so all consumers of a group come
 * before its producer), and the producer turns the sum into its K/V projections' gradient.
 * Conventions are the inference engine's (model/forward.ts), so a trained model loads and runs there:
 * Q/K rows interleaved for RoPE (GGUF order), the same kernels for the forward products.
 */
import type { Kernels } from "../kernels/kernels.js";
import type { Arena, Ptr } from "../memory/arena.js";
import { derive, type Derived, type ModelConfig } from "../model/config.js";
import { RopeTable, llama3FreqFactors } from "../model/rope.js";
import type { Parallel } from "../threads/parallel.js";
import type { ParamLayout } from "./params.js";

export interface BatchShape {
  batch: number; // B
  seqLen: number; // T
}

/** Saved activations of one layer (f32 unless noted). */
interface LayerActs {
  xb: Ptr; // (BT, D) attention-norm output
  rstd1: Ptr; // (BT)
  kvIn: Ptr; // (BT, D) K/V-input norm output (producers of kvNorm models), else = xb
  rstdKv: Ptr; // (BT)
  q: Ptr; // (BT, H·Hd) after RoPE
  att: Ptr; // (BT, H·Hd) attention output
  p: Ptr; // (B, G, g, T, T) attention probabilities
  mid: Ptr; // (BT, D) residual after attention
  xb2: Ptr; // (BT, D) FFN-norm output
  rstd2: Ptr; // (BT)
  gate: Ptr; // (BT, F) pre-activation
  up: Ptr; // (BT, F)
  h: Ptr; // (BT, F) silu(gate)·up
}

export class TrainModel {
  readonly d: Derived;
  readonly rows: number; // BT
  /** Parameter, gradient and AdamW moment regions, one layout (params.ts). */
  readonly params: Ptr;
  readonly grads: Ptr;
  readonly m: Ptr;
  readonly v: Ptr;
  /** (BT) i32 token ids and next-token targets (−1 = ignored) of the batch; the caller fills them. */
  readonly tokens: Ptr;
  readonly targets: Ptr;
  private readonly resid: Ptr[]; // (L + 1) × (BT, D): input of layer l; resid[L] feeds the final norm
  private readonly acts: LayerActs[];
  private readonly k: Ptr[]; // per producer slot (BT, G·Hd) after RoPE
  private readonly vv: Ptr[]; // per producer slot (BT, G·Hd)
  private readonly dK: Ptr[]; // per producer slot: Σ over the group's layers
  private readonly dV: Ptr[];
  private readonly xf: Ptr; // (BT, D) final-norm output
  private readonly rstdF: Ptr; // (BT)
  private readonly logits: Ptr; // (BT, V); dLogits in place after the loss
  private readonly losses: Ptr; // (BT)
  private readonly cos: Ptr; // (T, ropeDim/2)
  private readonly sin: Ptr;
  // Backward scratch.
  private readonly dx: Ptr; // (BT, D) gradient of the residual stream
  private readonly dxb: Ptr; // (BT, D)
  private readonly dq: Ptr; // (BT, H·Hd)
  private readonly datt: Ptr; // (BT, H·Hd)
  private readonly dF1: Ptr; // (BT, F)
  private readonly dF2: Ptr; // (BT, F)
  private readonly dKvIn: Ptr; // (BT, D), kvNorm models only
  private counted = 0;

  constructor(
    private readonly kern: Kernels,
    private readonly par: Parallel,
    private readonly arena: Arena,
    readonly config: ModelConfig,
    readonly layout: ParamLayout,
    readonly shape: BatchShape,
  ) {
    const c = config;
    const d = (this.d = derive(c));
    const BT = (this.rows = shape.batch * shape.seqLen);
    const T = shape.seqLen;
    const f = (n: number) => arena.alloc(4 * n);
    this.params = f(layout.total);
    this.grads = f(layout.total);
    this.m = f(layout.total);
    this.v = f(layout.total);
    this.tokens = f(BT);
    this.targets = f(BT);
    this.resid = Array.from({ length: c.nLayers + 1 }, () => f(BT * c.dModel));
    this.acts = Array.from({ length: c.nLayers }, (_, l) => {
      const xb = f(BT * c.dModel);
      const ownKvIn = c.kvNorm && d.isProducer[l];
      return {
        xb,
        rstd1: f(BT),
        kvIn: ownKvIn ? f(BT * c.dModel) : xb,
        rstdKv: ownKvIn ? f(BT) : 0,
        q: f(BT * d.qDim),
        att: f(BT * d.qDim),
        p: f(shape.batch * c.nHeads * T * T),
        mid: f(BT * c.dModel),
        xb2: f(BT * c.dModel),
        rstd2: f(BT),
        gate: f(BT * c.ffnDim),
        up: f(BT * c.ffnDim),
        h: f(BT * c.ffnDim),
      };
    });
    this.k = d.producers.map(() => f(BT * d.kvDim));
    this.vv = d.producers.map(() => f(BT * d.kvDim));
    this.dK = d.producers.map(() => f(BT * d.kvDim));
    this.dV = d.producers.map(() => f(BT * d.kvDim));
    this.xf = f(BT * c.dModel);
    this.rstdF = f(BT);
    this.logits = f(BT * c.vocabSize);
    this.losses = f(BT);
    const half = c.ropeDim / 2;
    this.cos = f(T * half);
    this.sin = f(T * half);
    const rope = new RopeTable(c.ropeDim, c.ropeTheta, llama3FreqFactors(c));
    for (let t = 0; t < T; t++) rope.fill(arena.f32, (this.cos >> 2) + t * half, (this.sin >> 2) + t * half, t);
    this.dx = f(BT * c.dModel);
    this.dxb = f(BT * c.dModel);
    this.dq = f(BT * d.qDim);
    this.datt = f(BT * d.qDim);
    this.dF1 = f(BT * c.ffnDim);
    this.dF2 = f(BT * c.ffnDim);
    this.dKvIn = c.kvNorm ? f(BT * c.dModel) : 0;
  }

  /** Bytes the constructor allocates for `config` and `shape` (for sizing the arena). */
  static bytesFor(config: ModelConfig, layout: ParamLayout, shape: BatchShape): number {
    const c = config;
    const d = derive(c);
    const BT = shape.batch * shape.seqLen;
    const T = shape.seqLen;
    const D = c.dModel;
    const perLayer = (l: number) => [
      BT * D,
      BT,
      c.kvNorm && d.isProducer[l] ? BT * D : 0,
      c.kvNorm && d.isProducer[l] ? BT : 0,
      BT * d.qDim,
      BT * d.qDim,
      shape.batch * c.nHeads * T * T,
      BT * D,
      BT * D,
      BT,
      BT * c.ffnDim,
      BT * c.ffnDim,
      BT * c.ffnDim,
    ];
    const sizes = [
      ...Array(4).fill(layout.total),
      BT,
      BT,
      ...Array(c.nLayers + 1).fill(BT * D),
      ...Array.from({ length: c.nLayers }, (_, l) => perLayer(l)).flat(),
      ...Array(4 * d.producers.length).fill(BT * d.kvDim),
      BT * D,
      BT,
      BT * c.vocabSize,
      BT,
      T * (c.ropeDim / 2),
      T * (c.ropeDim / 2),
      BT * D,
      BT * D,
      BT * d.qDim,
      BT * d.qDim,
      BT * c.ffnDim,
      BT * c.ffnDim,
      c.kvNorm ? BT * D : 0,
    ];
    return sizes.reduce((sum, n) => sum + Math.ceil((4 * n) / 64) * 64 + 64, 0);
  }

  /** Pointer of parameter `name` in region `base` (params, grads, m or v). */
  ptr(base: Ptr, name: string): Ptr {
    const t = this.layout.byName.get(name);
    if (t === undefined) throw new Error(`no parameter ${name}`);
    return base + 4 * t.offset;
  }

  /** Sets the gradients to zero (before a step's first micro-batch). */
  zeroGrads(): void {
    this.arena.f32.fill(0, this.grads >> 2, (this.grads >> 2) + this.layout.total);
  }

  /** Writes `weights` (GGUF names, f32 values in this layout's shapes) into the parameters. */
  setWeights(weights: ReadonlyMap<string, { values: Float32Array }>): void {
    for (const t of this.layout.tensors) {
      const w = weights.get(t.name);
      if (w === undefined || w.values.length !== t.size)
        throw new Error(`weights: ${t.name} missing or of the wrong size`);
      this.arena.f32.set(w.values, (this.params >> 2) + t.offset);
    }
  }

  /** The parameters (or another region: grads, m, v) as tensors by GGUF name (copies). */
  tensors(base: Ptr = this.params): Map<string, { shape: number[]; values: Float32Array }> {
    const f32 = this.arena.f32;
    return new Map(
      this.layout.tensors.map((t) => [
        t.name,
        { shape: t.shape, values: f32.slice((base >> 2) + t.offset, (base >> 2) + t.offset + t.size) },
      ]),
    );
  }

  /** The logits (BT, V) of the last forward(false) (a forward with the loss overwrites them with dLogits). */
  logitsView(): Float32Array {
    return this.arena.f32.subarray(this.logits >> 2, (this.logits >> 2) + this.rows * this.config.vocabSize);
  }

  /**
   * Runs the batch in tokens / targets: with `loss` (the default) returns the mean cross-entropy over the
   * rows with a target and leaves dLogits for backward(); without, leaves the logits and returns NaN.
   */
  forward(withLoss = true): number {
    const { kern: k, par, config: c, d, rows: BT, shape } = this;
    const D = c.dModel;
    const T = shape.seqLen;
    const P = (name: string) => this.ptr(this.params, name);
    // x = token_embd[tokens]
    const i32 = this.arena.i32;
    const emb = P("token_embd.weight");
    for (let r = 0; r < BT; r++) k.getRowF32(this.resid[0] + 4 * r * D, emb, i32[(this.tokens >> 2) + r], D);

    for (let l = 0; l < c.nLayers; l++) {
      const a = this.acts[l];
      const x = this.resid[l];
      const pre = `blk.${l}.`;
      // xb = rmsnorm(x) · attn_norm
      k.rmsnormForward(a.xb, a.rstd1, x, P(pre + "attn_norm.weight"), D, BT, c.normEps);
      // q = rope(xb @ Wqᵀ)
      par.matmul("F32", a.q, a.xb, P(pre + "attn_q.weight"), D, d.qDim, BT, 4 * D);
      this.rope(a.q, c.nHeads, false);
      const slot = d.slotOf[l];
      if (d.isProducer[l]) {
        // kvIn = rmsnorm(x) · kv_norm (kvNorm models), else xb; k = rope(kvIn @ Wkᵀ); v = kvIn @ Wvᵀ
        if (a.kvIn !== a.xb) k.rmsnormForward(a.kvIn, a.rstdKv, x, P(pre + "attn_kv_norm.weight"), D, BT, c.normEps);
        par.matmul("F32", this.k[slot], a.kvIn, P(pre + "attn_k.weight"), D, d.kvDim, BT, 4 * D);
        par.matmul("F32", this.vv[slot], a.kvIn, P(pre + "attn_v.weight"), D, d.kvDim, BT, 4 * D);
        this.rope(this.k[slot], c.nKvHeads, false);
      }
      // att = causal attention of q over the slot's k, v (per sequence and KV head); P saved
      this.eachHead((t, { q, kv, p }) => {
        par.task(
          t,
          "attentionForward",
          a.att + q,
          a.p + p,
          a.q + q,
          this.k[slot] + kv,
          this.vv[slot] + kv,
          T,
          c.headDim,
          d.groupSize,
          d.qDim,
          d.kvDim,
          this.scale,
        );
      });
      // mid = x + att @ Woᵀ
      par.matmul("F32", a.mid, a.att, P(pre + "attn_output.weight"), d.qDim, D, BT, 4 * d.qDim);
      k.add(a.mid, a.mid, x, BT * D);
      // xb2 = rmsnorm(mid) · ffn_norm; h = silu(xb2 @ Wgateᵀ) · (xb2 @ Wupᵀ); x' = mid + h @ Wdownᵀ
      k.rmsnormForward(a.xb2, a.rstd2, a.mid, P(pre + "ffn_norm.weight"), D, BT, c.normEps);
      par.matmul("F32", a.gate, a.xb2, P(pre + "ffn_gate.weight"), D, c.ffnDim, BT, 4 * D);
      par.matmul("F32", a.up, a.xb2, P(pre + "ffn_up.weight"), D, c.ffnDim, BT, 4 * D);
      k.swiglu(a.h, a.gate, a.up, BT * c.ffnDim);
      const next = this.resid[l + 1];
      par.matmul("F32", next, a.h, P(pre + "ffn_down.weight"), c.ffnDim, D, BT, 4 * c.ffnDim);
      k.add(next, next, a.mid, BT * D);
    }
    // xf = rmsnorm(x_L) · output_norm; logits = xf @ Woutᵀ; loss = mean cross-entropy over counted rows
    k.rmsnormForward(this.xf, this.rstdF, this.resid[c.nLayers], P("output_norm.weight"), D, BT, c.normEps);
    par.matmul("F32", this.logits, this.xf, this.outputWeight(this.params), D, c.vocabSize, BT, 4 * D);
    if (!withLoss) return NaN;
    let counted = 0;
    for (let r = 0; r < BT; r++) if (i32[(this.targets >> 2) + r] >= 0) counted++;
    this.counted = counted;
    const scale = counted > 0 ? 1 / counted : 0;
    // Rows are independent: split over the threads; dLogits overwrite the logits in place.
    par.splitRows(BT, c.vocabSize, (t, r0, r1) =>
      par.task(
        t,
        "crossEntropy",
        this.losses + 4 * r0,
        this.logits + 4 * r0 * c.vocabSize,
        this.logits + 4 * r0 * c.vocabSize,
        this.targets + 4 * r0,
        c.vocabSize,
        r1 - r0,
        scale,
      ),
    );
    par.flush();
    let sum = 0;
    const f32 = this.arena.f32;
    for (let r = 0; r < BT; r++) sum += f32[(this.losses >> 2) + r];
    return counted > 0 ? sum / counted : 0;
  }

  /** Adds the gradient of the last forward()'s mean loss to grads (call zeroGrads() first for a fresh step). */
  backward(): void {
    const { kern: k, par, config: c, d, rows: BT, shape } = this;
    const D = c.dModel;
    const T = shape.seqLen;
    const P = (name: string) => this.ptr(this.params, name);
    const G = (name: string) => this.ptr(this.grads, name);
    for (let s = 0; s < d.producers.length; s++) {
      this.arena.f32.fill(0, this.dK[s] >> 2, (this.dK[s] >> 2) + BT * d.kvDim);
      this.arena.f32.fill(0, this.dV[s] >> 2, (this.dV[s] >> 2) + BT * d.kvDim);
    }
    // logits = xf @ Woutᵀ  →  dxf = dLogits @ Wout; dWout += dLogitsᵀ @ xf  (dLogits from the forward's loss)
    par.matmulBackwardInput(this.dxb, this.logits, this.outputWeight(this.params), D, c.vocabSize, BT, c.vocabSize, 0);
    par.matmulBackwardWeight(this.outputWeight(this.grads), this.logits, this.xf, D, c.vocabSize, BT, c.vocabSize);
    // xf = rmsnorm(x_L) · output_norm  →  dx = rmsnorm backward
    k.rmsnormBackward(
      this.dx,
      G("output_norm.weight"),
      this.dxb,
      this.resid[c.nLayers],
      P("output_norm.weight"),
      this.rstdF,
      D,
      BT,
      0,
    );

    for (let l = c.nLayers - 1; l >= 0; l--) {
      const a = this.acts[l];
      const pre = `blk.${l}.`;
      const slot = d.slotOf[l];
      // x' = mid + h @ Wdownᵀ  →  dh = dx @ Wdown; dWdown += dxᵀ @ h; dmid = dx (+ below)
      par.matmulBackwardInput(this.dF1, this.dx, P(pre + "ffn_down.weight"), c.ffnDim, D, BT, D, 0);
      par.matmulBackwardWeight(G(pre + "ffn_down.weight"), this.dx, a.h, c.ffnDim, D, BT, D);
      // h = silu(gate) · up  →  dgate, dup
      k.swigluBackward(this.dF1, this.dF2, this.dF1, a.gate, a.up, BT * c.ffnDim);
      // gate = xb2 @ Wgateᵀ, up = xb2 @ Wupᵀ  →  dxb2 = dgate @ Wgate + dup @ Wup; dWgate, dWup
      par.matmulBackwardInput(this.dxb, this.dF1, P(pre + "ffn_gate.weight"), D, c.ffnDim, BT, c.ffnDim, 0);
      par.matmulBackwardInput(this.dxb, this.dF2, P(pre + "ffn_up.weight"), D, c.ffnDim, BT, c.ffnDim, 1);
      par.matmulBackwardWeight(G(pre + "ffn_gate.weight"), this.dF1, a.xb2, D, c.ffnDim, BT, c.ffnDim);
      par.matmulBackwardWeight(G(pre + "ffn_up.weight"), this.dF2, a.xb2, D, c.ffnDim, BT, c.ffnDim);
      // xb2 = rmsnorm(mid) · ffn_norm  →  dmid = dx + rmsnorm backward (accumulated into dx)
      k.rmsnormBackward(
        this.dx,
        G(pre + "ffn_norm.weight"),
        this.dxb,
        a.mid,
        P(pre + "ffn_norm.weight"),
        a.rstd2,
        D,
        BT,
        1,
      );

      // mid = x + att @ Woᵀ  →  datt = dmid @ Wo; dWo += dmidᵀ @ att; dx = dmid (+ below)
      par.matmulBackwardInput(this.datt, this.dx, P(pre + "attn_output.weight"), d.qDim, D, BT, D, 0);
      par.matmulBackwardWeight(G(pre + "attn_output.weight"), this.dx, a.att, d.qDim, D, BT, D);
      // att = softmax(q kᵀ · scale) v  →  dq (written); dk, dv added into the producer's sums. P becomes dS.
      this.eachHead((t, { q, kv, p }) => {
        par.task(
          t,
          "attentionBackwardPV",
          a.p + p,
          this.dV[slot] + kv,
          this.datt + q,
          a.att + q,
          this.vv[slot] + kv,
          a.p + p,
          T,
          c.headDim,
          d.groupSize,
          d.qDim,
          d.kvDim,
        );
        par.task(
          t,
          "attentionBackwardQK",
          this.dq + q,
          this.dK[slot] + kv,
          a.p + p,
          a.q + q,
          this.k[slot] + kv,
          T,
          c.headDim,
          d.groupSize,
          d.qDim,
          d.kvDim,
          this.scale,
        );
      });
      // q = rope(xb @ Wqᵀ)  →  un-rotate dq; dxb = dq @ Wq; dWq += dqᵀ @ xb
      this.rope(this.dq, c.nHeads, true);
      par.matmulBackwardInput(this.dxb, this.dq, P(pre + "attn_q.weight"), D, d.qDim, BT, d.qDim, 0);
      par.matmulBackwardWeight(G(pre + "attn_q.weight"), this.dq, a.xb, D, d.qDim, BT, d.qDim);
      if (d.isProducer[l]) {
        // Every layer of the group has added its dk, dv: k = rope(kvIn @ Wkᵀ), v = kvIn @ Wvᵀ  →
        // dkvIn = dk @ Wk + dv @ Wv; dWk += dkᵀ @ kvIn; dWv += dvᵀ @ kvIn
        this.rope(this.dK[slot], c.nKvHeads, true);
        const ownKvIn = a.kvIn !== a.xb;
        const dKvIn = ownKvIn ? this.dKvIn : this.dxb; // without a kv norm, kvIn is xb: add into dxb
        par.matmulBackwardInput(
          dKvIn,
          this.dK[slot],
          P(pre + "attn_k.weight"),
          D,
          d.kvDim,
          BT,
          d.kvDim,
          ownKvIn ? 0 : 1,
        );
        par.matmulBackwardInput(dKvIn, this.dV[slot], P(pre + "attn_v.weight"), D, d.kvDim, BT, d.kvDim, 1);
        par.matmulBackwardWeight(G(pre + "attn_k.weight"), this.dK[slot], a.kvIn, D, d.kvDim, BT, d.kvDim);
        par.matmulBackwardWeight(G(pre + "attn_v.weight"), this.dV[slot], a.kvIn, D, d.kvDim, BT, d.kvDim);
        // kvIn = rmsnorm(x) · kv_norm  →  dx += rmsnorm backward
        if (ownKvIn)
          k.rmsnormBackward(
            this.dx,
            G(pre + "attn_kv_norm.weight"),
            dKvIn,
            this.resid[l],
            P(pre + "attn_kv_norm.weight"),
            a.rstdKv,
            D,
            BT,
            1,
          );
      }
      // xb = rmsnorm(x) · attn_norm  →  dx += rmsnorm backward
      k.rmsnormBackward(
        this.dx,
        G(pre + "attn_norm.weight"),
        this.dxb,
        this.resid[l],
        P(pre + "attn_norm.weight"),
        a.rstd1,
        D,
        BT,
        1,
      );
    }
    // x = token_embd[tokens]  →  dtoken_embd[tokens] += dx
    k.embeddingBackward(G("token_embd.weight"), this.dx, this.tokens, D, BT);
  }

  /** Tokens with a target in the last forward(). */
  get countedTokens(): number {
    return this.counted;
  }

  private get scale(): number {
    return Math.fround(1 / Math.sqrt(this.config.headDim));
  }

  /** The output projection in region `base`: lm head, or the token embedding when tied. */
  private outputWeight(base: Ptr): Ptr {
    return this.ptr(base, this.config.tiedEmbeddings ? "token_embd.weight" : "output.weight");
  }

  /** RoPE (or its backward, inverse = true) in place on x (BT, nHeads·Hd), position t of each sequence. */
  private rope(x: Ptr, nHeads: number, inverse: boolean): void {
    const { kern: k, config: c, shape } = this;
    const half = c.ropeDim / 2;
    const rowBytes = 4 * nHeads * c.headDim;
    const interleaved = c.ropeStyle === "interleaved";
    const fn = inverse
      ? interleaved
        ? k.ropeInterleavedBackward
        : k.ropeHalvesBackward
      : interleaved
        ? k.ropeInterleaved
        : k.ropeHalves;
    for (let b = 0; b < shape.batch; b++) {
      for (let t = 0; t < shape.seqLen; t++) {
        fn(
          x + (b * shape.seqLen + t) * rowBytes,
          this.cos + 4 * t * half,
          this.sin + 4 * t * half,
          nHeads,
          c.headDim,
          c.ropeDim,
        );
      }
    }
  }

  /**
   * Calls task(thread, offsets) for every (sequence b, KV head kv), spread over the threads, then runs
   * them. Byte offsets: q of (b, kv)'s g query heads in (BT, H·Hd) buffers, kv of its head in (BT, G·Hd)
   * buffers, p of its probabilities in (B, G, g, T, T).
   */
  private eachHead(task: (thread: number, offsets: { q: number; kv: number; p: number }) => void): void {
    const { par, config: c, d, shape } = this;
    const T = shape.seqLen;
    const n = shape.batch * c.nKvHeads;
    for (let i = 0; i < n; i++) {
      const b = Math.floor(i / c.nKvHeads);
      const kv = i % c.nKvHeads;
      task(par.threadOf(i, n), {
        q: 4 * (b * T * d.qDim + kv * d.groupSize * c.headDim),
        kv: 4 * (b * T * d.kvDim + kv * c.headDim),
        p: 4 * i * d.groupSize * T * T,
      });
    }
    par.flush();
  }
}
