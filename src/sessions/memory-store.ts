/**
 * The embedded store: bindings in this process only (bounded LRU with a sliding TTL).
 * Every lookup is answered synchronously. Several sessionlb instances each keep their
 * own bindings with it; use memcached to share them.
 *
 * Keys are `upstream NUL id` (see store.ts localKey) and values server names. It also counts
 * bindings per (upstream, server) for /status ("sessions bound"). Expired entries are swept
 * from the least recently used end once a second (a use slides the expiry and moves the
 * entry to the other end, so expired entries gather there).
 *
 * Layout (issue 7 goal 5: ~1M bindings in a small RSS): no JS object nor string per binding,
 * nothing for the garbage collector to walk. A binding is a slot index into typed arrays:
 * - the key: an open-addressing hash table (linear probing, backward-shift deletion, at most
 *   half full) of slot indexes, hashed with a per-process random seed; the id part of the key
 *   (after `upstream NUL`) in a 32-byte cell per slot (ids of PHP's default lengths fit; longer
 *   or non-Latin-1 keys are kept as strings in a small side map), the upstream part in the class;
 * - the LRU order as an intrusive doubly linked list (`prev`/`next`), the expiry (ms);
 * - a "class" id naming the interned (upstream, server, ttl) triple the binding belongs to
 *   (a few per upstream), which gives the value, the TTL and the counts for /status.
 * Free slots (delete, expiry) form a list through `next` and are reused first, new ones are
 * taken in order: the per-slot arrays are allocated for the bound at once (zeroed memory the OS
 * maps only when first written, so RSS follows the slots used, and no copy when the store grows),
 * the key table doubles as it fills. ~65 bytes per binding at 1M, outside the JS heap.
 *
 * A use moves the binding to the most-recent end every time: the move is six typed-array
 * writes (the 1 s LRU_MOVE_INTERVAL_MS rule of the Map-based LRU bounded a Map delete+set
 * per hit; the local cache in front of memcached keeps it), so the order is exact LRU.
 */
import { randomBytes } from 'node:crypto';
import { StoreStats, flatCopy, type SessionStore, type StoreObserver } from './store.js';

export const MEMORY_STORE_MAX_ENTRIES = 1_000_000;
/** Most entries one sweep looks at (keeps each sweep short). */
const SWEEP_BATCH = 10_000;
/** Key table size at first (it doubles to stay at most half full). */
const INITIAL_TABLE = 2048;
/** Bytes of a key's id part kept in the slot's cell (PHP ids are 26 or 32 characters by default). */
const ID_BYTES = 32;
/** `idLength` of a key kept in `longKeys` (too long for a cell, or not Latin-1). */
const LONG_KEY = 255;
const NIL = -1;

/** What a set of bindings shares: the upstream (key prefix), the server they are bound to, and the TTL. */
class BindingClass {
  /** Bindings of this class held now. */
  refs = 0;
  constructor(
    readonly upstream: string,
    /** The key prefix: `upstream NUL`, or '' for a key without NUL. */
    readonly prefix: string,
    readonly server: string,
    readonly ttlMs: number,
  ) {}
}

