/**
 * The quantized-weight kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K and the q8_1 / q8_K activation
 * quantizers): WASM against the reference twin (bit for bit), against src/memory/quants.ts dequantize()
 * (getRow, bit for bit), against float64 restatements of ggml's formulas written here, and the portable
 * build against the relaxed build (bit for bit).
 *
 * Dot-product tolerance: the kernels sum exact integers per block and then round a few f32 operations
 * per block and one f32 addition per block, so |err| ≤ (blocks + 6)·2⁻²⁴·M, where M adds up every
 * term's magnitude before cancellation: M = Σ_e (|d·c_e| + |offset_e|)·|x_e| (+ Σ_blocks |m·s| for
 * Q4_1 / Q5_1), offset_e the value's min (m, or −dmin·m_j) and d·c_e = w_e − offset_e. The tests use
 * the looser 1e-6·√n·M, as test/kernels.test.ts does with M = Σ|w·x|.
 */
import { describe, expect, test } from "vitest";
import { createReferenceKernels } from "../src/kernels/reference.js";
import { KERNEL_NAMES, loadWasmKernelsSync, relaxedSimdSupported } from "../src/kernels/wasm.js";
import type { Kernels } from "../src/kernels/kernels.js";
import { Arena, type Ptr } from "../src/memory/arena.js";
import { f16ToF32, f32ToF16 } from "../src/memory/dtype.js";
import { QUANT_BLOCKS, type QuantType, dequantize, quantize, scaleMinK4 } from "../src/memory/quants.js";
import {
  expectBitExact,
  expectWithin,
  firstByteDifference,
  gaussian,
  makeRandom,
  weights,
} from "./helpers/kernels-helpers.js";

const arena = new Arena(48 << 20, "the quantized kernel tests");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const W = arena.alloc(8 << 20);
const X = arena.alloc(2 << 20);
const XQ = arena.alloc(1 << 20);
const XQ2 = arena.alloc(1 << 20);
const OUT_WASM = arena.alloc(1 << 20);
const OUT_REF = arena.alloc(1 << 20);
const SCRATCH = arena.alloc(1 << 20);

const put = (ptr: Ptr, bytes: Uint8Array) => arena.u8.set(bytes, ptr);
const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
const getBytes = (ptr: Ptr, n: number) => arena.u8.slice(ptr, ptr + n);
const f = Math.fround;

type Act = "q8_0" | "q8_1" | "q8_K";
type Name = "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q4_K" | "Q5_K" | "Q6_K";
interface Spec {
  type: QuantType;
  name: Name;
  act: Act;
}
const SPECS: Spec[] = [
  { type: "q4_0", name: "Q4_0", act: "q8_0" },
  { type: "q4_1", name: "Q4_1", act: "q8_1" },
  { type: "q5_0", name: "Q5_0", act: "q8_0" },
  { type: "q5_1", name: "Q5_1", act: "q8_1" },
  { type: "q4_k", name: "Q4_K", act: "q8_K" },
  { type: "q5_k", name: "Q5_K", act: "q8_K" },
  { type: "q6_k", name: "Q6_K", act: "q8_K" },
];
const ACT_BLOCKS: Record<Act, { values: number; bytes: number }> = {
  q8_0: { values: 32, bytes: 34 },
  q8_1: { values: 32, bytes: 36 },
  q8_K: { values: 256, bytes: 292 },
};
const per = (spec: Spec) => QUANT_BLOCKS[spec.type].values;
const rowBytes = (spec: Spec, n: number) => (n / per(spec)) * QUANT_BLOCKS[spec.type].bytes;
const actRowBytes = (spec: Spec, n: number) => (n / ACT_BLOCKS[spec.act].values) * ACT_BLOCKS[spec.act].bytes;
/** Row lengths per type: one block, a few, many. */
const sizes = (spec: Spec) => (per(spec) === 32 ? [32, 96, 1024] : [256, 768, 2048]);
const D_SIZES = [1, 3, 4, 5, 17, 64];
const TOKENS = [1, 2, 3, 5, 8, 13];

const matvec = (k: Kernels, spec: Spec) => k[`matvec${spec.name}`].bind(k);
const matmul = (k: Kernels, spec: Spec) => k[`matmul${spec.name}`].bind(k);
const getRow = (k: Kernels, spec: Spec) => k[`getRow${spec.name}`].bind(k);
function quantizeActs(k: Kernels, act: Act, out: Ptr, x: Ptr, n: number): void {
  if (act === "q8_0") k.quantizeQ8_0(out, x, n);
  else if (act === "q8_1") k.quantizeQ8_1(out, x, n);
  else k.quantizeQ8_K(out, x, n);
}

