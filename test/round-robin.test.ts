import { describe, expect, it } from 'vitest';
import { Upstream } from '../src/balancer/upstream.js';
import { loadConfig } from '../src/config/load.js';
import { type UpstreamConfig } from '../src/config/model.js';
import type { PickRequest } from '../src/balancer/policy.js';

async function upstream(servers: Record<string, unknown>[], extra: Record<string, unknown> = {}): Promise<Upstream> {
  const config = await loadConfig({
    servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://u' }] }],
    upstreams: { u: { servers, ...extra } },
  });
  return new Upstream(config.upstreams.get('u') as UpstreamConfig);
}

const request = {} as PickRequest;

function picks(up: Upstream, n: number, now = 1_000_000): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = up.select(request, null, now);
    out.push(p === null ? '-' : p.address);
    if (p) up.release(p, false, now);
  }
  return out;
}

describe('smooth weighted round robin (nginx)', () => {
  it('weights 5,1,1 give a a b a c a a', async () => {
    const up = await upstream([
      { address: '10.0.0.1:80', weight: 5 }, { address: '10.0.0.2:80' }, { address: '10.0.0.3:80' },
    ]);
    const names = picks(up, 7).map((n) => ({ '10.0.0.1:80': 'a', '10.0.0.2:80': 'b', '10.0.0.3:80': 'c' })[n]);
    expect(names.join(' ')).toBe('a a b a c a a');
  });

  it('weights 3,1,1,1 over 600 picks give exactly 300/100/100/100', async () => {
    const up = await upstream([
      { address: '10.0.0.1:80', weight: 3 }, { address: '10.0.0.2:80' }, { address: '10.0.0.3:80' }, { address: '10.0.0.4:80' },
    ]);
    const counts: Record<string, number> = {};
    for (const n of picks(up, 600)) counts[n] = (counts[n] ?? 0) + 1;
    expect(counts).toEqual({ '10.0.0.1:80': 300, '10.0.0.2:80': 100, '10.0.0.3:80': 100, '10.0.0.4:80': 100 });
  });

  it('a failure lowers effective weight by weight/maxFails and it recovers one unit per pick', async () => {
    const up = await upstream([
      { address: '10.0.0.1:80', weight: 4, maxFails: 2 }, { address: '10.0.0.2:80' },
    ]);
    const a = up.primary[0]!;
    const now = 1_000_000;
    const p = up.select(request, null, now)!;
    expect(p).toBe(a);
    up.release(a, true, now);
    expect(a.state.effectiveWeight).toBe(2); // 4 - 4/2
    expect(a.state.passiveFails).toBe(1);
    picks(up, 1, now);
    expect(a.state.effectiveWeight).toBe(3);
    picks(up, 1, now);
    expect(a.state.effectiveWeight).toBe(4);
    picks(up, 5, now);
    expect(a.state.effectiveWeight).toBe(4);
  });

  it('maxFails failures within failTimeout take a server out for failTimeout, then it is tried again', async () => {
    const up = await upstream([
      { address: '10.0.0.1:80', maxFails: 1, failTimeout: '10s' }, { address: '10.0.0.2:80' },
    ]);
    const [a, b] = up.primary as [typeof up.primary[0], typeof up.primary[0]];
    let now = 1_000_000;
    const first = up.select(request, null, now)!;
    expect(first).toBe(a);
    up.release(a, true, now);
    expect(picks(up, 4, now + 5_000)).toEqual([b.address, b.address, b.address, b.address]);
    now += 10_001;
    const names = picks(up, 4, now);
    expect(names).toContain(a.address);
    expect(a.state.passiveFails).toBe(0); // the success after the timeout cleared it
  });

  it('backup servers are used only when no primary is available; down never', async () => {
    const up = await upstream([
      { address: '10.0.0.1:80' }, { address: '10.0.0.2:80', down: true }, { address: '10.0.0.3:80', backup: true },
    ]);
    expect(new Set(picks(up, 10))).toEqual(new Set(['10.0.0.1:80']));
    const now = 1_000_000;
    const a = up.select(request, null, now)!;
    up.release(a, true, now);
    expect(new Set(picks(up, 5, now + 1))).toEqual(new Set(['10.0.0.3:80']));
  });

  it('a single-server upstream ignores maxFails, as nginx does', async () => {
    const up = await upstream([{ address: '10.0.0.1:80' }]);
    const now = 1_000_000;
    const a = up.select(request, null, now)!;
    up.release(a, true, now);
    expect(picks(up, 3, now + 1)).toEqual(['10.0.0.1:80', '10.0.0.1:80', '10.0.0.1:80']);
  });
});
