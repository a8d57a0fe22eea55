/**
 * Bindings in memcached, shared by every sessionlb instance that lists the same servers.
 *
 * - One `memcache-client` per server. memcache-client given several servers treats them
 *   as redundant copies and picks one at random per command, which would scatter a key
 *   over servers; so we spread keys ourselves with ketama consistent hashing over the
 *   server addresses (as twemproxy and libmemcached do). A single address may be a
 *   front such as twemproxy (nutcracker) that does its own distribution.
 * - Every call has `timeout`: the caller gets an answer (value or error) within it, even
 *   from a server that accepts connections and never answers (SIGSTOPped, overloaded).
 * - A circuit breaker per server: after `maxFails` consecutive failures the server is not
 *   called for `failTimeout`; then one probe call decides (success closes it). Calls to an
 *   open server fail at once, so routing continues from the local cache and the balancer.
 * - Lookups asked in the same event-loop turn go to a server as one multi-key `get` (at most
 *   GET_BATCH keys), one round trip and one timer for all of them. Background revalidations
 *   (nobody waits for them) are collected for up to BACKGROUND_BATCH_MS first.
 * - Keys are checked (printable ASCII, no space, <= 250 bytes) before any command is built.
 */
import { MemcacheClient, type CompressorLibrary, type MultiRetrievalResponse } from 'memcache-client';
import { KetamaRing } from './ketama.js';
import { StoreStats, plausibleValue, type SessionStore, type StoreObserver, type StoreOp } from './store.js';
import type { EventLog } from '../observability/log.js';

export interface MemcachedStoreOptions {
  /** `host:port` addresses (IPv4 or hostname). */
  servers: string[];
  timeoutMs: number;
  /** Consecutive failures that open a server's circuit breaker (default 5). */
  maxFails: number;
  /** How long an open breaker keeps calls away before one probe (default 5000 ms). */
  failTimeoutMs: number;
  log: EventLog;
}

export class StoreUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

/** Values are plain strings: refuse compressed values instead of running a decompressor on them. */
const NO_COMPRESSION: CompressorLibrary = {
  compressSync(): Buffer {
    throw new Error('compression is not used by sessionlb');
  },
  decompressSync(): Buffer {
    throw new Error('compressed values are not accepted');
  },
};

const KEY_PATTERN = /^[\x21-\x7e]{1,250}$/;

/** Most keys in one multi-key `get` (about 3.5 KB of command line with 54-byte keys). */
export const GET_BATCH = 64;
/** How long background gets wait for company before they are sent. */
export const BACKGROUND_BATCH_MS = 10;

interface GetWaiter {
  resolve(value: string | null): void;
  reject(err: Error): void;
}

/** One memcached server: its client and its circuit breaker. */
export class MemcachedNode {
  readonly client: MemcacheClient;
  /** Consecutive failures. */
  fails = 0;
  /** Breaker open until this time (0 = closed). */
  openUntil = 0;
  open = false;
  probing = false;
  /** Gets collected for the next multi-key get, sent together by `flushGets` (key -> waiters). */
  batch: Map<string, GetWaiter[]> | null = null;
  /** A flush is scheduled at the end of this event-loop turn (a foreground get is waiting). */
  flushSoon = false;
  /** A flush is scheduled by timer (background gets only so far). */
  flushLater = false;
  /**
   * What a call refused by the open breaker rejects with: one object per server, made once.
   * While memcached is down every stale-entry revalidation and every write is refused; an Error
   * built per call (stack trace captured) cost ~9 us each, about 2 us per proxied request.
   */
  readonly circuitOpenError: StoreUnavailableError;

  constructor(readonly address: string, timeoutMs: number) {
    this.circuitOpenError = new StoreUnavailableError(`memcached ${address}: circuit open`);
    this.client = new MemcacheClient({
      server: { server: address, maxConnections: 1 },
      // A command without an answer after this tears its connection down (the next call reconnects).
      // Callers never wait this long (each call has its own `timeout`); it is longer so that a
      // short stall does not kill a connection with many commands in flight.
      cmdTimeout: Math.max(timeoutMs * 10, 500),
      connectTimeout: Math.max(timeoutMs * 4, 1000),
      noDelay: true,
      keepAlive: 30_000,
      compressor: NO_COMPRESSION,
    });
  }
}

export class MemcachedStore implements SessionStore {
  readonly type = 'memcached' as const;
  readonly stats = new StoreStats();
  observer: StoreObserver | null = null;
  readonly nodes: MemcachedNode[];
  private readonly ring: KetamaRing<MemcachedNode> | null;
  private readonly timeoutMs: number;
  private readonly maxFails: number;
  private readonly failTimeoutMs: number;
  private readonly log: EventLog;
  private closed = false;

