/**
 * Bad flags for every option of every command, run in process: text where a number goes, empty values, negative,
 * zero, fractional and huge numbers, NaN, Infinity, hex and units, values outside the documented range, a missing
 * value, unknown options, stray arguments, missing required options and arguments, conflicting flags, flags that
 * do not apply to the chosen method, and paths that do not exist. Each must end with a non-zero exit (2 for a usage
 * error, never 70), exactly one line on stderr that names the flag and says what was expected and what was found,
 * nothing on stdout and nothing written: a new output does not appear, an existing one is left as it was.
 *
 * The options come from the commander definitions (buildProgram): a command or option added without cases here
 * fails the coverage test, and every value-taking option gets its missing-value case, every boolean one its
 * "--flag=value" case and every required one its "not given" case from there.
 */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { buildProgram } from "../src/cli/main.js";
import { MAX_SEED } from "../src/cli/options.js";
import { runCli } from "./helpers/cli.js";
import { SHAPES, tempDir, writeTestGguf, writeTestHf } from "./helpers/models.js";

const ROOT = path.resolve(import.meta.dirname, "..");
/** A tokenizer for training runs, so that no case trains one on WordNet (tens of seconds). */
const SHIPPED_TOKENIZER = path.join(ROOT, "models/kvslim-tiny");
const HEAD_DIM = SHAPES["llama-gqa"].headDim;

const fx = { dir: "", gguf: "", hf: "", corpus: "", prompt: "", run: "", empty: "" };

beforeAll(async () => {
  fx.dir = tempDir("kvslim-flags-");
  fx.gguf = writeTestGguf(fx.dir, "gqa", SHAPES["llama-gqa"]).path;
  fx.hf = writeTestHf(fx.dir, "hf", SHAPES["llama-gqa"]).path;
  fx.corpus = path.join(fx.dir, "corpus.txt");
  fs.writeFileSync(fx.corpus, "the quick brown fox jumps over the lazy dog; the lazy dog sleeps.\n".repeat(40));
  fx.prompt = path.join(fx.dir, "prompt.txt");
  fs.writeFileSync(fx.prompt, "hello world");
  fx.empty = path.join(fx.dir, "empty.txt");
  fs.writeFileSync(fx.empty, "\n# no key\n");
  // A finished two-step run, for the --resume cases (and a check that the train base is a valid command).
  fx.run = path.join(fx.dir, "run");
  const r = await runCli(...trainBase(fx.run));
  expect(r.code, r.err).toBe(0);
});

afterAll(() => {
  fs.rmSync(fx.dir, { recursive: true, force: true });
});

/**
 * What a case may write to: outputs that must not exist afterwards, and existing files and directories that must
 * be left as they were.
 */
class Outputs {
  static serial = 0;
  readonly fresh: string[] = [];
  readonly kept: { target: string; before: string }[] = [];

  /** A path that does not exist: a new entry of the temp directory, with a suffix (".gguf", "/no/such/x.gguf"). */
  new(suffix = ""): string {
    const top = this.unused();
    this.fresh.push(top, top + suffix);
    return top + suffix;
  }

  /** An existing file holding "keep me", in a directory of its own. */
  file(name = "model.gguf"): string {
    const dir = this.unused();
    fs.mkdirSync(dir);
    const file = path.join(dir, name);
    fs.writeFileSync(file, "keep me");
    this.keep(file);
    return file;
  }

  /** An existing directory holding one file. */
  dir(name = "existing"): string {
    const dir = path.join(this.unused(), name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "keep.txt"), "keep me");
    this.keep(dir);
    return dir;
  }

  private unused(): string {
    return path.join(fx.dir, `out-${Outputs.serial++}`);
  }

  keep(target: string): void {
    this.kept.push({ target, before: snapshot(target) });
  }

  check(): void {
    for (const p of this.fresh) expect(fs.existsSync(p), `${p} was written`).toBe(false);
    for (const { target, before } of this.kept) expect(snapshot(target), `${target} was changed`).toBe(before);
  }
}

/** Names, sizes and modification times of everything under target. */
function snapshot(target: string): string {
  const stat = fs.statSync(target);
  if (!stat.isDirectory()) return `${target} ${stat.size} ${stat.mtimeMs}`;
  return fs
    .readdirSync(target)
    .sort()
    .map((name) => snapshot(path.join(target, name)))
    .join("\n");
}

/** argv without a flag and its value. */
function without(argv: string[], flag: string): string[] {
  const i = argv.indexOf(flag);
  if (i < 0) throw new Error(`${flag} is not in ${argv.join(" ")}`);
  return [...argv.slice(0, i), ...argv.slice(i + 2)];
}

function trainBase(out: string): string[] {
  return [
    "train",
    "--preset",
    "micro-cla2",
    "--tokens",
    "128",
    "--out",
    out,
    "--tokenizer",
    SHIPPED_TOKENIZER,
    "--corpus-documents",
    "20",
    "--threads",
    "1",
    "--eval-every",
    "1000",
    "--checkpoint-every",
    "1000",
  ];
}

