/**
 * Element types kvslim computes with, and their conversions.
 *
 * Weights stay in their file dtype in memory; kernels convert while they read.
 * Byte layouts:
 *   f32   4 bytes, IEEE 754 binary32, little endian
 *   f16   2 bytes, IEEE 754 binary16
 *   bf16  2 bytes, the upper half of a binary32
 *   q8_0  blocks of 32 elements, 34 bytes each: f16 scale d, then 32 int8 q; x[i] = d * q[i]
 *   q4_0, q4_1, q5_0, q5_1 (blocks of 32) and q4_k, q5_k, q6_k (blocks of 256): ggml's 4- to 6-bit
 *         formats, described in quants.ts
 */
import { f16ToF32, f32ToF16 } from "./half.js";
import { QUANT_BLOCKS, QUANT_TYPES, type QuantType, dequantize, quantize } from "./quants.js";

export { f16ToF32, f32ToF16 };

export type DType = "f32" | "f16" | "bf16" | "q8_0" | QuantType;

export const DTYPES: readonly DType[] = ["f32", "f16", "bf16", "q8_0", ...QUANT_TYPES];

/** Whether a dtype is one of ggml's 4- to 6-bit block formats (quants.ts). */
export function isQuantType(dtype: DType): dtype is QuantType {
  return (QUANT_TYPES as readonly string[]).includes(dtype);
}

export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 34;

/** Elements per block (1 for the plain float types). */
export function blockSize(dtype: DType): number {
  if (isQuantType(dtype)) return QUANT_BLOCKS[dtype].values;
  return dtype === "q8_0" ? Q8_0_BLOCK : 1;
}

/** Bytes needed for `n` elements of `dtype`; n must be a multiple of the block size. */
export function bytesFor(dtype: DType, n: number): number {
  switch (dtype) {
    case "f32":
      return 4 * n;
    case "f16":
    case "bf16":
      return 2 * n;
    case "q8_0":
      return (n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
    default:
      return (n / QUANT_BLOCKS[dtype].values) * QUANT_BLOCKS[dtype].bytes;
  }
}

export function isDType(s: string): s is DType {
  return (DTYPES as readonly string[]).includes(s);
}

// Scratch for bit casts.
const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

/** bfloat16 bits -> number (exact). */
export function bf16ToF32(b: number): number {
  u32Buf[0] = (b & 0xffff) << 16;
  return f32Buf[0];
}

/** number -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN (as ggml does). */
export function f32ToBf16(value: number): number {
  f32Buf[0] = value;
  return f32BitsToBf16(u32Buf[0]);
}

/**
 * f32 bits (as a u32) -> bfloat16 bits, as f32ToBf16. Exact for every NaN payload too: NaN keeps its
 * sign and top payload bits and gets the quiet bit (a JavaScript number may not carry a payload).
 */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 64) & 0xffff;
  return ((x + (0x7fff + ((x >>> 16) & 1))) >>> 16) & 0xffff;
}

/** Rounds a number to the nearest f32 and then to the nearest f16 value (as a number). */
export function roundF16(value: number): number {
  return f16ToF32(f32ToF16(value));
}

/**
 * Quantizes `src` (length multiple of 32) to q8_0 bytes the way llama.cpp does:
 * d = max|x| / 127 stored as f16; q = round(x / d) using the unrounded d.
 */
export function quantizeQ8_0(src: ArrayLike<number>): Uint8Array {
  const n = src.length;
  if (n % Q8_0_BLOCK !== 0) throw new RangeError(`q8_0 needs a multiple of 32 elements, got ${n}`);
  const out = new Uint8Array((n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n / Q8_0_BLOCK; b++) {
    let amax = 0;
    for (let i = 0; i < Q8_0_BLOCK; i++) amax = Math.max(amax, Math.abs(src[b * Q8_0_BLOCK + i]));
    const d = Math.fround(amax / 127);
    const id = amax ? Math.fround(127 / amax) : 0;
    const base = b * Q8_0_BLOCK_BYTES;
    view.setUint16(base, f32ToF16(d), true);
    for (let i = 0; i < Q8_0_BLOCK; i++) {
      view.setInt8(base + 2 + i, roundHalfEven(Math.fround(src[b * Q8_0_BLOCK + i] * id)));
    }
  }
  return out;
}

/** Dequantizes q8_0 bytes to numbers. */
export function dequantizeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < n / Q8_0_BLOCK; b++) {
    const base = b * Q8_0_BLOCK_BYTES;
    const d = f16ToF32(view.getUint16(base, true));
    for (let i = 0; i < Q8_0_BLOCK; i++) out[b * Q8_0_BLOCK + i] = d * view.getInt8(base + 2 + i);
  }
  return out;
}

/** Round half to even, as the SIMD paths of ggml (and WebAssembly's f32.nearest) do. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Encodes f32 values into the bytes of `dtype`. */
export function encode(dtype: DType, values: ArrayLike<number>): Uint8Array {
  switch (dtype) {
    case "f32":
      return new Uint8Array(Float32Array.from(values).buffer);
    case "f16":
      return new Uint8Array(Uint16Array.from(values, f32ToF16).buffer);
    case "bf16":
      return new Uint8Array(Uint16Array.from(values, f32ToBf16).buffer);
    case "q8_0":
      return quantizeQ8_0(values);
    default:
      return quantize(dtype, values);
  }
}

/** Decodes `n` elements of `dtype` from bytes into f32. */
export function decode(dtype: DType, bytes: Uint8Array, n: number): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case "f32":
      return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
    case "f16":
      return Float32Array.from(new Uint16Array(aligned.buffer, aligned.byteOffset, n), f16ToF32);
    case "bf16":
      return Float32Array.from(new Uint16Array(aligned.buffer, aligned.byteOffset, n), bf16ToF32);
    case "q8_0":
      return dequantizeQ8_0(bytes, n);
    default:
      return dequantize(dtype, bytes, n);
  }
}
