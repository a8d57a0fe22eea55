/**
 * The in-process layer in front of a shared store (memcached): a bounded LRU of
 * recent bindings that answers lookups with no round trip. An entry is "fresh" for a
 * short time (default 5s); a lookup of a stale entry is still answered from it at once
 * while the store is asked in the background (stale-while-revalidate), so a rebind made
 * by another sessionlb instance is seen within about that time, and a request waits for
 * the store only for a session this process does not know (at most the store's timeout).
 * When the store fails, known entries keep routing (the store is never required).
 *
 * - Freshness is drawn per entry from the last quarter of the period (`freshFrom`), so that
 *   bindings learned together do not all revalidate in the same instant, period after period.
 * - Concurrent lookups of one key share one store `get` (waiters are queued).
 * - TTL refresh (`touch`) is sent at most once per ttl/4 per key by this process.
 * - A binding the store lost (memcached restarted or evicted it) while this process still
 *   uses it is written back instead of moving the session.
 */
import { flatCopy, type SessionStore } from './store.js';

/** A bounded least-recently-used map (Map keeps insertion order: the first key is the oldest). */
export class Lru<V> {
  private readonly map = new Map<string, V>();
  /** `onEvict` is told about entries dropped to make room (not about `delete`). */
  constructor(readonly maxEntries: number, private readonly onEvict: ((key: string, value: V) => void) | null = null) {
    if (!(maxEntries >= 1)) throw new Error('Lru needs maxEntries >= 1');
  }

  get size(): number {
    return this.map.size;
  }

  /** The value, marked most recently used. */
  get(key: string): V | undefined {
    const map = this.map;
    const v = map.get(key);
    if (v !== undefined) {
      map.delete(key);
      map.set(key, v);
    }
    return v;
  }

  /** Marks a key most recently used. */
  touch(key: string, value: V): void {
    const map = this.map;
    map.delete(key);
    map.set(key, value);
  }

  /** The value without touching recency. */
  peek(key: string): V | undefined {
    return this.map.get(key);
  }

  set(key: string, value: V): void {
    const map = this.map;
    if (map.has(key)) {
      map.delete(key);
    } else if (map.size >= this.maxEntries) {
      const [oldKey, oldValue] = map.entries().next().value as [string, V];
      map.delete(oldKey);
      if (this.onEvict !== null) this.onEvict(oldKey, oldValue);
    }
    map.set(key, value);
  }

  /** Entries from the least recently used on (for sweeps; do not modify while iterating). */
  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }
}

/** How a lookup was answered (names used by metrics: sessionlb_sticky_lookups_total{result}). */
export type CacheLookupResult = 'local_hit' | 'store_hit' | 'miss' | 'store_error';

/** Gets the answer of a lookup that had to go to the store. */
export interface LookupWaiter {
  onLookup(value: string | null, result: CacheLookupResult): void;
}

class Entry {
  constructor(
    /**
     * The LRU's key for this entry: a flat copy (see flatCopy). Moving the entry re-inserts it
     * under this string, never under a request's key: a young string built from the request's
     * Cookie header, which the Map would then keep, promoted, for as long as the entry lives
     * (and with it, unless V8 has flattened it, the header it was sliced from).
     */
    readonly key: string,
    public value: string,
    /** Until when the entry is answered without asking the store. */
    public freshUntil: number,
    /** When this process may send the next touch. */
    public touchAfter: number,
    /** When the binding expires if nobody refreshes it (stale entries past this are not used). */
    public expiresAt: number,
    public ttlMs: number,
    /** The store's key (keyed hash, computed once per entry). */
    readonly storeKey: string,
    /** When the entry was last moved to the most-recent end of the LRU. */
    public movedAt = 0,
  ) {}
}

/** Recency is updated at most this often per entry (a Map delete+set per hit costs more than the rest of a lookup). */
export const LRU_MOVE_INTERVAL_MS = 1000;

