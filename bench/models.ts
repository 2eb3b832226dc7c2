/**
 * The benchmarks' reference model (97M, llama MHA, random weights: speed does not depend on the values),
 * written once per dtype to bench/.models/.
 */
import fs from "node:fs";
import path from "node:path";
import type { FileType } from "../src/model/file-types.js";
import { PRESETS } from "../src/model/presets.js";
import { randomWeights, syntheticVocab, writeGgufModel } from "../src/model/synthetic.js";

export function referenceModelFile(dtype: FileType): string {
  const dir = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "..", "bench", ".models");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `reference-${dtype}.gguf`);
  if (!fs.existsSync(file)) {
    const config = PRESETS.reference();
    process.stderr.write(`writing ${file} …\n`);
    writeGgufModel(file, config, randomWeights(config, { seed: 1 }), syntheticVocab(config.vocabSize, 1), dtype);
  }
  return file;
}
