/**
 * What the GGUF and safetensors readers hand to the model loader: where each tensor's bytes are,
 * and one function that copies them from the file into memory kvslim owns.
 *
 * Readers never read tensor data; they only validate that it lies inside the file. The loader
 * calls readTensorBytes once per tensor, straight into the WebAssembly memory view.
 */
import * as fs from "node:fs";
import { FormatError, formatBytes } from "../errors.js";
import type { DType } from "../memory/dtype.js";

export interface TensorInfo {
  name: string;
  /** ggml / safetensors element type, lower case: "f32", "f16", "bf16", "q8_0", "q4_k", "i64", ... */
  type: string;
  /** The kvslim DType if kvslim computes with this type, else null (the loader rejects it, naming the tensor). */
  dtype: DType | null;
  /** Outermost first (numpy / safetensors order). A GGUF tensor with ne = [n, d] has shape [d, n]. */
  shape: number[];
  /** Absolute path of the file holding the data. */
  file: string;
  /** Absolute byte offset of the data in that file. */
  offset: number;
  byteLength: number;
}

/** fs.readSync is limited to 2 GiB per call; smaller chunks also keep one call from stalling the process long. */
export const READ_CHUNK_BYTES = 64 * 1024 * 1024;

/** Copies the bytes of `info` from its file into `dest` (dest.length must equal info.byteLength). */
export function readTensorBytes(info: TensorInfo, dest: Uint8Array): void {
  if (dest.length !== info.byteLength) {
    throw new Error(`readTensorBytes: tensor ${info.name} is ${info.byteLength} bytes, dest is ${dest.length}`);
  }
  const fd = fs.openSync(info.file, "r");
  try {
    let done = 0;
    while (done < info.byteLength) {
      const length = Math.min(READ_CHUNK_BYTES, info.byteLength - done);
      const got = fs.readSync(fd, dest, done, length, info.offset + done);
      if (got === 0) {
        const size = fs.fstatSync(fd).size;
        throw new FormatError(
          `tensor ${info.name} needs bytes [${info.offset}, ${info.offset + info.byteLength}) of ${info.file}, ` +
            `but the file ends at byte ${size} (${formatBytes(size)}); it was truncated or changed after it was opened`,
        );
      }
      done += got;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Product of the dimensions; the caller has checked each is a safe non-negative integer. */
export function numElements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** `shape` printed the way error messages show it: [4096, 32000]. */
export function formatShape(shape: readonly (number | bigint)[]): string {
  return `[${shape.join(", ")}]`;
}
