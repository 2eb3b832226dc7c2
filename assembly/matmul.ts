// Matrix-matrix products for float weights (prefill, t tokens): out (t, d) = X (t, n) @ W (d, n)^T.
//
// Register tile of 4 X rows x 2 W rows: 8 f32x4 accumulators, and every W vector loaded (and
// converted from f16/bf16) is used by 4 X rows, every X vector by 2 W rows. Cache blocking: W is
// cut into panels of about PANEL_BYTES (they stay in L2) and all X tiles run over one panel
// before the next, so W comes from memory once; the 4 X rows of a tile (4 n floats) stay in L1.
// Leftover X rows (t % 4) run tiles of 2 and 1 rows in the same panels, a leftover W row (d odd) the
// single-row dots.
// One generic body, specialised per weight type by a constant `kind` after inlining.
import {
  bf16ToF32, f16ToF32, bf16LoToF32x4, bf16HiToF32x4, f16HiHalvesBiased, f16LoHalves, joinLo, joinHi,
  allNormal2, f16x4Exact, hsum4,
} from "./convert";
import { dot8Acc } from "./simd";
import { dotF32, dotF16, dotBf16 } from "./matvec";

const F32 = 0;
const F16 = 1;
const BF16 = 2;
const PANEL_BYTES: usize = 256 * 1024;
/**
 * X up to this size (t rows of n floats) stays in L1 and L2 while W streams past it one row pair at a time,
 * when a tile's 4 X rows and the W pair fit in L1_BYTES together (else X would be re-read from L2 per pair).
 */
const SMALL_X_BYTES: usize = 48 * 1024;
const L1_BYTES: usize = 32 * 1024;

/** Element kind `kind` at p (index i) as f32. */
// @ts-ignore: decorator
@inline function loadScalar(kind: i32, p: usize, i: usize): f32 {
  if (kind == F32) return load<f32>(p + (i << 2));
  if (kind == F16) return f16ToF32(load<u16>(p + (i << 1)));
  return bf16ToF32(load<u16>(p + (i << 1)));
}

/**
 * The R x 2 tile out[i..i+R, r..r+2] (R = 4, 2 or 1, a constant after inlining): X rows at x (stride
 * xRow bytes), W rows wa, wb (n each). Stores through out (row stride outRow bytes).
 */
// @ts-ignore: decorator
@inline function tileRx2(
  kind: i32, R: i32, out: usize, outRow: usize, x: usize, xRow: usize, wa: usize, wb: usize, n: usize,
  touch: bool, ahead: usize,
): void {
  let touched: u64 = 0;
  const x0 = x, x1 = x0 + xRow, x2 = x1 + xRow, x3 = x2 + xRow;
  let c0a = f32x4.splat(0), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a, c3b = c0a;
  let k: usize = 0;
  for (; k + 8 <= n; k += 8) {
    // The 8 weights of each W row at k as f32x4 pairs (lo = k..k+3, hi = k+4..k+7).
    let waLo: v128, waHi: v128, wbLo: v128, wbHi: v128;
    if (kind == F32) {
      waLo = v128.load(wa + (k << 2)); waHi = v128.load(wa + (k << 2), 16);
      wbLo = v128.load(wb + (k << 2)); wbHi = v128.load(wb + (k << 2), 16);
    } else if (kind == BF16) {
      const ha = v128.load(wa + (k << 1)), hb = v128.load(wb + (k << 1));
      waLo = bf16LoToF32x4(ha); waHi = bf16HiToF32x4(ha);
      wbLo = bf16LoToF32x4(hb); wbHi = bf16HiToF32x4(hb);
    } else {
      const ha = v128.load(wa + (k << 1)), hb = v128.load(wb + (k << 1));
      if (allNormal2(ha, hb)) {
        const hiA = f16HiHalvesBiased(ha), loA = f16LoHalves(ha);
        const hiB = f16HiHalvesBiased(hb), loB = f16LoHalves(hb);
        waLo = joinLo(loA, hiA); waHi = joinHi(loA, hiA);
        wbLo = joinLo(loB, hiB); wbHi = joinHi(loB, hiB);
      } else {
        waLo = f16x4Exact(v128.load16x4_u(wa + (k << 1))); waHi = f16x4Exact(v128.load16x4_u(wa + (k << 1), 8));
        wbLo = f16x4Exact(v128.load16x4_u(wb + (k << 1))); wbHi = f16x4Exact(v128.load16x4_u(wb + (k << 1), 8));
      }
    }
    const o = k << 2;
    if (touch) touched ^= load<u64>(ahead + (k << (kind == F32 ? 3 : 2)));
    let xl = v128.load(x0 + o), xh = v128.load(x0 + o, 16);
    c0a = dot8Acc(c0a, waLo, xl, waHi, xh);
    c0b = dot8Acc(c0b, wbLo, xl, wbHi, xh);
    if (R >= 2) {
      xl = v128.load(x1 + o); xh = v128.load(x1 + o, 16);
      c1a = dot8Acc(c1a, waLo, xl, waHi, xh);
      c1b = dot8Acc(c1b, wbLo, xl, wbHi, xh);
    }
    if (R == 4) {
      xl = v128.load(x2 + o); xh = v128.load(x2 + o, 16);
      c2a = dot8Acc(c2a, waLo, xl, waHi, xh);
      c2b = dot8Acc(c2b, wbLo, xl, wbHi, xh);
      xl = v128.load(x3 + o); xh = v128.load(x3 + o, 16);
      c3a = dot8Acc(c3a, waLo, xl, waHi, xh);
      c3b = dot8Acc(c3b, wbLo, xl, wbHi, xh);
    }
  }
  // [out[i][r], out[i][r+1], out[i+1][r], out[i+1][r+1]] and the same for rows i+2, i+3. Each lane's sum
  // depends on its own accumulator only, so every row gets the bits of the matvec's dot.
  let top = hsum4(c0a, c0b, c1a, c1b), bottom = R == 4 ? hsum4(c2a, c2b, c3a, c3b) : top;
  if (k < n) {
    let t0a: f32 = 0, t0b: f32 = 0, t1a: f32 = 0, t1b: f32 = 0;
    let t2a: f32 = 0, t2b: f32 = 0, t3a: f32 = 0, t3b: f32 = 0;
    for (; k < n; k++) {
      const a = loadScalar(kind, wa, k), b = loadScalar(kind, wb, k), o = k << 2;
      const v0 = load<f32>(x0 + o);
      t0a += a * v0; t0b += b * v0;
      if (R >= 2) {
        const v1 = load<f32>(x1 + o);
        t1a += a * v1; t1b += b * v1;
      }
      if (R == 4) {
        const v2 = load<f32>(x2 + o), v3 = load<f32>(x3 + o);
        t2a += a * v2; t2b += b * v2; t3a += a * v3; t3b += b * v3;
      }
    }
    top = f32x4.add(top, f32x4(t0a, t0b, t1a, t1b));
    if (R == 4) bottom = f32x4.add(bottom, f32x4(t2a, t2b, t3a, t3b));
  }
  touchSink ^= touched;
  v128.store64_lane(out, top, 0);
  if (R >= 2) v128.store64_lane(out + outRow, top, 1);
  if (R == 4) {
    v128.store64_lane(out + 2 * outRow, bottom, 0);
    v128.store64_lane(out + 3 * outRow, bottom, 1);
  }
}