// ---- float64 restatements (dev/notes/ggml-quant-formats.md §2.6, §3.6, §6) ----

/** Round half to even, saturated to int8, NaN → 0 (as the quantizers store codes). */
function toInt8(v: number): number {
  if (Number.isNaN(v)) return 0;
  const r = Math.floor(v);
  const rounded = v - r > 0.5 || (v - r === 0.5 && r % 2 !== 0) ? r + 1 : r;
  return Math.max(-128, Math.min(127, rounded));
}

/** q8_1 of x as ggml's x86 quantize_row_q8_1: d = max|x|/127, x·(127/max|x|) rounded half-even, s = d·Σq. */
function expectedQ8_1(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 36);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    const block = x.subarray(32 * b, 32 * b + 32);
    const amax = Math.max(...Array.from(block, Math.abs));
    const d = f(amax / 127);
    const id = amax === 0 ? 0 : f(127 / amax);
    let sum = 0;
    for (let e = 0; e < 32; e++) {
      const q = toInt8(f(block[e] * id));
      view.setInt8(36 * b + 4 + e, q);
      sum += q;
    }
    view.setUint16(36 * b, f32ToF16(d), true);
    view.setUint16(36 * b + 2, f32ToF16(f(sum * d)), true);
  }
  return out;
}

/** q8_K of x as ggml's quantize_row_q8_K (first largest magnitude, NaN never chosen; zero block when max is 0). */
function expectedQ8_K(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 256) * 292);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / 256; b++) {
    const block = x.subarray(256 * b, 256 * b + 256);
    let amax = 0;
    let max = 0;
    block.forEach((v) => {
      if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
    });
    if (amax === 0) continue;
    const iscale = f(-127 / max);
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let e = 16 * g; e < 16 * g + 16; e++) {
        const q = Math.min(127, toInt8(f(iscale * block[e])));
        view.setInt8(292 * b + 4 + e, q);
        sum += q;
      }
      view.setInt16(292 * b + 260 + 2 * g, sum, true);
    }
    view.setFloat32(292 * b, f(1 / iscale), true);
  }
  return out;
}

/** The activation values (d·q) of quantized blocks, and each q8_1 block's s. */
function actValues(act: Act, bytes: Uint8Array, n: number): { x: Float64Array; s: Float64Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { values, bytes: size } = ACT_BLOCKS[act];
  const x = new Float64Array(n);
  const s = new Float64Array(n / values);
  for (let b = 0; b < n / values; b++) {
    const at = b * size;
    const d = act === "q8_K" ? view.getFloat32(at, true) : f16ToF32(view.getUint16(at, true));
    if (act === "q8_1") s[b] = f16ToF32(view.getUint16(at + 2, true));
    const qs = at + (act === "q8_0" ? 2 : 4);
    for (let e = 0; e < values; e++) x[b * values + e] = d * view.getInt8(qs + e);
  }
  return { x, s };
}

/** Per value of a weight row: the offset ggml adds to d·c (m for Q4_1 / Q5_1, −dmin·m_j for Q4_K / Q5_K, else 0). */
function offsets(type: QuantType, bytes: Uint8Array, n: number): Float64Array {
  const out = new Float64Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { values, bytes: size } = QUANT_BLOCKS[type];
  for (let b = 0; b < n / values; b++) {
    if (type === "q4_1" || type === "q5_1") out.fill(f16ToF32(view.getUint16(b * size + 2, true)), 32 * b, 32 * b + 32);
    if (type === "q4_k" || type === "q5_k") {
      const dmin = f16ToF32(view.getUint16(b * size + 2, true));
      const scales = bytes.subarray(b * size + 4, b * size + 16);
      for (let j = 0; j < 8; j++)
        out.fill(-f(dmin * scaleMinK4(scales, j)[1]), 256 * b + 32 * j, 256 * b + 32 * j + 32);
    }
  }
  return out;
}

/**
 * Float64 X (t, n) · W (d, n)^T from the dequantized weights (dequantize()) and activations, with ggml's
 * use of s for Q4_1 / Q5_1 (the min times s instead of the min times Σ x), and the magnitudes M.
 */
