/**
 * The Kernels interface: every hot loop kvslim runs, over byte offsets into the one shared memory.
 *
 * Calling convention (STYLE.md 2): output first, then inputs, then dimensions. Kernels return void,
 * never allocate, never validate: callers check shapes once at the boundary.
 * All pointers are byte offsets (Ptr) into the arena's WebAssembly.Memory; f32 arrays are 4-byte
 * aligned, every allocation the arena hands out is 64-byte aligned.
 *
 * Two implementations with the same signatures: the WASM SIMD module (assembly/, loaded by wasm.ts)
 * and the plain-TypeScript reference twin (reference.ts). Tests diff them on random shapes.
 * Kernels extends TrainKernels (the training kernels, at the end of this file).
 *
 * Shape letters: n input features (or a vector's length), d output features, t rows (tokens) of a
 * batch, S cached positions, Hd head dim, nHeads heads in a vector of heads, g query heads sharing one
 * KV head, r selected components (SparQ), ldk the row stride of a d-major key copy (capacity >= S),
 * T query rows of a causal prefill chunk and S0 the positions cached before it.
 * Index arrays (idx, outIdx) hold i32. "bf16" K / V / kT hold u16 bits: f32 bits = bf16 << 16.
 *
 * Dot types (as llama.cpp's CPU backend, so logits agree with it): a matrix in bf16 multiplies an
 * activation first rounded to bf16 (roundBf16), q8_0 an activation quantized to q8_0 blocks
 * (quantizeQ8_0) with integer block dot products; f16 and f32 matrices multiply f32 activations.
 */
import type { Ptr } from "../memory/arena.js";