class Pending {
  waiters: LookupWaiter[] = [];
  /** This process bound or unbound the key while the get was in flight: its answer is older than ours. */
  superseded = false;
  constructor(readonly ttlMs: number, readonly storeKey: string) {}
}

export interface LocalCacheOptions {
  /** Bound on entries (default 100 000). */
  entries: number;
  /** Freshness in ms (default 5000); each entry's is drawn from its last quarter (see LocalCache.freshFrom). */
  freshMs: number;
}

export const LOCAL_CACHE_DEFAULTS: LocalCacheOptions = { entries: 100_000, freshMs: 5_000 };

/** Bindings as seen by this process: the local LRU in front of a shared store. */
export class LocalCache {
  readonly lru: Lru<Entry>;
  private readonly pending = new Map<string, Pending>();
  private readonly freshMs: number;

  /**
   * `toStoreKey` turns a local key (upstream NUL id, kept only in this process) into the
   * store's key (prefix + keyed hash); it runs only when the store is called.
   */
  constructor(
    readonly store: SessionStore,
    options: LocalCacheOptions = LOCAL_CACHE_DEFAULTS,
    private readonly toStoreKey: (localKey: string) => string = (k) => k,
  ) {
    this.lru = new Lru<Entry>(options.entries);
    this.freshMs = options.freshMs;
  }

  /**
   * Until when an entry confirmed at `now` is answered without asking the store: `freshMs`
   * minus up to a quarter of it, at random. Bindings learned together (every active session
   * right after a restart, a burst of new sessions) would otherwise all turn stale in the same
   * instant and go back to the store together, one burst every period for as long as they live;
   * with the spread they drift apart within a few periods. Never later than `freshMs`, so a rebind
   * made by another instance is still seen within `freshMs`.
   */
  private freshFrom(now: number): number {
    return now + this.freshMs * (1 - Math.random() / 4);
  }

  /**
   * Looks a key up. Returns the value (answered locally), null (definitively unbound,
   * only when answered locally), or undefined: the store is being asked and `waiter.onLookup`
   * will be called (within the store's timeout; never synchronously).
   */
  lookup(key: string, ttlMs: number, now: number, waiter: LookupWaiter): string | null | undefined {
    const entry = this.lru.peek(key);
    if (entry !== undefined && now < entry.expiresAt) {
      if (now - entry.movedAt >= LRU_MOVE_INTERVAL_MS) {
        entry.movedAt = now;
        this.lru.touch(entry.key, entry);
      }
      if (now >= entry.freshUntil) {
        // Stale: answer from it now, revalidate in the background (once per freshness period, even if the store fails).
        entry.freshUntil = this.freshFrom(now);
        if (!this.pending.has(key)) this.fetch(key, ttlMs, entry.storeKey, true);
      } else if (now >= entry.touchAfter) {
        this.touchStore(entry, now);
      }
      return entry.value;
    }
    const p = this.pending.get(key) ?? this.fetch(key, ttlMs, entry?.storeKey ?? this.toStoreKey(key));
    p.waiters.push(waiter);
    return undefined;
  }

  private fetch(key: string, ttlMs: number, storeKey: string, background = false): Pending {
    const p = new Pending(ttlMs, storeKey);
    this.pending.set(key, p);
    this.store.get(storeKey, background).then(
      (value) => this.settle(key, value, false),
      () => this.settle(key, null, true),
    );
    return p;
  }