  constructor(options: MemcachedStoreOptions) {
    if (options.servers.length === 0) throw new Error('memcached store needs at least one server');
    this.timeoutMs = options.timeoutMs;
    this.maxFails = Math.max(1, options.maxFails);
    this.failTimeoutMs = options.failTimeoutMs;
    this.log = options.log;
    this.nodes = options.servers.map((s) => new MemcachedNode(s, options.timeoutMs));
    this.ring = this.nodes.length > 1 ? new KetamaRing(this.nodes, (n) => n.address) : null;
  }

  /** The server a key lives on (ketama over the configured addresses). */
  nodeFor(key: string): MemcachedNode {
    return this.ring === null ? this.nodes[0]! : this.ring.get(key)!;
  }

  circuitOpen(): number {
    let n = 0;
    for (const node of this.nodes) if (node.open) n++;
    return n;
  }

  get(key: string, background = false): Promise<string | null> {
    if (!KEY_PATTERN.test(key)) return Promise.reject(new Error('invalid memcached key'));
    if (this.closed) return Promise.reject(new StoreUnavailableError('session store closed'));
    const node = this.nodeFor(key);
    if (!this.admit(node, 'get')) return Promise.reject(node.circuitOpenError);
    return new Promise<string | null>((resolve, reject) => {
      let batch = node.batch;
      if (batch === null) {
        batch = new Map();
        node.batch = batch;
      }
      const waiters = batch.get(key);
      if (waiters === undefined) batch.set(key, [{ resolve, reject }]);
      else waiters.push({ resolve, reject });
      if (!background || batch.size >= GET_BATCH) {
        if (!node.flushSoon) {
          node.flushSoon = true;
          setImmediate(() => { node.flushSoon = false; this.flushGets(node); });
        }
      } else if (!node.flushLater && !node.flushSoon) {
        node.flushLater = true;
        setTimeout(() => { node.flushLater = false; this.flushGets(node); }, BACKGROUND_BATCH_MS);
      }
    });
  }

  /** Sends the gets collected so far for one server, GET_BATCH keys per command. */
  private flushGets(node: MemcachedNode): void {
    const batch = node.batch;
    node.batch = null;
    if (batch === null || batch.size === 0) return;
    if (this.closed) {
      const err = new StoreUnavailableError('session store closed');
      for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
      return;
    }
    let keys: string[] = [];
    for (const key of batch.keys()) {
      keys.push(key);
      if (keys.length === GET_BATCH) {
        this.multiGet(node, keys, batch);
        keys = [];
      }
    }
    if (keys.length > 0) this.multiGet(node, keys, batch);
  }

  private multiGet(node: MemcachedNode, keys: string[], waiters: Map<string, GetWaiter[]>): void {
    this.timed(node, 'get', () => node.client.get<MultiRetrievalResponse<unknown>>(keys)).then(
      (results) => {
        for (const k of keys) {
          const v = (results as Partial<MultiRetrievalResponse<unknown>> | undefined)?.[k]?.value;
          // Anything that does not look like a server name is ignored (and validated again by the caller).
          const value = plausibleValue(v) ? v : null;
          for (const w of waiters.get(k)!) w.resolve(value);
        }
      },
      (err: Error) => {
        this.stats.errors.get += keys.length;
        for (const k of keys) for (const w of waiters.get(k)!) w.reject(err);
      },
    );
  }

  set(key: string, value: string, ttlSeconds: number): Promise<void> {
    if (!plausibleValue(value)) return Promise.reject(new Error('refusing to store an implausible value'));
    return this.call('set', key, (node) => node.client.set(key, value, { lifetime: Math.floor(ttlSeconds) }).then(() => undefined));
  }

  touch(key: string, ttlSeconds: number): Promise<boolean> {
    return this.call('touch', key, (node) => node.client.touch(key, Math.floor(ttlSeconds)).then(
      () => true,
      (err: Error) => {
        if (err.message === 'NOT_FOUND') return false;
        throw err;
      },
    ));
  }

  delete(key: string): Promise<void> {
    return this.call('delete', key, (node) => node.client.delete(key).then(
      () => undefined,
      (err: Error) => {
        if (err.message === 'NOT_FOUND') return undefined;
        throw err;
      },
    ));
  }

