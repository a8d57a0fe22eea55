/**
 * The session side of a running sessionlb: the binding store (memory or memcached)
 * with its local cache, one Affinity per sticky upstream per config, and counters
 * per upstream that survive reloads. SessionLB creates it at start, keeps the store
 * across reloads while `sessionStore` is unchanged, and closes it at stop.
 *
 * For metrics (no change here needed): read `stats(upstream)`, `store.stats`,
 * `store.circuitOpen()`, or set `affinityObserver` / `storeObserver` for events.
 */
import type { SessionStoreConfig } from '../config/model.js';
import type { Upstream } from '../balancer/upstream.js';
import type { EventLog } from '../observability/log.js';
import { Affinity, AffinityStats, type BindingSource } from './affinity.js';
import { LocalCache } from './local-cache.js';
import { MemoryStore } from './memory-store.js';
import { MemcachedStore } from './memcached-store.js';
import { storeKeyFunction, type SessionStore, type StoreObserver } from './store.js';

function storeIdentity(c: SessionStoreConfig): string {
  return JSON.stringify([c.type, c.servers, c.keyPrefix, c.timeoutMs, c.hashKey, c.maxFails, c.failTimeoutMs, c.localCacheEntries, c.localCacheFreshMs]);
}

export class SessionManager {
  /**
   * Set in a cluster worker whose bindings live in the primary (memory store, `workers` > 1):
   * makes the store a "memory" config uses (src/runtime/ipc-store.ts); a local cache goes in front of it.
   */
  static sharedMemoryStore: ((config: SessionStoreConfig) => SessionStore) | null = null;
  store!: SessionStore;
  private source!: BindingSource;
  private identity = '';
  private readonly statsByUpstream = new Map<string, AffinityStats>();
  private storeObs: StoreObserver | null = null;
  private readonly warnedRandomKey = new Set<string>();
  /** The store's start-up lines, logged once a sticky "learn" upstream uses it (no store talk in a config without one). */
  private announcement: (() => void) | null = null;

  constructor(config: SessionStoreConfig, private readonly log: EventLog) {
    this.open(config);
  }

  private open(config: SessionStoreConfig): void {
    this.identity = storeIdentity(config);
    if (config.type === 'memcached') {
      const store = new MemcachedStore({
        servers: config.servers,
        timeoutMs: config.timeoutMs,
        maxFails: config.maxFails,
        failTimeoutMs: config.failTimeoutMs,
        log: this.log,
      });
      this.store = store;
      this.source = {
        kind: 'cached',
        cache: new LocalCache(store, { entries: config.localCacheEntries, freshMs: config.localCacheFreshMs },
          storeKeyFunction(config.keyPrefix, config.hashKey)),
      };
      this.announcement = () => {
        this.log.info({ servers: config.servers, keyPrefix: config.keyPrefix, timeoutMs: config.timeoutMs },
          `session store: memcached (${config.servers.length === 1 ? 'one server' : `${config.servers.length} servers, ketama`}); bindings are shared with every sessionlb using the same servers`);
        if (config.hashKeySource === 'derived') {
          this.log.warn('session store: no sessionStore.hashKey nor SESSIONLB_HASH_KEY; memcached keys use a key derived from keyPrefix (ids stay unreadable, but set a secret shared by all instances)');
        }
      };
    } else if (SessionManager.sharedMemoryStore !== null) {
      const store = SessionManager.sharedMemoryStore(config);
      this.store = store;
      this.source = {
        kind: 'cached',
        cache: new LocalCache(store, { entries: config.localCacheEntries, freshMs: config.localCacheFreshMs }),
      };
      this.announcement = () => this.log.info({ timeoutMs: config.timeoutMs },
        'session store: memory, owned by the primary process; this worker asks it over IPC behind a local cache');
    } else {
      const store = new MemoryStore();
      this.store = store;
      this.source = { kind: 'memory', store };
      this.announcement = () => this.log.info(config.explicit
        ? 'session store: memory; sticky bindings are local to this process'
        : 'session store: memory (no sessionStore configured); sticky bindings are local to this process');
    }
    this.store.observer = this.storeObs;
  }

  /** Switches to a new store config; the old store is closed once requests in flight are done with it. */
  reconfigure(config: SessionStoreConfig): void {
    if (storeIdentity(config) === this.identity) return;
    const old = this.store;
    this.open(config);
    const t = setTimeout(() => { old.close().catch(() => undefined); }, 2_000);
    t.unref();
  }

  /** The Affinity of a sticky upstream for this config, or null when it has no `sticky`. */
  affinityFor(upstream: Upstream): Affinity | null {
    const sticky = upstream.config.sticky;
    if (sticky === null) return null;
    if (sticky.mode === 'learn' && this.announcement !== null) {
      const announce = this.announcement;
      this.announcement = null;
      announce();
    }
    if (sticky.mode === 'cookie' && sticky.cookieKeySource === 'random' && !this.warnedRandomKey.has(upstream.name)) {
      this.warnedRandomKey.add(upstream.name);
      this.log.warn({ upstream: upstream.name },
        'sticky cookie: no cookieKey nor SESSIONLB_COOKIE_KEY; using a random key for this process (cookies are not valid across instances nor restarts)');
    }
    return new Affinity(upstream, sticky, sticky.mode === 'learn' ? this.source : null, this.stats(upstream.name));
  }

  /** Counters of one upstream (created on first use, kept across reloads). */
  stats(upstream: string): AffinityStats {
    let s = this.statsByUpstream.get(upstream);
    if (s === undefined) {
      s = new AffinityStats();
      this.statsByUpstream.set(upstream, s);
    }
    return s;
  }

  /** Every upstream that has counters. */
  allStats(): ReadonlyMap<string, AffinityStats> {
    return this.statsByUpstream;
  }

  get storeObserver(): StoreObserver | null {
    return this.storeObs;
  }

  set storeObserver(o: StoreObserver | null) {
    this.storeObs = o;
    this.store.observer = o;
  }

  /** Sessions bound to a server, when known: counted by the memory store; null with memcached (shared, not enumerable). */
  boundCount(upstream: string, server: string): number | null {
    return this.source.kind === 'memory' ? this.source.store.boundCount(upstream, server) : null;
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