function naiveProduct(spec: Spec, wBytes: Uint8Array, xBytes: Uint8Array, n: number, d: number, t: number) {
  const value = new Float64Array(t * d);
  const magnitude = new Float64Array(t * d);
  const acts = Array.from({ length: t }, (_, i) =>
    actValues(spec.act, xBytes.subarray(i * actRowBytes(spec, n), (i + 1) * actRowBytes(spec, n)), n),
  );
  const withS = spec.type === "q4_1" || spec.type === "q5_1";
  for (let r = 0; r < d; r++) {
    const row = wBytes.subarray(r * rowBytes(spec, n), (r + 1) * rowBytes(spec, n));
    const w = dequantize(spec.type, row, n);
    const off = offsets(spec.type, row, n);
    for (let i = 0; i < t; i++) {
      const { x, s } = acts[i];
      let sum = 0;
      let mag = 0;
      for (let e = 0; e < n; e++) {
        sum += w[e] * x[e];
        mag += (Math.abs(w[e] - off[e]) + Math.abs(off[e])) * Math.abs(x[e]);
      }
      if (withS) {
        for (let b = 0; b < n / 32; b++) {
          let blockSum = 0;
          for (let e = 32 * b; e < 32 * b + 32; e++) blockSum += x[e];
          sum += off[32 * b] * (s[b] - blockSum);
          mag += Math.abs(off[32 * b] * s[b]);
        }
      }
      value[i * d + r] = sum;
      magnitude[i * d + r] = mag;
    }
  }
  return { value, magnitude };
}

// ---- data ----

/** Weight-like values for d rows of n, with every third row's first block tiny (f16-subnormal scales). */
function weightValues(random: () => number, spec: Spec, n: number, d: number): Float32Array {
  const values = weights(random, n * d);
  for (let r = 0; r < d; r += 3) for (let e = 0; e < per(spec); e++) values[r * n + e] *= 1e-4;
  return values;
}

/** Activations for t rows of n, every second row's first block tiny (a subnormal or zero f16 d). */
function activationValues(random: () => number, n: number, t: number): Float32Array {
  const x = gaussian(random, n * t);
  for (let i = 0; i < t; i += 2) for (let e = 0; e < 32; e++) x[i * n + e] *= 1e-6;
  return x;
}

/** W (d, n) of the spec's type and X (t, n) quantized (by the WASM quantizer) to XQ; returns the bytes. */
function setup(spec: Spec, n: number, d: number, t: number, seed: number) {
  const random = makeRandom(seed);
  const wBytes = quantize(spec.type, weightValues(random, spec, n, d));
  put(W, wBytes);
  putF32(X, activationValues(random, n, t));
  quantizeActs(wasm, spec.act, XQ, X, n * t);
  return { wBytes, xBytes: getBytes(XQ, t * actRowBytes(spec, n)) };
}

/**
 * Hand-made blocks: every byte random, with the f16 fields set to finite values from a list of
 * extremes (largest, smallest normal, subnormal, zero, negative) or random finite ones; some blocks
 * all-max codes and scales, some all zero.
 */
function extremeBlocks(spec: Spec, blocks: number, seed: number): Uint8Array {
  const random = makeRandom(seed);
  const { bytes } = QUANT_BLOCKS[spec.type];
  const out = new Uint8Array(blocks * bytes);
  const view = new DataView(out.buffer);
  const halves = [0x7bff, 0xfbff, 0x0400, 0x0001, 0x03ff, 0x8001, 0x0000, 0x8000, 0x3c00, 0x2e66];
  const finiteHalf = () => {
    if (random() < 0.5) return halves[Math.floor(random() * halves.length)];
    return (Math.floor(random() * 0x7c00) | (random() < 0.5 ? 0x8000 : 0)) & 0xffff;
  };
  const halfFields = spec.type === "q6_k" ? [208] : spec.type === "q4_0" || spec.type === "q5_0" ? [0] : [0, 2];
  for (let b = 0; b < blocks; b++) {
    const at = b * bytes;
    const kind = b % 4;
    for (let i = 0; i < bytes; i++) out[at + i] = kind === 0 ? 0xff : kind === 1 ? 0 : Math.floor(random() * 256);
    if (kind === 0 && spec.type === "q6_k") for (let j = 0; j < 16; j++) out[at + 192 + j] = j % 2 ? 0x80 : 0x7f;
    for (const field of halfFields) view.setUint16(at + field, kind === 1 ? 0 : finiteHalf(), true);
  }
  return out;
}