interface Case {
  /** The command line, from the command's valid base one. */
  argv: (base: string[], o: Outputs) => string[];
  /** What stderr must contain (strings) or match, besides what every case is checked for. */
  says: (string | RegExp)[];
  code?: number; // default 2, a usage error
}

interface OptionCases {
  /** Values refused with exit 2 and a message naming the flag and the value as typed. */
  values?: string[];
  /** Flags placed before the option so that it applies (the attention method it belongs to). */
  context?: string[];
  /** Other cases (conflicts, flags that do not apply, files that do not exist); their message names the flag too. */
  more?: Record<string, Case>;
  /** A numeric option, for the property over any string. */
  numeric?: boolean;
}

interface CommandCases {
  /** A valid command line; every case changes or extends it. */
  base: (o: Outputs) => string[];
  options: Record<string, OptionCases>;
}

/** --out of a command writing a .gguf file: empty, an existing file without --force, a missing directory. */
const GGUF_OUT: OptionCases = {
  values: [""],
  more: {
    "an existing file without --force": {
      argv: (b, o) => [...without(b, "--out"), "--out", o.file()],
      code: 1,
      says: ["--out", "exists; pass --force to overwrite"],
    },
    "in a directory that does not exist": {
      argv: (b, o) => [...without(b, "--out"), "--out", o.new("/no/such/x.gguf")],
      says: ["--out: cannot write", "/no/such does not exist"],
    },
  },
};

const NOT_NUMBERS = ["abc", "", "NaN", "Infinity", "1e400", "0x10", "12abc", " "];

/** Integers from min to max (max: none if undefined). */
function ints(min: number, max?: number, context?: string[]): OptionCases {
  const values = [...NOT_NUMBERS, "1.5", "-1.5", "99999999999999999999", "8k", "1_000", String(min - 1)];
  if (max !== undefined) values.push(String(max + 1));
  return { values, context, numeric: true };
}

/** Numbers: the ones that are not, and the given values out of range. */
function floats(outOfRange: string[], context?: string[]): OptionCases {
  return { values: [...NOT_NUMBERS, "-Infinity", "1.5x", "1,5", ...outOfRange], context, numeric: true };
}

const with_ = (cases: OptionCases, more: Record<string, Case>): OptionCases => ({
  ...cases,
  more: { ...cases.more, ...more },
});
const THREADS = with_(ints(1, 64), {
  "1000 threads": {
    argv: (b) => [...b, "--threads", "1000"],
    says: ["--threads expects an integer from 1 to 64", '"1000"'],
  },
});
const SEED = ints(0, MAX_SEED);
const nope = (name = "nope") => path.join(fx.dir, "missing", name);

const SPARQ = ["--attention", "sparq", "--compression", "2"];
const notFor = (method: string[], flag: string, value: string, methodName: string): Case => ({
  argv: (b) => [...b, ...method, flag, value],
  says: [`${flag} does not apply to --attention ${methodName}`],
});

