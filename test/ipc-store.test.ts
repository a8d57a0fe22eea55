/**
 * The cluster worker's binding store (workers > 1, memory store): calls go to the primary over
 * the IPC channel. What a user relies on: a binding learned by one worker is found by a request
 * that the next connection brings to another worker. That holds only if the worker hands the
 * write to the channel before the response carrying the new cookie is written to the client,
 * i.e. synchronously inside `set` — a write left for a later tick can lose the race against the
 * client's next request on a busy machine (it did in CI). The end-to-end case is in cluster.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { IpcStore } from '../src/runtime/ipc-store.js';
import type { ToPrimary } from '../src/runtime/ipc.js';
import { LocalCache } from '../src/sessions/local-cache.js';

type StoreMessage = Extract<ToPrimary, { sl: 'store' }>;

function channel(): { sent: StoreMessage[]; send: (m: ToPrimary) => boolean } {
  const sent: StoreMessage[] = [];
  return { sent, send: (m) => { if (m.sl === 'store') sent.push(m); return true; } };
}

const tick = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve));

describe('IpcStore (a worker asking the primary)', () => {
  it('sends a set before set() returns, with the lookups queued before it, in order', async () => {
    const ch = channel();
    const store = new IpcStore(ch.send, 1000);
    const lookup = store.get('k1');
    expect(ch.sent).toHaveLength(0); // lookups wait for the end of the turn (batched)
    const write = store.set('k2', 'php-1', 60);
    expect(ch.sent).toHaveLength(1);
    expect(ch.sent[0]!.ops.map(([, op, key]) => `${op} ${key}`)).toEqual(['get k1', 'set k2']);
    const [getId, setId] = ch.sent[0]!.ops.map(([id]) => id) as [number, number];
    store.answer([[getId, 'php-2'], [setId, true]]);
    await expect(lookup).resolves.toBe('php-2');
    await expect(write).resolves.toBeUndefined();
    await tick();
    expect(ch.sent).toHaveLength(1); // nothing left over for the scheduled flush
    await store.close();
  });

  it('batches the lookups of one turn into one message', async () => {
    const ch = channel();
    const store = new IpcStore(ch.send, 1000);
    const a = store.get('a');
    const b = store.get('b');
    await tick();
    expect(ch.sent).toHaveLength(1);
    expect(ch.sent[0]!.ops.map(([, op, key]) => `${op} ${key}`)).toEqual(['get a', 'get b']);
    store.answer(ch.sent[0]!.ops.map(([id]) => [id, null]));
    await expect(a).resolves.toBeNull();
    await expect(b).resolves.toBeNull();
    await store.close();
  });

  it('a binding learned through the local cache is on the channel when bind() returns; so is an unbind', async () => {
    const ch = channel();
    const store = new IpcStore(ch.send, 1000);
    const cache = new LocalCache(store, { entries: 100, freshMs: 5000 });
    cache.bind('sess-a', 'php-1', 60_000, Date.now());
    expect(ch.sent.flatMap((m) => m.ops.map(([, op, , value]) => `${op} ${value}`))).toEqual(['set php-1']);
    cache.unbind('sess-a');
    expect(ch.sent.flatMap((m) => m.ops.map(([, op]) => op))).toEqual(['set', 'delete']);
    store.answer(ch.sent.flatMap((m) => m.ops.map(([id]) => [id, true] as [number, boolean])));
    await store.close();
  });

  it('a channel that refuses the write fails the call at once (the request goes on without the store)', async () => {
    const store = new IpcStore(() => false, 1000);
    await expect(store.set('k', 'v', 60)).rejects.toThrow(/not reachable/);
    expect(store.stats.errors.set).toBe(1);
  });

  it('close() fails the calls in flight and tells its owner, once closed (a reload replaced the store)', async () => {
    const ch = channel();
    const closed: IpcStore[] = [];
    const store = new IpcStore(ch.send, 1000, (s) => closed.push(s));
    const pending = store.get('k');
    await store.close();
    await expect(pending).rejects.toThrow(/closed/);
    expect(closed).toEqual([store]);
    await expect(store.get('k')).rejects.toThrow(/closed/);
  });
});
