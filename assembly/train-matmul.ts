// The two backward products of a linear layer Y (t, d) = X (t, n) @ W (d, n)^T (matmul.ts):
//   matmulBackwardInput:  dX (t, n) (+)= dY (t, d) @ W (d, n)
//   matmulBackwardWeight: dW (d, n) += dY^T (d, t) @ X (t, n)
// Both are C (m, n) += A (m, K) @ B (K, n) with B read along its rows (W, or X) and A read either
// along its rows (dY, for dX) or down its columns (dY^T, for dW): one body, `gemm`, with A's strides.
//
// Summation order, the same on every path: each C element is one f32 accumulator that starts at C
// (accumulating) or 0 and adds the products a_k · b_k for k = 0, 1, … in order, one f32 rounding per
// multiply and per add (no fused multiply-add: WebAssembly SIMD has none). So an element's bits do not
// depend on which tile, leftover loop or thread share computed it, and the reference twin computes
// the same bits with Math.fround.
//
// Register tile: 4 C rows x 8 C columns (8 f32x4 accumulators). Per k it loads the 8 floats of B row k
// once for the 4 rows and broadcasts one A float per row (v128.load32_splat, a plain load with AVX).
// A tile runs K_CHUNK values of k, then its C goes back to memory (the f32 accumulator's value is
// unchanged by that), so the tiles of one row quad sweep a B block K_CHUNK rows at a time: B is read
// along its rows (each cache line's two halves by neighbouring tiles) instead of down K columns, which
// at power-of-two row strides (n = 2048: 8 KiB) would map every row to one L1 set. The row quad's C
// (4 x N_BLOCK floats) and its K_CHUNK rows of A stay in L1; the K_BLOCK x N_BLOCK block of B (128 KiB)
// stays in L2 while every row quad passes over it, so B comes from memory once per column block.

const K_BLOCK: usize = 256;
const N_BLOCK: usize = 128; // a multiple of 8: column leftovers happen only at the end of a row
const K_CHUNK: usize = 8; // ≤ 12: A's rows in a chunk may all fall in one 12-way L1 set (dY^T, ldy = 2048)

/**
 * dX (t, n) = dY (t, d) @ W (d, n), or dX += it when accumulate is non-zero. dY's rows are ldy ≥ d
 * floats apart. Split over threads by rows of dX: rows [t0, t1) are dX + 4·t0·n, dY + 4·t0·ldy, t1 − t0.
 */
export function matmulBackwardInput(dX: usize, dY: usize, w: usize, n: i32, d: i32, t: i32, ldy: i32, accumulate: i32): void {
  const yRow = <usize>ldy << 2;
  gemm(dX, dY, yRow, 4, w, <usize>t, <usize>n, <usize>d, accumulate != 0);
}

/**
 * dW (d, n) += dY^T (d, t) @ X (t, n). dY (t, ldy), ldy ≥ d: the d columns used start at dY. Split over
 * threads by rows of dW: rows [r0, r1) are dW + 4·r0·n, dY + 4·r0, d = r1 − r0, the same ldy.
 */
export function matmulBackwardWeight(dW: usize, dY: usize, x: usize, n: i32, d: i32, t: i32, ldy: i32): void {
  const yRow = <usize>ldy << 2;
  gemm(dW, dY, 4, yRow, x, <usize>d, <usize>n, <usize>t, true);
}

/**
 * C (m, n) (+)= A (m, K) @ B (K, n); A's element (i, k) at a + i·aRow + k·aCol bytes, B and C rows of
 * n floats. Every C element summed in k order (file comment).
 */
// @ts-ignore: decorator
@inline function gemm(c: usize, a: usize, aRow: usize, aCol: usize, b: usize, m: usize, n: usize, K: usize, accumulate: bool): void {
  const row = n << 2;
  if (K == 0) {
    if (!accumulate) memory.fill(c, 0, m * row);
    return;
  }
  for (let k0: usize = 0; k0 < K; k0 += K_BLOCK) {
    const k1 = min(K, k0 + K_BLOCK);
    for (let j0: usize = 0; j0 < n; j0 += N_BLOCK) {
      const j1 = min(n, j0 + N_BLOCK);
      for (let i: usize = 0; i < m; i += 4) {
        const ci = c + i * row, ai = a + i * aRow;
        for (let kc0 = k0; kc0 < k1; kc0 += K_CHUNK) {
          const kc = min(K_CHUNK, k1 - kc0);
          const zero = !accumulate && kc0 == 0; // the first chunk starts from 0 instead of C
          const ak = ai + kc0 * aCol, bk = b + kc0 * row;
          let j = j0;
          if (i + 4 <= m) {
            for (; j + 8 <= j1; j += 8) tile4x8(ci + (j << 2), row, ak, aRow, aCol, bk + (j << 2), row, kc, zero);
            for (; j < j1; j++) tile4x1(ci + (j << 2), row, ak, aRow, aCol, bk + (j << 2), row, kc, zero);
          } else {
            // The last m % 4 rows, one at a time.
            for (let r = i; r < m; r++) {
              const cr = c + r * row, ar = a + r * aRow + kc0 * aCol;
              for (j = j0; j + 8 <= j1; j += 8) tile1x8(cr + (j << 2), ar, aCol, bk + (j << 2), row, kc, zero);
              for (; j < j1; j++) tile1x1(cr + (j << 2), ar, aCol, bk + (j << 2), row, kc, zero);
            }
          }
        }
      }
    }
  }
}

