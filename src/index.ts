/**
 * kvslim's public entry point: load a model, create a session, generate.
 *
 *   import { loadModel } from "kvslim";
 *   const model = await loadModel("model.gguf", { contextSize: 4096 });
 *   const session = model.createSession();
 *   for await (const chunk of session.generate("Once upon a time", { maxTokens: 64, temperature: 0.8, seed: 1 })) {
 *     process.stdout.write(chunk.text);
 *   }
 *   session.dispose();
 *   model.dispose();
 */
export { loadModel, Model, type LoadOptions, type MemoryPlan } from "./model/model.js";
export {
  Session,
  type SessionOptions,
  type GenerateOptions,
  type GenerateChunk,
  type GenerateStats,
  type KvTrafficStats,
} from "./model/session.js";
export {
  ATTENTION_METHODS,
  type AttentionSpec,
  type AttentionMethodName,
  type DenseSpec,
  type SparqSpec,
  type H2oSpec,
  type StreamingSpec,
  type Traffic,
} from "./attention/method.js";
export { KV_DTYPES, type KvDType } from "./kvcache/cache.js";
export type { SamplerOptions } from "./model/sampler.js";
export { WorkerError, shutdownKernelWorkers } from "./threads/pool.js";
export {
  type ModelConfig,
  type Architecture,
  ARCHITECTURES,
  claShare,
  kvBytesPerToken,
  attentionName,
} from "./model/config.js";
export type { TextTokenizer } from "./tokenizer/tokenizer.js";
export {
  KvslimError,
  FormatError,
  UnsupportedError,
  ModelMismatchError,
  OutOfMemoryError,
  ContextOverflowError,
  NumericError,
  UsageError,
  FileExistsError,
} from "./errors.js";
