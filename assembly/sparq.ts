// SparQ Attention's approximate scores (Ribar et al. 2023, arXiv:2312.04985), step 3 of its Algorithm 1:
//   sHat[h] (S) = q[h][i1..ir] · K[:, i1..ir] * scale[h]
// over the r components idx of q with the largest |q| (chosen by the caller, e.g. with topK).
//
// The result is defined bit for bit, so the reference twin can match it exactly: for each head h and
// position s, acc = 0, then for j = 0..r-1 in order acc = f32(acc + f32(q[h][idx[j]] * K[s][idx[j]])),
// and sHat = f32(acc * scale[h]). No fused multiply-add, no reordering of the j sum.
// So the kernels vectorise over positions instead: 16 positions per block, for 2 heads at a time (8
// f32x4 accumulators in registers, enough independent sums to hide the add latency), with the
// block's K values read once from memory for all heads (the next pair of heads finds them in L1).
//
// Two layouts of K:
//   d-major kT (Hd, ldk): row i holds component i of every position, so 4 positions are one load
//     (sparqScores*: reads only r rows of kT, r/Hd of the bytes of K);
//   S-major k (S, Hd): the cache's own rows, gathered 4 positions per vector with lane loads
//     (sparqScoresStrided*: no second copy of K, but touches most cache lines of K).
import { loadAsF32, load4AsF32 } from "./convert";
import { expApproxF32x4 } from "./exp";
import { rowMax } from "./attention";

/**
 * sHat (g, S) from the d-major kT (Hd, ldk) f32, positions 0..S-1 of each row used; q (g, Hd);
 * idx (r) i32 components; scale (g) f32, one multiplier per head.
 */
export function sparqScoresF32(out: usize, q: usize, kT: usize, idx: usize, scale: usize, r: i32, S: i32, ldk: i32, Hd: i32, g: i32): void {
  scores<f32>(out, q, kT, idx, scale, r, S, <usize>ldk, 1, Hd, g, true);
}

/** sparqScoresF32 with kT in bf16. */
export function sparqScoresBf16(out: usize, q: usize, kT: usize, idx: usize, scale: usize, r: i32, S: i32, ldk: i32, Hd: i32, g: i32): void {
  scores<u16>(out, q, kT, idx, scale, r, S, <usize>ldk, 1, Hd, g, true);
}

/** The same sHat (g, S) from the S-major k (S, Hd) f32 (component i of position s at s*Hd + i). */
export function sparqScoresStridedF32(out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, S: i32, Hd: i32, g: i32): void {
  scores<f32>(out, q, k, idx, scale, r, S, 1, <usize>Hd, Hd, g, false);
}

/** sparqScoresStridedF32 with k in bf16. */
export function sparqScoresStridedBf16(out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, S: i32, Hd: i32, g: i32): void {
  scores<u16>(out, q, k, idx, scale, r, S, 1, <usize>Hd, Hd, g, false);
}

/**
 * The body of the four kernels. Element (component i, position s) of K is at
 * k + (i * iStride + s * sStride) * sizeof<T>(); `contiguous` (sStride == 1, a constant at every
 * call) says 4 positions are one vector load.
 */
