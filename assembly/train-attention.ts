// Causal self-attention for training: T positions, the g query heads of one KV head, forward and backward.
//
// Forward, for each head h and position t (u = 0 … t):
//   Step 1: s_tu = q_t · k_u · scale
//   Step 2: P_tu = softmax_u(s_tu)                    (saved: the backward needs P)
//   Step 3: out_t = Σ_u P_tu v_u
// Backward, from dOut (in two kernels: the training loop's thread protocol passes at most 12 arguments):
//   attentionBackwardPV, of steps 3 and 2:
//     dv_u += Σ_t P_tu dOut_t                         (from out_t = Σ_u P_tu v_u)
//     dP_tu = dOut_t · v_u
//     dS_tu = P_tu (dP_tu − D_t), D_t = Σ_u P_tu dP_tu = dOut_t · out_t     (from P = softmax(s))
//   attentionBackwardQK, of step 1:
//     dq_t = scale Σ_u dS_tu k_u,  dk_u += scale Σ_t dS_tu q_t              (from s_tu = q_t · k_u · scale)
// Layouts as attentionCausalF32 (attention-causal.ts): query (t, h) at q (T, qStride) float t·qStride + h·Hd
// (the g heads adjacent), out / dOut / dQ the same; K, V, dK, dV (T, kvStride), row u at float u·kvStride,
// so the training loop points them at slices of (T, H·Hd) and (T, G·Hd) buffers. P, dS (g, T, T):
// row (h, t) at float (h·T + t)·T, only its first t + 1 floats used.
import { softmaxF32, dotRows4, dotRow, accumulateRows4, accumulateRow } from "./attention";

/**
 * out (T, qStride) and P (g, T, T) of causal attention of q (T, qStride) over k, v (T, kvStride).
 * With kvStride = Hd each row equals attentionCausalF32 with S0 = 0 bit for bit (out and p): the same
 * blocks of 4 positions from 0, the same scalar tail, softmaxF32, the same V sums.
 */
export function attentionForward(
  out: usize, p: usize, q: usize, k: usize, v: usize, T: i32, Hd: i32, g: i32, qStride: i32, kvStride: i32, scale: f32,
): void {
  const nT = <usize>T, nHd = <usize>Hd, nHeads = <usize>g;
  const qRow = <usize>qStride << 2, kvRow = <usize>kvStride << 2, headBytes = nHd << 2;
  const pRow = nT << 2, pHead = nT * pRow; // one (h, t) row of P, one head's (T, T)
  const scale4 = f32x4.splat(scale);
  for (let t: usize = 0; t < nT; t++) {
    const n = t + 1; // positions 0 … t
    // Step 1: scores, each block of 4 K rows dotted with every head's q before the next block.
    let u: usize = 0;
    for (; u + 4 <= n; u += 4) {
      const k0 = k + u * kvRow, k1 = k0 + kvRow, k2 = k1 + kvRow, k3 = k2 + kvRow;
      for (let h: usize = 0; h < nHeads; h++) {
        const qh = q + t * qRow + h * headBytes;
        v128.store(p + h * pHead + t * pRow + (u << 2), f32x4.mul(dotRows4<f32>(qh, k0, k1, k2, k3, nHd), scale4));
      }
    }
    for (; u < n; u++) {
      for (let h: usize = 0; h < nHeads; h++) {
        store<f32>(p + h * pHead + t * pRow + (u << 2), dotRow<f32>(q + t * qRow + h * headBytes, k + u * kvRow, nHd) * scale);
      }
    }
    // Step 2: softmax of each head's t + 1 scores.
    for (let h: usize = 0; h < nHeads; h++) softmaxF32(p + h * pHead + t * pRow, <i32>n);
    // Step 3: out (t, h) = Σ_u P_tu v_u, each block of 4 V rows added into every head's out.
    memory.fill(out + t * qRow, 0, nHeads * headBytes);
    u = 0;
    for (; u + 4 <= n; u += 4) {
      const v0 = v + u * kvRow, v1 = v0 + kvRow, v2 = v1 + kvRow, v3 = v2 + kvRow;
      for (let h: usize = 0; h < nHeads; h++) {
        accumulateRows4<f32>(out + t * qRow + h * headBytes, v0, v1, v2, v3, p + h * pHead + t * pRow + (u << 2), nHd);
      }
    }
    for (; u < n; u++) {
      for (let h: usize = 0; h < nHeads; h++) {
        accumulateRow<f32>(out + t * qRow + h * headBytes, v + u * kvRow, load<f32>(p + h * pHead + t * pRow + (u << 2)), nHd);
      }
    }
  }
}

/**
 * Backward of steps 3 and 2: dV (T, kvStride) += Σ_t P_tu dOut_t; dS (g, T, T) = P ∘ (dOut V^T − D),
 * D_t = dOut_t · out_t. dOut, out (T, qStride) (out as attentionForward wrote it), v (T, kvStride),
 * P (g, T, T) as attentionForward wrote it. dS may equal P (each element is read before it is written).
 * dV sums in the order t = 0 … T − 1, then h, then u.
 */
