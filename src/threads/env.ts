/** What a thread runs kernels with: its own kernels instance over the shared memory, and views of that memory. */
import type { Kernels } from "../kernels/kernels.js";

export interface KernelEnv {
  kernels: Kernels;
  f32: Float32Array;
  i32: Int32Array;
}
