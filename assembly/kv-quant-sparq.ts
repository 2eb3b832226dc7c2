// SparQ's approximate scores (Ribar et al. 2023, arXiv:2312.04985; step 3 of Algorithm 1) over a KV cache in q8_0 / q4_0
// blocks (layouts: kv-quant.ts), from two layouts of the keys:
//   a d-major copy quantised per channel in groups of 32 positions (as KIVI quantises keys): channel i's
//     codes in a row of kT, one f16 scale per (channel, group) in dT (sparqScores*T);
//   the cache's own rows, for the few positions past the copy's last whole group (sparqScoresStrided*).
// Each value d·q is exact in f32, so both equal sparq.ts's kernels on the dequantised keys bit for bit:
// the same f32 sums in the same order, with sparq.ts's loop structure (blocks of 16 positions, 2 heads at
// a time). A block of 16 positions lies in one group, so each component's 16 values are one load of codes
// and one scale.
import { storeScaled } from "./sparq";
import { f16ToF32 } from "./convert";
import { blockBytes, scaleOf, lowTimes, highTimes } from "./kv-quant";

/**
 * sHat from a d-major key copy in q8_0 groups: component i of position s (s < n ≤ ldk, ldk a multiple of
 * 32) is the int8 at kT + i·ldk + s times the f16 at dT + 2·(i·ldk/32 + ⌊s/32⌋). out[h·ldo + s] for s < n;
 * q (g, Hd), idx (r) i32, scale (g) f32. Equal to sparqScoresF32 on the dequantised kT, bit for bit.
 */
export function sparqScoresQ8_0T(
  out: usize, q: usize, kT: usize, dT: usize, idx: usize, scale: usize, r: i32, n: i32, ldo: i32, ldk: i32, Hd: i32, g: i32,
): void {
  sparqT(out, q, kT, dT, idx, scale, r, n, ldo, ldk, Hd, g, false);
}

/**
 * sparqScoresQ8_0T with q4_0 groups: channel i's group j is 16 bytes of codes at kT + i·ldk/2 + 16j
 * (position 32j + e: low nibble of byte e for e < 16, else high nibble of byte e − 16), value (c − 8)·d.
 */
export function sparqScoresQ4_0T(
  out: usize, q: usize, kT: usize, dT: usize, idx: usize, scale: usize, r: i32, n: i32, ldo: i32, ldk: i32, Hd: i32, g: i32,
): void {
  sparqT(out, q, kT, dT, idx, scale, r, n, ldo, ldk, Hd, g, true);
}

/** sparq.ts's scores<T> for a quantised kT: blocks of 16 positions for 2 heads at a time, then one at a time. */
// @ts-ignore: decorator
@inline function sparqT(
  out: usize, q: usize, kT: usize, dT: usize, idx: usize, scale: usize, r: i32, n: i32, ldo: i32, ldk: i32, Hd: i32, g: i32,
  q4: bool,
): void {
  const nS = <usize>n, nHeads = <usize>g, nr = <usize>r;
  const iBytes = q4 ? <usize>ldk >> 1 : <usize>ldk, dBytes = (<usize>ldk >> 5) << 1; // per component
  const headBytes = <usize>Hd << 2, outRowBytes = <usize>ldo << 2;
  let s: usize = 0;
  for (; s + 16 <= nS; s += 16) {
    let h: usize = 0;
    for (; h + 2 <= nHeads; h += 2) {
      sparqBlock(out + h * outRowBytes + (s << 2), q + h * headBytes, kT, dT, s, idx, scale + (h << 2), nr, iBytes, dBytes, headBytes, outRowBytes, 2, q4);
    }
    if (h < nHeads) {
      sparqBlock(out + h * outRowBytes + (s << 2), q + h * headBytes, kT, dT, s, idx, scale + (h << 2), nr, iBytes, dBytes, headBytes, outRowBytes, 1, q4);
    }
  }
  // Leftover positions (fewer than 16): one at a time, the same operations in scalar f32.
  for (; s < nS; s++) {
    for (let h: usize = 0; h < nHeads; h++) {
      const qh = q + h * headBytes;
      let acc: f32 = 0;
      for (let j: usize = 0; j < nr; j++) {
        const i = <usize>load<i32>(idx + (j << 2));
        acc += load<f32>(qh + (i << 2)) * kTValue(kT + i * iBytes, dT + i * dBytes, s, q4);
      }
      store<f32>(out + h * outRowBytes + (s << 2), acc * load<f32>(scale + (h << 2)));
    }
  }
}

/** Position s of the quantised channel whose codes start at codes and scales at scales, dequantised (exact). */
// @ts-ignore: decorator
@inline function kTValue(codes: usize, scales: usize, s: usize, q4: bool): f32 {
  const d = f16ToF32(load<u16>(scales + ((s >> 5) << 1)));
  if (!q4) return <f32>load<i8>(codes + s) * d;
  const byte = <i32>load<u8>(codes + ((s >> 5) << 4) + (s & 15));
  return <f32>(((s & 16) != 0 ? byte >> 4 : byte & 15) - 8) * d;
}