const TABLE: Record<string, CommandCases> = {
  info: {
    base: () => ["info", fx.gguf],
    options: {
      "--memory": {
        values: [
          "lots",
          "-1GiB",
          "1e99GiB",
          "",
          "0",
          "0.4",
          "8GiB",
          "99999999999999999999TiB",
          "2 GiB 3",
          "NaN",
          "Infinity",
          "0x10",
          "5XB",
        ],
      },
      "--context": ints(1),
      "--json": {},
      "--threads": THREADS,
      "--kv-dtype": {
        values: ["q3", "", "F32"],
        more: {
          "q8_0 with head dim 16": {
            argv: (b) => [...b, "--kv-dtype", "q8_0"],
            says: ["a q8_0 KV cache needs a head dimension that is a multiple of 32, but this model's is 16"],
          },
        },
      },
    },
  },

  generate: {
    base: () => ["generate", "--model", fx.gguf, "--prompt", "hello", "--tokens", "2", "--threads", "1"],
    options: {
      "--model": {
        values: [""],
        more: {
          "a path that does not exist": {
            argv: (b) => [...b, "--model", nope("m.gguf")],
            says: ["--model expects a .gguf file or a model directory", /m\.gguf does not exist/],
          },
        },
      },
      "--prompt": {
        more: {
          "with --file": { argv: (b) => [...b, "--file", fx.prompt], says: ["-p/--prompt or -f/--file, not both"] },
          "neither --prompt nor --file": {
            argv: (b) => without(b, "--prompt"),
            says: ["no prompt: give one with -p/--prompt TEXT or -f/--file FILE"],
          },
        },
      },
      "--file": {
        values: [""],
        more: {
          "a file that does not exist": {
            argv: (b) => [...without(b, "--prompt"), "--file", nope("p.txt")],
            says: ["--file expects a text file holding the prompt, found no file at"],
          },
          "a directory": {
            argv: (b) => [...without(b, "--prompt"), "--file", fx.dir],
            says: ["--file expects a text file holding the prompt, found a directory at"],
          },
        },
      },
      "--tokens": ints(0),
      "--temperature": floats(["-1", "-0.001", "100.5", "1e3"]),
      "--top-k": ints(0),
      "--top-p": floats(["0", "-0.1", "1.5", "1.0000001"]),
      "--seed": SEED,
      "--context": ints(1),
      "--stop": { values: [""] },
      "--chat": {
        more: {
          "a model without a chat template": {
            argv: (b) => [...b, "--chat"],
            code: 1,
            says: ["has no chat template; run without --chat"],
          },
        },
      },
      "--system": {
        more: {
          "without --chat": {
            argv: (b) => [...b, "--system", "be brief"],
            says: ["--system applies only with --chat"],
          },
        },
      },
      "--kernels": { values: ["gpu", "", "WASM"] },
      "--threads": THREADS,
      "--attention": { values: ["nope", "", "Dense", "sparq,h2o"] },
      "--compression": with_(floats(["0.5", "0", "-1"], ["--attention", "sparq"]), {
        "with dense attention": notFor([], "--compression", "2", "dense"),
      }),
      "--sparq-r": with_(ints(1, undefined, ["--attention", "sparq", "--sparq-k", "8"]), {
        "larger than the head dimension": {
          argv: (b) => [...b, "--attention", "sparq", "--sparq-k", "8", "--sparq-r", String(HEAD_DIM + 1)],
          says: [`--sparq-r expects at most the model's head dimension (${HEAD_DIM}), got "${HEAD_DIM + 1}"`],
        },
        "with h2o": notFor(["--attention", "h2o", "--kv-budget", "8"], "--sparq-r", "4", "h2o"),
        "without --sparq-k or --compression": {
          argv: (b) => [...b, "--attention", "sparq", "--sparq-r", "4"],
          says: ["--attention sparq needs --compression C, or both --sparq-r and --sparq-k"],
        },
      }),
      "--sparq-k": with_(ints(1, undefined, ["--attention", "sparq", "--sparq-r", "4"]), {
        "with streaming": notFor(["--attention", "streaming", "--kv-budget", "32"], "--sparq-k", "8", "streaming"),
      }),
      "--sparq-local": with_(ints(0, undefined, ["--attention", "sparq", "--sparq-r", "4", "--sparq-k", "8"]), {
        "larger than --sparq-k": {
          argv: (b) => [...b, "--attention", "sparq", "--sparq-r", "4", "--sparq-k", "8", "--sparq-local", "9"],
          says: ['--sparq-local expects at most --sparq-k (8) positions, got "9"'],
        },
        "with dense attention": notFor([], "--sparq-local", "4", "dense"),
      }),
      "--sparq-reallocation": {
        values: ["maybe", "", "ON", "true"],
        context: SPARQ,
        more: { "with h2o": notFor(["--attention", "h2o", "--kv-budget", "8"], "--sparq-reallocation", "on", "h2o") },
      },
      "--sparq-layout": {
        values: ["x", "", "Double"],
        context: SPARQ,
        more: { "with dense attention": notFor([], "--sparq-layout", "single", "dense") },
      },
      "--sparq-group-ranking": {
        values: ["x", "", "Logits", "probability"],
        context: SPARQ,
        more: {
          "with streaming": notFor(["--attention", "streaming"], "--sparq-group-ranking", "logits", "streaming"),
        },
      },
      "--kv-budget": with_(ints(1, undefined, ["--attention", "h2o"]), {
        "with dense attention": notFor([], "--kv-budget", "8", "dense"),
        "with sparq": notFor(SPARQ, "--kv-budget", "8", "sparq"),
        "not above the default sinks, streaming": {
          argv: (b) => [...b, "--attention", "streaming", "--kv-budget", "16"],
          says: [
            '--kv-budget expects more rows than the default 16 sink tokens (--sinks) for --attention streaming, got "16"',
          ],
        },
        "h2o with neither a budget nor a compression": {
          argv: (b) => [...b, "--attention", "h2o"],
          says: ["h2o needs a KV budget (--kv-budget N) or a compression ratio (--compression C)"],
        },
      }),
      "--sinks": with_(ints(0, undefined, ["--attention", "streaming", "--kv-budget", "64"]), {
        "as many as the budget": {
          argv: (b) => [...b, "--attention", "streaming", "--kv-budget", "64", "--sinks", "64"],
          says: ['--kv-budget expects more rows than --sinks (64) for --attention streaming, got "64"'],
        },
        "with h2o": notFor(["--attention", "h2o", "--kv-budget", "8"], "--sinks", "4", "h2o"),
      }),
      "--h2o-recent": with_(ints(0, undefined, ["--attention", "h2o", "--kv-budget", "64"]), {
        "more than the budget": {
          argv: (b) => [...b, "--attention", "h2o", "--kv-budget", "64", "--h2o-recent", "65"],
          says: ['--h2o-recent expects at most --kv-budget (64) rows, got "65"'],
        },
        "with streaming": notFor(["--attention", "streaming", "--kv-budget", "32"], "--h2o-recent", "4", "streaming"),
      }),
      "--kv-dtype": {
        values: ["q3", "", "f16", "BF16", "Q8_0"],
        more: {
          "q4_0 with head dim 16": {
            argv: (b) => [...b, "--kv-dtype", "q4_0"],
            says: ["a q4_0 KV cache needs a head dimension that is a multiple of 32, but this model's is 16"],
          },
        },
      },
      "--kv-rotation": {
        values: ["", "on", "HADAMARD", "yes"],
        more: {
          "hadamard for an f32 cache": {
            argv: (b) => [...b, "--kv-rotation", "hadamard"],
            says: [
              "the Hadamard rotation is for a q8_0 or q4_0 cache with a head dimension that is a multiple of 64; this one is f32 with head dimension 16",
            ],
          },
        },
      },
    },
  },

  synth: {
    base: (o) => ["synth", "--out", o.new(".gguf"), "--preset", "tiny"],
    options: {
      "--out": GGUF_OUT,
      "--preset": { values: ["unknown", "", "TINY"] },
      "--dtype": {
        values: ["q3", "", "F32", "q4_k"],
        more: {
          "q8_0 for a directory": {
            argv: (b, o) => [...without(b, "--out"), "--out", o.new("-dir"), "--dtype", "q8_0"],
            says: ["--dtype q8_0 needs a .gguf --out"],
          },
        },
      },
      "--seed": SEED,
      "--force": {},
    },
  },

  export: {
    base: (o) => ["export", "--model", fx.hf, "--out", o.new(".gguf")],
    options: {
      "--model": {
        values: [""],
        more: {
          "a directory that does not exist": {
            argv: (b) => [...b, "--model", nope()],
            says: ["--model expects a Hugging Face model directory", /missing\/nope does not exist/],
          },
        },
      },
      "--out": GGUF_OUT,
      "--dtype": { values: ["q3", "", "q3_k", "F16"] },
      "--force": {},
    },
  },

  "tokenizer train": {
    base: (o) => ["tokenizer", "train", "--corpus", fx.corpus, "--vocab", "300", "--out", o.new()],
    options: {
      "--corpus": {
        values: ["", "nope", "notes.md"],
        more: {
          "a .txt file that does not exist": {
            argv: (b) => [...b, "--corpus", nope("c.txt")],
            says: ["--corpus expects", "found no file at"],
          },
          "a directory named .txt": {
            argv: (b, o) => [...b, "--corpus", o.dir("c.txt")],
            says: ["--corpus expects", "found a directory at"],
          },
        },
      },
      "--vocab": ints(259, 2 ** 20),
      "--out": {
        values: [""],
        more: {
          "a non-empty directory without --force": {
            argv: (b, o) => [...without(b, "--out"), "--out", o.dir()],
            code: 1,
            says: ["--out: expected an empty or new directory", "found 1 entries (keep.txt)", "(--force)"],
          },
        },
      },
      // --corpus wordnet, where --seed applies (every value here is refused before the corpus is read).
      "--seed": with_(ints(0, MAX_SEED, ["--corpus", "wordnet"]), {
        "with a text file corpus": {
          argv: (b) => [...b, "--seed", "2"],
          says: ["--seed applies only to --corpus wordnet"],
        },
      }),
      "--force": {},
    },
  },

  train: {
    base: (o) => trainBase(o.new()),
    options: {
      "--preset": {
        values: ["nope", "", "MICRO-CLA2"],
        more: {
          "a new run without it": {
            argv: (b) => without(b, "--preset"),
            says: ["a new run needs --preset, --tokens and --out"],
          },
        },
      },
      "--tokens": {
        values: [
          "abc",
          "",
          "0",
          "-1",
          "0.4",
          "1e400",
          "99999999999999999999",
          "NaN",
          "Infinity",
          "0x10",
          "5T",
          "1.5.5",
        ],
        more: {
          "a new run without it": {
            argv: (b) => without(b, "--tokens"),
            says: ["a new run needs --preset, --tokens and --out"],
          },
          "fewer than a resumed run's": {
            argv: () => ["train", "--resume", fx.run, "--tokens", "64", "--threads", "1"],
            says: ["--tokens 64 is less than the 128 tokens"],
          },
          "a finished run resumed without more": {
            argv: () => ["train", "--resume", fx.run, "--threads", "1"],
            says: ["is finished", "give a larger total with --tokens"],
          },
        },
      },
      "--out": {
        values: [""],
        more: {
          "a new run without it": {
            argv: (b) => without(b, "--out"),
            says: ["a new run needs --preset, --tokens and --out"],
          },
          "a non-empty directory": {
            argv: (b, o) => [...without(b, "--out"), "--out", o.dir()],
            code: 1,
            says: ["already exists and is not empty", "choose another --out"],
          },
        },
      },
      "--resume": {
        values: [""],
        more: {
          "a directory that does not exist": {
            argv: () => ["train", "--resume", nope()],
            says: ["--resume: ", "does not exist; expected a kvslim training run directory"],
          },
          "a directory that is not a run": {
            argv: (_, o) => ["train", "--resume", o.dir()],
            says: ["--resume: ", 'is not a kvslim training run (no "current" checkpoint link)'],
          },
        },
      },
      "--seed": SEED,
      "--threads": THREADS,
      "--batch": with_(ints(1), {
        "too large for memory": {
          argv: (b) => [...b, "--batch", "100000"],
          code: 1,
          says: ["--batch 100000", "use a smaller --batch or --seq-len"],
        },
      }),
      "--seq-len": with_(ints(2), {
        "too large for memory": {
          argv: (b) => [...b, "--seq-len", "10000000"],
          code: 1,
          says: ["--seq-len 10000000", "use a smaller --batch or --seq-len"],
        },
      }),
      "--lr": floats(["0", "-0.1", "1.5", "2"]),
      "--retrieval-share": floats(["-0.1", "1", "1.5"]),
      "--retrieval-chars": { values: ["", "100", "0-50", "60-50", "a-b", "1-2-3", "-5-10"] },
      "--needle-depths": { values: ["", "0.5", "0.6-0.2", "a-b", "0-1.5", "-1-1", "0-1-1"] },
      "--answer-windows": floats(["-0.1", "1.5", "2"]),
      "--repeat-mid": floats(["-0.1", "1.5", "2"]),
      "--rope-theta": floats(["0", "0.5", "-1"]),
      "--warmup": floats(["-0.1", "1", "1.5"]),
      "--eval-every": ints(1),
      "--eval-batches": ints(1),
      "--checkpoint-every": ints(1),
      "--tokenizer": {
        values: [""],
        more: {
          "a directory without tokenizer.json": {
            argv: (b) => [...without(b, "--tokenizer"), "--tokenizer", nope()],
            says: ["--tokenizer expects a directory holding tokenizer.json, found none at"],
          },
        },
      },
      "--max-time": {
        values: ["abc", "", "0s", "0", "-5m", "5", "5d", "1e400s", "NaN", "Infinity", "90 minutes", "0.0h"],
      },
      "--corpus-documents": ints(1),
      "--from": {
        values: [""],
        more: {
          "that does not exist": {
            argv: (b) => [...b, "--from", nope()],
            says: ["--from: ", "does not exist; expected a model directory or a .gguf file"],
          },
          "a model of another architecture": {
            argv: (b) => [...b, "--from", fx.gguf],
            says: ["--from ", "its architecture is not preset"],
          },
        },
      },
    },
  },

  demo: {
    base: () => ["demo", "--model", fx.hf, "--prompts", "1", "--chars", "400", "--threads", "1"],
    options: {
      "--model": {
        values: [""],
        more: {
          "a directory without a model": {
            argv: (b) => [...b, "--model", nope()],
            says: ["--model: no model at", "expected config.json and model.safetensors there"],
          },
        },
      },
      "--prompts": ints(1, 10_000),
      "--chars": with_(ints(200, 50_000), {
        "too long for the model's context": {
          argv: (b) => [...b, "--chars", "20000"],
          says: [
            /--chars 20000 makes prompts of up to \d+ tokens, .* exceed the 2048-token context of hf; use --chars \d+ or less/,
          ],
        },
      }),
      "--compression": floats(["0.5", "0", "-1"]),
      "--threads": THREADS,
    },
  },

  "eval run": {
    base: (o) => [
      "eval",
      "--model",
      fx.gguf,
      "--tasks",
      "needle",
      "--methods",
      "dense",
      "--compression",
      "1",
      "--samples",
      "1",
      "--lengths",
      "64",
      "--depths",
      "1",
      "--threads",
      "1",
      "--out",
      o.new(),
    ],
    options: {
      "--model": {
        values: [""],
        more: {
          "that does not exist": {
            argv: (b) => [...b, "--model", nope("m.gguf")],
            says: ["--model: ", "does not exist"],
          },
        },
      },
      "--tasks": { values: ["nope", "", "NEEDLE"] },
      "--data": {
        values: [""],
        more: {
          "that does not exist": {
            argv: (b) => [...b, "--data", nope("t.jsonl")],
            says: ["--data: ", "does not exist"],
          },
          // A bad line inside the file is a FormatError naming file and line: test/eval.test.ts.
        },
      },
      "--methods": { values: ["nope", "", "Dense"] },
      "--compression": { values: ["abc", "", "0", "0.5", "-1", "Infinity", "1e400", "0x10"] },
      "--samples": ints(1, 100_000),
      "--seed": SEED,
      "--lengths": { values: ["abc", "", "8", "1.5k", "99999999", "2m"] },
      "--depths": ints(1, 100),
      "--shard": { values: ["", "1", "0/3", "4/3", "a/b", "1/0", "1/2/3"] },
      "--text": { values: ["", "wikipedia", "Brown"] },
      "--out": { values: [""] },
      "--kv-dtype": { values: ["q3", "", "F32"] },
      "--kv-rotation": { values: ["", "on", "HADAMARD"] },
      "--sparq-group-ranking": {
        values: ["", "Logits", "probability"],
        more: {
          "without a sparq cell": {
            argv: (b) => [...b, "--sparq-group-ranking", "probabilities"],
            says: ["--sparq-group-ranking applies to sparq cells, and --methods and --compression give none"],
          },
        },
      },
      "--threads": THREADS,
    },
  },

  "eval merge": {
    base: (o) => ["eval", "merge", fx.dir, "--out", o.new()],
    options: { "--out": { values: [""] } },
  },

  "eval report": {
    base: () => ["eval", "report", fx.dir],
    options: {},
  },

  serve: {
    base: () => ["serve", "--model", fx.gguf, "--port", "0", "--threads", "1"],
    options: {
      "--model": {
        values: [""],
        more: {
          "a path that does not exist": {
            argv: (b) => [...b, "--model", nope("m.gguf")],
            says: ["--model expects a .gguf file or a model directory", /m\.gguf does not exist/],
          },
        },
      },
      "--alias": { values: [""] },
      "--host": {
        values: [""],
        more: {
          "a host name that does not resolve": {
            argv: (b) => [...b, "--host", "no-such-host.invalid"],
            says: ["cannot listen there: "],
          },
          "an address of another machine": {
            argv: (b) => [...b, "--host", "192.0.2.1"],
            says: ["cannot listen there: that is not an address of this machine"],
          },
        },
      },
      "--port": ints(0, 65535),
      "--parallel": ints(1, 64),
      "--queue": ints(0, 100000),
      "--kv-memory": { values: ["lots", "", "0", "-1GiB", "8GiB", "NaN", "0x10"] },
      "--context": ints(1),
      "--max-tokens": ints(1),
      "--max-body": { values: ["lots", "", "0", "2GiB", "Infinity"] },
      "--api-key": { values: [""] },
      "--api-key-file": {
        values: [""],
        more: {
          "that does not exist": {
            argv: (b) => [...b, "--api-key-file", nope("keys.txt")],
            says: ["does not exist"],
          },
          "with no key in it": {
            argv: (b) => [...b, "--api-key-file", fx.empty],
            says: ["holds no key (one per line)"],
          },
        },
      },
      "--cors-origin": { values: ["", "example.com", "https://a.example/path", "ftp://a.example"] },
      "--no-prefix-cache": {
        more: {
          "with a value": {
            argv: (b) => [...b, "--no-prefix-cache=yes"],
            says: ["error: unknown option '--no-prefix-cache=yes'"],
          },
        },
      },
      "--threads": THREADS,
    },
  },

  "bench attention": {
    base: () => [
      "bench",
      "attention",
      "--contexts",
      "64",
      "--head-dims",
      "16",
      "--shapes",
      "mha",
      "--kv-dtypes",
      "f32",
      "--ratios",
      "2",
      "--methods",
      "h2o",
      "--seconds",
      "0.001",
      "--threads",
      "1",
    ],
    options: {
      "--contexts": {
        values: ["abc", "", "0", "-1", "NaN", "1.5", "0x10", "1e400", "99999999999999999999", String((1 << 22) + 1)],
        more: {
          "with one bad element": {
            argv: (b) => [...b, "--contexts", "64,abc"],
            says: ['--contexts expects an integer from 1 to 4194304, got "abc"'],
          },
        },
      },
      // The benchmark's input buffers hold 128 components per head.
      "--head-dims": { values: ["abc", "", "0", "-1", "1.5", "129", "4096", "0x10"] },
      "--shapes": { values: ["nope", "", "MHA"] },
      "--kv-dtypes": { values: ["q3", "", "f16"] },
      "--ratios": { values: ["abc", "", "0", "-2", "NaN", "0.5", "Infinity", "1e400"] },
      "--methods": {
        values: ["nope", ""],
        more: {
          "with one bad element": {
            argv: (b) => [...b, "--methods", "sparq,nope"],
            says: ['--methods expects a comma-separated list of dense, sparq, h2o, streaming, got "nope"'],
          },
        },
      },
      "--seconds": { values: ["abc", "", "0", "-1", "NaN", "Infinity", "1e400", "0x1", "3601"] },
      "--threads": { values: ["0", "abc", "", "2.5", "1000", "65", "-1", "NaN"] },
      "--json": {},
    },
  },
};

