/**
 * KV storage: one slot per producer layer (CLA: consumers read their producer's slot), in f32, bf16 or
 * ggml's q8_0 / q4_0 blocks, plus what the session's attention method asks for.
 *
 * Layout of one slot (C = capacity in rows, R = bytes of one row of Hd elements in the KV dtype: 4·Hd,
 * 2·Hd, or Hd/32 blocks of 34 (q8_0) or 18 (q4_0) bytes, each an f16 scale and 32 codes):
 *   K     (G, C, Hd)  R/row  keys after RoPE, one row of Hd per cached position
 *   V     (G, C, Hd)  R/row  values
 *   Kt    (G, Hd, C)  b      SparQ's d-major copy of K: component i of every row contiguous (optional)
 *   Ktd   (G, Hd, C/32) f16  the scales of a quantised Kt (see "Quantised caches")
 *   vMean (G, Hd)     f32  SparQ's running mean of every V row stored so far (optional)
 *   acc   (G, C)      f32  H2O's accumulated attention probability of each row (optional)
 *   pos   (G, C)      i32  the position each row holds, −1 if free (evicting methods only)
 *
 * Rows and positions. Without eviction row p holds position p. An evicting method (H2O, streaming) keeps a
 * budget of rows: after it drops a row, that head's next key goes into the freed row, so a head's rows are
 * in no particular order (attention does not care: keys carry their position through RoPE) and different
 * KV heads may hold different positions. `rows` counts the rows in use (all heads alike, since every head
 * appends and evicts one row per step); `length` counts positions seen.
 *
 * An evicting cache changes size: dense prefill needs the whole prompt, then the method compacts it to its
 * budget and resize() moves it into a smaller block of the pool, returning the rest.
 *
 * Quantised caches. A q8_0 or q4_0 row is quantised once when stored (as llama.cpp quantises its cache) and
 * every method attends over the quantised rows. With `rotation` the rows are rotated first (rotation.ts). SparQ's d-major copy is quantised per channel instead, in
 * groups of 32 positions with one f16 scale each (as KIVI quantises keys: a few channels of K carry most of
 * its magnitude, so a per-row scale would spend the codes on them, while one channel across positions
 * varies little); SparQ's step 3 then reads r code rows and one scale per 32 positions. A group is quantised from
 * the stored K rows (dequantised) when its 32nd row is stored, so it is a function of the rows: the
 * positions of the unfinished last group are scored from the K rows themselves, and a rewind or a resize
 * leaves nothing to repair. Kt holds C rounded up to a multiple of 32 positions; Kt values take 1 byte (q8_0)
 * or half a byte (q4_0, two positions per byte as in a q4_0 block).
 *
 * KV traffic. The cache is the one place decode-step bytes are counted: store() counts what it writes, and
 * the accessors attention methods take their kernel arguments from at a decode step (attendRows,
 * keyColumns, gatherRows, meanValue, accumulatedScores) count the bytes of the rows and columns they hand
 * out — what the kernels are given, the current token's row included. Beside that, the cache counts what
 * dense attention over every position seen would have moved, for the ratio. A step's counts are kept when a
 * one-token step ends (advance(1)) and dropped after a prefill. Not counted: cache-line granularity (a
 * strided column read moves whole lines), queries, outputs and scratch, and an eviction policy's scan of
 * the positions or scores it keeps beside the rows.
 */
import { OutOfMemoryError, UsageError } from "../errors.js";
import type { Kernels } from "../kernels/kernels.js";
import type { Arena, Ptr } from "../memory/arena.js";
import { bf16ToF32 } from "../memory/dtype.js";
import { f16ToF32, f32ToF16 } from "../memory/half.js";
import { nearestInt, quantize } from "../memory/quants.js";
import { rotate, rotationBlocks } from "./rotation.js";
import type { Pool } from "../memory/pool.js";

export type KvDType = "f32" | "bf16" | "q8_0" | "q4_0";
export const KV_DTYPES: readonly KvDType[] = ["f32", "bf16", "q8_0", "q4_0"];

/** The block-quantised KV dtypes (32 elements per block). */
export type QuantKvDType = "q8_0" | "q4_0";
export const isQuantizedKv = (dtype: KvDType): dtype is QuantKvDType => dtype === "q8_0" || dtype === "q4_0";