export function attentionBackwardPV(
  dS: usize, dV: usize, dOut: usize, out: usize, v: usize, p: usize, T: i32, Hd: i32, g: i32, qStride: i32, kvStride: i32,
): void {
  const nT = <usize>T, nHd = <usize>Hd, nHeads = <usize>g;
  const qRow = <usize>qStride << 2, kvRow = <usize>kvStride << 2, headBytes = nHd << 2;
  const pRow = nT << 2, pHead = nT * pRow;
  for (let t: usize = 0; t < nT; t++) {
    for (let h: usize = 0; h < nHeads; h++) {
      const dy = dOut + t * qRow + h * headBytes, at = h * pHead + t * pRow;
      const D = f32x4.splat(dotRow<f32>(dy, out + t * qRow + h * headBytes, nHd));
      let u: usize = 0;
      for (; u + 4 <= t + 1; u += 4) {
        const v0 = v + u * kvRow, v1 = v0 + kvRow, v2 = v1 + kvRow, v3 = v2 + kvRow;
        const pu = p + at + (u << 2), p4 = v128.load(pu);
        const dP = dotRows4<f32>(dy, v0, v1, v2, v3, nHd);
        const dv0 = dV + u * kvRow, dv1 = dv0 + kvRow, dv2 = dv1 + kvRow, dv3 = dv2 + kvRow;
        accumulateRow<f32>(dv0, dy, f32x4.extract_lane(p4, 0), nHd);
        accumulateRow<f32>(dv1, dy, f32x4.extract_lane(p4, 1), nHd);
        accumulateRow<f32>(dv2, dy, f32x4.extract_lane(p4, 2), nHd);
        accumulateRow<f32>(dv3, dy, f32x4.extract_lane(p4, 3), nHd);
        v128.store(dS + at + (u << 2), f32x4.mul(p4, f32x4.sub(dP, D)));
      }
      for (; u <= t; u++) {
        const pu = load<f32>(p + at + (u << 2));
        const dP = dotRow<f32>(dy, v + u * kvRow, nHd);
        accumulateRow<f32>(dV + u * kvRow, dy, pu, nHd);
        store<f32>(dS + at + (u << 2), pu * (dP - f32x4.extract_lane(D, 0)));
      }
    }
  }
}

/**
 * Backward of step 1: dQ (T, qStride) = scale Σ_u dS_tu k_u (written); dK (T, kvStride) +=
 * scale Σ_t dS_tu q_t. dS (g, T, T) from attentionBackwardPV, q (T, qStride), k (T, kvStride) as the
 * forward saw them. dK sums in the order t = 0 … T − 1, then h, then u.
 */
export function attentionBackwardQK(
  dQ: usize, dK: usize, dS: usize, q: usize, k: usize, T: i32, Hd: i32, g: i32, qStride: i32, kvStride: i32, scale: f32,
): void {
  const nT = <usize>T, nHd = <usize>Hd, nHeads = <usize>g;
  const qRow = <usize>qStride << 2, kvRow = <usize>kvStride << 2, headBytes = nHd << 2;
  const pRow = nT << 2, pHead = nT * pRow;
  const scale4 = f32x4.splat(scale);
  for (let t: usize = 0; t < nT; t++) {
    for (let h: usize = 0; h < nHeads; h++) {
      const dq = dQ + t * qRow + h * headBytes, qh = q + t * qRow + h * headBytes, at = dS + h * pHead + t * pRow;
      memory.fill(dq, 0, headBytes);
      let u: usize = 0;
      for (; u + 4 <= t + 1; u += 4) {
        const k0 = k + u * kvRow, k1 = k0 + kvRow, k2 = k1 + kvRow, k3 = k2 + kvRow;
        accumulateRows4<f32>(dq, k0, k1, k2, k3, at + (u << 2), nHd);
        const ds4 = f32x4.mul(v128.load(at + (u << 2)), scale4);
        const dk0 = dK + u * kvRow, dk1 = dk0 + kvRow, dk2 = dk1 + kvRow, dk3 = dk2 + kvRow;
        accumulateRow<f32>(dk0, qh, f32x4.extract_lane(ds4, 0), nHd);
        accumulateRow<f32>(dk1, qh, f32x4.extract_lane(ds4, 1), nHd);
        accumulateRow<f32>(dk2, qh, f32x4.extract_lane(ds4, 2), nHd);
        accumulateRow<f32>(dk3, qh, f32x4.extract_lane(ds4, 3), nHd);
      }
      for (; u <= t; u++) {
        const ds = load<f32>(at + (u << 2));
        accumulateRow<f32>(dq, k + u * kvRow, ds, nHd);
        accumulateRow<f32>(dK + u * kvRow, qh, ds * scale, nHd);
      }
      // dq = scale · Σ_u dS_tu k_u.
      let j: usize = 0;
      for (; j + 16 <= headBytes; j += 16) v128.store(dq + j, f32x4.mul(v128.load(dq + j), scale4));
      for (; j < headBytes; j += 4) store<f32>(dq + j, load<f32>(dq + j) * scale);
    }
  }
}