  /**
   * `gets`: a value (any text, not checked as a server name) with its CAS unique, or null when
   * absent. For records of sessionlb's own (shared TLS ticket keys), not bindings.
   */
  getsRecord(key: string): Promise<{ value: string; cas: string } | null> {
    return this.call('get', key, (node) => node.client.gets<string>(key).then((r) => {
      const res = r as { value?: unknown; casUniq?: number | string } | undefined;
      if (res === undefined || typeof res.value !== 'string' || res.casUniq === undefined) return null;
      return { value: res.value, cas: String(res.casUniq) };
    }));
  }

  /**
   * `add` a record (stored only when the key is absent): true when stored, false when the key
   * exists (NOT_STORED is an answer, not a failure of the server). `ttlSeconds` 0: no expiry.
   */
  addRecord(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return this.call('set', key, (node) => node.client.add(key, value, { lifetime: Math.floor(ttlSeconds) }).then(
      () => true,
      (err: Error) => {
        if (err.message === 'NOT_STORED') return false;
        throw err;
      },
    ));
  }

  /**
   * `cas` a record read with `getsRecord`: 'stored', or 'exists' (changed by someone else since)
   * or 'not_found' (gone since); both answers, not failures.
   */
  casRecord(key: string, value: string, cas: string, ttlSeconds: number): Promise<'stored' | 'exists' | 'not_found'> {
    return this.call('set', key, (node) => node.client.cas(key, value, { casUniq: cas, lifetime: Math.floor(ttlSeconds) }).then(
      () => 'stored' as const,
      (err: Error) => {
        if (err.message === 'EXISTS') return 'exists' as const;
        if (err.message === 'NOT_FOUND') return 'not_found' as const;
        throw err;
      },
    ));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const node of this.nodes) node.client.shutdown();
  }

  /** The circuit breaker's word on one call (counted either way). */
  private admit(node: MemcachedNode, op: StoreOp): boolean {
    if (node.open) {
      if (Date.now() < node.openUntil || node.probing) {
        this.stats.skipped[op]++;
        return false;
      }
      node.probing = true; // half-open: this call decides
    }
    this.stats.calls[op]++;
    return true;
  }

  /** Runs one command on the key's server: checks the key and the breaker, then `timed`. */
  private call<T>(op: StoreOp, key: string, run: (node: MemcachedNode) => Promise<T>): Promise<T> {
    if (!KEY_PATTERN.test(key)) return Promise.reject(new Error('invalid memcached key'));
    if (this.closed) return Promise.reject(new StoreUnavailableError('session store closed'));
    const node = this.nodeFor(key);
    if (!this.admit(node, op)) return Promise.reject(node.circuitOpenError);
    return this.timed(node, op, () => run(node));
  }

  /** Runs one memcached command on `node`, bounded by `timeout`; counts and reports the outcome (the breaker included). */
  private timed<T>(node: MemcachedNode, op: StoreOp, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const settle = (failed: boolean): boolean => {
        if (done) return false;
        done = true;
        clearTimeout(timer);
        this.outcome(node, op, started, failed);
        return true;
      };
      const expire = (): void => {
        if (settle(true)) reject(new StoreUnavailableError(`memcached ${node.address}: ${op} timed out after ${this.timeoutMs}ms`));
      };
      // Timers run before I/O in an event-loop turn: after a stall of this process, an answer may
      // already be waiting in the socket. setImmediate lets it be read first (no false timeout).
      const timer = setTimeout(() => { setImmediate(expire); }, this.timeoutMs);
      let pending: Promise<T>;
      try {
        pending = run();
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
        (value) => { if (settle(false)) resolve(value); },
        (err: unknown) => { if (settle(true)) reject(err instanceof Error ? err : new Error(String(err))); },
      );
    });
  }

  private outcome(node: MemcachedNode, op: StoreOp, started: number, failed: boolean): void {
    const seconds = (performance.now() - started) / 1000;
    if (failed && op !== 'get') this.stats.errors[op]++; // gets count per key in multiGet
    this.observer?.onStoreOp?.(op, seconds, failed);
    if (failed) {
      node.fails++;
      if (node.probing || (!node.open && node.fails >= this.maxFails)) {
        const wasOpen = node.open;
        node.open = true;
        node.probing = false;
        node.openUntil = Date.now() + this.failTimeoutMs;
        if (!wasOpen) {
          this.log.warn({ server: node.address, failures: node.fails, retryInMs: this.failTimeoutMs },
            'session store: memcached server failing; not calling it for a while (routing continues from the local cache and the balancer)');
        }
      }
    } else {
      node.fails = 0;
      if (node.open) {
        node.open = false;
        node.probing = false;
        node.openUntil = 0;
        this.log.info({ server: node.address }, 'session store: memcached server answers again');
      }
    }
  }
}