/** Elements per block of a quantised row. */
export const KV_BLOCK = 32;
const KV_BLOCK_BYTES: Record<QuantKvDType, number> = { q8_0: 34, q4_0: 18 };

/** Bytes per element: 4, 2, or a quantised block's bytes over its 32 elements (scales included). */
export const kvBytesPer = (dtype: KvDType): number =>
  dtype === "f32" ? 4 : dtype === "bf16" ? 2 : KV_BLOCK_BYTES[dtype] / KV_BLOCK;

/** Bytes of one K or V row of Hd elements. */
export function kvRowBytes(dtype: KvDType, Hd: number): number {
  return isQuantizedKv(dtype) ? (Hd / KV_BLOCK) * KV_BLOCK_BYTES[dtype] : Hd * kvBytesPer(dtype);
}

/** Why a KV dtype cannot hold rows of head dim Hd, or null if it can. */
export function kvDtypeProblem(dtype: KvDType, Hd: number): string | null {
  return isQuantizedKv(dtype) && Hd % KV_BLOCK !== 0
    ? `a ${dtype} KV cache needs a head dimension that is a multiple of ${KV_BLOCK}, but this model's is ${Hd}`
    : null;
}

/** What a cache needs to know of a model: slots (producer layers), G KV heads, Hd head dim. */
export interface KvShape {
  nSlots: number;
  nKvHeads: number;
  headDim: number;
}

/** What is stored beside K and V, as the attention method declares it. */
export interface KvLayout {
  dtype: KvDType;
  /** SparQ: a d-major copy of K. */
  kTransposed: boolean;
  /** SparQ: the running mean of V. */
  vMean: boolean;
  /** H2O: accumulated attention per row. */
  accumulated: boolean;
  /** Evicting methods: the position each row holds. */
  positions: boolean;
  /**
   * K and V are stored rotated (rotation.ts) and the attention methods rotate queries and outputs to match;
   * only for a quantised cache whose head dim is a multiple of 64. Default false.
   */
  rotation?: boolean;
}

/** Bytes moved by decode steps, as the cache counted them; dense* is what dense attention would move. */
export interface Traffic {
  steps: number;
  /** KV bytes read (K and V rows, K columns, the mean value, accumulated scores). */
  read: number;
  /** KV bytes written (new rows, the d-major column, the mean value, accumulated scores). */
  written: number;
  denseRead: number;
  denseWritten: number;
}

export const newTraffic = (): Traffic => ({ steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 });

export const DENSE_LAYOUT: KvLayout = {
  dtype: "f32",
  kTransposed: false,
  vMean: false,
  accumulated: false,
  positions: false,
};

export interface KvSlot {
  k: Ptr; // (G, C, Hd)
  v: Ptr; // (G, C, Hd)
  kT: Ptr; // (G, Hd, C), 0 if absent (quantised: (G, Hd, C32) codes)
  kTd: Ptr; // (G, Hd, C32 / 32) f16 scales of a quantised kT, 0 if absent
  vMean: Ptr; // (G, Hd) f32, 0 if absent
  acc: Ptr; // (G, C) f32, 0 if absent
  pos: Ptr; // (G, C) i32, 0 if absent
}

/** Positions a quantised Kt row holds for a capacity of C rows: C rounded up to whole groups. */
const groupedCapacity = (C: number): number => Math.ceil(C / KV_BLOCK) * KV_BLOCK;

/** Bytes of each part of one slot of C rows. */
function slotParts(shape: KvShape, layout: KvLayout, C: number) {
  const { nKvHeads: G, headDim: Hd } = shape;
  const row = kvRowBytes(layout.dtype, Hd);
  const quantized = isQuantizedKv(layout.dtype);
  const C32 = groupedCapacity(C);
  return {
    k: G * C * row,
    v: G * C * row,
    kT: !layout.kTransposed ? 0 : quantized ? G * Hd * C32 * (layout.dtype === "q8_0" ? 1 : 0.5) : G * C * row,
    kTd: layout.kTransposed && quantized ? G * Hd * (C32 / KV_BLOCK) * 2 : 0,
    vMean: layout.vMean ? G * Hd * 4 : 0,
    acc: layout.accumulated ? G * C * 4 : 0,
    pos: layout.positions ? G * C * 4 : 0,
  };
}