/**
 * sparq.ts's scoresBlock for positions s … s + 15 (s a multiple of 16, so all in group s/32: one load of
 * 16 codes and one scale per component) and `heads` (1 or 2) consecutive heads.
 */
// @ts-ignore: decorator
@inline function sparqBlock(
  out: usize, q: usize, kT: usize, dT: usize, s: usize, idx: usize, scale: usize, r: usize, iBytes: usize, dBytes: usize,
  headBytes: usize, outRowBytes: usize, heads: i32, q4: bool,
): void {
  const codesAt = q4 ? (s >> 5) << 4 : s, shift = <i32>(s & 16) >> 2, dAt = (s >> 5) << 1;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (let j: usize = 0; j < r; j++) {
    const i = <usize>load<i32>(idx + (j << 2));
    const d = scaleOf(dT + i * dBytes + dAt);
    let c = v128.load(kT + i * iBytes + codesAt); // int8 values, or 16 bytes of nibbles
    if (q4) c = i8x16.sub(v128.and(i16x8.shr_u(c, shift), i8x16.splat(15)), i8x16.splat(8));
    const lo = i16x8.extend_low_i8x16_s(c), hi = i16x8.extend_high_i8x16_s(c);
    const k0 = lowTimes(lo, d), k1 = highTimes(lo, d), k2 = lowTimes(hi, d), k3 = highTimes(hi, d);
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

/**
 * sHat from the row-major cache K (S rows of Hd, q8_0) for positions from … S − 1 only: out[h·S + s];
 * q (g, Hd), idx (r) i32, scale (g) f32. Equal there to sparqScoresStridedF32 on the dequantised rows.
 */
export function sparqScoresStridedQ8_0(
  out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, from: i32, S: i32, Hd: i32, g: i32,
): void {
  sparqStrided(out, q, k, idx, scale, r, from, S, Hd, g, false);
}

/** sparqScoresStridedQ8_0 with K q4_0. */
export function sparqScoresStridedQ4_0(
  out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, from: i32, S: i32, Hd: i32, g: i32,
): void {
  sparqStrided(out, q, k, idx, scale, r, from, S, Hd, g, true);
}

/**
 * The body of sparqScoresStrided*: 4 positions per f32x4 (each component's 4 values decoded in scalar
 * code), 2 heads at a time; leftover positions one at a time. Per position sparq.ts's f32 operations.
 */
// @ts-ignore: decorator
@inline function sparqStrided(
  out: usize, q: usize, k: usize, idx: usize, scale: usize, r: i32, from: i32, S: i32, Hd: i32, g: i32, q4: bool,
): void {
  const nS = <usize>S, nHeads = <usize>g, nr = <usize>r;
  const rowBytes = (<usize>Hd >> 5) * blockBytes(q4), headBytes = <usize>Hd << 2, outRowBytes = nS << 2;
  let s = <usize>from;
  for (; s + 4 <= nS; s += 4) {
    const k0 = k + s * rowBytes, k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
    for (let h: usize = 0; h < nHeads; h += 2) {
      const two = h + 1 < nHeads, qa = q + h * headBytes, qb = qa + headBytes;
      let a = f32x4.splat(0), b = a;
      for (let j: usize = 0; j < nr; j++) {
        const i = <usize>load<i32>(idx + (j << 2));
        const kv = f32x4(rowValue(k0, i, q4), rowValue(k1, i, q4), rowValue(k2, i, q4), rowValue(k3, i, q4));
        a = f32x4.add(a, f32x4.mul(f32x4.splat(load<f32>(qa + (i << 2))), kv));
        if (two) b = f32x4.add(b, f32x4.mul(f32x4.splat(load<f32>(qb + (i << 2))), kv));
      }
      const o = out + h * outRowBytes + (s << 2);
      v128.store(o, f32x4.mul(a, f32x4.splat(load<f32>(scale + (h << 2)))));
      if (two) v128.store(o + outRowBytes, f32x4.mul(b, f32x4.splat(load<f32>(scale + (h << 2), 4))));
    }
  }
  for (; s < nS; s++) {
    const ks = k + s * rowBytes;
    for (let h: usize = 0; h < nHeads; h++) {
      const qh = q + h * headBytes;
      let acc: f32 = 0;
      for (let j: usize = 0; j < nr; j++) {
        const i = <usize>load<i32>(idx + (j << 2));
        acc += load<f32>(qh + (i << 2)) * rowValue(ks, i, q4);
      }
      store<f32>(out + h * outRowBytes + (s << 2), acc * load<f32>(scale + (h << 2)));
    }
  }
}

/** Value i of the quantised row at row, dequantised (exact). */
// @ts-ignore: decorator
@inline function rowValue(row: usize, i: usize, q4: bool): f32 {
  const b = row + (i >> 5) * blockBytes(q4), e = i & 31;
  const d = f16ToF32(load<u16>(b));
  if (!q4) return <f32>load<i8>(b + 2 + e) * d;
  const byte = <i32>load<u8>(b + 2 + (e & 15));
  return <f32>((e < 16 ? byte & 15 : byte >> 4) - 8) * d;
}
