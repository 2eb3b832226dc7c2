/**
 * `kvslim tokenizer train --corpus wordnet --vocab 4096 --out models/tok`: learn a byte-level BPE
 * vocabulary (src/tokenizer/train-bpe.ts) and write tokenizer.json + tokenizer_config.json.
 *
 * --corpus wordnet is the text kvslim's own models train on: the WordNet train half plus the retrieval
 * documents mixed in at RETRIEVAL_SHARE (src/train/data/). --corpus FILE.txt trains on one text file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Command } from "commander";
import { formatBytes, UsageError } from "../errors.js";
import { checkOutputDir, checkVocabSize, MIN_VOCAB_SIZE, saveTokenizer, trainBpe } from "../tokenizer/train-bpe.js";
import { RETRIEVAL_SHARE, trainingStream } from "../train/data/retrieval.js";
import { corpusSize, wordnetTrain } from "../train/data/wordnet.js";
import { intOption } from "./options.js";

interface TrainFlags {
  corpus: string;
  vocab: string;
  out: string;
  seed: number;
  force?: boolean;
}

export function registerTokenizer(program: Command): void {
  const tokenizer = program.command("tokenizer").description("tokenizers for kvslim's own models");
  tokenizer
    .command("train")
    .description("learn a byte-level BPE tokenizer and write tokenizer.json + tokenizer_config.json")
    .option("--corpus <name|file>", `"wordnet" (WordNet train half + retrieval documents) or a .txt file`, "wordnet")
    .option("--vocab <n>", `vocabulary size, specials and bytes included (≥ ${MIN_VOCAB_SIZE})`, "4096")
    .requiredOption("--out <dir>", "output directory (must be new or empty unless --force)")
    .option("--seed <n>", "seed of the retrieval documents mixed into --corpus wordnet", intOption("--seed", 0), 1)
    .option("--force", "write into a non-empty output directory, replacing its tokenizer files")
    .action((flags: TrainFlags) => {
      // Check every flag before the (slow) corpus and training.
      const vocabSize = /^\d+$/.test(flags.vocab.trim()) ? Number(flags.vocab) : NaN;
      if (Number.isNaN(vocabSize)) throw new UsageError(`--vocab expects an integer ≥ ${MIN_VOCAB_SIZE}, got "${flags.vocab}"`);
      checkVocabSize(vocabSize, "--vocab");
      checkOutputDir(flags.out, flags.force ?? false);
      const start = performance.now();
      const { name, documents } = readCorpus(flags.corpus, flags.seed);
      const size = corpusSize(documents);
      const trainStart = performance.now();
      const bpe = trainBpe(documents, { vocabSize });
      const trainSeconds = (performance.now() - trainStart) / 1000;
      saveTokenizer(bpe, flags.out, { force: flags.force });
      const totalSeconds = (performance.now() - start) / 1000;

      const out = (line: string) => process.stdout.write(`${line}\n`);
      out(`vocabulary: ${bpe.tokens.length} tokens (3 special + 256 bytes + ${bpe.tokens.length - MIN_VOCAB_SIZE} merged)`);
      out(`merges learned: ${bpe.merges.length}${bpe.tokens.length < vocabSize ? ` (stopped early: no pair seen twice; asked for ${vocabSize})` : ""}`);
      out(`corpus: ${name}, ${size.documents} documents, ${size.chars} characters, ${formatBytes(size.bytes)} UTF-8`);
      out(`time: ${totalSeconds.toFixed(1)} s (training ${trainSeconds.toFixed(1)} s)`);
      out(`wrote ${path.join(flags.out, "tokenizer.json")} and tokenizer_config.json`);
    });
}

function readCorpus(corpus: string, seed: number): { name: string; documents: string[] } {
  if (corpus === "wordnet") {
    const documents = [...trainingStream(wordnetTrain(), { seed })];
    return { name: `WordNet train half + ${RETRIEVAL_SHARE * 100}% retrieval documents (seed ${seed})`, documents };
  }
  if (!corpus.endsWith(".txt")) throw new UsageError(`--corpus expects "wordnet" or a path to a .txt file, got "${corpus}"`);
  if (!fs.existsSync(corpus)) throw new UsageError(`--corpus expects "wordnet" or a path to a .txt file, found no file at ${corpus}`);
  return { name: corpus, documents: [fs.readFileSync(corpus, "utf8")] };
}