/** C[0..4][0..8] (rows ldc bytes apart) += Σ_k A[0..4][k] B[k][0..8] over k < kc, from 0 if zero. */
// @ts-ignore: decorator
@inline function tile4x8(c: usize, ldc: usize, a: usize, aRow: usize, aCol: usize, b: usize, ldb: usize, kc: usize, zero: bool): void {
  const c0 = c, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
  let s0l = f32x4.splat(0), s0h = s0l, s1l = s0l, s1h = s0l, s2l = s0l, s2h = s0l, s3l = s0l, s3h = s0l;
  if (!zero) {
    s0l = v128.load(c0); s0h = v128.load(c0, 16);
    s1l = v128.load(c1); s1h = v128.load(c1, 16);
    s2l = v128.load(c2); s2h = v128.load(c2, 16);
    s3l = v128.load(c3); s3h = v128.load(c3, 16);
  }
  const a1 = aRow, a2 = aRow << 1, a3 = a1 + a2;
  let ap = a, bp = b;
  for (let k: usize = 0; k < kc; k++) {
    const bl = v128.load(bp), bh = v128.load(bp, 16);
    let x = v128.load32_splat(ap);
    s0l = f32x4.add(s0l, f32x4.mul(x, bl)); s0h = f32x4.add(s0h, f32x4.mul(x, bh));
    x = v128.load32_splat(ap + a1);
    s1l = f32x4.add(s1l, f32x4.mul(x, bl)); s1h = f32x4.add(s1h, f32x4.mul(x, bh));
    x = v128.load32_splat(ap + a2);
    s2l = f32x4.add(s2l, f32x4.mul(x, bl)); s2h = f32x4.add(s2h, f32x4.mul(x, bh));
    x = v128.load32_splat(ap + a3);
    s3l = f32x4.add(s3l, f32x4.mul(x, bl)); s3h = f32x4.add(s3h, f32x4.mul(x, bh));
    ap += aCol;
    bp += ldb;
  }
  v128.store(c0, s0l); v128.store(c0, s0h, 16);
  v128.store(c1, s1l); v128.store(c1, s1h, 16);
  v128.store(c2, s2l); v128.store(c2, s2h, 16);
  v128.store(c3, s3l); v128.store(c3, s3h, 16);
}

/** One column of 4 C rows: C[0..4][0] += Σ_k A[0..4][k] B[k][0], from 0 if zero. */
// @ts-ignore: decorator
@inline function tile4x1(c: usize, ldc: usize, a: usize, aRow: usize, aCol: usize, b: usize, ldb: usize, kc: usize, zero: bool): void {
  let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0;
  if (!zero) {
    s0 = load<f32>(c); s1 = load<f32>(c + ldc); s2 = load<f32>(c + 2 * ldc); s3 = load<f32>(c + 3 * ldc);
  }
  let ap = a, bp = b;
  for (let k: usize = 0; k < kc; k++) {
    const y = load<f32>(bp);
    s0 += load<f32>(ap) * y;
    s1 += load<f32>(ap + aRow) * y;
    s2 += load<f32>(ap + 2 * aRow) * y;
    s3 += load<f32>(ap + 3 * aRow) * y;
    ap += aCol;
    bp += ldb;
  }
  store<f32>(c, s0); store<f32>(c + ldc, s1); store<f32>(c + 2 * ldc, s2); store<f32>(c + 3 * ldc, s3);
}

/** One C row, 8 columns: C[0][0..8] += Σ_k A[0][k] B[k][0..8], from 0 if zero. */
// @ts-ignore: decorator
@inline function tile1x8(c: usize, a: usize, aCol: usize, b: usize, ldb: usize, kc: usize, zero: bool): void {
  let sl = f32x4.splat(0), sh = sl;
  if (!zero) {
    sl = v128.load(c); sh = v128.load(c, 16);
  }
  let ap = a, bp = b;
  for (let k: usize = 0; k < kc; k++) {
    const x = v128.load32_splat(ap);
    sl = f32x4.add(sl, f32x4.mul(x, v128.load(bp)));
    sh = f32x4.add(sh, f32x4.mul(x, v128.load(bp, 16)));
    ap += aCol;
    bp += ldb;
  }
  v128.store(c, sl); v128.store(c, sh, 16);
}

/** One C element: C[0][0] += Σ_k A[0][k] B[k][0], from 0 if zero. */
// @ts-ignore: decorator
@inline function tile1x1(c: usize, a: usize, aCol: usize, b: usize, ldb: usize, kc: usize, zero: bool): void {
  let s: f32 = zero ? 0 : load<f32>(c);
  let ap = a, bp = b;
  for (let k: usize = 0; k < kc; k++) {
    s += load<f32>(ap) * load<f32>(bp);
    ap += aCol;
    bp += ldb;
  }
  store<f32>(c, s);
}
