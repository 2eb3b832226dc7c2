/**
 * The kvslim command line: one file per subcommand, this one wires them up and turns errors into one
 * line and a non-zero exit (never a stack trace for a KvslimError).
 */
import { Command, CommanderError } from "commander";
import { KvslimError, UsageError } from "../errors.js";
import { registerBenchAttention } from "./bench-attention.js";
import { registerExport } from "./export.js";
import { registerGenerate } from "./generate.js";
import { registerInfo } from "./info.js";
import { registerSynth } from "./synth.js";
import { registerTokenizer } from "./tokenizer.js";
import { registerTrain } from "./train.js";
import { registerDemo } from "./demo.js";
import { registerEval } from "./eval.js";
import { registerServe } from "./serve.js";

/** The whole command tree (also for tests that walk every command's options). */
export function buildProgram(): Command {
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
  registerEval(program);
  registerServe(program);
  registerBenchAttention(program.command("bench").description("benchmarks that print measurements (not tests)"));
  requireSubcommands(program);
  return program;
}

/**
 * A command that only groups others (kvslim, kvslim tokenizer, kvslim bench), run without one of them: one line
 * naming the commands it has, where commander would print its whole help to stderr as an error.
 */
function requireSubcommands(command: Command, prefix = ""): void {
  const name = `${prefix}${command.name()}`;
  for (const sub of command.commands) requireSubcommands(sub, `${name} `);
  if (command.commands.length === 0) return;
  const names = command.commands.map((c) => c.name());
  // An action would turn off commander's implicit `help [command]` subcommand: keep it.
  command
    .helpCommand(true)
    .allowExcessArguments()
    .action((_flags: unknown, self: Command) => {
      const given = self.args[0];
      const what = given === undefined ? "no command" : `"${given}"`;
      throw new UsageError(
        `${name} expects a command: ${names.join(", ")} (${name} --help describes them), got ${what}`,
      );
    });
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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
