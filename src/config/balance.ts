/**
 * The `balance` setting: its runtime form (a hash key compiled once per config) and the
 * rules nginx applies to it. The rules work on raw JSON so that `check` can report them
 * even when the shape of some other part of the file is wrong.
 */
import { DURATION_PATTERN, parseDuration } from '../nginx-language/units.js';
import type { RawUpstream } from './schema.js';
import type { BalanceConfig } from './model.js';
import { compileTemplate } from '../nginx-language/variables.js';

/** Policies with which nginx allows neither `backup` servers nor `slow_start`. */
const NO_BACKUP = new Set(['ip_hash', 'hash', 'random']);
const DURATION = new RegExp(DURATION_PATTERN);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** "round_robin", "least_conn", "ip_hash", "hash", "random" or null for an unrecognisable value. */
function kindOf(balance: unknown): string | null {
  if (balance === undefined) return 'round_robin';
  if (typeof balance === 'string') return balance;
  if (isObject(balance)) {
    if ('hash' in balance) return 'hash';
    if ('random' in balance) return 'random';
  }
  return null;
}

/** `"balance": ...` as the user wrote it, for messages. */
function shown(balance: unknown): string {
  return JSON.stringify(balance ?? 'round_robin').replace(/":/g, '": ').replace(/,"/g, ', "');
}

/**
 * nginx's rules about `balance` for one upstream (raw JSON, shape not assumed): a hash key
 * must compile; ip_hash, hash and random forbid `backup` and `slowStart` on servers.
 */
export function balanceProblems(up: unknown, path: PropertyKey[], add: (path: PropertyKey[], message: string) => void): void {
  if (!isObject(up)) return;
  const balance = up.balance;
  if (isObject(balance) && typeof balance.hash === 'string' && balance.hash !== '') {
    const key = compileTemplate(balance.hash);
    if (typeof key === 'string') add([...path, 'balance', 'hash'], key);
  }
  const kind = kindOf(balance);
  if (kind === null || !NO_BACKUP.has(kind) || !Array.isArray(up.servers)) return;
  up.servers.forEach((s: unknown, i: number) => {
    if (!isObject(s)) return;
    if (s.backup === true) {
      add([...path, 'servers', i, 'backup'],
        `backup servers cannot be used with "balance": ${shown(balance)} (nginx: balancing method does not support parameter "backup")`);
    }
    if (typeof s.slowStart === 'string' && DURATION.test(s.slowStart) && parseDuration(s.slowStart) > 0) {
      add([...path, 'servers', i, 'slowStart'],
        `slowStart cannot be used with "balance": ${shown(balance)} (nginx: slow_start cannot be used with hash, ip_hash and random)`);
    }
  });
}

/** The runtime form of a valid `balance` (problems were reported by balanceProblems). */
export function normaliseBalance(raw: RawUpstream['balance']): BalanceConfig {
  if (raw === undefined || raw === 'round_robin') return { kind: 'round_robin' };
  if (raw === 'least_conn' || raw === 'ip_hash') return { kind: raw };
  if (raw === 'random') return { kind: 'random', two: false };
  if ('random' in raw) return { kind: 'random', two: true };
  const key = compileTemplate(raw.hash);
  if (typeof key === 'string') return { kind: 'round_robin' };
  return { kind: 'hash', key, consistent: raw.consistent ?? false };
}