export interface Kernels extends TrainKernels, QuantKernels, KvQuantKernels {
  /** out (d) = W (d, n) @ x (n), W f32. */
  matvecF32(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W f16, x f32. */
  matvecF16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W bf16, x f32 holding bf16-rounded values. */
  matvecBf16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W q8_0 (d rows of n/32 blocks), xq = x as q8_0 blocks (n/32). */
  matvecQ8_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;

  /**
   * out (t, d) = X (t, n) @ W (d, n)^T, W f32; out's rows are ldo ≥ d floats apart (ldo > d when the d
   * rows are one thread's share of a wider output). Each element is the same bits whatever the W rows
   * around it, as long as a share starts at a multiple of 4 rows.
   */
  matmulF32(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W f16, X f32; row stride ldo. */
  matmulF16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W bf16, X bf16-rounded f32; row stride ldo. */
  matmulBf16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W q8_0, xq = t rows of n/32 q8_0 blocks; row stride ldo. */
  matmulQ8_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;

  /** out (n/32 blocks of 34 bytes) = q8_0(x (n)): d = max|x|/127 as f16, q = nearest-even(x * (1/d)). */
  quantizeQ8_0(out: Ptr, x: Ptr, n: number): void;
  /** out (n) = f16(x (n)) as f32 (round to nearest even). out may equal x. */
  roundF16(out: Ptr, x: Ptr, n: number): void;
  /** out (n) = bf16(x (n)) as f32 (round to nearest even). out may equal x. */
  roundBf16(out: Ptr, x: Ptr, n: number): void;

  /** out (n) = row `row` of table (rows, n) converted to f32; table in f32 / f16 / bf16 / q8_0. */
  getRowF32(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowF16(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowBf16(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ8_0(out: Ptr, table: Ptr, row: number, n: number): void;

  /** out (n) = x / sqrt(mean(x^2) + eps) * w (n). out may equal x. */
  rmsnorm(out: Ptr, x: Ptr, w: Ptr, n: number, eps: number): void;
  /**
   * RoPE in place on x (nHeads, Hd): the first nRot dims of each head rotate by the angles whose
   * cos/sin (nRot/2) are given. Interleaved pairs (2i, 2i+1), as GGUF llama files expect.
   */
  ropeInterleaved(x: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /** Same, pairs (i, i + nRot/2): the "NeoX" / Hugging Face rotate_half convention (qwen2). */
  ropeHalves(x: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /** out (n) = silu(gate) * up, silu(x) = x / (1 + exp(-x)). out may equal gate or up. */
  swiglu(out: Ptr, gate: Ptr, up: Ptr, n: number): void;
  /** out (n) = a + b. out may equal a or b. */
  add(out: Ptr, a: Ptr, b: Ptr, n: number): void;

  /**
   * Dense attention of one query head over S cached positions of one KV head:
   * scores (S) = K (S, Hd) @ q (Hd) * scale; p = softmax(scores); out (Hd) = p @ V (S, Hd).
   * K, V f32 with rows of Hd contiguous. `scores` is scratch of S floats (holds p afterwards).
   */
  attendF32(out: Ptr, scores: Ptr, q: Ptr, k: Ptr, v: Ptr, S: number, Hd: number, scale: number): void;
  /**
   * x (n) = softmax(x) in place, as attendF32's step 2 (f32 exps summed in f64, times f32(1 / Σ)).
   * -Infinity entries become 0; +Infinity, or every entry -Infinity, is unsupported.
   */
  softmaxF32(x: Ptr, n: number): void;
  /**
   * Dense attention of the g query heads sharing one KV head: for each head h,
   * scores[h] (S) = K (S, Hd) @ q[h] * scale; p[h] = softmax(scores[h]); out[h] (Hd) = p[h] @ V (S, Hd).
   * q, out (g, Hd); K, V (S, Hd) f32; scores (g, S) scratch, holds p afterwards. Each head is
   * attendF32 bit for bit; K and V are read once for all g heads.
   */
  attentionF32(out: Ptr, scores: Ptr, q: Ptr, k: Ptr, v: Ptr, S: number, Hd: number, g: number, scale: number): void;
  /** attentionF32 with K, V (S, Hd) bf16: equal to attentionF32 on the decoded values, bit for bit. */
  attentionBf16(out: Ptr, scores: Ptr, q: Ptr, k: Ptr, v: Ptr, S: number, Hd: number, g: number, scale: number): void;
  /**
   * attentionF32 over the rows idx (n) of K, V (S, Hd) f32 (i32 positions, any order): equal bit for
   * bit to attentionF32 on those rows gathered in idx order. scores (g, n) holds p afterwards.
   */
  attendRowsF32(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    idx: Ptr,
    n: number,
    Hd: number,
    g: number,
    scale: number,
  ): void;
  /** attendRowsF32 with K, V bf16. */
  attendRowsBf16(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    idx: Ptr,
    n: number,
    Hd: number,
    g: number,
    scale: number,
  ): void;
  /**
   * Causal dense attention of a prefill chunk of T query rows, each with the g query heads of one KV head:
   * query (t, h) at q (T, qStride) float t·qStride + h·Hd (qStride floats between rows, the g heads
   * adjacent) attends over rows 0 … S0 + t of K, V (S0 + T, Hd) f32, out (T, qStride) in the same layout.
   * Bit for bit attentionF32 once per row t with S = S0 + t + 1, but K and V are read once for all T·g
   * queries. scores (T, g, S0 + T) scratch: row (t, h) holds the query's p in its first S0 + t + 1 floats
   * afterwards; the rest of the row is not written.
   */
  attentionCausalF32(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S0: number,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    scale: number,
  ): void;
  /** attentionCausalF32 with K, V (S0 + T, Hd) bf16: equal to attentionCausalF32 on the decoded values, bit for bit. */
  attentionCausalBf16(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S0: number,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    scale: number,
  ): void;

  /**
   * SparQ's approximate scores from the d-major key copy kT (Hd, ldk) f32 (row i = component i of
   * positions 0..S-1): out (g, S), out[h][s] = f32(acc) * scale[h], where acc = 0 and for j = 0..r-1
   * in order acc = f32(acc + f32(q[h][idx[j]] * kT[idx[j]][s])). q (g, Hd); idx (r) i32; scale (g) f32.
   * Defined bit for bit (no fused multiply-add, no reordering).
   */
  sparqScoresF32(
    out: Ptr,
    q: Ptr,
    kT: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    S: number,
    ldk: number,
    Hd: number,
    g: number,
  ): void;
  /** sparqScoresF32 with kT bf16. */
  sparqScoresBf16(
    out: Ptr,
    q: Ptr,
    kT: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    S: number,
    ldk: number,
    Hd: number,
    g: number,
  ): void;
  /** sparqScoresF32 read from the S-major K (S, Hd) f32 (kT[i][s] = K[s][i]): bit for bit the same. */
  sparqScoresStridedF32(
    out: Ptr,
    q: Ptr,
    k: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    S: number,
    Hd: number,
    g: number,
  ): void;
  /** sparqScoresStridedF32 with K bf16. */
  sparqScoresStridedBf16(
    out: Ptr,
    q: Ptr,
    k: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    S: number,
    Hd: number,
    g: number,
  ): void;

  /**
   * SparQ's α per query head: alpha[h] (g f32) = min(1, Σ_{j<n} e^(a[h][idx[j]] − m_h) / Σ_{s<S} e^(a[h][s] − m_h)),
   * for the approximate logits a (g, S) f32, m_h = max_s a[h][s], and the n selected positions idx (n) i32.
   * The exps are approximate (relative error about 2e-7; e^x below e^-87 counts as e^-87); sums in f32
   * lanes over blocks of 64 terms, blocks added in f64. a is not written.
   */
  sparqAlpha(alpha: Ptr, approx: Ptr, idx: Ptr, n: number, S: number, g: number): void;

  /**
   * outIdx (kk) i32 = the indices of the kk largest of x (n) f32, in ascending index order; 1 <= kk <= n.
   * Larger value first, ties to the lower index; values compare by their f32 bits mapped to order-
   * preserving u32 keys (-0 < +0, +Infinity allowed; NaN unsupported). No sort: a radix select (for long x and
   * kk ≤ n/4, on the keys above a threshold guessed from a sample).
   * scratch: 4 * (n + 2048) bytes, caller-provided (the kernel keeps no state between calls).
   */
  topK(outIdx: Ptr, x: Ptr, n: number, kk: number, scratch: Ptr): void;

  /** out (n) u16 = bf16(x (n) f32): round to nearest even, NaN stays a quiet NaN (as dtype.ts f32ToBf16). */
  packBf16(out: Ptr, x: Ptr, n: number): void;
  /** kT[i * ldk] = x[i] for i < n: x (n) f32 as column 0 of kT (n, ldk) f32 (kT points at the column). */
  storeColumnF32(kT: Ptr, x: Ptr, n: number, ldk: number): void;
  /** The same into kT (n, ldk) bf16, rounded as packBf16. */
  storeColumnBf16(kT: Ptr, x: Ptr, n: number, ldk: number): void;
}

/**
 * The f32 training kernels (assembly/train-*.ts, reference twin reference-train.ts): the forwards that
 * save what their backward needs, the backwards, the loss and the optimizer, for a hand-written
 * training loop (each layer a forward / backward pair of calls, as llm.c).
 *
 * Shape letters: t rows (tokens), n input features, d output features, T sequence length, H query heads,
 * G KV heads, g = H / G query heads per KV head, Hd head dim, V vocab. A d prefix is a gradient (dX: the
 * loss's gradient with respect to X). "+=" kernels add into their output (gradients shared between
 * layers, as a CLA producer's K / V weights, and accumulated over micro-batches); `accumulate` non-zero
 * turns a "=" into "+=". Every argument is a number, at most 12, as the thread protocol carries them.
 */
export interface TrainKernels {
  /**
   * The input gradient of Y (t, d) = X (t, n) @ W (d, n)^T: dX (t, n) = dY (t, d) @ W (d, n), or += when
   * accumulate ≠ 0. dY's rows are ldy ≥ d floats apart. Each dX element is one f32 sum over r = 0 … d − 1
   * in order, starting from dX (accumulating) or 0: its bits do not depend on the rows around it, so
   * threads split by rows of dX, rows [t0, t1) being (dX + 4·t0·n, dY + 4·t0·ldy, t = t1 − t0).
   */
  matmulBackwardInput(dX: Ptr, dY: Ptr, w: Ptr, n: number, d: number, t: number, ldy: number, accumulate: number): void;
  /**
   * The weight gradient of the same layer: dW (d, n) += dY^T (d, t) @ X (t, n). dY (t, ldy), ldy ≥ d:
   * its first d columns are used. Each dW element is one f32 sum over i = 0 … t − 1 in order, starting
   * from dW, so threads split by rows of dW: rows [r0, r1) are (dW + 4·r0·n, dY + 4·r0, d = r1 − r0, same ldy).
   */
  matmulBackwardWeight(dW: Ptr, dY: Ptr, x: Ptr, n: number, d: number, t: number, ldy: number): void;

  /**
   * out (t, n) = rmsnorm of each row of x (t, n) with w (n), and rstd (t) = 1 / sqrt(mean(x²) + eps) per
   * row (saved for the backward). Each row equals rmsnorm bit for bit.
   */
  rmsnormForward(out: Ptr, rstd: Ptr, x: Ptr, w: Ptr, n: number, t: number, eps: number): void;
  /**
   * The backward of rmsnormForward: dX (t, n) (= or += when accumulate ≠ 0) = rstd · (dx̂ − x̂ · mean(dx̂ · x̂))
   * with x̂ = x · rstd, dx̂ = dOut · w; dW (n) += Σ_rows dOut · x̂ (rows in order). dOut, x (t, n), w (n),
   * rstd (t) from the forward. dX may equal dOut.
   */
  rmsnormBackward(
    dX: Ptr,
    dW: Ptr,
    dOut: Ptr,
    x: Ptr,
    w: Ptr,
    rstd: Ptr,
    n: number,
    t: number,
    accumulate: number,
  ): void;

  /**
   * The backward of ropeInterleaved, in place on dx (nHeads, Hd): each pair rotated by −angle,
   * [dx0, dx1] ← [dx0 cos + dx1 sin, dx1 cos − dx0 sin] (cos, sin (nRot/2)). Bit for bit in f32.
   */
  ropeInterleavedBackward(dx: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /** The backward of ropeHalves: the same with pairs (i, i + nRot/2). */
  ropeHalvesBackward(dx: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /**
   * The backward of out = silu(gate) · up: dUp (n) = dOut · silu(gate), dGate (n) = dOut · up · σ · (1 + gate · (1 − σ)),
   * σ = 1 / (1 + e^−gate). dGate may equal gate, dUp may equal up.
   */
  swigluBackward(dGate: Ptr, dUp: Ptr, dOut: Ptr, gate: Ptr, up: Ptr, n: number): void;
  /** The backward of getRowF32 per token: dTable (rows, n) row tokens[i] += dOut (t, n) row i, tokens (t) i32, i in order. */
  embeddingBackward(dTable: Ptr, dOut: Ptr, tokens: Ptr, n: number, t: number): void;

  /**
   * Causal self-attention over T positions of the g query heads of one KV head, saving P:
   * P[h][t][u] = softmax_u(q (t, h) · k_u · scale) for u ≤ t, out (t, h) = Σ_u P[h][t][u] v_u.
   * q, out (T, qStride): head h of position t at float t·qStride + h·Hd (the g heads adjacent, as
   * attentionCausalF32); k, v (T, kvStride): position u at float u·kvStride. P (g, T, T): row (h, t) at float
   * (h·T + t)·T, its first t + 1 floats written. With kvStride = Hd, bit for bit attentionCausalF32 (S0 = 0).
   */
  attentionForward(
    out: Ptr,
    p: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    kvStride: number,
    scale: number,
  ): void;
  /**
   * Attention backward, part 1 (of out = P V and of the softmax): dV (T, kvStride) += Σ_t P[h][t][u] dOut (t, h);
   * dS (g, T, T) = P ∘ (dP − D), dP[h][t][u] = dOut (t, h) · v_u, D[h][t] = dOut (t, h) · out (t, h).
   * dOut, out (T, qStride) (out as attentionForward wrote it), v (T, kvStride), P (g, T, T) from the forward.
   * dS may equal P (then P is consumed). Layouts as attentionForward.
   */
  attentionBackwardPV(
    dS: Ptr,
    dV: Ptr,
    dOut: Ptr,
    out: Ptr,
    v: Ptr,
    p: Ptr,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    kvStride: number,
  ): void;
  /**
   * Attention backward, part 2 (of the scores q · k · scale): dQ (T, qStride) = scale Σ_u dS[h][t][u] k_u
   * (written, not added); dK (T, kvStride) += scale Σ_{h, t ≥ u} dS[h][t][u] q (t, h). dS from
   * attentionBackwardPV; q, k as the forward saw them. Layouts as attentionForward.
   */
  attentionBackwardQK(
    dQ: Ptr,
    dK: Ptr,
    dS: Ptr,
    q: Ptr,
    k: Ptr,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    kvStride: number,
    scale: number,
  ): void;

  /**
   * Cross-entropy of logits (t, V) against targets (t, i32): losses (t) = logsumexp(row) − row[target]
   * (max subtracted first) and dLogits (t, V) = (softmax(row) − onehot(target)) · scale, scale = 1 / the
   * number of counted rows (the caller's). A row with target −1 is ignored: loss 0, dLogits row 0.
   * dLogits may equal logits.
   */
  crossEntropy(losses: Ptr, dLogits: Ptr, logits: Ptr, targets: Ptr, V: number, t: number, scale: number): void;

  /**
   * One AdamW step (decoupled weight decay) on p, m, v (n, updated in place) with grad (n):
   * m = β1 m + (1 − β1) g; v = β2 v + (1 − β2) g²; p −= lr · ((m / bc1) / (sqrt(v / bc2) + eps) + weightDecay · p),
   * bc1 = 1 − β1^step, bc2 = 1 − β2^step (step from 1). Bit for bit in f32, in that order.
   */
  adamw(
    p: Ptr,
    m: Ptr,
    v: Ptr,
    grad: Ptr,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    bc1: number,
    bc2: number,
  ): void;
  /** out (1) f32 = Σ x² of x (n), summed in f64 (for the gradient norm: √ of the sum over all ranges). */
  sumSquares(out: Ptr, x: Ptr, n: number): void;
  /** x (n) *= alpha, in place (gradient clipping). */
  scale(x: Ptr, n: number, alpha: number): void;
}

/**
 * The quantized-weight kernels (assembly/quants*.ts, reference twin reference-quants.ts) for the GGUF
 * block types of src/memory/quants.ts: the legacy 32-value blocks Q4_0, Q4_1, Q5_0, Q5_1 and the
 * K-quants Q4_K, Q5_K, Q6_K (256-value super-blocks). Layouts: dev/notes/ggml-quant-formats.md §2, §3.
 *
 * A weight type multiplies activations quantized to its ggml partner ("vec_dot type"): Q4_0, Q5_0 take
 * q8_0 blocks (quantizeQ8_0), Q4_1, Q5_1 q8_1 blocks (quantizeQ8_1), the K-quants q8_K blocks
 * (quantizeQ8_K). W holds d rows of n values (n a multiple of 32, or of 256 for the K-quants), row
 * after row; xq holds t rows of n values' activation blocks back to back.
 *
 * Each dot is ggml's generic vec_dot for the pair: exact integer sums per (sub-)block, then f32
 * operations in one fixed order, blocks added in order into one f32 sum from 0 (no fused multiply-add):
 *   Q4_0  sum += (f32(Σ (c−8)·x) · d) · dx          Q5_0  sum += (d · dx) · f32(Σ (c−16)·x)
 *   Q4_1, Q5_1  sum += (d · dx) · f32(Σ c·x) + m · sx
 *   Q4_K, Q5_K  sum += (d · dy) · f32(Σ_j sc_j Σ c·x) − (dmin · dy) · f32(Σ_j m_j (bsums[2j] + bsums[2j+1]))
 *   Q6_K  sum += (d · dy) · f32(Σ_j sc_j Σ (c−32)·x)
 * (c the weight codes, x the activation's int8; d, m, dmin the weight block's, dx, sx the q8_0 / q8_1
 * block's f16 fields; dy the q8_K block's f32 d.) The legacy formulas are ggml's operation for operation;
 * ggml's K-quant code sums in 8 lanes instead, which only changes the last bits. Results are the same
 * bits in both WASM builds, in the twin, and for a row whether it comes from matvec or any row of matmul
 * (so any split of the rows between threads, at any row, gives the same bits). Weight scales must be
 * finite; xq must be as the quantizers write it (q8_K bsums = the sums of the codes).
 */
export interface QuantKernels {
  /**
   * out (n/32 blocks of 36 bytes) = q8_1(x (n)): f16 d, f16 s, 32 int8. d and the int8 are quantizeQ8_0's
   * (d = max|x|/127, x = nearest-even(x · 127/max|x|)); s = f16(f32(Σ int8) · d) with d unrounded (as
   * ggml's quantize_row_q8_1 on x86).
   */
  quantizeQ8_1(out: Ptr, x: Ptr, n: number): void;
  /**
   * out (n/256 blocks of 292 bytes) = q8_K(x (n)) as ggml's quantize_row_q8_K: f32 d, 256 int8, 16 int16
   * bsums. max = the x of largest magnitude (the first; NaN ignored), iscale = −127/max, x = min(127,
   * nearest-even(iscale · x)), d = 1/iscale, bsums[g] = Σ of int8 16g … 16g+15. max = 0: all zero.
   */
  quantizeQ8_K(out: Ptr, x: Ptr, n: number): void;

  /** out (d) = W (d, n) @ x (n), W Q4_0 (d rows of n/32 blocks), xq = x as q8_0 blocks (n/32). */
  matvecQ4_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q4_1, xq = x as q8_1 blocks (n/32). */
  matvecQ4_1(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q5_0, xq = x as q8_0 blocks (n/32). */
  matvecQ5_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q5_1, xq = x as q8_1 blocks (n/32). */
  matvecQ5_1(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q4_K (d rows of n/256 super-blocks), xq = x as q8_K blocks (n/256). */
  matvecQ4_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q5_K, xq = x as q8_K blocks (n/256). */
  matvecQ5_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W Q6_K, xq = x as q8_K blocks (n/256). */
  matvecQ6_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;

  /**
   * out (t, d) = X (t, n) @ W (d, n)^T, W Q4_0, xq = t rows of n/32 q8_0 blocks; out's rows ldo ≥ d floats
   * apart. Row i of out is matvecQ4_0 of X's row i, bit for bit (and so for every matmul below).
   */
  matmulQ4_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q4_1, xq = t rows of n/32 q8_1 blocks; row stride ldo. */
  matmulQ4_1(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q5_0, xq = t rows of n/32 q8_0 blocks; row stride ldo. */
  matmulQ5_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q5_1, xq = t rows of n/32 q8_1 blocks; row stride ldo. */
  matmulQ5_1(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q4_K, xq = t rows of n/256 q8_K blocks; row stride ldo. */
  matmulQ4_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q5_K, xq = t rows of n/256 q8_K blocks; row stride ldo. */
  matmulQ5_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W Q6_K, xq = t rows of n/256 q8_K blocks; row stride ldo. */
  matmulQ6_K(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void;

  /**
   * out (n) = row `row` of table (rows, n) dequantized to f32: exactly src/memory/quants.ts dequantize()
   * (ggml's dequantize_row_*, every product and sum rounded to f32, no fused multiply-add).
   */
  getRowQ4_0(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ4_1(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ5_0(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ5_1(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ4_K(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ5_K(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ6_K(out: Ptr, table: Ptr, row: number, n: number): void;
}

/**
 * The kernels for a KV cache held in ggml's 32-value blocks (assembly/kv-quant.ts, reference twin
 * reference-kvquant.ts), as llama.cpp's q8_0 / q4_0 cache types. A K or V row of Hd values (Hd a multiple
 * of 32) is Hd/32 blocks, rows back to back (row s at byte s·rowBytes; q4_0 rows are not 4-byte aligned):
 *   q8_0  34 bytes per block: f16 d, 32 int8 q; x = d·q        (rowBytes = Hd/32·34)
 *   q4_0  18 bytes per block: f16 d, 16 bytes of 4-bit codes c, value e < 16 in the low nibble of byte e,
 *         value e ≥ 16 in the high nibble of byte e − 16; x = (c − 8)·d   (rowBytes = Hd/32·18)
 * Each dequantised value is exact in f32. Every kernel is its f32 counterpart on the dequantised cache,
 * bit for bit, except the attention scores q·K: as in llama.cpp's CPU flash attention, q is quantised to
 * q8_0 (quantizeQ8_0, into the caller's scratch qq) and row s's score is matvecQ8_0 / matvecQ4_0 of K's
 * row s with it. All results are the same bits in both builds and in the twin.
 */
export interface KvQuantKernels {
  /**
   * out (n/32 blocks of 18 bytes) = q4_0(x (n)) as ggml's quantize_row_q4_0_ref and src/memory/quants.ts
   * quantize("q4_0"), byte for byte: m = the first x of largest |x| (NaN never), d = m / −8 (stored as f16),
   * id = d ≠ 0 ? f32(1/d) : 0, code = min(15, trunc(x·id + 8.5)) with x·id + 8.5 rounded once (as ggml
   * compiled with FMA contraction). NaN codes 0; an all-zero block stores d = −0 and codes 8.
   */
  quantizeQ4_0(out: Ptr, x: Ptr, n: number): void;
  /**
   * Dense attention of the g query heads of one KV head over S rows of K, V q8_0: for each head h,
   * qq[h] = q8_0(q[h]); scores[h][s] = f32(matvecQ8_0 row s of K with qq[h]) · scale; p[h] = softmaxF32(scores[h]);
   * out[h] (Hd) = Σ_s p[h][s] V[s], in attentionF32's order (its step 3 on the dequantised V, bit for bit).
   * q, out (g, Hd) f32; scores (g, S) f32 holds p afterwards; qq: scratch of g·(Hd/32)·34 bytes, holding
   * q8_0(q) afterwards. K and V are read once for all g heads.
   */
  attentionQ8_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S: number,
    Hd: number,
    g: number,
    scale: number,
    qq: Ptr,
  ): void;
  /** attentionQ8_0 with K, V q4_0: the scores are matvecQ4_0's dots (q4_0 rows · q8_0 qq) times scale. */
  attentionQ4_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S: number,
    Hd: number,
    g: number,
    scale: number,
    qq: Ptr,
  ): void;
  /**
   * attentionQ8_0 over the rows idx (n) of K, V (i32 positions, any order, repeats allowed): equal bit for
   * bit to attentionQ8_0 on those rows gathered in idx order. scores (g, n) holds p afterwards; qq as there.
   */
  attendRowsQ8_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    idx: Ptr,
    n: number,
    Hd: number,
    g: number,
    scale: number,
    qq: Ptr,
  ): void;
  /** attendRowsQ8_0 with K, V q4_0. */
  attendRowsQ4_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    idx: Ptr,
    n: number,
    Hd: number,
    g: number,
    scale: number,
    qq: Ptr,
  ): void;
  /**
   * Causal attention of a prefill chunk over K, V (S0 + T rows) q8_0, with attentionCausalF32's layouts:
   * query (t, h) at q (T, qStride) float t·qStride + h·Hd, out the same; scores (T, g, S0 + T), row (t, h)
   * holding the query's p in its first S0 + t + 1 floats (the rest not written). Bit for bit attentionQ8_0
   * once per row t with S = S0 + t + 1; K and V are read once per call (in tiles, as attentionCausalF32).
   * qq: scratch of T·g·(Hd/32)·34 bytes (every query's q8_0 blocks; query (t, h) at (t·g + h)·(Hd/32)·34).
   */
  attentionCausalQ8_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S0: number,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    scale: number,
    qq: Ptr,
  ): void;
  /** attentionCausalQ8_0 with K, V q4_0 (bit for bit attentionQ4_0 once per row). */
  attentionCausalQ4_0(
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S0: number,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    scale: number,
    qq: Ptr,
  ): void;

  /**
   * SparQ's approximate scores from a d-major key copy quantised per channel in groups of 32 positions
   * (as KIVI quantises keys), q8_0: component i of position s is the int8 at byte kT + i·ldk + s times the
   * f16 at byte dT + 2·(i·(ldk/32) + ⌊s/32⌋) (ldk a multiple of 32, n ≤ ldk). out[h·ldo + s] for s < n only
   * (ldo ≥ n). q (g, Hd) f32; idx (r) i32; scale (g) f32. Equal to sparqScoresF32 on the dequantised kT, bit
   * for bit.
   */
  sparqScoresQ8_0T(
    out: Ptr,
    q: Ptr,
    kT: Ptr,
    dT: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    n: number,
    ldo: number,
    ldk: number,
    Hd: number,
    g: number,
  ): void;
  /**
   * sparqScoresQ8_0T with q4_0 groups: channel i's group j is 16 bytes of codes at kT + i·(ldk/2) + 16·j,
   * position 32j + e in the low nibble of byte e (e < 16) or the high nibble of byte e − 16; value (c − 8)·d,
   * d at the same place of dT.
   */
  sparqScoresQ4_0T(
    out: Ptr,
    q: Ptr,
    kT: Ptr,
    dT: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    n: number,
    ldo: number,
    ldk: number,
    Hd: number,
    g: number,
  ): void;
  /**
   * SparQ's approximate scores from the cache's own rows K (S rows, q8_0) for positions from … S − 1 only:
   * out[h·S + s] there (the rest of out untouched), equal to sparqScoresStridedF32 on the dequantised rows.
   */
  sparqScoresStridedQ8_0(
    out: Ptr,
    q: Ptr,
    k: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    from: number,
    S: number,
    Hd: number,
    g: number,
  ): void;
  /** sparqScoresStridedQ8_0 with K q4_0. */
  sparqScoresStridedQ4_0(
    out: Ptr,
    q: Ptr,
    k: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    from: number,
    S: number,
    Hd: number,
    g: number,
  ): void;
}

export type KernelName = keyof Kernels;