export class KvCache {
  slots: KvSlot[] = [];
  /** C: rows each head of each slot can hold. */
  capacity = 0;
  /** Rows in use (equal for every slot and head). */
  rows = 0;
  /** Positions seen: the position of the next token. */
  length = 0;
  readonly G: number;
  readonly Hd: number;
  /** Bytes of one K or V row (scales included when quantised). */
  readonly rowBytes: number;
  /** The dtype of a quantised cache, or null. */
  readonly quantized: QuantKvDType | null;
  /** The rotation's block sizes for K (and queries) and V when the layout rotates, else null. */
  readonly rotation: { k: number; v: number } | null;
  /** Decode steps' bytes so far (see "KV traffic" above). */
  readonly traffic: Traffic = newTraffic();
  /** The current step's counts, until advance() keeps or drops them. */
  private step: Traffic = newTraffic();
  private block: Ptr = 0;
  /** (nSlots × G) the row the next key of each head goes to, for evicting caches after their first eviction. */
  private readonly nextRow: Int32Array;
  /** One decoded V row, for the running mean. */
  private readonly meanScratch: Float32Array;
  /** A group's 32 decoded K rows and one channel of them, for a quantised Kt (views made once). */
  private readonly groupRows: Float32Array[];
  private readonly groupChannel = new Float32Array(KV_BLOCK);
  private readonly groupBlock = new Uint8Array(34);

  constructor(
    private readonly arena: Arena,
    private readonly pool: Pool,
    private readonly kernels: Kernels,
    readonly shape: KvShape,
    readonly layout: KvLayout,
    capacity: number,
  ) {
    this.G = shape.nKvHeads;
    this.Hd = shape.headDim;
    this.rowBytes = kvRowBytes(layout.dtype, shape.headDim);
    this.quantized = isQuantizedKv(layout.dtype) ? layout.dtype : null;
    const problem = kvDtypeProblem(layout.dtype, shape.headDim);
    if (problem !== null) throw new UsageError(problem);
    this.rotation = layout.rotation === true ? rotationBlocks(shape.headDim) : null;
    if (layout.rotation === true && (this.rotation === null || this.quantized === null))
      throw new UsageError(
        `the Hadamard rotation is for a q8_0 or q4_0 cache with a head dimension that is a multiple of 64; this one is ${layout.dtype} with head dimension ${shape.headDim}`,
      );
    this.nextRow = new Int32Array(shape.nSlots * shape.nKvHeads).fill(-1);
    this.meanScratch = new Float32Array(shape.headDim);
    const rows = new Float32Array(KV_BLOCK * shape.headDim);
    this.groupRows = Array.from({ length: KV_BLOCK }, (_, e) =>
      rows.subarray(e * shape.headDim, (e + 1) * shape.headDim),
    );
    this.resize(capacity);
  }

  /** Bytes a cache of `capacity` rows allocates. */
  static bytesFor(shape: KvShape, layout: KvLayout, capacity: number): number {
    const parts = slotParts(shape, layout, capacity);
    return shape.nSlots * Object.values(parts).reduce((a, b) => a + b, 0);
  }

  get allocatedBytes(): number {
    return KvCache.bytesFor(this.shape, this.layout, this.capacity);
  }

  /** Bytes holding real rows (what "KV bytes stored" reports); K, V and Kt scale with rows. */
  get usedBytes(): number {
    const { nSlots } = this.shape;
    const { layout, G, Hd } = this;
    // Per row and head: K and V, a column of Kt (with a quantised Kt's scale, one per 32 rows), a score, a position.
    const column = !layout.kTransposed
      ? 0
      : this.quantized === null
        ? this.rowBytes
        : Hd * (this.kTCodeBytes + 2 / KV_BLOCK);
    const perRow = G * (2 * this.rowBytes + column + (layout.accumulated ? 4 : 0) + (layout.positions ? 4 : 0));
    return nSlots * this.heldRows * perRow + (layout.vMean ? nSlots * G * Hd * 4 : 0);
  }

  /** Keys of KV head g in `slot`: (C, Hd) rows. */
  keys(slot: number, g: number): Ptr {
    return this.slots[slot].k + g * this.capacity * this.rowBytes;
  }

  values(slot: number, g: number): Ptr {
    return this.slots[slot].v + g * this.capacity * this.rowBytes;
  }

