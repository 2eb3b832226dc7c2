// RMSNorm for training, over t rows of n features, forward and backward side by side:
//   forward:  rstd = 1 / sqrt(mean(x²) + eps);  out = (x · rstd) · w          (saves rstd per row)
//   backward: with x̂ = x · rstd and dx̂ = dOut · w,
//             dX = rstd · (dx̂ − x̂ · mean(dx̂ · x̂)),   dW += Σ_rows dOut · x̂
// Each forward row is rmsnorm (elementwise.ts) bit for bit: the same f64 sum of f32 squares.

import { normalizeRow, rmsScale } from "./elementwise";

/**
 * out (t, n) = rmsnorm of each row of x (t, n) with weights w (n); rstd (t) = 1 / sqrt(mean(x²) + eps)
 * of each row, as the backward needs it. Row i equals rmsnorm(out_i, x_i, w, n, eps) bit for bit.
 */
export function rmsnormForward(out: usize, rstd: usize, x: usize, w: usize, n: i32, t: i32, eps: f32): void {
  const row = <usize>n << 2;
  for (let i: usize = 0; i < <usize>t; i++) {
    const r = rmsScale(x + i * row, n, eps);
    store<f32>(rstd + (i << 2), r);
    normalizeRow(out + i * row, x + i * row, w, n, r);
  }
}

/**
 * The backward of rmsnormForward: dX (t, n) = (or += when accumulate is non-zero) the gradient from
 * dOut (t, n) through out = (x · rstd) · w; dW (n) += Σ over the t rows, in row order, of dOut · x · rstd.
 * x (t, n), w (n), rstd (t) as the forward saved it.
 */
export function rmsnormBackward(dX: usize, dW: usize, dOut: usize, x: usize, w: usize, rstd: usize, n: i32, t: i32, accumulate: i32): void {
  const row = <usize>n << 2;
  const invN = <f64>1 / <f64>n;
  for (let i: usize = 0; i < <usize>t; i++) {
    const xi = x + i * row, gi = dOut + i * row, di = dX + i * row;
    const r = load<f32>(rstd + (i << 2));

    // Step 1: mean(dx̂ · x̂) = rstd · Σ (dOut · w) · x / n, the f32 products summed in f64.
    let lo = f64x2.splat(0), hi = lo;
    let o: usize = 0;
    for (; o + 16 <= row; o += 16) {
      const p = f32x4.mul(f32x4.mul(v128.load(gi + o), v128.load(w + o)), v128.load(xi + o));
      lo = f64x2.add(lo, f64x2.promote_low_f32x4(p));
      hi = f64x2.add(hi, f64x2.promote_low_f32x4(i32x4.shuffle(p, p, 2, 3, 2, 3)));
    }
    const lanes = f64x2.add(lo, hi);
    let sum = f64x2.extract_lane(lanes, 0) + f64x2.extract_lane(lanes, 1);
    for (; o < row; o += 4) sum += <f64>(load<f32>(gi + o) * load<f32>(w + o) * load<f32>(xi + o));
    const mean = <f32>(sum * <f64>r * invN);

    // Step 2: dX = rstd · (dx̂ − x̂ · mean), dW += dOut · x̂.
    const r4 = f32x4.splat(r), mean4 = f32x4.splat(mean);
    o = 0;
    for (; o + 16 <= row; o += 16) {
      const g = v128.load(gi + o), xHat = f32x4.mul(v128.load(xi + o), r4);
      let dx = f32x4.mul(r4, f32x4.sub(f32x4.mul(g, v128.load(w + o)), f32x4.mul(xHat, mean4)));
      if (accumulate != 0) dx = f32x4.add(v128.load(di + o), dx);
      v128.store(di + o, dx);
      v128.store(dW + o, f32x4.add(v128.load(dW + o), f32x4.mul(g, xHat)));
    }
    for (; o < row; o += 4) {
      const g = load<f32>(gi + o), xHat = load<f32>(xi + o) * r;
      let dx = r * (g * load<f32>(w + o) - xHat * mean);
      if (accumulate != 0) dx = load<f32>(di + o) + dx;
      store<f32>(di + o, dx);
      store<f32>(dW + o, load<f32>(dW + o) + g * xHat);
    }
  }
}