  private settle(key: string, value: string | null, failed: boolean): void {
    const p = this.pending.get(key);
    this.pending.delete(key);
    if (p === undefined) return;
    const now = Date.now();
    let answer: string | null = value;
    let result: CacheLookupResult;
    if (p.superseded) {
      // A rebind or unbind made here after the get was sent wins over what the get read.
      const entry = this.lru.peek(key);
      answer = entry !== undefined ? entry.value : null;
      result = entry !== undefined ? 'local_hit' : 'miss';
    } else if (failed) {
      // The store is slow or gone: a stale local entry still routes the session.
      const stale = this.lru.peek(key);
      answer = stale !== undefined && now < stale.expiresAt ? stale.value : null;
      result = 'store_error';
    } else if (value !== null) {
      result = 'store_hit';
      const entry = this.lru.peek(key);
      if (entry !== undefined) {
        entry.value = value;
        entry.freshUntil = this.freshFrom(now);
        entry.expiresAt = now + p.ttlMs;
        if (now >= entry.touchAfter) this.touchStore(entry, now);
      } else {
        // Written (or touched) by another instance: refresh it from here in ttl/4 like our own. Should it
        // expire in memcached before that, this process still routes by its entry and writes it back.
        // One flat copy of the key (see flatCopy); the store key is that same string when it is the key.
        const flat = flatCopy(key);
        this.lru.set(flat, new Entry(flat, value, this.freshFrom(now), now + p.ttlMs / 4, now + p.ttlMs, p.ttlMs, p.storeKey === key ? flat : p.storeKey));
      }
    } else {
      const known = this.lru.peek(key);
      if (known !== undefined && now < known.expiresAt) {
        // The store lost a binding this process still uses (memcached restarted or evicted it):
        // keep routing by it and write it back, rather than move a live session.
        answer = known.value;
        result = 'local_hit';
        known.freshUntil = this.freshFrom(now);
        known.touchAfter = now + known.ttlMs / 4;
        known.expiresAt = now + known.ttlMs;
        this.store.set(known.storeKey, known.value, Math.max(1, Math.ceil(known.ttlMs / 1000))).catch(ignore);
      } else {
        result = 'miss';
        this.lru.delete(key);
      }
    }
    for (const w of p.waiters) w.onLookup(answer, result);
  }

  private touchStore(entry: Entry, now: number): void {
    entry.touchAfter = now + entry.ttlMs / 4;
    entry.expiresAt = now + entry.ttlMs;
    const seconds = Math.max(1, Math.ceil(entry.ttlMs / 1000));
    const storeKey = entry.storeKey;
    this.store.touch(storeKey, seconds).then(
      (found) => {
        // Evicted or expired in memcached while still in use here: write it again.
        if (!found) this.store.set(storeKey, entry.value, seconds).catch(ignore);
      },
      ignore,
    );
  }

  /**
   * Records a binding here and in the store. Returns the store write, settled (never rejected)
   * once the store has it or failed to take it within its timeout; routing here does not wait for it.
   */
  bind(key: string, value: string, ttlMs: number, now: number): Promise<void> {
    const p = this.pending.get(key);
    if (p !== undefined) p.superseded = true;
    let entry = this.lru.peek(key);
    if (entry !== undefined) {
      entry.value = value;
      entry.freshUntil = this.freshFrom(now);
      entry.touchAfter = now + ttlMs / 4;
      entry.expiresAt = now + ttlMs;
      entry.ttlMs = ttlMs;
      entry.movedAt = now;
      this.lru.touch(entry.key, entry);
    } else {
      // One flat copy of the key (see flatCopy): the store key is derived from it (the same string
      // with the default identity, a fresh prefix + hash with memcached), never from the header slice.
      const flat = flatCopy(key);
      entry = new Entry(flat, value, this.freshFrom(now), now + ttlMs / 4, now + ttlMs, ttlMs, this.toStoreKey(flat), now);
      this.lru.set(flat, entry);
    }
    return this.store.set(entry.storeKey, value, Math.max(1, Math.ceil(ttlMs / 1000))).catch(ignore);
  }

  /** Removes a binding here and in the store. */
  unbind(key: string): void {
    const p = this.pending.get(key);
    if (p !== undefined) p.superseded = true;
    const entry = this.lru.peek(key);
    this.lru.delete(key);
    this.store.delete(entry?.storeKey ?? this.toStoreKey(key)).catch(ignore);
  }

  /** The locally known value (fresh or stale), for tests and the admin API. */
  peek(key: string): string | undefined {
    return this.lru.peek(key)?.value;
  }
}

function ignore(): void {
  // Store failures are counted by the store itself; routing never depends on a write.
}
