/**
 * The kvslim command line: one file per subcommand, this one wires them up and turns errors into one
 * line and a non-zero exit (never a stack trace for a KvslimError).
 */
import { Command, CommanderError } from "commander";
import { KvslimError } from "../errors.js";
import { registerBenchAttention } from "./bench-attention.js";
import { registerExport } from "./export.js";
import { registerGenerate } from "./generate.js";
import { registerInfo } from "./info.js";
import { registerSynth } from "./synth.js";
import { registerTokenizer } from "./tokenizer.js";
import { registerTrain } from "./train.js";
import { registerDemo } from "./demo.js";

export async function main(argv: string[]): Promise<number> {
  const program = new Command("kvslim")
    .description("Run transformer language models with small, cheap KV caches (CLA, SparQ)")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError(false);
  registerInfo(program);
  registerGenerate(program);
  registerSynth(program);
  registerTokenizer(program);
  registerExport(program);
  registerTrain(program);
  registerDemo(program);
  registerBenchAttention(program.command("bench").description("benchmarks that print measurements (not tests)"));
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    return reportError(e);
  }
}

export function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    // Commander already printed its message (help and version exit with 0).
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof KvslimError) {
    process.stderr.write(`kvslim: ${e.name}: ${e.message}\n`);
    return e.exitCode;
  }
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === "string" && typeof err.syscall === "string") {
    // A system error (missing file, permission, disk full): the message names the path; not a bug.
    process.stderr.write(`kvslim: ${err.code}: ${err.message}\n`);
    return 1;
  }
  process.stderr.write(`kvslim: internal error (a bug, please report it): ${err?.stack ?? String(e)}\n`);
  return 70;
}