/** The tiles of R X rows (at xi, out oi) over the W rows r0..r1 of one panel. */
// @ts-ignore: decorator
@inline function panelTiles(
  kind: i32, R: i32, oi: usize, outRow: usize, xi: usize, xRow: usize, w: usize, rowBytes: usize,
  r0: usize, r1: usize, n: usize, ahead: usize,
): void {
  let r = r0;
  for (; r + 2 <= r1; r += 2) {
    const wa = w + r * rowBytes;
    // `touch` is a constant in each copy, so the tiles without a next pair to load carry no extra work.
    if (ahead != 0) tileRx2(kind, R, oi + (r << 2), outRow, xi, xRow, wa, wa + rowBytes, n, true, ahead);
    else tileRx2(kind, R, oi + (r << 2), outRow, xi, xRow, wa, wa + rowBytes, n, false, 0);
  }
  if (r < r1) {
    // d is odd: the last W row alone.
    const wr = w + r * rowBytes;
    for (let j: usize = 0; j < <usize>R; j++) {
      const xj = xi + j * xRow;
      const dot = kind == F32 ? dotF32(xj, wr, n) : kind == F16 ? dotF16(xj, wr, n) : dotBf16(xj, wr, n);
      store<f32>(oi + j * outRow + (r << 2), dot);
    }
  }
}

/**
 * Tiles of 4 X rows, then one of 2 and one of 1 for what is left (t % 4), all run over one panel of W
 * before the next, so W comes from memory once whatever t is (a batched decode step of 7 sequences
 * reads it once, not once for the tiles and again for each leftover row).
 */
// @ts-ignore: decorator
@inline function matmulFloat(kind: i32, out: usize, x: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  const nn = <usize>n, nd = <usize>d, nt = <usize>t;
  const rowBytes = kind == F32 ? nn << 2 : nn << 1;
  const xRow = nn << 2, outRow = <usize>ldo << 2;
  // With few X rows (a batched decode step) the panel is one pair of W rows, and every X tile runs over
  // the pair while it is in L1; the first tile also loads a word of each line of the next pair as it
  // goes, so that W's cache misses are in flight during the arithmetic instead of after it.
  const small = nt * xRow <= SMALL_X_BYTES && (xRow << 2) + (rowBytes << 1) <= L1_BYTES;
  const panelRows: usize = small ? 2 : max<usize>(2, (PANEL_BYTES / rowBytes) & ~1);
  for (let r0: usize = 0; r0 < nd; r0 += panelRows) {
    const r1 = min(nd, r0 + panelRows);
    let ahead: usize = small && r0 + 4 <= nd ? w + (r0 + 2) * rowBytes : 0;
    let i: usize = 0;
    for (; i + 4 <= nt; i += 4) {
      panelTiles(kind, 4, out + i * outRow, outRow, x + i * xRow, xRow, w, rowBytes, r0, r1, nn, ahead);
      ahead = 0;
    }
    if (nt - i >= 2) {
      panelTiles(kind, 2, out + i * outRow, outRow, x + i * xRow, xRow, w, rowBytes, r0, r1, nn, ahead);
      ahead = 0;
      i += 2;
    }
    if (i < nt) panelTiles(kind, 1, out + i * outRow, outRow, x + i * xRow, xRow, w, rowBytes, r0, r1, nn, ahead);
  }
}

/** Where tileRx2's loads ahead go, so they are kept (per instance: each thread has its own). */
let touchSink: u64 = 0;

/** out (t, d) = X (t, n) @ W (d, n)^T, W f32; out's rows are ldo floats apart (ldo ≥ d). */
export function matmulF32(out: usize, x: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  matmulFloat(F32, out, x, w, n, d, t, ldo);
}

/** out (t, d) = X (t, n) @ W (d, n)^T, W f16, X f16-rounded f32. */
export function matmulF16(out: usize, x: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  matmulFloat(F16, out, x, w, n, d, t, ldo);
}

/** out (t, d) = X (t, n) @ W (d, n)^T, W bf16, X bf16-rounded f32. */
export function matmulBf16(out: usize, x: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  matmulFloat(BF16, out, x, w, n, d, t, ldo);
}
