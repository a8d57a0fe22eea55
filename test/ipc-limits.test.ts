/**
 * limit_req / limit_conn between cluster workers and their primary (runtime/ipc-limits.ts), with
 * the channel as two functions: a worker's IpcLimitDecider and the primary's LimitService over
 * real zones. What a late or lost answer must not do: leave a limit_conn count held in the
 * primary, or crash it on a malformed message.
 */
import { describe, expect, it } from 'vitest';
import { IpcLimitDecider, LimitService, type LimitAnswer, type LimitAsk } from '../src/runtime/ipc-limits.js';
import { LimitZones } from '../src/limits/zones.js';
import { LocalDecider } from '../src/limits/decider.js';

const WORKER = 1;
const RULES = [{ zone: 'addr', conn: 1 }];
const KEY = ['\x7f\x00\x00\x01'];

function cluster(answerDelayMs: number, timeoutMs: number): { worker: IpcLimitDecider; primaryZones: LimitZones; service: LimitService; fallbacks: string[][] } {
  const primaryZones = new LimitZones();
  primaryZones.configure([], [{ name: 'addr', keyText: '$binary_remote_addr', sizeBytes: 1 << 20 }]);
  const service = new LimitService(new LocalDecider(primaryZones));
  const workerZones = new LimitZones();
  workerZones.configure([], [{ name: 'addr', keyText: '$binary_remote_addr', sizeBytes: 1 << 20 }]);
  const fallbacks: string[][] = [];
  let worker: IpcLimitDecider;
  const toPrimary = (message: LimitAsk): boolean => {
    setTimeout(() => service.serve(WORKER, message, (answer: LimitAnswer) => {
      setTimeout(() => worker.answer(answer), message.sl === 'limit' ? answerDelayMs : 0);
      return true;
    }), 0);
    return true;
  };
  worker = new IpcLimitDecider(toPrimary, new LocalDecider(workerZones), timeoutMs, (zones) => fallbacks.push([...zones]));
  return { worker, primaryZones, service, fallbacks };
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('IpcLimitDecider and LimitService', () => {
  it('an answer in time: the count is the primary\'s, released when the request ends', async () => {
    const { worker, primaryZones } = cluster(0, 1000);
    const first = await worker.connection(RULES, KEY, false);
    expect(first.verdict).toBe('passed');
    expect(primaryZones.connection('addr')!.count(KEY[0]!)).toBe(1);
    expect((await worker.connection(RULES, KEY, false)).verdict).toBe('rejected');
    first.held!.release();
    await settle(20);
    expect(primaryZones.connection('addr')!.count(KEY[0]!)).toBe(0);
  });

  it('an answer after the worker decided alone gives its count back (it would block the key in every worker)', async () => {
    const { worker, primaryZones, fallbacks } = cluster(150, 50);
    const late = await worker.connection(RULES, KEY, false);
    expect(late.verdict).toBe('passed'); // decided in the worker's own zone
    expect(fallbacks).toEqual([['addr']]);
    late.held!.release();
    await settle(250); // the primary's answer has come and gone
    expect(primaryZones.connection('addr')!.count(KEY[0]!)).toBe(0);
  });

  it('a malformed ask is ignored, never thrown into the cluster\'s message handler', () => {
    const { service } = cluster(0, 1000);
    const answers: LimitAnswer[] = [];
    const bad = [
      { sl: 'limit', id: 1, q: 'conn', r: [null], k: ['x'], dry: false },
      { sl: 'limit', id: 2, q: 'req', r: [{ zone: 'addr' }], k: [42] },
      { sl: 'limit', id: 3, q: 'req', r: 'x', k: [] },
      { sl: 'limit', id: 'x', q: 'req', r: [], k: [] },
    ] as unknown as LimitAsk[];
    for (const m of bad) expect(() => service.serve(WORKER, m, (a) => { answers.push(a); return true; })).not.toThrow();
    expect(answers).toEqual([]);
  });

  it('a worker gone before its answer: the count taken for it goes back at once', async () => {
    const zones = new LimitZones();
    zones.configure([], [{ name: 'addr', keyText: '$binary_remote_addr', sizeBytes: 1 << 20 }]);
    const service = new LimitService(new LocalDecider(zones));
    service.serve(WORKER, { sl: 'limit', id: 7, q: 'conn', r: RULES, k: KEY, dry: false }, () => false);
    await settle(10);
    expect(zones.connection('addr')!.count(KEY[0]!)).toBe(0);
  });
});
