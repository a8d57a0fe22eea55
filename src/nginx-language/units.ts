/**
 * nginx-style time and size values.
 *
 * Durations follow nginx's syntax: a number with a unit (`ms`, `s`, `m`, `h`, `d`,
 * `w`, `M`, `y`), several of them concatenated (`1m30s`), or a bare number meaning
 * seconds. Sizes are bytes with an optional `k`/`K` or `m`/`M` or `g`/`G` suffix.
 */

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  M: 30 * 86_400_000,
  y: 365 * 86_400_000,
};

const DURATION_PART = /(\d+)(ms|s|m|h|d|w|M|y)?/y;

export const DURATION_PATTERN = '^(\\d+(ms|s|m|h|d|w|M|y)?)+$';
export const SIZE_PATTERN = '^\\d+[kKmMgG]?$';

/** Parses an nginx duration into milliseconds; returns NaN when the text is not one. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || text.length === 0) return Number.NaN;
  let total = 0;
  let pos = 0;
  let unitless = 0;
  DURATION_PART.lastIndex = 0;
  while (pos < text.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(text);
    if (!m || m.index !== pos) return Number.NaN;
    const unit = m[2];
    if (unit === undefined) unitless++;
    total += Number(m[1]) * DURATION_UNITS_MS[unit ?? 's']!;
    pos = DURATION_PART.lastIndex;
  }
  // nginx only allows a bare number on its own ("30" = 30s), not mixed with units.
  if (unitless > 0 && !/^\d+$/.test(text)) return Number.NaN;
  return total;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 * 1024, g: 1024 * 1024 * 1024 };

/** Parses an nginx size ("1m", "512k", "0") into bytes; NaN when the text is not one. */
export function parseSize(text: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  if (!m) return Number.NaN;
  return Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
}
