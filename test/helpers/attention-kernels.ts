/**
 * The arena, buffers and read/write helpers the attention kernel tests share
 * (test/kernels-attention.test.ts, test/kernels-sparq.test.ts).
 */
import { createReferenceKernels } from "../../src/kernels/reference.js";
import { loadWasmKernelsSync } from "../../src/kernels/wasm.js";
import { Arena, type Ptr } from "../../src/memory/arena.js";
import { bf16ToF32, f32ToBf16 } from "../../src/memory/dtype.js";

export type Dtype = "F32" | "Bf16";

export const arena = new Arena(64 << 20, "the attention kernel tests");
export const wasm = loadWasmKernelsSync(arena.memory);
export const ref = createReferenceKernels(arena.memory);
export const K = arena.alloc(4 << 20); // K (S, Hd) f32, or the decoded bf16 K
export const V = arena.alloc(4 << 20);
export const K16 = arena.alloc(2 << 20); // K (S, Hd) bf16
export const V16 = arena.alloc(2 << 20);
export const KG = arena.alloc(4 << 20); // gathered rows of K / V, or the d-major kT (Hd, ldk)
export const VG = arena.alloc(4 << 20);
export const Q = arena.alloc(64 << 10); // q (g, Hd), or x for topK / packBf16
export const IDX = arena.alloc(1 << 20); // i32 row / component indices
export const SCALE = arena.alloc(64);
export const OUT_WASM = arena.alloc(1 << 20);
export const OUT_REF = arena.alloc(1 << 20);
export const OUT_2 = arena.alloc(1 << 20);
export const SCORES_WASM = arena.alloc(1 << 20);
export const SCORES_REF = arena.alloc(1 << 20);
export const SCORES_2 = arena.alloc(1 << 20);
export const SCRATCH = arena.alloc(2 << 20);
export const QT = arena.alloc(1 << 20); // q (T, qStride) of a causal chunk
export const SCORES_T = arena.alloc(2 << 20); // (T, g, S0 + T)
export const SCORES_T2 = arena.alloc(2 << 20);

export const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
export const putI32 = (ptr: Ptr, values: ArrayLike<number>) => arena.i32.set(values, ptr / 4);
export const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
export const getI32 = (ptr: Ptr, n: number) => Array.from(arena.i32.subarray(ptr / 4, ptr / 4 + n));
export const getU16 = (ptr: Ptr, n: number) => Array.from(arena.u16.subarray(ptr / 2, ptr / 2 + n));
export const putBf16 = (ptr: Ptr, values: ArrayLike<number>) => arena.u16.set(Array.from(values, f32ToBf16), ptr / 2);
export const decodedBf16 = (values: ArrayLike<number>) => Float32Array.from(values, (v) => bf16ToF32(f32ToBf16(v)));

export const SEQ = [1, 3, 17, 100, 1031];
export const HEAD_DIMS = [4, 24, 64, 128, 20, 7];
export const GROUPS = [1, 2, 3, 4];
export const ALL_GROUPS = [1, 2, 3, 4, 5, 8]; // for the fast bit-exact tests: g goes up to 8

/** Every (S, Hd, g) of the grids, with a seed. */
export function* shapes(seqs = SEQ, groups = GROUPS): Generator<{ S: number; Hd: number; g: number; seed: number }> {
  for (const S of seqs)
    for (const Hd of HEAD_DIMS) for (const g of groups) yield { S, Hd, g, seed: S * 10000 + Hd * 10 + g };
}