  /**
   * The d-major keys of head g: (Hd, C), row stride C elements; quantised, (Hd, kTStride) codes, a row
   * kTStride·b bytes (b = 1 for q8_0, ½ for q4_0).
   */
  keysT(slot: number, g: number): Ptr {
    return (
      this.slots[slot].kT +
      (this.quantized ? g * this.Hd * this.kTStride * this.kTCodeBytes : g * this.capacity * this.rowBytes)
    );
  }

  /** The f16 scales of head g's quantised d-major keys: (Hd, kTStride / 32). */
  keysTScales(slot: number, g: number): Ptr {
    return this.slots[slot].kTd + g * this.Hd * (this.kTStride / KV_BLOCK) * 2;
  }

  /** Positions a quantised Kt row holds (the capacity rounded up to whole groups of 32). */
  get kTStride(): number {
    return groupedCapacity(this.capacity);
  }

  /** Bytes of one quantised Kt code: 1 (q8_0) or ½ (q4_0). */
  private get kTCodeBytes(): number {
    return this.quantized === "q8_0" ? 1 : 0.5;
  }

  /**
   * Positions of a step attending S rows whose keys a quantised Kt holds: the whole groups (32 each)
   * below S. The rest are scored from the K rows.
   */
  groupedPositions(S: number): number {
    return Math.floor(S / KV_BLOCK) * KV_BLOCK;
  }

  /** The running mean of V of head g: (Hd) f32. */
  valueMean(slot: number, g: number): Ptr {
    return this.slots[slot].vMean + g * this.Hd * 4;
  }

  /** Accumulated attention of head g's rows: (C) f32. */
  accumulated(slot: number, g: number): Ptr {
    return this.slots[slot].acc + g * this.capacity * 4;
  }

  /** Positions of head g's rows: (C) i32, −1 for a free row. */
  positions(slot: number, g: number): Ptr {
    return this.slots[slot].pos + g * this.capacity * 4;
  }

  /**
   * K and V of head g's first n rows, for a kernel that reads all of them: counts 2·n·Hd elements read,
   * and what dense attention would read for this head at this step.
   */
  attendRows(slot: number, g: number, n: number): { k: Ptr; v: Ptr } {
    this.step.read += 2 * n * this.rowBytes;
    this.countDenseRead();
    return { k: this.keys(slot, g), v: this.values(slot, g) };
  }

  /**
   * The keys of head g for a kernel that reads r components of each of n rows (SparQ's approximate scores):
   * the d-major copy when the layout has one, else the rows (read with a stride). Counts r·n elements read,
   * and what dense attention would read for this head at this step. Quantised: r codes per position and
   * one scale per 32 positions of each of the r channels from Kt, and for each position read from the rows
   * (the unfinished group, or all without Kt) r codes and the scales of the blocks they can fall in
   * (min(r, Hd/32)).
   */
  keyColumns(slot: number, g: number, r: number, n: number): Ptr {
    if (this.quantized === null) this.step.read += r * n * kvBytesPer(this.layout.dtype);
    else {
      const grouped = this.layout.kTransposed ? this.groupedPositions(n) : 0;
      const fromRows = n - grouped;
      this.step.read +=
        r * grouped * this.kTCodeBytes +
        r * (grouped / KV_BLOCK) * 2 +
        fromRows * (r * this.kTCodeBytes + 2 * Math.min(r, this.Hd / KV_BLOCK));
    }
    this.countDenseRead();
    return this.layout.kTransposed ? this.keysT(slot, g) : this.keys(slot, g);
  }

  /** K and V of head g for a kernel that reads n of its rows by index: counts 2·n rows read. */
  gatherRows(slot: number, g: number, n: number): { k: Ptr; v: Ptr } {
    this.step.read += 2 * n * this.rowBytes;
    return { k: this.keys(slot, g), v: this.values(slot, g) };
  }

  /** The running mean of V of head g, for a kernel that mixes it in: counts Hd f32 read. */
  meanValue(slot: number, g: number): Ptr {
    this.step.read += 4 * this.Hd;
    return this.valueMean(slot, g);
  }

  /** Head g's accumulated scores, for a kernel that adds n rows' probabilities to them: counts n f32 read and written. */
  accumulatedScores(slot: number, g: number, n: number): Ptr {
    this.step.read += 4 * n;
    this.step.written += 4 * n;
    return this.accumulated(slot, g);
  }

