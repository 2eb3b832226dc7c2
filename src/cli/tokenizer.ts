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
import { FileExistsError, formatBytes, UsageError } from "../errors.js";
import { checkOutputDir, MAX_VOCAB_SIZE, MIN_VOCAB_SIZE, saveTokenizer, trainBpe } from "../tokenizer/train-bpe.js";
import { RETRIEVAL_SHARE, trainingStream } from "../train/data/retrieval.js";
import { corpusSize, wordnetTrain } from "../train/data/wordnet.js";
import { intOption, pathOption, seedOption } from "./options.js";

interface TrainFlags {
  corpus: string;
  vocab: number;
  out: string;
  seed: number;
  force?: boolean;
}

export function registerTokenizer(program: Command): void {
  const tokenizer = program.command("tokenizer").description("tokenizers for kvslim's own models");
  tokenizer
    .command("train")
    .description("learn a byte-level BPE tokenizer and write tokenizer.json + tokenizer_config.json")
    .option(
      "--corpus <name|file>",
      `"wordnet" (WordNet train half + retrieval documents) or a .txt file`,
      pathOption("--corpus"),
      "wordnet",
    )
    .option(
      "--vocab <n>",
      `vocabulary size, specials and bytes included (${MIN_VOCAB_SIZE} to ${MAX_VOCAB_SIZE}; 4096 suits kvslim's models)`,
      intOption("--vocab", MIN_VOCAB_SIZE, MAX_VOCAB_SIZE),
      4096,
    )
    .requiredOption("--out <dir>", "output directory (must be new or empty unless --force)", pathOption("--out"))
    .option(...seedOption("seed of the retrieval documents mixed into --corpus wordnet"), 1)
    .option("--force", "write into a non-empty output directory, replacing its tokenizer files")
    .action((flags: TrainFlags, command: Command) => {
      // Check every flag before the (slow) corpus and training.
      const vocabSize = flags.vocab;
      checkCorpus(flags.corpus);
      // A text file is used as it is: the seed only orders the generated documents of --corpus wordnet.
      if (flags.corpus !== "wordnet" && command.getOptionValueSource("seed") === "cli") {
        throw new UsageError(
          `--seed applies only to --corpus wordnet (it places the retrieval documents), not to the file ${flags.corpus}`,
        );
      }
      try {
        checkOutputDir(flags.out, flags.force ?? false);
      } catch (e) {
        // The check is the library's, in its words: say which flag gave the directory.
        throw e instanceof FileExistsError ? new FileExistsError(`--out: ${e.message}`) : e;
      }
      const start = performance.now();
      const { name, documents } = readCorpus(flags.corpus, flags.seed);
      const size = corpusSize(documents);
      const trainStart = performance.now();
      const bpe = trainBpe(documents, { vocabSize });
      const trainSeconds = (performance.now() - trainStart) / 1000;
      saveTokenizer(bpe, flags.out, { force: flags.force });
      const totalSeconds = (performance.now() - start) / 1000;

      const out = (line: string) => process.stdout.write(`${line}\n`);
      out(
        `vocabulary: ${bpe.tokens.length} tokens (3 special + 256 bytes + ${bpe.tokens.length - MIN_VOCAB_SIZE} merged)`,
      );
      out(
        `merges learned: ${bpe.merges.length}${bpe.tokens.length < vocabSize ? ` (stopped early: no pair seen twice; asked for ${vocabSize})` : ""}`,
      );
      out(`corpus: ${name}, ${size.documents} documents, ${size.chars} characters, ${formatBytes(size.bytes)} UTF-8`);
      out(`time: ${totalSeconds.toFixed(1)} s (training ${trainSeconds.toFixed(1)} s)`);
      out(`wrote ${path.join(flags.out, "tokenizer.json")} and tokenizer_config.json`);
    });
}

/** --corpus: "wordnet" or an existing .txt file, checked before the output directory and the training. */
function checkCorpus(corpus: string): void {
  if (corpus === "wordnet") return;
  if (!corpus.endsWith(".txt"))
    throw new UsageError(`--corpus expects "wordnet" or a path to a .txt file, got "${corpus}"`);
  if (!fs.existsSync(corpus))
    throw new UsageError(`--corpus expects "wordnet" or a path to a .txt file, found no file at ${corpus}`);
  if (!fs.statSync(corpus).isFile())
    throw new UsageError(`--corpus expects "wordnet" or a path to a .txt file, found a directory at ${corpus}`);
}

function readCorpus(corpus: string, seed: number): { name: string; documents: string[] } {
  if (corpus === "wordnet") {
    const documents = [...trainingStream(wordnetTrain(), { seed })];
    return { name: `WordNet train half + ${RETRIEVAL_SHARE * 100}% retrieval documents (seed ${seed})`, documents };
  }
  return { name: corpus, documents: [fs.readFileSync(corpus, "utf8")] };
}