/** Hand-made activation blocks with extreme codes (all −128, all 127, alternating) and consistent q8_K bsums. */
function extremeActs(act: Act, blocks: number, seed: number): Uint8Array {
  const random = makeRandom(seed);
  const { values, bytes } = ACT_BLOCKS[act];
  const out = new Uint8Array(blocks * bytes);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const at = b * bytes;
    const qs = at + (act === "q8_0" ? 2 : 4);
    for (let e = 0; e < values; e++) {
      const kind = b % 3;
      view.setInt8(qs + e, kind === 0 ? -128 : kind === 1 ? 127 : e % 2 ? -128 : Math.floor(random() * 256) - 128);
    }
    if (act === "q8_K") {
      view.setFloat32(at, (random() - 0.5) * 1e-2, true);
      for (let g = 0; g < 16; g++) {
        let sum = 0;
        for (let e = 16 * g; e < 16 * g + 16; e++) sum += view.getInt8(qs + e);
        view.setInt16(at + 260 + 2 * g, sum, true);
      }
    } else {
      view.setUint16(at, f32ToF16((random() + 0.01) * 1e-2), true);
      if (act === "q8_1") view.setUint16(at + 2, f32ToF16((random() - 0.5) * 100), true);
    }
  }
  return out;
}

// ---- tests ----

test("every quantized kernel is exported by the module and by the reference twin", () => {
  for (const spec of SPECS) {
    for (const op of ["matvec", "matmul", "getRow"]) {
      const name = `${op}${spec.name}`;
      expect(KERNEL_NAMES as readonly string[]).toContain(name);
      expect(typeof (wasm as unknown as Record<string, unknown>)[name], name).toBe("function");
      expect(typeof (ref as unknown as Record<string, unknown>)[name], name).toBe("function");
    }
  }
  for (const name of ["quantizeQ8_1", "quantizeQ8_K"] as const) {
    expect(typeof wasm[name]).toBe("function");
    expect(typeof ref[name]).toBe("function");
  }
});

describe("getRow", () => {
  for (const spec of SPECS) {
    test(`getRow${spec.name} wasm == reference == quants.ts dequantize(), bit for bit (quantized data)`, () => {
      for (const n of sizes(spec)) {
        const rows = 5;
        const table = quantize(spec.type, weightValues(makeRandom(n), spec, n, rows));
        put(W, table);
        for (const row of [0, 3, 4]) {
          const expected = dequantize(spec.type, table.subarray(row * rowBytes(spec, n)), n);
          getRow(wasm, spec)(OUT_WASM, W, row, n);
          getRow(ref, spec)(OUT_REF, W, row, n);
          expectBitExact(getF32(OUT_WASM, n), expected, `${spec.name} n=${n} row=${row} wasm`);
          expectBitExact(getF32(OUT_REF, n), expected, `${spec.name} n=${n} row=${row} reference`);
        }
      }
    });

    test(`getRow${spec.name} wasm == reference == dequantize(), bit for bit (hand-made extremes: max / zero / subnormal / negative scales, all-max codes, random bytes)`, () => {
      const n = per(spec) * 16;
      const rows = 3;
      const table = extremeBlocks(spec, (n / per(spec)) * rows, 7 + n);
      put(W, table);
      for (let row = 0; row < rows; row++) {
        const expected = dequantize(spec.type, table.subarray(row * rowBytes(spec, n)), n);
        getRow(wasm, spec)(OUT_WASM, W, row, n);
        getRow(ref, spec)(OUT_REF, W, row, n);
        expectBitExact(getF32(OUT_WASM, n), expected, `${spec.name} row=${row} wasm`);
        expectBitExact(getF32(OUT_REF, n), expected, `${spec.name} row=${row} reference`);
      }
    });
  }
});

