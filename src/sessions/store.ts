/**
 * Where session bindings (session -> server) live: `memory` (this process only) or
 * `memcached` (shared by every sessionlb instance pointing at the same servers).
 *
 * Keys handed to a store are already opaque (`SessionKeys.key`): a store never sees a
 * raw session id. Values are server names; whoever reads one checks it against the
 * current config before using it.
 */
import { createHmac } from 'node:crypto';

export type StoreOp = 'get' | 'set' | 'touch' | 'delete';

/** Hooks for metrics (the observability wiring sets them; stores work without). */
export interface StoreObserver {
  /** One finished store call: how long it took and whether it failed (timeouts and errors; a plain miss is not a failure). */
  onStoreOp?(op: StoreOp, seconds: number, failed: boolean): void;
}

/** Plain counters kept by every store (readable at any time, e.g. by a metrics collector). */
export class StoreStats {
  readonly calls: Record<StoreOp, number> = { get: 0, set: 0, touch: 0, delete: 0 };
  readonly errors: Record<StoreOp, number> = { get: 0, set: 0, touch: 0, delete: 0 };
  /** Calls not made because the server's circuit breaker was open. */
  readonly skipped: Record<StoreOp, number> = { get: 0, set: 0, touch: 0, delete: 0 };
}

export interface SessionStore {
  readonly type: 'memory' | 'memcached';
  readonly stats: StoreStats;
  observer: StoreObserver | null;
  /**
   * Synchronous answer when the store has one (the memory store): the value, or null.
   * Undefined means "ask `get`".
   */
  getSync?(key: string, now: number): string | null;
  /**
   * The value or null (absent). Resolves within the store's timeout (counted from when the
   * request is sent); rejects on error or timeout. `background`: nobody waits for the answer
   * (a revalidation), so the store may hold it briefly to batch it with others.
   */
  get(key: string, background?: boolean): Promise<string | null>;
  /** Writes (fire and forget for callers: failures are counted, never thrown at the request). */
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  /** Extends the TTL; resolves false when the key is gone (the caller may write it again). */
  touch(key: string, ttlSeconds: number): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** Number of memcached servers whose circuit breaker is open now (0 for memory). */
  circuitOpen(): number;
  close(): Promise<void>;
}

/** The in-process key of a binding: upstream NUL session id (never sent anywhere). */
export function localKey(upstream: string, id: string): string {
  return `${upstream}\0${id}`;
}

/**
 * A flat copy of a string that shares no memory with it. A key built by the proxy is a cons
 * string over a slice of the request's Cookie header: kept as it is, a binding would hold the
 * whole header too (~145 bytes per key instead of ~56). Used once per new binding, never per lookup.
 */
export function flatCopy(s: string): string {
  return JSON.parse(JSON.stringify(s)) as string;
}

/**
 * Turns a local key (upstream NUL session id) into a memcached key: `keyPrefix` +
 * base64url(HMAC-SHA256(hashKey, upstream NUL id)), 43 characters. The raw id never leaves
 * the process; the upstream name keeps two sticky upstreams with the same cookie apart.
 */
export function storeKeyFunction(prefix: string, hashKey: string): (localKey: string) => string {
  return (key) => prefix + createHmac('sha256', hashKey).update(key).digest('base64url');
}

/** A server name as a store value: printable ASCII, bounded (anything else is ignored on read). */
export function plausibleValue(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 300 && /^[\x21-\x7e]+$/.test(value);
}
