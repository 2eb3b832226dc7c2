// The multiply-adds the kernels are built from, in two builds of the same sources: the portable
// SIMD build (a multiply, then an add: two roundings) and the relaxed-SIMD build, where
// f32x4.relaxed_madd lets the engine fuse them (one rounding, and half the instructions on a CPU
// with FMA; a CPU without FMA gets the two-rounding result). ASC_FEATURE_RELAXED_SIMD is a
// compile-time constant, so each build holds only its own branch.

/** a * b + c, lane-wise (fused in the relaxed build where the CPU can). */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/**
 * acc plus the 8 products a0 * b0 and a1 * b1 (lanes of two f32x4 pairs): the step of every f32
 * dot product over 8 elements. Portable: acc + (a0 * b0 + a1 * b1). Relaxed: two multiply-adds
 * into acc, a0 * b0 first. Every kernel that must give the same bits as another (a matvec row and
 * a matmul row) uses this one step.
 */
// @ts-ignore: decorator
@inline export function dot8Acc(acc: v128, a0: v128, b0: v128, a1: v128, b1: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.add(acc, f32x4.relaxed_madd(a1, b1, f32x4.mul(a0, b0)));
  return f32x4.add(acc, f32x4.add(f32x4.mul(a0, b0), f32x4.mul(a1, b1)));
}

/**
 * A byte of each 64-byte step of [p, p + bytes), xor-ed: with consecutive calls on consecutive spans no two
 * touched bytes are more than 64 apart, so every cache line of the whole range is loaded. Nothing past it is read.
 */
// @ts-ignore: decorator
@inline export function touchLines(p: usize, bytes: usize): u32 {
  // Unrolled up to 256 bytes (bytes is a constant at every call, so the tests fold away).
  let t = <u32>load<u8>(p);
  if (bytes > 64) t ^= <u32>load<u8>(p + 64);
  if (bytes > 128) t ^= <u32>load<u8>(p + 128);
  if (bytes > 192) t ^= <u32>load<u8>(p + 192);
  for (let o: usize = 256; o < bytes; o += 64) t ^= <u32>load<u8>(p + o);
  return t;
}
