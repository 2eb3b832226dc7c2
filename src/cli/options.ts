/**
 * Parsers for option values shared by the subcommands. Each throws a UsageError naming the flag, what it expects
 * and the value as typed, so a bad flag is reported like any other bad input (one line, exit 2), before anything
 * is loaded or written.
 */
import fs from "node:fs";
import path from "node:path";
import { FileExistsError, UsageError, formatBytes } from "../errors.js";
import { MAX_WORKERS } from "../threads/pool.js";

// Decimal notation only: Number() also reads "" and "  " (as 0), "0x1f", "0b1" and "Infinity", none of which a
// user typing a count or a ratio means.
const INTEGER = /^\s*[+-]?\d+\s*$/;
const DECIMAL = /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i;

/** The largest seed: every random generator in kvslim takes its seed as a u32 (a larger one would wrap). */
export const MAX_SEED = 2 ** 32 - 1;

function integerRange(min: number, max: number): string {
  return max >= Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
}

/** An integer in [min, max] written in decimal digits. */
export function parseInteger(value: string, flag: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = INTEGER.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`${flag} expects ${integerRange(min, max)}, got "${value}"`);
  return n;
}

export function intOption(flag: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => parseInteger(value, flag, min, max);
}

export interface FloatRange {
  min?: number;
  max?: number;
  /** The bound itself is refused (top-p 0, a learning rate of 0, a fraction of 1). */
  minOpen?: boolean;
  maxOpen?: boolean;
}

function describeRange({ min = -Infinity, max = Infinity, minOpen = false, maxOpen = false }: FloatRange): string {
  if (min > -Infinity && max < Infinity) {
    return !minOpen && !maxOpen
      ? `a number from ${min} to ${max}`
      : `a number in ${minOpen ? "(" : "["}${min}, ${max}${maxOpen ? ")" : "]"}`;
  }
  if (min > -Infinity) return `a number ${minOpen ? ">" : "≥"} ${min}`;
  if (max < Infinity) return `a number ${maxOpen ? "<" : "≤"} ${max}`;
  return "a number";
}

/** A finite decimal number in the range. */
export function parseFloatIn(value: string, flag: string, range: FloatRange = {}): number {
  const { min = -Infinity, max = Infinity, minOpen = false, maxOpen = false } = range;
  const n = DECIMAL.test(value) ? Number(value) : NaN;
  const inside = Number.isFinite(n) && (minOpen ? n > min : n >= min) && (maxOpen ? n < max : n <= max);
  if (!inside) throw new UsageError(`${flag} expects ${describeRange(range)}, got "${value}"`);
  return n;
}

export function floatOption(flag: string, range: FloatRange = {}) {
  return (value: string): number => parseFloatIn(value, flag, range);
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 2 ** 10,
  m: 1e6,
  mb: 1e6,
  mib: 2 ** 20,
  g: 1e9,
  gb: 1e9,
  gib: 2 ** 30,
  t: 1e12,
  tb: 1e12,
  tib: 2 ** 40,
};

/** "2GiB", "512MB", "1.5g", "1000000" -> bytes, from 1 B to `max`. */
export function bytesOption(flag: string, max: number) {
  return (value: string): number => {
    const m = /^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$/.exec(value);
    const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
    const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
    if (!(bytes >= 1 && bytes <= max)) {
      throw new UsageError(
        `${flag} expects a size like 512MiB, 2GiB or 1.5GB, from 1 B to ${formatBytes(max)}, got "${value}"`,
      );
    }
    return bytes;
  };
}

/** A value from a fixed list, compared exactly. */
export function choiceOption(flag: string, choices: readonly string[]) {
  return (value: string): string => {
    if (!choices.includes(value)) throw new UsageError(`${flag} expects one of ${choices.join(", ")}, got "${value}"`);
    return value;
  };
}

/** A path: refused when empty, which some calls would read as the working directory. */
export function pathOption(flag: string) {
  return (value: string): string => {
    if (value.trim() === "") throw new UsageError(`${flag} expects a path, got "${value}"`);
    return value;
  };
}

/**
 * An output's checks, made before any work (random weights, reading a model): its directory exists, and the
 * output is new unless --force. The writers check again when they move the file into place.
 */
export function checkOutput(flag: string, target: string, force: boolean): void {
  const dir = path.dirname(target);
  if (!fs.existsSync(dir))
    throw new UsageError(`${flag}: cannot write ${target}: directory ${dir} does not exist; create it first`);
  if (!fs.statSync(dir).isDirectory())
    throw new UsageError(`${flag}: cannot write ${target}: ${dir} is not a directory`);
  if (!force && fs.existsSync(target))
    throw new FileExistsError(`${flag}: ${target} exists; pass --force to overwrite`);
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** --threads N: 1 to 64 (default: the machine's cores): the caller's thread and up to MAX_WORKERS workers. */
export const threadsOption = [
  "--threads <n>",
  "threads to run kernels on (default: the number of cores)",
  intOption("--threads", 1, MAX_WORKERS + 1),
] as const;

/** --seed N for the commands that take one. */
export function seedOption(help: string) {
  return ["--seed <n>", help, intOption("--seed", 0, MAX_SEED)] as const;
}