// serve takes the attention flags generate takes (the default method of requests), refused the same way.
for (const flag of [
  "--attention",
  "--compression",
  "--sparq-r",
  "--sparq-k",
  "--sparq-local",
  "--sparq-reallocation",
  "--sparq-layout",
  "--sparq-group-ranking",
  "--kv-budget",
  "--sinks",
  "--h2o-recent",
  "--kv-dtype",
  "--kv-rotation",
])
  TABLE.serve.options[flag] = TABLE.generate.options[flag];

/** The flags that set a run up, with valid values: a resume refuses each (it continues the run as it was set up). */
const SET_UP_FLAGS: [string, (o: Outputs) => string][] = [
  ["--out", (o) => o.new()],
  ["--preset", () => "micro-cla2"],
  ["--seed", () => "2"],
  ["--batch", () => "2"],
  ["--seq-len", () => "32"],
  ["--lr", () => "0.001"],
  ["--retrieval-share", () => "0.5"],
  ["--retrieval-chars", () => "40-90"],
  ["--needle-depths", () => "0-1"],
  ["--answer-windows", () => "0.5"],
  ["--repeat-mid", () => "0.5"],
  ["--rope-theta", () => "20000"],
  ["--warmup", () => "0.1"],
  ["--eval-batches", () => "2"],
  ["--tokenizer", () => SHIPPED_TOKENIZER],
  ["--corpus-documents", () => "10"],
];
for (const [flag, value] of SET_UP_FLAGS) {
  TABLE.train.options[flag] = with_(TABLE.train.options[flag], {
    "with --resume": {
      argv: (_, o) => {
        o.keep(fx.run);
        return ["train", "--resume", fx.run, flag, value(o)];
      },
      says: [`--resume continues a run as it was set up, so it cannot take ${flag};`],
    },
  });
}
for (const title of ["fewer than a resumed run's", "a finished run resumed without more"]) {
  const c = TABLE.train.options["--tokens"].more![title];
  TABLE.train.options["--tokens"].more![title] = { ...c, argv: (b, o) => (o.keep(fx.run), c.argv(b, o)) };
}