describe("activation quantizers", () => {
  /** Random blocks plus special ones: zero, a single value, huge, tiny, exact ties, ±a ties, −max. */
  function specialValues(n: number, seed: number, block: number): Float32Array {
    const random = makeRandom(seed);
    const x = gaussian(random, n, 3);
    const blocks = n / block;
    const fillBlock = (b: number, fn: (e: number) => number) => {
      if (b < blocks) for (let e = 0; e < block; e++) x[b * block + e] = fn(e);
    };
    fillBlock(0, () => 0);
    fillBlock(1, (e) => (e === 5 ? -3 : 0));
    fillBlock(2, (e) => (e % 2 ? 1e7 : -2e6) * (e - 10)); // d beyond the f16 range (inf)
    fillBlock(3, (e) => 1e-9 * (e - 7)); // d an f16 subnormal (or 0)
    fillBlock(4, (e) => (e === 0 ? -127 : (e % 9) - 4 + 0.5)); // x·127/max = k + 0.5 exactly
    fillBlock(5, (e) => (e === 3 ? 5 : e === 7 ? -5 : e * 0.01)); // +a then -a: the first is max
    fillBlock(6, (e) => (e === 3 ? -5 : e === 7 ? 5 : e * 0.01));
    fillBlock(7, (e) => 1e-30 * (e + 1));
    return x;
  }

  test("quantizeQ8_1 wasm == reference == float64 restatement (d, s, codes), bit for bit", () => {
    for (const n of [32, 96, 512, 4096]) {
      const values = specialValues(n, n, 32);
      putF32(X, values);
      const expected = expectedQ8_1(values);
      wasm.quantizeQ8_1(OUT_WASM, X, n);
      ref.quantizeQ8_1(OUT_REF, X, n);
      const got = getBytes(OUT_WASM, expected.length);
      expect(firstByteDifference(got, expected), `wasm n=${n}`).toBe(-1);
      expect(firstByteDifference(getBytes(OUT_REF, expected.length), expected), `reference n=${n}`).toBe(-1);
      // d and the codes are quantizeQ8_0's.
      wasm.quantizeQ8_0(SCRATCH, X, n);
      for (let b = 0; b < n / 32; b++) {
        expect(getBytes(SCRATCH + 34 * b, 2), `d of block ${b}`).toEqual(got.slice(36 * b, 36 * b + 2));
        expect(getBytes(SCRATCH + 34 * b + 2, 32), `codes of block ${b}`).toEqual(got.slice(36 * b + 4, 36 * b + 36));
      }
    }
  });

  test("quantizeQ8_K wasm == reference == float64 restatement (d, codes, bsums), bit for bit, NaN and ±inf included", () => {
    for (const n of [256, 512, 2048, 4096]) {
      const values = specialValues(n, n + 1, 256);
      if (n >= 2048) {
        values[256 * 7 + 9] = NaN; // ignored by the max, code 0
        values[256 * 6 + 1] = Infinity; // d = -inf, codes 0
        values[256 * 5 + 255] = -0;
      }
      putF32(X, values);
      const expected = expectedQ8_K(values);
      wasm.quantizeQ8_K(OUT_WASM, X, n);
      ref.quantizeQ8_K(OUT_REF, X, n);
      expect(firstByteDifference(getBytes(OUT_WASM, expected.length), expected), `wasm n=${n}`).toBe(-1);
      expect(firstByteDifference(getBytes(OUT_REF, expected.length), expected), `reference n=${n}`).toBe(-1);
    }
    // The first of +5 / -5 decides the sign: -127 for it, +127 for the other.
    const view = new DataView(expectedQ8_K(specialValues(2048, 3, 256)).buffer);
    expect([view.getInt8(292 * 5 + 4 + 3), view.getInt8(292 * 5 + 4 + 7)]).toEqual([-127, 127]);
    expect([view.getInt8(292 * 6 + 4 + 3), view.getInt8(292 * 6 + 4 + 7)]).toEqual([-127, 127]);
  });
});