  /** Dense attention reads K and V of every position seen, the current one included, for one head. */
  private countDenseRead(): void {
    this.step.denseRead += 2 * (this.length + 1) * this.rowBytes;
  }

  /**
   * Writes k, v (G, Hd) f32 of the token at position `length + t` (t-th of this step) into each head's
   * next row: row `rows + t`, or the row the method freed last step. Counts the bytes it writes (and reads,
   * for the running mean), and dense attention's K and V rows.
   */
  store(slot: number, t: number, k: Ptr, v: Ptr): void {
    const { kernels: kern, Hd, G, rowBytes } = this;
    const s = this.slots[slot];
    const { layout, step } = this;
    if (this.rotation !== null) {
      // In place: the caller's k and v are not read again.
      rotate(this.arena.f32, k >> 2, G, Hd, this.rotation.k);
      rotate(this.arena.f32, v >> 2, G, Hd, this.rotation.v);
    }
    for (let g = 0; g < G; g++) {
      const row = this.rowFor(slot, g, t);
      const at = (g * this.capacity + row) * rowBytes;
      const kg = k + 4 * g * Hd;
      const vg = v + 4 * g * Hd;
      switch (layout.dtype) {
        case "f32":
          this.arena.u8.copyWithin(s.k + at, kg, kg + 4 * Hd);
          this.arena.u8.copyWithin(s.v + at, vg, vg + 4 * Hd);
          if (layout.kTransposed) kern.storeColumnF32(this.keysT(slot, g) + row * 4, kg, Hd, this.capacity);
          break;
        case "bf16":
          kern.packBf16(s.k + at, kg, Hd);
          kern.packBf16(s.v + at, vg, Hd);
          if (layout.kTransposed) kern.storeColumnBf16(this.keysT(slot, g) + row * 2, kg, Hd, this.capacity);
          break;
        case "q8_0":
          kern.quantizeQ8_0(s.k + at, kg, Hd);
          kern.quantizeQ8_0(s.v + at, vg, Hd);
          break;
        case "q4_0":
          kern.quantizeQ4_0(s.k + at, kg, Hd);
          kern.quantizeQ4_0(s.v + at, vg, Hd);
          break;
      }
      // A quantised Kt takes a group of 32 positions when its last row is stored (rows are in position
      // order: quantised Kt is SparQ's, which never evicts).
      if (layout.kTransposed && this.quantized !== null && (row + 1) % KV_BLOCK === 0) {
        this.quantizeKeyGroup(slot, g, row + 1 - KV_BLOCK);
        step.read += KV_BLOCK * rowBytes;
        step.written += Hd * (KV_BLOCK * this.kTCodeBytes + 2);
      }
      if (layout.vMean) this.updateMean(slot, g, s.v + at, this.length + t + 1);
      if (layout.positions) this.arena.i32[(this.positions(slot, g) >> 2) + row] = this.length + t;
      if (layout.accumulated) this.arena.f32[(this.accumulated(slot, g) >> 2) + row] = 0;
    }
    // K and V rows, the d-major column (unquantised), the mean (read and written, f32), a position and a score.
    const column = layout.kTransposed && this.quantized === null ? rowBytes : 0;
    step.written +=
      G *
      (2 * rowBytes + column + (layout.vMean ? 4 * Hd : 0) + (layout.positions ? 4 : 0) + (layout.accumulated ? 4 : 0));
    step.read += layout.vMean ? G * 4 * Hd : 0;
    step.denseWritten += G * 2 * rowBytes;
  }

  /** Dequantises (or decodes) the K or V row at `at` into out (Hd). */
  readRow(at: Ptr, out: Float32Array): void {
    const { u8, u16, f32 } = this.arena;
    const Hd = this.Hd;
    switch (this.layout.dtype) {
      case "f32":
        out.set(f32.subarray(at >> 2, (at >> 2) + Hd));
        return;
      case "bf16":
        for (let j = 0; j < Hd; j++) out[j] = bf16ToF32(u16[(at >> 1) + j]);
        return;
      case "q8_0":
        for (let b = 0; b < Hd / KV_BLOCK; b++) {
          const block = at + b * 34;
          const d = f16ToF32(u8[block] | (u8[block + 1] << 8));
          for (let e = 0; e < KV_BLOCK; e++) out[b * KV_BLOCK + e] = d * ((u8[block + 2 + e] << 24) >> 24);
        }
        return;
      case "q4_0":
        for (let b = 0; b < Hd / KV_BLOCK; b++) {
          const block = at + b * 18;
          const d = f16ToF32(u8[block] | (u8[block + 1] << 8));
          for (let e = 0; e < 16; e++) {
            const byte = u8[block + 2 + e];
            out[b * KV_BLOCK + e] = d * ((byte & 15) - 8);
            out[b * KV_BLOCK + e + 16] = d * ((byte >> 4) - 8);
          }
        }
        return;
    }
  }