/** Commands with subcommands (kvslim, kvslim tokenizer, kvslim bench) and the commands that run, by path. */
function walk(command: Command, prefix: string[] = []): { groups: [string, Command][]; leaves: [string, Command][] } {
  const here = prefix.length === 0 && command.name() === "kvslim" ? [] : [...prefix, command.name()];
  if (command.commands.length === 0) return { groups: [], leaves: [[here.join(" "), command]] };
  const below = command.commands.map((c) => walk(c, here));
  return {
    groups: [[here.join(" "), command], ...below.flatMap((b) => b.groups)],
    leaves: below.flatMap((b) => b.leaves),
  };
}

const PROGRAM = walk(buildProgram());
const flagOf = (o: { long?: string; short?: string }) => o.long ?? o.short!;

interface Planned {
  title: string;
  argv: (o: Outputs) => string[];
  check: Omit<Case, "argv">;
}

/** Every case of one command: the table's, and those its commander definition implies. */
function plan(name: string, command: Command): Planned[] {
  const entry = TABLE[name];
  if (entry === undefined) return [];
  const out: Planned[] = [];
  const add = (title: string, c: Case) =>
    out.push({ title: `${name} ${title}`, argv: (o) => c.argv(entry.base(o), o), check: c });
  const found = (value: string) => (value === "" ? ['""'] : [new RegExp(`"${escape(value)}"|got ${escape(value)}\\b`)]);
  add("--frobnicate (unknown option)", {
    argv: (b) => [...b, "--frobnicate"],
    says: ["error: unknown option '--frobnicate'"],
  });
  // A command taking any number of arguments (eval merge DIRS...) has no stray one.
  if (!command.registeredArguments.some((a) => a.variadic))
    add("with a stray argument", { argv: (b) => [...b, "stray"], says: ["error: too many arguments"] });
  for (const arg of command.registeredArguments.filter((a) => a.required)) {
    add(`without its <${arg.name()}> argument`, {
      argv: (b) => b.slice(0, name.split(" ").length),
      says: [`error: missing required argument '${arg.name()}'`],
    });
  }
  for (const option of command.options) {
    const flag = flagOf(option);
    const cases = entry.options[flag] ?? {};
    const context = cases.context ?? [];
    if (option.mandatory)
      add(`without ${flag}`, {
        argv: (b) => without(b, flag),
        says: [`error: required option '`, flag, "not specified"],
      });
    if (option.required) {
      add(`${flag} without its value`, {
        argv: (b) => [...b, ...context, flag],
        says: [`error: option '`, flag, "argument missing"],
      });
    }
    if (option.isBoolean())
      add(`${flag}=yes`, { argv: (b) => [...b, `${flag}=yes`], says: [`error: unknown option '${flag}=yes'`] });
    const bad = (value: string): Case => ({
      argv: (b) => [...b, ...context, flag, value],
      says: [flag, ...found(value)],
    });
    for (const value of cases.values ?? []) add(`${flag} ${JSON.stringify(value)}`, bad(value));
    for (const [title, c] of Object.entries(cases.more ?? {}))
      add(`${flag}: ${title}`, { ...c, says: [flag, ...c.says] });
  }
  return out;
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** What every refused command line must look like. */
function expectRefused(r: { code: number; out: string; err: string }, argv: string[], c: Omit<Case, "argv">): void {
  expect(r.code, r.err).toBe(c.code ?? 2);
  expectOneCleanLine(r, argv);
  for (const s of c.says) {
    if (typeof s === "string") expect(r.err).toContain(s);
    else expect(r.err).toMatch(s);
  }
}

function expectOneCleanLine(r: { code: number; out: string; err: string }, argv: string[]): void {
  expect(r.code).toBeGreaterThan(0);
  expect(r.code).not.toBe(70); // an internal error: a bug
  const lines = r.err.replace(/\n$/, "").split("\n");
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0].trim()).not.toBe("");
  expect(r.err).not.toMatch(/\n\s+at |internal error|Cannot read properties|is not a function|\bundefined\b/);
  // A NaN or Infinity the user did not type is a computation that went wrong, not a message.
  for (const word of ["NaN", "Infinity"]) if (!argv.some((a) => a.includes(word))) expect(r.err).not.toContain(word);
  expect(r.out).toBe("");
}

