/**
 * src/limits/connection-zone.ts: nginx limit_conn worked by hand (ngx_http_limit_conn_handler and
 * its cleanup): counts per key, rejection at the limit, release of this request's counts on a
 * rejection, nodes gone at 0, a full zone refusing new keys, and dry run counting as a normal run.
 */
import { describe, expect, it } from 'vitest';
import {
  ConnectionZone, limitConnection, MAX_CONNECTION_KEY_BYTES,
  type ConnectionLimit, type ConnectionOutcome,
} from '../src/limits/connection-zone.js';
import { MIN_ZONE_BYTES } from '../src/limits/zone-memory.js';

const MB = 1024 * 1024;

describe('limit_conn', () => {
  it('limit_conn addr 1: one request per key at a time', () => {
    const z = new ConnectionZone('addr', MB);
    const l: ConnectionLimit[] = [{ zone: z, conn: 1 }];
    const first = limitConnection(l, ['1.2.3.4']);
    expect(first).toMatchObject({ verdict: 'passed', zone: null, nomem: false, applied: true });
    expect(first.held).not.toBeNull();
    expect(limitConnection(l, ['1.2.3.4'])).toEqual<ConnectionOutcome>({
      verdict: 'rejected', zone: 'addr', nomem: false, applied: true, held: null,
    });
    expect(limitConnection(l, ['5.6.7.8']).verdict).toBe('passed');
    expect([z.count('1.2.3.4'), z.size, z.usedBytes]).toEqual([1, 2, 128]);
    first.held!.release();
    expect([z.count('1.2.3.4'), z.size, z.usedBytes]).toEqual([0, 1, 64]);
    first.held!.release(); // idempotent
    expect(z.size).toBe(1);
    expect(limitConnection(l, ['1.2.3.4']).verdict).toBe('passed');
  });

  it('counts up to conn, then refuses', () => {
    const z = new ConnectionZone('addr', MB);
    const l = [{ zone: z, conn: 3 }];
    const verdicts = Array.from({ length: 5 }, () => limitConnection(l, ['k']).verdict);
    expect(verdicts).toEqual(['passed', 'passed', 'passed', 'rejected', 'rejected']);
    expect(z.count('k')).toBe(3);
  });

  it('a later limit rejects: the counts this request took are released, the limits after it not looked at', () => {
    const perIp = new ConnectionZone('perip', MB);
    const perServer = new ConnectionZone('perserver', MB);
    const third = new ConnectionZone('third', MB);
    const l = [{ zone: perIp, conn: 10 }, { zone: perServer, conn: 1 }, { zone: third, conn: 10 }];
    const held = limitConnection(l, ['a', 'srv', 't']).held!;
    expect(limitConnection(l, ['b', 'srv', 't'])).toMatchObject({ verdict: 'rejected', zone: 'perserver' });
    expect([perIp.count('b'), perIp.size, perServer.count('srv'), third.count('t')]).toEqual([0, 1, 1, 1]);
    held.release();
    expect([perIp.size, perServer.size, third.size]).toEqual([0, 0, 0]);
  });

  it('keys empty or over 255 bytes skip their limit; none applied: no status, nothing held', () => {
    const z = new ConnectionZone('addr', MB);
    const long = 'x'.repeat(MAX_CONNECTION_KEY_BYTES + 1);
    expect(limitConnection([{ zone: z, conn: 1 }, { zone: z, conn: 1 }], ['', long])).toEqual<ConnectionOutcome>({
      verdict: 'passed', zone: null, nomem: false, applied: false, held: null,
    });
    const ok = limitConnection([{ zone: z, conn: 1 }], ['x'.repeat(MAX_CONNECTION_KEY_BYTES)]);
    expect(ok.verdict).toBe('passed');
    expect(z.usedBytes).toBe(512);
  });

  it('a full zone refuses a new key (nomem) and releases what the request took; no LRU', () => {
    const full = new ConnectionZone('small', MIN_ZONE_BYTES);
    const other = new ConnectionZone('other', MB);
    const key = (i: number): string => `k${i}`.padEnd(28, '.'); // 36 + 28 = 64 bytes
    const holds = [];
    for (let i = 0; i < 445; i++) holds.push(limitConnection([{ zone: full, conn: 1 }], [key(i)]));
    expect(holds.every((o) => o.verdict === 'passed')).toBe(true);
    expect(full.usedBytes).toBe(445 * 64);
    expect(limitConnection([{ zone: other, conn: 5 }, { zone: full, conn: 1 }], ['o', key(445)])).toEqual<ConnectionOutcome>({
      verdict: 'rejected', zone: 'small', nomem: true, applied: true, held: null,
    });
    expect([full.allocationFailures, other.size, full.size]).toEqual([1, 0, 445]);
    holds[0]!.held!.release();
    expect(limitConnection([{ zone: full, conn: 1 }], [key(445)]).verdict).toBe('passed');
  });

  it('dry run counts exactly as a normal run: a would-be rejection holds nothing, passes count', () => {
    const run = (dryRun: boolean): unknown[] => {
      const a = new ConnectionZone('a', MB);
      const b = new ConnectionZone('b', MB);
      const l = [{ zone: a, conn: 2 }, { zone: b, conn: 1 }];
      const out = [limitConnection(l, ['x', 'y'], dryRun), limitConnection(l, ['x', 'y'], dryRun), limitConnection(l, ['x', 'z'], dryRun)];
      return [...out.map((o) => [o.verdict, o.zone, o.held === null]), a.count('x'), b.count('y'), b.count('z')];
    };
    expect(run(true)).toEqual(run(false));
    expect(run(true)).toEqual([['passed', null, false], ['rejected', 'b', true], ['passed', null, false], 2, 1, 1]);
  });

  it('clear() forgets the counts; a hold taken before it releases nothing after', () => {
    const z = new ConnectionZone('addr', MB);
    const old = limitConnection([{ zone: z, conn: 1 }], ['k']).held!;
    z.clear();
    const fresh = limitConnection([{ zone: z, conn: 1 }], ['k']).held!;
    old.release();
    expect(z.count('k')).toBe(1);
    fresh.release();
    expect([z.size, z.usedBytes]).toEqual([0, 0]);
  });

  it('refuses a zone below 32k', () => {
    expect(() => new ConnectionZone('c', MIN_ZONE_BYTES - 1)).toThrow(/zone "c" is too small/);
  });
});