  /**
   * Quantises positions first … first + 31 of head g's keys into Kt, channel by channel: each channel's 32
   * values (the stored K rows, dequantised) become one block of the cache's format, its scale in Ktd and its
   * codes at the channel's row of Kt (q4_0: 16 bytes, position e in the low nibble of byte e, e + 16 in the
   * high one, as in a q4_0 block).
   */
  private quantizeKeyGroup(slot: number, g: number, first: number): void {
    const { Hd, arena, groupRows: rows, groupChannel: channel } = this;
    const keys = this.keys(slot, g);
    for (let e = 0; e < KV_BLOCK; e++) this.readRow(keys + (first + e) * this.rowBytes, rows[e]);
    const codes = this.keysT(slot, g);
    const scales = this.keysTScales(slot, g);
    const stride = this.kTStride;
    for (let i = 0; i < Hd; i++) {
      for (let e = 0; e < KV_BLOCK; e++) channel[e] = rows[e][i];
      const block = this.quantized === "q8_0" ? quantizeBlockQ8_0(channel, this.groupBlock) : quantize("q4_0", channel);
      const scale = scales + 2 * (i * (stride / KV_BLOCK) + first / KV_BLOCK);
      arena.u8[scale] = block[0];
      arena.u8[scale + 1] = block[1];
      const at = codes + (i * stride + first) * this.kTCodeBytes;
      arena.u8.set(block.subarray(2), at);
    }
  }

  /** Quantises every whole group of the held rows into Kt again (after a move). */
  private requantizeKeyGroups(): void {
    if (!this.layout.kTransposed || this.quantized === null) return;
    for (let slot = 0; slot < this.slots.length; slot++) {
      for (let g = 0; g < this.G; g++) {
        for (let first = 0; first + KV_BLOCK <= this.rows; first += KV_BLOCK) this.quantizeKeyGroup(slot, g, first);
      }
    }
  }

  /** The row token t of this step goes to in head g. */
  rowFor(slot: number, g: number, t: number): number {
    const free = this.nextRow[slot * this.G + g];
    if (free >= 0) return free; // only ever with t = 0: evicting caches decode one token per step
    return this.rows + t;
  }

  /** Marks `row` of head g free (evicted): the head's next key goes there. */
  evict(slot: number, g: number, row: number): void {
    this.nextRow[slot * this.G + g] = row;
    if (this.layout.positions) this.arena.i32[(this.positions(slot, g) >> 2) + row] = -1;
  }

  /**
   * Ends a step of T tokens: length advances; rows grow unless the step's keys refilled freed rows. A
   * one-token step's traffic is kept; a prefill's is not (prefill is dense for every method).
   */
  advance(T: number): void {
    this.length += T;
    if (this.nextRow[0] >= 0) this.nextRow.fill(-1);
    else this.rows += T;
    if (T === 1) {
      const { traffic: t, step: s } = this;
      t.steps++;
      t.read += s.read;
      t.written += s.written;
      t.denseRead += s.denseRead;
      t.denseWritten += s.denseWritten;
    }
    this.step = newTraffic();
  }