describe("coverage", () => {
  test("every command that runs has a table entry, and every table entry is a command", () => {
    expect(Object.keys(TABLE).sort()).toEqual(PROGRAM.leaves.map(([name]) => name).sort());
  });

  const leaves = PROGRAM.leaves.map(([name, command]) => [name, command] as const);
  test.each(leaves)(
    "%s: every option has bad-value cases in the table, and the table names no other",
    (name, command) => {
      const options = command.options.map(flagOf).sort();
      const entry = TABLE[name];
      expect(Object.keys(entry.options).sort()).toEqual(options);
      for (const option of command.options) {
        const cases = entry.options[flagOf(option)];
        const count = (cases.values?.length ?? 0) + Object.keys(cases.more ?? {}).length;
        // A boolean flag's bad case is "--flag=yes", generated; a flag taking a value needs values of its own.
        if (!option.isBoolean()) expect(count, `${name} ${flagOf(option)} has no bad-value cases`).toBeGreaterThan(0);
      }
    },
  );
});

describe.each(
  PROGRAM.groups.map(([name, command]) => [name === "" ? "kvslim" : `kvslim ${name}`, name, command] as const),
)("%s", (title, name, command) => {
  const words = name === "" ? [] : name.split(" ");
  // A group with a default command (kvslim eval → eval run) runs it: its own checks answer, in one line.
  const defaultCommand = (command as unknown as { _defaultCommandName?: string })._defaultCommandName;
  test("without a command: one line naming the commands (or the default command's refusal), exit 2", async () => {
    const r = await runCli(...words);
    expectRefused(r, words, {
      says: defaultCommand ? [`${name} needs a model`] : [`${title} expects a command: `, "got no command"],
    });
  });
  test("with an unknown command: one line naming the commands (or the default command's), exit 2", async () => {
    const r = await runCli(...words, "nope");
    expectRefused(r, words, {
      says: defaultCommand ? ["error: too many arguments"] : [`${title} expects a command: `, 'got "nope"'],
    });
  });
  test("with an unknown option: commander's one line, exit 2", async () => {
    const r = await runCli(...words, "--frobnicate");
    expectRefused(r, words, { says: ["error: unknown option '--frobnicate'"] });
  });
});