// @ts-ignore: decorator
@inline function scores<T>(
  out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, S: i32, iStride: usize, sStride: usize, Hd: i32, g: i32,
  contiguous: bool,
): void {
  const nS = <usize>S, nHeads = <usize>g, nr = <usize>r;
  const iBytes = iStride * sizeof<T>(), sBytes = sStride * sizeof<T>();
  const headBytes = <usize>Hd << 2, outRowBytes = nS << 2;
  let s: usize = 0;
  for (; s + 16 <= nS; s += 16) {
    const ks = k + s * sBytes;
    let h: usize = 0;
    for (; h + 2 <= nHeads; h += 2) {
      scoresBlock<T>(out + h * outRowBytes + (s << 2), q + h * headBytes, ks, idx, scale + (h << 2), nr, iBytes, sBytes, headBytes, outRowBytes, 2, contiguous);
    }
    if (h < nHeads) {
      scoresBlock<T>(out + h * outRowBytes + (s << 2), q + h * headBytes, ks, idx, scale + (h << 2), nr, iBytes, sBytes, headBytes, outRowBytes, 1, contiguous);
    }
  }
  // Leftover positions (fewer than 16): one at a time, the same operations in scalar f32.
  for (; s < nS; s++) {
    for (let h: usize = 0; h < nHeads; h++) {
      const qh = q + h * headBytes;
      let acc: f32 = 0;
      for (let j: usize = 0; j < nr; j++) {
        const i = <usize>load<i32>(idx + (j << 2));
        acc += load<f32>(qh + (i << 2)) * loadAsF32<T>(k + i * iBytes + s * sBytes);
      }
      store<f32>(out + h * outRowBytes + (s << 2), acc * load<f32>(scale + (h << 2)));
    }
  }
}

/**
 * sHat of 16 positions (K elements from ks on) for `heads` consecutive heads (1 or 2, a constant at
 * every call, so the unused accumulators vanish): out, q, scale point at the first head's.
 */
// @ts-ignore: decorator
@inline function scoresBlock<T>(
  out: usize, q: usize, ks: usize, idx: usize, scale: usize, r: usize, iBytes: usize, sBytes: usize, headBytes: usize,
  outRowBytes: usize, heads: i32, contiguous: bool,
): void {
  // aN / bN: positions 4N..4N+3 of the block, for the first / second head.
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  const step = sBytes << 2; // 4 positions
  for (let j: usize = 0; j < r; j++) {
    const i = <usize>load<i32>(idx + (j << 2));
    const column = ks + i * iBytes;
    const k0 = positions4<T>(column, sBytes, contiguous), k1 = positions4<T>(column + step, sBytes, contiguous);
    const k2 = positions4<T>(column + 2 * step, sBytes, contiguous), k3 = positions4<T>(column + 3 * step, sBytes, contiguous);
    const qa = f32x4.splat(load<f32>(q + (i << 2)));
    a0 = f32x4.add(a0, f32x4.mul(qa, k0));
    a1 = f32x4.add(a1, f32x4.mul(qa, k1));
    a2 = f32x4.add(a2, f32x4.mul(qa, k2));
    a3 = f32x4.add(a3, f32x4.mul(qa, k3));
    if (heads == 2) {
      const qb = f32x4.splat(load<f32>(q + headBytes + (i << 2)));
      b0 = f32x4.add(b0, f32x4.mul(qb, k0));
      b1 = f32x4.add(b1, f32x4.mul(qb, k1));
      b2 = f32x4.add(b2, f32x4.mul(qb, k2));
      b3 = f32x4.add(b3, f32x4.mul(qb, k3));
    }
  }
  storeScaled(out, a0, a1, a2, a3, load<f32>(scale));
  if (heads == 2) storeScaled(out + outRowBytes, b0, b1, b2, b3, load<f32>(scale, 4));
}

/** Positions 0..3 of one component from p (position 0's element) on, as f32x4. */
// @ts-ignore: decorator
@inline function positions4<T>(p: usize, sBytes: usize, contiguous: bool): v128 {
  if (contiguous) return load4AsF32<T>(p);
  if (sizeof<T>() == 2) {
    // A bf16 in the high half of each 32-bit lane is that lane's f32.
    let v = i32x4.splat(0);
    v = v128.load16_lane(p, v, 1);
    v = v128.load16_lane(p + sBytes, v, 3);
    v = v128.load16_lane(p + 2 * sBytes, v, 5);
    return v128.load16_lane(p + 3 * sBytes, v, 7);
  }
  let v = v128.load32_zero(p);
  v = v128.load32_lane(p + sBytes, v, 1);
  v = v128.load32_lane(p + 2 * sBytes, v, 2);
  return v128.load32_lane(p + 3 * sBytes, v, 3);
}

