// The optimizer step and the gradient-norm clipping around it, over flat f32 ranges.
//
// AdamW (Loshchilov & Hutter, arXiv:1711.05101): Adam's moment estimates with the weight decay decoupled
// from the gradient, as llm.c writes it:
//   m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²;  m̂ = m / bc1;  v̂ = v / bc2   (bc_i = 1 − β_i^step)
//   p = p − lr · (m̂ / (√v̂ + eps) + weightDecay · p)
// Defined bit for bit: f32 operations in exactly that order (the reference twin rounds after each).
// Clipping: the global norm is √(Σ over the parameter ranges of sumSquares), then scale each gradient.

/**
 * One AdamW step on p, m, v (n each, updated in place) with gradient grad (n). bc1 = 1 − β1^step and
 * bc2 = 1 − β2^step, step counted from 1; weightDecay 0 for parameters that are not decayed.
 */
export function adamw(
  p: usize, m: usize, v: usize, grad: usize, n: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, bc1: f32, bc2: f32,
): void {
  const end = <usize>n << 2;
  const b1 = f32x4.splat(beta1), b2 = f32x4.splat(beta2), c1 = f32x4.splat(1 - beta1), c2 = f32x4.splat(1 - beta2);
  const bc1x4 = f32x4.splat(bc1), bc2x4 = f32x4.splat(bc2), eps4 = f32x4.splat(eps), wd4 = f32x4.splat(weightDecay);
  const lr4 = f32x4.splat(lr);
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) {
    const g = v128.load(grad + o), w = v128.load(p + o);
    const mo = f32x4.add(f32x4.mul(b1, v128.load(m + o)), f32x4.mul(c1, g));
    const vo = f32x4.add(f32x4.mul(b2, v128.load(v + o)), f32x4.mul(c2, f32x4.mul(g, g)));
    const mHat = f32x4.div(mo, bc1x4), vHat = f32x4.div(vo, bc2x4);
    const step = f32x4.add(f32x4.div(mHat, f32x4.add(f32x4.sqrt(vHat), eps4)), f32x4.mul(wd4, w));
    v128.store(m + o, mo);
    v128.store(v + o, vo);
    v128.store(p + o, f32x4.sub(w, f32x4.mul(lr4, step)));
  }
  for (; o < end; o += 4) {
    const g = load<f32>(grad + o), w = load<f32>(p + o);
    const mo = beta1 * load<f32>(m + o) + (1 - beta1) * g;
    const vo = beta2 * load<f32>(v + o) + (1 - beta2) * (g * g);
    const mHat = mo / bc1, vHat = vo / bc2;
    const step = mHat / (Mathf.sqrt(vHat) + eps) + weightDecay * w;
    store<f32>(m + o, mo);
    store<f32>(v + o, vo);
    store<f32>(p + o, w - lr * step);
  }
}

/** out (1) f32 = Σ x² over x (n), each x widened to f64, squared and summed in f64 (lanes 0, 1 and 2, 3 apart). */
export function sumSquares(out: usize, x: usize, n: i32): void {
  const end = <usize>n << 2;
  let lo = f64x2.splat(0), hi = lo;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) {
    const v = v128.load(x + o);
    const a = f64x2.promote_low_f32x4(v), b = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 2, 3));
    lo = f64x2.add(lo, f64x2.mul(a, a));
    hi = f64x2.add(hi, f64x2.mul(b, b));
  }
  const lanes = f64x2.add(lo, hi);
  let sum = f64x2.extract_lane(lanes, 0) + f64x2.extract_lane(lanes, 1);
  for (; o < end; o += 4) {
    const v = <f64>load<f32>(x + o);
    sum += v * v;
  }
  store<f32>(out, <f32>sum);
}

/** x (n) = x · alpha, in place. */
export function scale(x: usize, n: i32, alpha: f32): void {
  const end = <usize>n << 2;
  const a4 = f32x4.splat(alpha);
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(x + o, f32x4.mul(v128.load(x + o), a4));
  for (; o < end; o += 4) store<f32>(x + o, load<f32>(x + o) * alpha);
}
