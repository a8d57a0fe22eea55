/**
 * The embedded store: bindings in this process only (bounded LRU with a sliding TTL).
 * Every lookup is answered synchronously. Several sessionlb instances each keep their
 * own bindings with it; use memcached to share them.
 *
 * It also counts bindings per (upstream, server) for /status ("sessions bound"): keys are
 * `upstream NUL id` (see store.ts localKey) and values server names. Expired entries are
 * swept from the least recently used end once a second (a use slides the expiry and moves
 * the entry to the other end, so expired entries gather there).
 */
import { LRU_MOVE_INTERVAL_MS, Lru } from './local-cache.js';
import { StoreStats, type SessionStore, type StoreObserver } from './store.js';

class MemoryEntry {
  /** When the entry was last moved to the most-recent end of the LRU. */
  movedAt = 0;
  constructor(public value: string, public expiresAt: number, public ttlMs: number) {}
}

export const MEMORY_STORE_MAX_ENTRIES = 1_000_000;
/** Most entries one sweep looks at (keeps each sweep short). */
const SWEEP_BATCH = 10_000;

/** `upstream NUL server` for a binding key `upstream NUL id` and its value. */
function countKey(key: string, value: string): string {
  const nul = key.indexOf('\0');
  return `${nul === -1 ? '' : key.slice(0, nul)}\0${value}`;
}

export class MemoryStore implements SessionStore {
  readonly type = 'memory' as const;
  readonly stats = new StoreStats();
  observer: StoreObserver | null = null;
  private readonly lru: Lru<MemoryEntry>;
  private readonly counts = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(maxEntries = MEMORY_STORE_MAX_ENTRIES) {
    this.lru = new Lru<MemoryEntry>(maxEntries, (key, e) => this.uncount(key, e.value));
    this.sweeper = setInterval(() => this.sweep(Date.now()), 1000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.lru.size;
  }

  /** Bindings of `upstream` to `server` held now. */
  boundCount(upstream: string, server: string): number {
    return this.counts.get(`${upstream}\0${server}`) ?? 0;
  }

  private count(key: string, value: string): void {
    const k = countKey(key, value);
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
  }

  private uncount(key: string, value: string): void {
    const k = countKey(key, value);
    const n = (this.counts.get(k) ?? 0) - 1;
    if (n > 0) this.counts.set(k, n);
    else this.counts.delete(k);
  }

  /** Drops expired entries from the least recently used end (stops at the first live one). */
  sweep(now: number): void {
    const expired: string[] = [];
    let looked = 0;
    for (const [key, e] of this.lru.entries()) {
      if (now < e.expiresAt || ++looked > SWEEP_BATCH) break;
      expired.push(key);
    }
    for (const key of expired) this.deleteSync(key, false);
  }

  /** The value, its TTL slid forward (a lookup is a use, like memcached `touch`). */
  getSync(key: string, now: number): string | null {
    this.stats.calls.get++;
    const e = this.lru.peek(key);
    if (e === undefined) return null;
    if (now >= e.expiresAt) {
      this.deleteSync(key, false);
      return null;
    }
    if (now - e.movedAt >= LRU_MOVE_INTERVAL_MS) {
      e.movedAt = now;
      this.lru.touch(key, e);
    }
    e.expiresAt = now + e.ttlMs;
    return e.value;
  }

  get(key: string): Promise<string | null> {
    return Promise.resolve(this.getSync(key, Date.now()));
  }

  set(key: string, value: string, ttlSeconds: number): Promise<void> {
    this.setSync(key, value, ttlSeconds * 1000, Date.now());
    return Promise.resolve();
  }

  setSync(key: string, value: string, ttlMs: number, now: number): void {
    this.stats.calls.set++;
    const e = this.lru.peek(key);
    if (e !== undefined) {
      if (e.value !== value) {
        this.uncount(key, e.value);
        this.count(key, value);
        e.value = value;
      }
      e.expiresAt = now + ttlMs;
      e.ttlMs = ttlMs;
      e.movedAt = now;
      this.lru.touch(key, e);
    } else {
      const entry = new MemoryEntry(value, now + ttlMs, ttlMs);
      entry.movedAt = now;
      this.lru.set(key, entry);
      this.count(key, value);
    }
  }

  touch(key: string, ttlSeconds: number): Promise<boolean> {
    this.stats.calls.touch++;
    const e = this.lru.peek(key);
    if (e === undefined) return Promise.resolve(false);
    e.ttlMs = ttlSeconds * 1000;
    e.expiresAt = Date.now() + e.ttlMs;
    return Promise.resolve(true);
  }

  delete(key: string): Promise<void> {
    this.deleteSync(key);
    return Promise.resolve();
  }

  deleteSync(key: string, counted = true): void {
    if (counted) this.stats.calls.delete++;
    const e = this.lru.peek(key);
    if (e === undefined) return;
    this.lru.delete(key);
    this.uncount(key, e.value);
  }

  circuitOpen(): number {
    return 0;
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    this.lru.clear();
    this.counts.clear();
    return Promise.resolve();
  }
}
