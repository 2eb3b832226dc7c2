/** Parsers for option values shared by the subcommands; each throws a UsageError naming the flag. */
import { InvalidArgumentError } from "commander";

export function intOption(flag: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} expects an integer ≥ ${min}, got "${value}"`);
    return n;
  };
}

export function floatOption(flag: string, min = -Infinity, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} expects a number in [${min}, ${max}], got "${value}"`);
    }
    return n;
  };
}

const UNITS: Record<string, number> = {
  "": 1, b: 1, k: 1e3, kb: 1e3, kib: 2 ** 10, m: 1e6, mb: 1e6, mib: 2 ** 20, g: 1e9, gb: 1e9, gib: 2 ** 30, t: 1e12, tb: 1e12, tib: 2 ** 40,
};

/** "2GiB", "512MB", "1.5g", "1000000" -> bytes. */
export function parseBytes(value: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new InvalidArgumentError(`expected a size like 512MiB, 2GiB or 1.5GB, got "${value}"`);
  }
  return Math.floor(Number(m[1]) * unit);
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** --threads N: 1 to 64 (default: the machine's cores). */
export const threadsOption = ["--threads <n>", "threads to run kernels on (default: the number of cores)", intOption("--threads", 1)] as const;