describe("matvec and matmul", () => {
  // The matvecs load lines of the next rows ahead of the arithmetic; none may read past the matrix. With W's last
  // byte at the memory's last byte, a read past it traps (RuntimeError), so equal bits show it stays inside.
  test("every format's matvec and matmul with W ending at the memory's last byte == W elsewhere (bit-exact)", () => {
    for (const spec of SPECS) {
      const n = per(spec) === 32 ? 96 : 512;
      for (const [d, t] of [
        [9, 1],
        [17, 1],
        [2, 1],
        [17, 2],
        [12, 8],
      ]) {
        const { wBytes } = setup(spec, n, d, t, n + d * 10 + t);
        const end = arena.size - wBytes.length;
        expect(end).toBeGreaterThanOrEqual(W + wBytes.length); // overlaps nothing the test allocated
        put(end, wBytes);
        if (t === 1) {
          matvec(wasm, spec)(OUT_WASM, XQ, W, n, d);
          matvec(wasm, spec)(OUT_REF, XQ, end, n, d);
        } else {
          matmul(wasm, spec)(OUT_WASM, XQ, W, n, d, t, d);
          matmul(wasm, spec)(OUT_REF, XQ, end, n, d, t, d);
        }
        expectBitExact(getF32(OUT_REF, t * d), getF32(OUT_WASM, t * d), `${spec.name} n=${n} d=${d} t=${t}`);
      }
    }
  });

  for (const spec of SPECS) {
    test(`matvec${spec.name} wasm == reference bit for bit, both ≈ float64 naive (|err| ≤ 1e-6·√n·Σ(|d·c|+|offset|)·|x|)`, () => {
      for (const n of sizes(spec)) {
        for (const d of D_SIZES) {
          const { wBytes, xBytes } = setup(spec, n, d, 1, n * 100 + d);
          matvec(wasm, spec)(OUT_WASM, XQ, W, n, d);
          matvec(ref, spec)(OUT_REF, XQ, W, n, d);
          const what = `${spec.name} n=${n} d=${d}`;
          expectBitExact(getF32(OUT_WASM, d), getF32(OUT_REF, d), what);
          const naive = naiveProduct(spec, wBytes, xBytes, n, d, 1);
          const bound = naive.magnitude.map((m) => 1e-6 * Math.sqrt(n) * m);
          expectWithin(getF32(OUT_WASM, d), naive.value, bound, `${what} vs naive`);
        }
      }
    });

    test(`matmul${spec.name} wasm == reference bit for bit, ≈ float64 naive (|err| ≤ 1e-6·√n·Σ(|d·c|+|offset|)·|x|)`, () => {
      const n = per(spec) === 32 ? 96 : 512;
      for (const t of TOKENS) {
        for (const d of D_SIZES) {
          const { wBytes, xBytes } = setup(spec, n, d, t, t * 1000 + d);
          matmul(wasm, spec)(OUT_WASM, XQ, W, n, d, t, d);
          matmul(ref, spec)(OUT_REF, XQ, W, n, d, t, d);
          const what = `${spec.name} n=${n} d=${d} t=${t}`;
          expectBitExact(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), what);
          const naive = naiveProduct(spec, wBytes, xBytes, n, d, t);
          const bound = naive.magnitude.map((m) => 1e-6 * Math.sqrt(n) * m);
          expectWithin(getF32(OUT_WASM, t * d), naive.value, bound, `${what} vs naive`);
        }
      }
    });

    test(`matvec${spec.name} / matmul${spec.name}: a row's result is the same alone, in a group of 4 rows, and in any row of a matmul (bit-exact; ldo > d leaves the gaps alone)`, () => {
      const n = per(spec) * 3;
      for (const t of TOKENS) {
        for (const d of [5, 17]) {
          setup(spec, n, d, t, 77 * t + d);
          const ldo = d + 3;
          arena.f32.fill(-7, OUT_WASM / 4, OUT_WASM / 4 + t * ldo);
          matmul(wasm, spec)(OUT_WASM, XQ, W, n, d, t, ldo);
          const mm = getF32(OUT_WASM, t * ldo);
          for (let i = 0; i < t; i++) {
            for (let g = d; g < ldo; g++) expect(mm[i * ldo + g], `gap ${i},${g}`).toBe(-7);
            // Token i alone, all rows at once ...
            matvec(wasm, spec)(SCRATCH, XQ + i * actRowBytes(spec, n), W, n, d);
            expectBitExact(mm.slice(i * ldo, i * ldo + d), getF32(SCRATCH, d), `${spec.name} t=${t} d=${d} token ${i}`);
            // ... and each row alone (a leftover row, not in a group of 4).
            for (let r = 0; r < d; r++) {
              matvec(wasm, spec)(SCRATCH, XQ + i * actRowBytes(spec, n), W + r * rowBytes(spec, n), n, 1);
              expectBitExact(
                getF32(SCRATCH, 1),
                mm.slice(i * ldo + r, i * ldo + r + 1),
                `${spec.name} row ${r} token ${i}`,
              );
            }
          }
        }
      }
    });

    test(`matvec${spec.name} / matmul${spec.name} wasm == reference bit for bit on extreme integers (all-max codes and scales, int8 −128 / 127 activations: no i16 / i32 overflow; full-mantissa scales)`, () => {
      const n = per(spec) * 4,
        d = 9,
        t = 3;
      const wBytes = extremeBlocks(spec, (n / per(spec)) * d, 5);
      // Scales with full 11-bit mantissas (so every f32 rounding, and the order of the operations,
      // shows in the result) and moderate exponents (so the results stay finite).
      const random = makeRandom(6);
      const view = new DataView(wBytes.buffer);
      const fields = spec.type === "q6_k" ? [208] : spec.type === "q4_0" || spec.type === "q5_0" ? [0] : [0, 2];
      const half = () =>
        (random() < 0.5 ? 0x8000 : 0) | ((5 + Math.floor(random() * 12)) << 10) | Math.floor(random() * 1024);
      for (let b = 0; b < wBytes.length / QUANT_BLOCKS[spec.type].bytes; b++)
        for (const field of fields) view.setUint16(b * QUANT_BLOCKS[spec.type].bytes + field, half(), true);
      put(W, wBytes);
      put(XQ, extremeActs(spec.act, (n / ACT_BLOCKS[spec.act].values) * t, 9));
      matmul(wasm, spec)(OUT_WASM, XQ, W, n, d, t, d);
      matmul(ref, spec)(OUT_REF, XQ, W, n, d, t, d);
      expectBitExact(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), `${spec.name} matmul`);
      matvec(wasm, spec)(OUT_WASM, XQ, W, n, d);
      matvec(ref, spec)(OUT_REF, XQ, W, n, d);
      expectBitExact(getF32(OUT_WASM, d), getF32(OUT_REF, d), `${spec.name} matvec`);
      expect(getF32(OUT_WASM, d).every(Number.isFinite)).toBe(true);
    });
  }
});

