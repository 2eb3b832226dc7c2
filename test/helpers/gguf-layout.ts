/**
 * Where every field of a valid GGUF file lies, found by a plain walk over its bytes (independent of
 * src/io/gguf.ts), so tests can truncate at each structural boundary or overwrite one field at a time.
 */

export type FieldKind =
  | "magic"
  | "version"
  | "count" // tensor count, metadata count
  | "length" // a string's byte length or an array's item count
  | "key" // a metadata key's bytes
  | "value-type"
  | "item-type"
  | "value" // a metadata value's bytes (a number, a bool, a string's bytes)
  | "tensor-name"
  | "n-dims"
  | "dim"
  | "tensor-type"
  | "offset"
  | "padding"
  | "data";

export interface Field {
  at: number;
  size: number;
  kind: FieldKind;
  /** What the field belongs to: a key ("llama.block_count"), a tensor name, or "" for the header. */
  owner: string;
}

const FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

export function ggufLayout(bytes: Uint8Array): Field[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: Field[] = [];
  let pos = 0;
  const take = (size: number, kind: FieldKind, owner: string) => {
    fields.push({ at: pos, size, kind, owner });
    pos += size;
  };
  const u32 = () => view.getUint32(pos, true);
  const u64 = () => Number(view.getBigUint64(pos, true));
  const text = (at: number, n: number) => new TextDecoder().decode(bytes.subarray(at, at + n));
  const string = (kind: FieldKind, owner: string): string => {
    const n = u64();
    take(8, "length", owner);
    const s = text(pos, n);
    take(n, kind, owner === "" ? s : owner);
    return s;
  };
  const value = (type: number, owner: string) => {
    if (type === 8) string("value", owner);
    else take(FIXED[type], "value", owner);
  };

  take(4, "magic", "");
  take(4, "version", "");
  const nTensors = u64();
  take(8, "count", "");
  const nKv = u64();
  take(8, "count", "");
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = string("key", "");
    const type = u32();
    take(4, "value-type", key);
    if (type === 9) {
      const itemType = u32();
      take(4, "item-type", key);
      const n = u64();
      take(8, "length", key);
      for (let j = 0; j < n; j++) value(itemType, key);
    } else {
      if (key === "general.alignment") alignment = view.getUint32(pos, true);
      value(type, key);
    }
  }
  const tensors: { name: string; offset: number; bytes: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = string("tensor-name", "");
    const nDims = u32();
    take(4, "n-dims", name);
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      elements *= u64();
      take(8, "dim", name);
    }
    const type = u32();
    take(4, "tensor-type", name);
    const offset = u64();
    take(8, "offset", name);
    // f32, f16, bf16 and q8_0 only: what kvslim writes.
    const size =
      type === 0 ? elements * 4 : type === 1 || type === 30 ? elements * 2 : type === 8 ? (elements / 32) * 34 : NaN;
    tensors.push({ name, offset, bytes: size });
  }
  const dataStart = Math.ceil(pos / alignment) * alignment;
  if (dataStart > pos) take(dataStart - pos, "padding", "");
  for (const t of tensors) {
    pos = dataStart + t.offset;
    take(t.bytes, "data", t.name);
  }
  return fields;
}

export function readU64(bytes: Uint8Array, at: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at, true);
}

/** A copy of `bytes` with the `size`-byte little-endian unsigned field at `at` set to `v`. */
export function withField(bytes: Uint8Array, at: number, size: number, v: bigint): Uint8Array {
  const out = bytes.slice();
  for (let i = 0; i < size; i++) out[at + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}
