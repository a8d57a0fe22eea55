/**
 * The session side of a running sessionlb: the binding store (memory or memcached)
 * with its local cache, one Affinity per sticky upstream per config, and counters
 * per upstream that survive reloads. SessionLB creates it at start, keeps the store
 * across reloads while `sessionStore` is unchanged, and closes it at stop.
 *
 * A reload prepares its store (`prepare`) and then commits or aborts it with the rest.
 * For metrics: read `stats(upstream)`, `store.stats`, `store.circuitOpen()`, or set
 * `storeObserver` for events.
 */
import type { SessionStoreConfig, StickyConfig } from '../config/model.js';
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

/** Whether a sticky mode keeps its bindings in the session store (learn: session ids; source: client addresses). */
export function storesBindings(mode: StickyConfig['mode'] | undefined): boolean {
  return mode === 'learn' || mode === 'source';
}

/**
 * One session store set up for a `sessionStore` config: the store, the bindings behind it,
 * and its start-up lines (logged once a sticky "learn" or "source" upstream of a config in use needs it).
 */
export class StoreSetup {
  /** A learn- or source-mode upstream of the config this setup was prepared for uses it. */
  used = false;
  announced = false;

  constructor(
    readonly identity: string,
    readonly store: SessionStore,
    readonly source: BindingSource,
    readonly announcement: () => void,
  ) {}
}

export class SessionManager {
  /**
   * Set in a cluster worker whose bindings live in the primary (memory store, `workers` > 1):
   * makes the store a "memory" config uses (src/runtime/ipc-store.ts); a local cache goes in front of it.
   */
  static sharedMemoryStore: ((config: SessionStoreConfig) => SessionStore) | null = null;
  /** The setup in use. */
  private current: StoreSetup;
  private readonly statsByUpstream = new Map<string, AffinityStats>();
  private storeObs: StoreObserver | null = null;
  private readonly warnedRandomKey = new Set<string>();

  constructor(config: SessionStoreConfig, private readonly log: EventLog) {
    this.current = this.setUp(config);
  }

  /** The store in use. */
  get store(): SessionStore {
    return this.current.store;
  }

  private setUp(config: SessionStoreConfig): StoreSetup {
    const identity = storeIdentity(config);
    let setup: StoreSetup;
    if (config.type === 'memcached') {
      const store = new MemcachedStore({
        servers: config.servers,
        timeoutMs: config.timeoutMs,
        maxFails: config.maxFails,
        failTimeoutMs: config.failTimeoutMs,
        log: this.log,
      });
      const cache = new LocalCache(store, { entries: config.localCacheEntries, freshMs: config.localCacheFreshMs },
        storeKeyFunction(config.keyPrefix, config.hashKey));
      setup = new StoreSetup(identity, store, { kind: 'cached', cache }, () => {
        this.log.info({ servers: config.servers, keyPrefix: config.keyPrefix, timeoutMs: config.timeoutMs },
          `session store: memcached (${config.servers.length === 1 ? 'one server' : `${config.servers.length} servers, ketama`}); bindings are shared with every sessionlb using the same servers`);
        if (config.hashKeySource === 'derived') {
          this.log.warn('session store: no sessionStore.hashKey nor SESSIONLB_HASH_KEY; memcached keys use a key derived from keyPrefix (ids stay unreadable, but set a secret shared by all instances)');
        }
      });
    } else if (SessionManager.sharedMemoryStore !== null) {
      const store = SessionManager.sharedMemoryStore(config);
      const cache = new LocalCache(store, { entries: config.localCacheEntries, freshMs: config.localCacheFreshMs });
      setup = new StoreSetup(identity, store, { kind: 'cached', cache }, () => this.log.info({ timeoutMs: config.timeoutMs },
        'session store: memory, owned by the primary process; this worker asks it over IPC behind a local cache'));
    } else {
      const store = new MemoryStore();
      setup = new StoreSetup(identity, store, { kind: 'memory', store }, () => this.log.info(config.explicit
        ? 'session store: memory; sticky bindings are local to this process'
        : 'session store: memory (no sessionStore configured); sticky bindings are local to this process'));
    }
    setup.store.observer = this.storeObs;
    return setup;
  }

  /**
   * A reload's store, not yet in use: the one in use when `sessionStore` is unchanged, else a new
   * one. The reload then `commit`s it (the old store closes once requests in flight are done with
   * it) or `abort`s it (a new store is closed; nothing changed).
   */
  prepare(config: SessionStoreConfig): StoreSetup {
    return storeIdentity(config) === this.current.identity ? this.current : this.setUp(config);
  }

  commit(setup: StoreSetup): void {
    if (setup === this.current) return;
    const old = this.current;
    this.current = setup;
    if (setup.used) this.announce(setup);
    const t = setTimeout(() => { old.store.close().catch(() => undefined); }, 2_000);
    t.unref();
  }

  abort(setup: StoreSetup): void {
    if (setup !== this.current) setup.store.close().catch(() => undefined);
  }

  private announce(setup: StoreSetup): void {
    if (setup.announced) return;
    setup.announced = true;
    setup.announcement();
  }

  /** The Affinity of a sticky upstream (of the config `setup` was prepared for; default: the one in use), or null when it has no `sticky`. */
  affinityFor(upstream: Upstream, setup: StoreSetup = this.current): Affinity | null {
    const sticky = upstream.config.sticky;
    if (sticky === null) return null;
    const stored = storesBindings(sticky.mode);
    if (stored) {
      setup.used = true;
      if (setup === this.current) this.announce(setup);
    }
    if (sticky.mode === 'cookie' && sticky.cookieKeySource === 'random' && !this.warnedRandomKey.has(upstream.name)) {
      this.warnedRandomKey.add(upstream.name);
      this.log.warn({ upstream: upstream.name },
        'sticky cookie: no cookieKey nor SESSIONLB_COOKIE_KEY; using a random key for this process (cookies are not valid across instances nor restarts)');
    }
    return new Affinity(upstream, sticky, stored ? setup.source : null, this.stats(upstream.name));
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
    this.current.store.observer = o;
  }

  /** Sessions bound to a server, when known: counted by the memory store; null with memcached (shared, not enumerable). */
  boundCount(upstream: string, server: string): number | null {
    const source = this.current.source;
    return source.kind === 'memory' ? source.store.boundCount(upstream, server) : null;
  }

  async close(): Promise<void> {
    await this.current.store.close();
  }
}