describe.runIf(relaxedSimdSupported())("portable and relaxed builds", () => {
  // Loaded on first use: where relaxed SIMD is unsupported these tests are skipped, not loaded.
  let builds: { portable: Kernels; relaxed: Kernels } | undefined;
  const both = () =>
    (builds ??= {
      portable: loadWasmKernelsSync(arena.memory, "portable"),
      relaxed: loadWasmKernelsSync(arena.memory, "relaxed"),
    });

  test("quantizeQ8_1 and quantizeQ8_K: portable == relaxed, byte for byte", () => {
    const { portable, relaxed } = both();
    const n = 4096;
    putF32(X, gaussian(makeRandom(11), n, 2));
    for (const [name, bytes] of [
      ["quantizeQ8_1", (n / 32) * 36],
      ["quantizeQ8_K", (n / 256) * 292],
    ] as const) {
      portable[name](OUT_WASM, X, n);
      relaxed[name](OUT_REF, X, n);
      expect(firstByteDifference(getBytes(OUT_WASM, bytes), getBytes(OUT_REF, bytes)), name).toBe(-1);
    }
  });

  for (const spec of SPECS) {
    test(`matvec${spec.name}, matmul${spec.name}, getRow${spec.name}: portable == relaxed, bit for bit`, () => {
      const { portable, relaxed } = both();
      for (const n of sizes(spec)) {
        const d = 17,
          t = 5;
        setup(spec, n, d, t, n + 3);
        matvec(portable, spec)(OUT_WASM, XQ, W, n, d);
        matvec(relaxed, spec)(OUT_REF, XQ, W, n, d);
        expectBitExact(getF32(OUT_WASM, d), getF32(OUT_REF, d), `matvec n=${n}`);
        matmul(portable, spec)(OUT_WASM, XQ, W, n, d, t, d);
        matmul(relaxed, spec)(OUT_REF, XQ, W, n, d, t, d);
        expectBitExact(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), `matmul n=${n}`);
        getRow(portable, spec)(OUT_WASM, W, 2, n);
        getRow(relaxed, spec)(OUT_REF, W, 2, n);
        expectBitExact(getF32(OUT_WASM, n), getF32(OUT_REF, n), `getRow n=${n}`);
      }
      // Extreme integers too (the relaxed dot's operands at their limits).
      const n = per(spec) * 4;
      put(W, extremeBlocks(spec, (n / per(spec)) * 6, 13));
      put(XQ2, extremeActs(spec.act, (n / ACT_BLOCKS[spec.act].values) * 2, 17));
      matmul(portable, spec)(OUT_WASM, XQ2, W, n, 6, 2, 6);
      matmul(relaxed, spec)(OUT_REF, XQ2, W, n, 6, 2, 6);
      expectBitExact(getF32(OUT_WASM, 12), getF32(OUT_REF, 12), "extremes");
    });
  }
});
