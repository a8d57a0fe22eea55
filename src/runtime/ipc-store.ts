/**
 * The binding store of a cluster worker when bindings live in memory (`sessionStore`
 * "memory", `workers` > 1): the primary owns them (one MemoryStore), and workers reach it
 * through this store over the cluster IPC channel. A LocalCache sits in front (as with
 * memcached), so a fresh binding is answered with no IPC; a lookup the cache cannot answer
 * waits at most `sessionStore.timeout` for the primary.
 *
 * Lookups made in the same event-loop turn go to the primary as one message; a write (set,
 * touch, delete) is sent at once, with any lookups queued before it, so that it reaches the
 * primary before the response that announced it reaches the client.
 */
import { StoreStats, type SessionStore, type StoreObserver, type StoreOp } from '../sessions/store.js';
import type { StoreAnswer, StoreCall, ToPrimary } from './ipc.js';

class Call {
  constructor(
    readonly op: StoreOp,
    readonly startedAt: number,
    readonly resolve: (value: string | null | boolean) => void,
    readonly reject: (err: Error) => void,
    /** Fails the call when the primary does not answer in time. */
    readonly timer: NodeJS.Timeout,
  ) {}
}

export class IpcStoreTimeout extends Error {
  constructor(op: string, ms: number) {
    super(`session store (primary process) did not answer ${op} within ${ms} ms`);
    this.name = 'IpcStoreTimeout';
  }
}

/** Call ids are unique per process (a reload may replace the store while calls of the old one are in flight). */
let nextId = 1;

export class IpcStore implements SessionStore {
  readonly type = 'memory' as const;
  readonly stats = new StoreStats();
  observer: StoreObserver | null = null;
  private readonly calls = new Map<number, Call>();
  private queue: StoreCall[] = [];
  private flushScheduled = false;
  private closed = false;

  /** `onClosed` is told when the store is closed (a reload replaced it): the worker stops routing answers to it. */
  constructor(
    private readonly send: (message: ToPrimary) => boolean,
    private readonly timeoutMs: number,
    private readonly onClosed: ((store: IpcStore) => void) | null = null,
  ) {}

  /** Answers from the primary (`store-res`). */
  answer(results: readonly StoreAnswer[]): void {
    for (const [id, value] of results) this.take(id, false)?.resolve(value); // undefined: timed out already
  }

  /** Ends call `id`: forgets it, stops its timer, counts and reports it; undefined when it is over already. */
  private take(id: number, failed: boolean): Call | undefined {
    const call = this.calls.get(id);
    if (call === undefined) return undefined;
    this.calls.delete(id);
    clearTimeout(call.timer);
    if (failed) this.stats.errors[call.op]++;
    this.observer?.onStoreOp?.(call.op, (performance.now() - call.startedAt) / 1000, failed);
    return call;
  }

  private call(op: StoreOp, key: string, value: string | null, ttlSeconds: number): Promise<string | null | boolean> {
    this.stats.calls[op]++;
    if (this.closed) {
      this.stats.errors[op]++;
      return Promise.reject(new Error('session store closed'));
    }
    return new Promise((resolve, reject) => {
      const id = nextId++;
      this.calls.set(id, new Call(op, performance.now(), resolve, reject, setTimeout(() => this.expire(id), this.timeoutMs)));
      this.queue.push([id, op, key, value, ttlSeconds]);
      if (op !== 'get') {
        // A write goes out now, before the response that carries the new cookie is written to the
        // client: the client's next request may reach another worker, whose lookup must find it.
        this.flush();
      } else if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const ops = this.queue;
    this.queue = [];
    if (ops.length === 0) return;
    let sent = false;
    try {
      sent = this.send({ sl: 'store', ops });
    } catch {
      sent = false;
    }
    if (!sent) for (const [id] of ops) this.fail(id, new Error('session store: the primary process is not reachable'));
  };

  private expire(id: number): void {
    this.fail(id, new IpcStoreTimeout(this.calls.get(id)?.op ?? 'call', this.timeoutMs));
  }

  private fail(id: number, err: Error): void {
    this.take(id, true)?.reject(err);
  }

  get(key: string): Promise<string | null> {
    return this.call('get', key, null, 0).then((v) => (typeof v === 'string' ? v : null));
  }

  set(key: string, value: string, ttlSeconds: number): Promise<void> {
    return this.call('set', key, value, ttlSeconds).then(() => undefined);
  }

  touch(key: string, ttlSeconds: number): Promise<boolean> {
    return this.call('touch', key, null, ttlSeconds).then((v) => v === true);
  }

  delete(key: string): Promise<void> {
    return this.call('delete', key, null, 0).then(() => undefined);
  }

  circuitOpen(): number {
    return 0;
  }

  close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.calls.keys()]) this.fail(id, new Error('session store closed'));
    this.onClosed?.(this);
    return Promise.resolve();
  }
}