describe.each(PROGRAM.leaves.filter(([name]) => TABLE[name] !== undefined))("%s", (name, command) => {
  for (const c of plan(name, command)) {
    const body = async () => {
      const o = new Outputs();
      const argv = c.argv(o);
      const r = await runCli(...argv);
      expectRefused(r, argv, c.check);
      o.check();
    };
    test(c.title, body);
  }
});

describe("a prompt far longer than the context", () => {
  // 10^5 token ids: tokenizing must not overflow the stack (no spread of the ids into push()).
  test("generate --file holding 400,000 characters on a Hugging Face model: ContextOverflowError naming both lengths, one line", async () => {
    const file = path.join(fx.dir, "long-prompt.txt");
    fs.writeFileSync(file, "the quick brown fox ".repeat(20_000));
    const argv = ["generate", "--model", fx.hf, "--file", file, "--tokens", "2", "--threads", "1"];
    const r = await runCli(...argv);
    expectRefused(r, argv, { code: 1, says: ["ContextOverflowError: ", "exceed the context size of 2048"] });
  });
});

describe("the base command lines", () => {
  // bench attention's is left out: it would measure the memory bandwidth (seconds) and print a table.
  test.each(["generate", "info", "synth", "export", "tokenizer train", "demo"])(
    "%s: succeeds, so each case fails for its own flag",
    async (name) => {
      const o = new Outputs();
      const r = await runCli(...TABLE[name].base(o));
      expect(r.code, r.err).toBe(0);
      // The writers' outputs appear: the check each case makes after a refusal would see a partial output.
      if (o.fresh.length > 0) expect(() => o.check()).toThrow(/was written/);
    },
  );
});

describe("property", () => {
  const numeric = Object.entries(TABLE.generate.options).filter(([, c]) => c.numeric);
  const value = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.integer({ min: -3, max: 12 }).map(String), // small enough that a valid --threads or --tokens stays quick
    fc.double().map(String),
    fc.constantFrom("NaN", "Infinity", "-0", "1e400", "0x10", " 3 ", "", "1_0", "٣", "3.", ".5", "+2", "1e1"),
  );
  const title = `any string for any numeric option of generate (${numeric.length} options, 150 runs): exit 0, or one clean line`;
  test(title, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...numeric), value, async ([flag, cases], v) => {
        const argv = [...TABLE.generate.base(new Outputs()), ...(cases.context ?? []), flag, v];
        const r = await runCli(...argv);
        if (r.code === 0) {
          expect(r.err).toMatch(/^prompt \d+ tokens at /m);
          return;
        }
        expectOneCleanLine(r, argv);
        expect(r.err).toMatch(/^kvslim: [A-Z]\w+Error: /);
      }),
      { numRuns: 150, seed: 42 },
    );
  });
});