  /**
   * Forgets the last n tokens: rows and positions n fewer, the running mean of V rolled back arithmetically
   * (v̄ₘ = ((m + 1)·v̄ₘ₊₁ − vₘ₊₁) / m: the mean of the rows left to within f32 rounding, not bit for bit).
   * Counted traffic stays. Evicting caches cannot rewind: what they evicted is gone.
   */
  rewind(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.rows)
      throw new RangeError(`kv cache: cannot rewind ${n} of ${this.rows} rows`);
    if (this.layout.positions) throw new RangeError("kv cache: an evicting cache cannot rewind");
    const f32 = this.arena.f32;
    const value = new Float32Array(this.Hd);
    for (; n > 0; n--) {
      const m = this.rows - 1; // rows left once row m goes
      for (let slot = 0; this.layout.vMean && slot < this.slots.length; slot++) {
        for (let g = 0; g < this.G; g++) {
          const mean = this.valueMean(slot, g) >> 2;
          this.readRow(this.values(slot, g) + m * this.rowBytes, value);
          for (let j = 0; j < this.Hd; j++) {
            f32[mean + j] = m === 0 ? 0 : Math.fround(((m + 1) * f32[mean + j] - value[j]) / m);
          }
        }
      }
      this.rows--;
      this.length--;
    }
    this.step = newTraffic();
  }

  /** Rows attention spans for the step's t-th token once it is stored. */
  span(t: number): number {
    return this.nextRow[0] >= 0 ? this.rows : this.rows + t + 1;
  }

  /** Rows holding a position (rows minus the freed row of each head awaiting the next key). */
  get heldRows(): number {
    return this.nextRow[0] >= 0 ? this.rows - 1 : this.rows;
  }

  /** The rows of head g holding a position, ascending. */
  heldRowsOf(slot: number, g: number): Int32Array {
    const free = this.nextRow[slot * this.G + g];
    const out = new Int32Array(this.heldRows);
    let n = 0;
    for (let r = 0; r < this.rows; r++) if (r !== free) out[n++] = r;
    return out;
  }

  /**
   * Moves the cache into a block of `capacity` rows, keeping for each head the rows `keep(slot, g)` lists
   * (every held row when omitted), compacted to the front in the given order. Frees the old block.
   * Every head must keep the same number of rows.
   */
  resize(capacity: number, keep?: (slot: number, g: number) => Int32Array): void {
    const oldSlots = this.slots;
    const oldBlock = this.block;
    const oldCapacity = this.capacity;
    // Which rows survive, asked while the old block is still the cache's.
    const kept = oldSlots.map((_, slot) =>
      Array.from({ length: this.G }, (_, g) => (keep ? keep(slot, g) : this.heldRowsOf(slot, g))),
    );
    const bytes = KvCache.bytesFor(this.shape, this.layout, capacity);
    const what = `a ${this.layout.dtype} KV cache of ${capacity} rows`;
    // Copy from the old block in place when the pool holds both; else stage the old block outside the
    // arena for the move (a cache that shrinks after a long prompt may not fit twice).
    let source = this.arena.u8;
    let sourceBase = 0;
    let oldGiven = false;
    let block: Ptr;
    try {
      block = this.pool.take(bytes, what);
    } catch (e) {
      if (oldBlock === 0 || !(e instanceof OutOfMemoryError)) throw e;
      const oldBytes = KvCache.bytesFor(this.shape, this.layout, oldCapacity);
      source = this.arena.u8.slice(oldBlock, oldBlock + oldBytes);
      sourceBase = oldBlock;
      this.pool.give(oldBlock);
      oldGiven = true;
      try {
        block = this.pool.take(bytes, what);
      } catch (e2) {
        // Does not fit even without the old block: put the cache back as it was (the old block's room is
        // free again, so this take succeeds) and report the first failure.
        this.place(this.pool.take(oldBytes, what), oldCapacity);
        this.arena.u8.set(source, this.block);
        throw e2;
      }
    }
    this.place(block, capacity);
    let rows = 0;
    if (oldBlock !== 0) {
      rows = this.copyFrom(source, sourceBase, oldSlots, oldCapacity, capacity, kept);
      if (!oldGiven) this.pool.give(oldBlock);
    }
    this.rows = rows;
    this.nextRow.fill(-1);
    this.requantizeKeyGroups();
  }

  /** Makes `block` (taken from the pool) the cache's memory, laid out for `capacity` rows. */
  private place(block: Ptr, capacity: number): void {
    const parts = slotParts(this.shape, this.layout, capacity);
    const slotBytes = Object.values(parts).reduce((a, b) => a + b, 0);
    this.block = block;
    this.capacity = capacity;
    this.slots = [];
    for (let i = 0; i < this.shape.nSlots; i++) {
      let at = block + i * slotBytes;
      const next = (bytes: number) => {
        const p = bytes > 0 ? at : 0;
        at += bytes;
        return p;
      };
      this.slots.push({
        k: next(parts.k),
        v: next(parts.v),
        kT: next(parts.kT),
        kTd: next(parts.kTd),
        vMean: next(parts.vMean),
        acc: next(parts.acc),
        pos: next(parts.pos),
      });
    }
  }

  /** Forgets every row (the memory stays). */
  clear(): void {
    this.rows = 0;
    this.length = 0;
    this.nextRow.fill(-1);
    this.step = newTraffic();
  }

  free(): void {
    if (this.block !== 0) this.pool.give(this.block);
    this.block = 0;
    this.slots = [];
  }

  /**
   * Copies the kept rows of the old slots (byte offsets into `src` shifted by srcBase) into the new slots,
   * compacted to the front. Returns the rows kept per head.
   */
  private copyFrom(
    src: Uint8Array,
    srcBase: number,
    oldSlots: KvSlot[],
    oldC: number,
    newC: number,
    keptRows: Int32Array[][],
  ): number {
    const { G, Hd, rowBytes } = this;
    const b = kvBytesPer(this.layout.dtype);
    const u8 = this.arena.u8;
    const copy = (to: Ptr, from: Ptr, n: number) => u8.set(src.subarray(from - srcBase, from - srcBase + n), to);
    let kept = 0;
    for (let slot = 0; slot < oldSlots.length; slot++) {
      const from = oldSlots[slot];
      const to = this.slots[slot];
      if (this.layout.vMean) copy(to.vMean, from.vMean, G * Hd * 4);
      for (let g = 0; g < G; g++) {
        const rows = keptRows[slot][g];
        if (rows.length > newC) throw new Error(`kv cache: keeping ${rows.length} rows in a cache of ${newC}`);
        kept = rows.length;
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i];
          const at = (g * oldC + r) * rowBytes;
          const dst = (g * newC + i) * rowBytes;
          copy(to.k + dst, from.k + at, rowBytes);
          copy(to.v + dst, from.v + at, rowBytes);
          if (this.layout.kTransposed && this.quantized === null) {
            // (A quantised Kt is quantised again from the rows once they are moved.)
            for (let j = 0; j < Hd; j++)
              copy(to.kT + ((g * Hd + j) * newC + i) * b, from.kT + ((g * Hd + j) * oldC + r) * b, b);
          }
          if (this.layout.accumulated) copy(to.acc + 4 * (g * newC + i), from.acc + 4 * (g * oldC + r), 4);
          if (this.layout.positions) copy(to.pos + 4 * (g * newC + i), from.pos + 4 * (g * oldC + r), 4);
        }
      }
    }
    return kept;
  }

  /**
   * v̄ ← v̄ + (v − v̄) / n in f32 (the paper's ((n−1)·v̄ + v) / n, rearranged), n = values stored so far with
   * this one, v the row as stored (bf16-rounded in a bf16 cache), so v̄ is the mean of V as attention sees it.
   */
  private updateMean(slot: number, g: number, vRow: Ptr, n: number): void {
    const f32 = this.arena.f32;
    const mean = this.valueMean(slot, g) >> 2;
    const inv = Math.fround(1 / n);
    // n = 1 assigns (the pool's memory may hold anything, NaN included, from an earlier session).
    if (n === 1) f32.fill(0, mean, mean + this.Hd);
    const value = this.meanScratch;
    this.readRow(vRow, value);
    for (let j = 0; j < this.Hd; j++) {
      f32[mean + j] = Math.fround(f32[mean + j] + Math.fround(Math.fround(value[j] - f32[mean + j]) * inv));
    }
  }
}

/**
 * One q8_0 block of 32 values, as the kernels' quantizeQ8_0 makes it: d = max|x| / 127 (f16), codes
 * nearest-even(x · 127 / max|x|).
 */
function quantizeBlockQ8_0(x: Float32Array, out: Uint8Array): Uint8Array {
  let amax = 0;
  for (let e = 0; e < KV_BLOCK; e++) amax = Math.max(amax, Math.abs(x[e]));
  const d = f32ToF16(Math.fround(amax / 127));
  out[0] = d & 255;
  out[1] = d >> 8;
  const id = amax !== 0 ? Math.fround(127 / amax) : 0;
  for (let e = 0; e < KV_BLOCK; e++) out[2 + e] = nearestInt(Math.fround(x[e] * id)) & 255;
  return out;
}
