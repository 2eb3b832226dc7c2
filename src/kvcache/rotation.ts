/**
 * The Walsh–Hadamard rotation of a quantised KV cache, as llama.cpp applies it: queries and keys are
 * multiplied by one orthonormal Hadamard matrix and values by another before K and V are quantised, and
 * each attention output is multiplied back. Attention is unchanged in exact arithmetic (a rotation keeps
 * q·k, and the output's rotation is undone), but a key or value whose magnitude sits in a few channels is
 * spread over all of them, so one scale per block of 32 fits it better.
 *
 * The matrices are Sylvester's (H₂ₙ = [[Hₙ, Hₙ], [Hₙ, −Hₙ]], scaled by 1/√n, symmetric and its own inverse),
 * applied to each n-element block of a head's vector: for K and Q n is the largest power of two that
 * divides the head dim, for V it is 64 — llama.cpp's choices. A head dim that is not a multiple of 64 is not
 * rotated. The product is computed with n·log₂ n additions (the fast transform), in f32.
 */

/** Block sizes of the rotation for head dim Hd, or null if Hd is not a multiple of 64. */
export function rotationBlocks(Hd: number): { k: number; v: number } | null {
  if (Hd % 64 !== 0) return null;
  let k = 64;
  while (Hd % (2 * k) === 0) k *= 2;
  return { k, v: 64 };
}

/**
 * x ← H x for each of `count` consecutive vectors of Hd floats starting at float index `at` of f32, H the
 * normalised Sylvester Hadamard matrix of size `block` applied to each block of the vector.
 */
export function rotate(f32: Float32Array, at: number, count: number, Hd: number, block: number): void {
  const scale = Math.fround(1 / Math.sqrt(block));
  const end = at + count * Hd;
  for (let b = at; b < end; b += block) {
    for (let h = 1; h < block; h *= 2) {
      for (let i = b; i < b + block; i += 2 * h) {
        for (let j = i; j < i + h; j++) {
          const x = f32[j];
          const y = f32[j + h];
          f32[j] = x + y;
          f32[j + h] = x - y;
        }
      }
    }
    for (let j = b; j < b + block; j++) f32[j] *= scale;
  }
}