/** out (16) = [a0, a1, a2, a3] * scale. */
// @ts-ignore: decorator
@inline export function storeScaled(out: usize, a0: v128, a1: v128, a2: v128, a3: v128, scale: f32): void {
  const scale4 = f32x4.splat(scale);
  v128.store(out, f32x4.mul(a0, scale4));
  v128.store(out, f32x4.mul(a1, scale4), 16);
  v128.store(out, f32x4.mul(a2, scale4), 32);
  v128.store(out, f32x4.mul(a3, scale4), 48);
}

/**
 * SparQ's α per query head (step 6): alpha[h] = min(1, Σ_{j<n} e^(a[h][idx[j]] − m) / Σ_{s<S} e^(a[h][s] − m)),
 * a (g, S) the approximate logits, m = max_s a[h][s], idx (n) i32 the selected positions; alpha (g) f32.
 * The exps are expApproxF32x4's (relative error about 2e-7); sums run in f32x4 lanes over blocks of 64
 * terms, and the blocks' sums add up in f64.
 */
export function sparqAlpha(alpha: usize, approx: usize, idx: usize, n: i32, S: i32, g: i32): void {
  const end = <usize>S << 2, nSel = <usize>n;
  for (let h: usize = 0; h < <usize>g; h++) {
    const row = approx + h * end;
    const m = rowMax(row, end), m4 = f32x4.splat(m);
    // The normaliser over all S positions.
    let total: f64 = 0;
    const vectorEnd = end & ~15;
    let o: usize = 0;
    while (o < vectorEnd) {
      const blockEnd = min(vectorEnd, o + 256);
      let a = f32x4.splat(0), b = a;
      for (; o + 32 <= blockEnd; o += 32) {
        a = f32x4.add(a, expApproxF32x4(f32x4.sub(v128.load(row + o), m4)));
        b = f32x4.add(b, expApproxF32x4(f32x4.sub(v128.load(row + o, 16), m4)));
      }
      if (o < blockEnd) {
        a = f32x4.add(a, expApproxF32x4(f32x4.sub(v128.load(row + o), m4)));
        o += 16;
      }
      total += lanesF64(f32x4.add(a, b));
    }
    for (; o < end; o += 4) total += <f64>f32x4.extract_lane(expApproxF32x4(f32x4.splat(load<f32>(row + o) - m)), 0);
    // The selected positions' share, 4 gathered at a time.
    let selected: f64 = 0;
    let j: usize = 0;
    while (j + 4 <= nSel) {
      const blockEnd = min(nSel & ~3, j + 64);
      let a = f32x4.splat(0);
      for (; j < blockEnd; j += 4) {
        const p = idx + (j << 2);
        let v = v128.load32_zero(row + (<usize>load<i32>(p) << 2));
        v = v128.load32_lane(row + (<usize>load<i32>(p, 4) << 2), v, 1);
        v = v128.load32_lane(row + (<usize>load<i32>(p, 8) << 2), v, 2);
        v = v128.load32_lane(row + (<usize>load<i32>(p, 12) << 2), v, 3);
        a = f32x4.add(a, expApproxF32x4(f32x4.sub(v, m4)));
      }
      selected += lanesF64(a);
    }
    for (; j < nSel; j++) {
      const v = load<f32>(row + (<usize>load<i32>(idx + (j << 2)) << 2));
      selected += <f64>f32x4.extract_lane(expApproxF32x4(f32x4.splat(v - m)), 0);
    }
    store<f32>(alpha + (h << 2), <f32>min<f64>(1, selected / total));
  }
}

/** The 4 lanes of an f32x4 summed in f64, in lane order. */
// @ts-ignore: decorator
@inline function lanesF64(a: v128): f64 {
  return <f64>f32x4.extract_lane(a, 0) + <f64>f32x4.extract_lane(a, 1) + <f64>f32x4.extract_lane(a, 2) + <f64>f32x4.extract_lane(a, 3);
}
