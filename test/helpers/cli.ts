/**
 * Running the CLI in process for tests, with its stdout and stderr captured, and the check every bad-input
 * test makes: the exit code, one line naming the error class, no stack trace.
 */
import { spawn } from "node:child_process";
import { expect } from "vitest";
import { main } from "../../src/cli/main.js";

export async function runCli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
  try {
    const code = await main(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

/** Asserts a clean failure: the exit code, one line naming the error, no stack trace. */
export function expectFailure(
  r: { code: number; out: string; err: string },
  code: number,
  name: string,
  ...mentions: (string | RegExp)[]
) {
  expect(r.code, r.err).toBe(code);
  expect(r.err.trim().split("\n")).toHaveLength(1);
  expect(r.err).toContain(name);
  expect(r.err).not.toMatch(/\n\s+at /);
  for (const m of mentions) expect(r.err).toMatch(m);
}

/**
 * A command run as a child process, awaited: what spawnSync returns (status, stdout, stderr) without blocking
 * the test worker's event loop (a long spawnSync starves vitest's messages to its main process).
 */
export function spawnAsync(
  command: string,
  args: string[],
): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}