/** Seeded string hash (a random seed per store keeps chosen ids from piling up in one probe run). */
function hashKey(key: string, seed: number): number {
  let h = seed ^ key.length;
  for (let i = 0; i < key.length; i++) {
    h = Math.imul(h ^ key.charCodeAt(i), 0x5bd1e995);
    h ^= h >>> 15;
  }
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

export class MemoryStore implements SessionStore {
  readonly type = 'memory' as const;
  readonly stats = new StoreStats();
  observer: StoreObserver | null = null;
  readonly maxEntries: number;
  private readonly sweeper: NodeJS.Timeout;
  private readonly seed = randomBytes(4).readInt32LE(0);
  // The key table: slot indexes (NIL = empty), at most half full.
  private table = new Int32Array(INITIAL_TABLE).fill(NIL);
  // Per slot.
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  private cls = new Int32Array(0);
  private hashes = new Int32Array(0);
  private expires = new Float64Array(0);
  private idLength = new Uint8Array(0);
  private ids = new Uint8Array(0);
  private readonly longKeys = new Map<number, string>();
  /** Slots handed out so far (slots below this are in use or on the free list). */
  private used = 0;
  private freeHead = NIL;
  /** Most recently used slot. */
  private head = NIL;
  /** Least recently used slot. */
  private tail = NIL;
  private count = 0;
  // Classes (interned (upstream, server, ttl)); ids of freed classes are reused.
  private readonly classes: (BindingClass | undefined)[] = [];
  private readonly freeClasses: number[] = [];
  private readonly classesByServer = new Map<string, number[]>();

  constructor(maxEntries = MEMORY_STORE_MAX_ENTRIES) {
    if (!(maxEntries >= 1) || !Number.isInteger(maxEntries) || maxEntries > 0x3fffffff) {
      throw new Error('MemoryStore needs an integer maxEntries >= 1');
    }
    this.maxEntries = maxEntries;
    this.allocate(maxEntries);
    this.sweeper = setInterval(() => this.sweep(Date.now()), 1000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.count;
  }

  /** Slots ever handed out (their memory is resident); at most `maxEntries`. */
  get slotsUsed(): number {
    return this.used;
  }

  /** Bindings of `upstream` to `server` held now. */
  boundCount(upstream: string, server: string): number {
    const ids = this.classesByServer.get(server);
    if (ids === undefined) return 0;
    let n = 0;
    for (const id of ids) {
      const c = this.classes[id]!;
      if (c.upstream === upstream) n += c.refs;
    }
    return n;
  }

  /** Keys from the least recently used on (for tests and diagnostics). */
  *keysLeastRecentFirst(): IterableIterator<string> {
    for (let s = this.tail; s !== NIL; s = this.prev[s]!) yield this.keyOf(s);
  }

  /** Drops expired entries from the least recently used end (stops at the first live one). */
  sweep(now: number): void {
    let looked = 0;
    while (this.tail !== NIL) {
      if (now < this.expires[this.tail]! || ++looked > SWEEP_BATCH) break;
      this.remove(this.tail);
    }
  }

  /** The value, its TTL slid forward (a lookup is a use, like memcached `touch`). */
  getSync(key: string, now: number): string | null {
    this.stats.calls.get++;
    const s = this.find(key, hashKey(key, this.seed));
    if (s === NIL) return null;
    if (now >= this.expires[s]!) {
      this.remove(s);
      return null;
    }
    const c = this.classes[this.cls[s]!]!;
    this.expires[s] = now + c.ttlMs;
    this.moveToFront(s);
    return c.server;
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
    const h = hashKey(key, this.seed);
    let s = this.find(key, h);
    if (s !== NIL) {
      const old = this.classes[this.cls[s]!]!;
      if (old.server !== value || old.ttlMs !== ttlMs) this.reclass(s, key, value, ttlMs);
      this.expires[s] = now + ttlMs;
      this.moveToFront(s);
      return;
    }
    if (this.count >= this.maxEntries) this.remove(this.tail); // evict the least recently used
    s = this.allocSlot();
    const prefixLength = key.indexOf('\0') + 1;
    const c = this.classFor(key, prefixLength, value, ttlMs);
    this.cls[s] = c;
    this.classes[c]!.refs++;
    this.writeId(s, key, prefixLength);
    this.hashes[s] = h;
    this.expires[s] = now + ttlMs;
    this.pushFront(s);
    this.count++;
    if (this.count * 2 > this.table.length) this.rehash(this.table.length * 2);
    else this.tableInsert(s, h);
  }

  touch(key: string, ttlSeconds: number): Promise<boolean> {
    return Promise.resolve(this.touchSync(key, ttlSeconds * 1000, Date.now()));
  }

  /** Sets a new TTL counted from `now` (without moving the entry in the LRU); false when absent. */
  touchSync(key: string, ttlMs: number, now: number): boolean {
    this.stats.calls.touch++;
    const s = this.find(key, hashKey(key, this.seed));
    if (s === NIL) return false;
    const c = this.classes[this.cls[s]!]!;
    if (c.ttlMs !== ttlMs) this.reclass(s, key, c.server, ttlMs);
    this.expires[s] = now + ttlMs;
    return true;
  }

  delete(key: string): Promise<void> {
    this.deleteSync(key);
    return Promise.resolve();
  }

  deleteSync(key: string): void {
    this.stats.calls.delete++;
    const s = this.find(key, hashKey(key, this.seed));
    if (s !== NIL) this.remove(s);
  }

  circuitOpen(): number {
    return 0;
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    this.used = 0;
    this.freeHead = this.head = this.tail = NIL;
    this.count = 0;
    this.table = new Int32Array(INITIAL_TABLE).fill(NIL);
    this.allocate(this.maxEntries);
    this.longKeys.clear();
    this.classes.length = 0;
    this.freeClasses.length = 0;
    this.classesByServer.clear();
    return Promise.resolve();
  }

  /** The slot holding `key` (hash `h`), or NIL. */
  private find(key: string, h: number): number {
    const table = this.table;
    const mask = table.length - 1;
    const hashes = this.hashes;
    let prefixLength = -1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const s = table[i]!;
      if (s === NIL) return NIL;
      if (hashes[s] !== h) continue;
      if (prefixLength === -1) prefixLength = key.indexOf('\0') + 1;
      if (this.holds(s, key, prefixLength)) return s;
    }
  }

  /** Whether slot `s` holds `key` (whose `upstream NUL` prefix is `prefixLength` long). */
  private holds(s: number, key: string, prefixLength: number): boolean {
    const n = this.idLength[s]!;
    if (n === LONG_KEY) return this.longKeys.get(s) === key;
    if (key.length - prefixLength !== n) return false;
    const prefix = this.classes[this.cls[s]!]!.prefix;
    if (prefix.length !== prefixLength || !key.startsWith(prefix)) return false;
    const ids = this.ids;
    const base = s * ID_BYTES;
    for (let j = 0; j < n; j++) if (ids[base + j] !== key.charCodeAt(prefixLength + j)) return false;
    return true;
  }

  /** Stores the id part of `key` in slot `s`'s cell, or the whole key in `longKeys`. */
  private writeId(s: number, key: string, prefixLength: number): void {
    const n = key.length - prefixLength;
    if (n <= ID_BYTES) {
      const ids = this.ids;
      const base = s * ID_BYTES;
      let j = 0;
      for (; j < n; j++) {
        const ch = key.charCodeAt(prefixLength + j);
        if (ch > 0xff) break;
        ids[base + j] = ch;
      }
      if (j === n) {
        this.idLength[s] = n;
        return;
      }
    }
    this.idLength[s] = LONG_KEY;
    this.longKeys.set(s, flatCopy(key)); // a flat copy: the key given is often a slice of a request header
  }

  private keyOf(s: number): string {
    const n = this.idLength[s]!;
    if (n === LONG_KEY) return this.longKeys.get(s)!;
    const base = s * ID_BYTES;
    return this.classes[this.cls[s]!]!.prefix + String.fromCharCode(...this.ids.subarray(base, base + n));
  }

  private tableInsert(s: number, h: number): void {
    const table = this.table;
    const mask = table.length - 1;
    let i = h & mask;
    while (table[i] !== NIL) i = (i + 1) & mask;
    table[i] = s;
  }

  /** Removes slot `s` from the key table, shifting later entries of its probe run back (no tombstones). */
  private tableDelete(s: number): void {
    const table = this.table;
    const mask = table.length - 1;
    let i = this.hashes[s]! & mask;
    while (table[i] !== s) i = (i + 1) & mask;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const t = table[j]!;
      if (t === NIL) break;
      const home = this.hashes[t]! & mask;
      // `t` may move back to `i` when `i` lies between its home and where it is now.
      if (((i - home) & mask) < ((j - home) & mask)) {
        table[i] = t;
        i = j;
      }
    }
    table[i] = NIL;
  }

  private rehash(size: number): void {
    this.table = new Int32Array(size).fill(NIL);
    for (let s = this.head; s !== NIL; s = this.next[s]!) this.tableInsert(s, this.hashes[s]!);
  }

  private allocSlot(): number {
    const free = this.freeHead;
    if (free !== NIL) {
      this.freeHead = this.next[free]!;
      return free;
    }
    return this.used++; // never past maxEntries: at the bound, setSync evicts (frees a slot) first
  }

  /** Fresh per-slot arrays for `n` slots (zeroed: untouched pages cost no RSS). */
  private allocate(n: number): void {
    this.prev = new Int32Array(n);
    this.next = new Int32Array(n);
    this.cls = new Int32Array(n);
    this.hashes = new Int32Array(n);
    this.expires = new Float64Array(n);
    this.idLength = new Uint8Array(n);
    this.ids = new Uint8Array(n * ID_BYTES);
  }

  /** Drops the binding in slot `s` (no stats: callers count their own calls). */
  private remove(s: number): void {
    this.tableDelete(s);
    if (this.idLength[s] === LONG_KEY) this.longKeys.delete(s);
    this.unlink(s);
    this.release(this.cls[s]!);
    this.next[s] = this.freeHead;
    this.freeHead = s;
    this.count--;
  }

  private unlink(s: number): void {
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p === NIL) this.head = n;
    else this.next[p] = n;
    if (n === NIL) this.tail = p;
    else this.prev[n] = p;
  }

  /** Marks slot `s` most recently used. */
  private moveToFront(s: number): void {
    if (this.head !== s) {
      this.unlink(s);
      this.pushFront(s);
    }
  }

  private pushFront(s: number): void {
    const h = this.head;
    this.prev[s] = NIL;
    this.next[s] = h;
    if (h === NIL) this.tail = s;
    else this.prev[h] = s;
    this.head = s;
  }

  private reclass(s: number, key: string, value: string, ttlMs: number): void {
    const c = this.classFor(key, key.indexOf('\0') + 1, value, ttlMs);
    this.classes[c]!.refs++;
    this.release(this.cls[s]!);
    this.cls[s] = c;
  }

  /** The id of the class of (key's upstream, value, ttlMs), created when new (refs not counted here). */
  private classFor(key: string, prefixLength: number, value: string, ttlMs: number): number {
    let ids = this.classesByServer.get(value);
    if (ids !== undefined) {
      for (const id of ids) {
        const c = this.classes[id]!;
        if (c.ttlMs === ttlMs && c.prefix.length === prefixLength && key.startsWith(c.prefix)) return id;
      }
    }
    // Own copies: a slice would keep this binding's whole key (and the request header) alive.
    const server = flatCopy(value);
    if (ids === undefined) {
      ids = [];
      this.classesByServer.set(server, ids);
    }
    const prefix = flatCopy(key.slice(0, prefixLength));
    const c = new BindingClass(prefixLength === 0 ? '' : prefix.slice(0, -1), prefix, server, ttlMs);
    const id = this.freeClasses.pop() ?? this.classes.length;
    this.classes[id] = c;
    ids.push(id);
    return id;
  }

  private release(id: number): void {
    const c = this.classes[id]!;
    if (--c.refs > 0) return;
    const ids = this.classesByServer.get(c.server)!;
    ids.splice(ids.indexOf(id), 1);
    if (ids.length === 0) this.classesByServer.delete(c.server);
    this.classes[id] = undefined;
    this.freeClasses.push(id);
  }
}
