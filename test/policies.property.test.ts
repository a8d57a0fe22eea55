/**
 * Properties of the balancing policies (issue 4), checked with fast-check over random
 * weights, server lists and request streams. Policies are exercised through Upstream.select /
 * release, the same calls the proxy makes; no network is involved.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Upstream } from '../src/balancer/upstream.js';
import type { Peer } from '../src/balancer/peer.js';
import type { PickRequest } from '../src/balancer/policy.js';
import { RandomPolicy } from '../src/balancer/random.js';
import { loadConfig } from '../src/config/load.js';
import { type UpstreamConfig } from '../src/config/model.js';
import { prng } from './helpers/prng.js';

const NOW = 1_000_000;

async function upstream(servers: Record<string, unknown>[], balance?: unknown): Promise<Upstream> {
  const config = await loadConfig({
    servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://u' }] }],
    upstreams: { u: { servers, ...(balance === undefined ? {} : { balance }) } },
  });
  return new Upstream(config.upstreams.get('u') as UpstreamConfig);
}

function req(url = '/', remoteAddress = '127.0.0.1', headers: Record<string, string> = {}): PickRequest {
  return { req: { url, headers } as unknown as PickRequest['req'], remoteAddress };
}

/** One pick as the proxy makes it (select, then release as a success); the chosen name or "-". */
function pickOnce(up: Upstream, r: PickRequest, now = NOW): string {
  const p = up.select(r, null, now);
  if (p === null) return '-';
  up.release(p, false, now);
  return p.address;
}

function count(names: Iterable<string>): Map<string, number> {
  const m = new Map<string, number>();
  for (const n of names) m.set(n, (m.get(n) ?? 0) + 1);
  return m;
}


const weightsArb = fc.array(fc.integer({ min: 1, max: 10 }), { minLength: 2, maxLength: 6 });
const serversOf = (weights: number[]) => weights.map((weight, i) => ({ address: `10.0.0.${i + 1}:80`, weight }));

/** Distinct server addresses (random IPv4 and ports), as a consistent-hash ring sees them. */
const addressesArb = (min: number, max: number) => fc.uniqueArray(
  fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 }), fc.integer({ min: 1, max: 65535 }))
    .map(([a, b, c, port]) => `10.${a}.${b}.${c}:${port}`),
  { minLength: min, maxLength: max },
);

describe('round robin (default) share', () => {
  it('after any number of requests every server is within one request of weight/total', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.integer({ min: 1, max: 400 }), async (weights, n) => {
      const up = await upstream(serversOf(weights));
      const total = weights.reduce((a, b) => a + b, 0);
      const counts = count(Array.from({ length: n }, () => pickOnce(up, req())));
      weights.forEach((w, i) => {
        const got = counts.get(`10.0.0.${i + 1}:80`) ?? 0;
        expect(Math.abs(got - (n * w) / total)).toBeLessThanOrEqual(1);
      });
    }), { numRuns: 60 });
  });

  it('a request stream with retries (the first attempt fails) never repeats a server within one request', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.array(fc.boolean(), { minLength: 1, maxLength: 60 }), async (weights, fails) => {
      const up = await upstream(serversOf(weights).map((s) => ({ ...s, maxFails: 0 })));
      for (const fail of fails) {
        const tried = new Set<Peer>();
        const first = up.select(req(), null, NOW)!;
        tried.add(first);
        up.release(first, fail, NOW);
        if (fail) {
          const second = up.select(req(), tried, NOW)!;
          expect(second).not.toBe(first);
          up.release(second, false, NOW);
        }
      }
    }), { numRuns: 40 });
  });
});

describe('random share', () => {
  it('random: every server gets weight/total of 20k picks within 5 standard deviations', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.integer(), async (weights, seed) => {
      const up = await upstream(serversOf(weights), 'random');
      const policy = new RandomPolicy(false, prng(seed));
      const n = 20_000;
      const counts = count(Array.from({ length: n }, () => policy.pick(up.primary, null, req(), NOW)!.address));
      const total = weights.reduce((a, b) => a + b, 0);
      weights.forEach((w, i) => {
        const p = w / total;
        const got = counts.get(`10.0.0.${i + 1}:80`) ?? 0;
        expect(Math.abs(got - n * p)).toBeLessThanOrEqual(5 * Math.sqrt(n * p * (1 - p)) + 1);
      });
    }), { numRuns: 30 });
  });

  it('random through Upstream skips unavailable servers and falls back to round robin', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.integer({ min: 0, max: 5 }), async (weights, downIndex) => {
      const up = await upstream(serversOf(weights), 'random');
      const down = up.primary[downIndex % weights.length]!;
      down.down = true;
      const names = new Set(Array.from({ length: 300 }, () => pickOnce(up, req())));
      expect(names.has(down.address)).toBe(false);
      expect(names.has('-')).toBe(false);
    }), { numRuns: 30 });
  });

  it('random two: never picks the server with the most active requests; equal weights share evenly', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 2, maxLength: 6 }), fc.integer(),
      async (actives, seed) => {
        const up = await upstream(actives.map((_, i) => ({ address: `10.0.0.${i + 1}:80` })), { random: 'two', pick: 'least_conn' });
        const policy = new RandomPolicy(true, prng(seed));
        up.primary.forEach((p, i) => { p.active = actives[i]!; });
        const max = Math.max(...actives);
        const busiest = up.primary.filter((p) => p.active === max);
        for (let k = 0; k < 200; k++) {
          const p = policy.pick(up.primary, null, req(), NOW)!;
          if (busiest.length === 1) expect(p).not.toBe(busiest[0]);
          expect(p.active).toBeLessThanOrEqual(max);
        }
        // With no requests in flight the choice is even.
        up.primary.forEach((p) => { p.active = 0; });
        const n = 12_000;
        const counts = count(Array.from({ length: n }, () => policy.pick(up.primary, null, req(), NOW)!.address));
        const share = 1 / actives.length;
        for (const p of up.primary) {
          expect(Math.abs((counts.get(p.address) ?? 0) - n * share)).toBeLessThanOrEqual(5 * Math.sqrt(n * share * (1 - share)) + 1);
        }
      },
    ), { numRuns: 30 });
  });
});

describe('consistent hash (ketama)', () => {
  const KEYS = Array.from({ length: 10_000 }, (_, i) => `/item/${i}?v=${(i * 7919) % 1000}`);
  const balance = { hash: '$request_uri', consistent: true };

  async function mapping(addresses: string[], weights: Map<string, number>): Promise<Map<string, string>> {
    const up = await upstream(addresses.map((address) => ({ address, weight: weights.get(address) ?? 1 })), balance);
    const out = new Map<string, string>();
    for (const k of KEYS) out.set(k, pickOnce(up, req(k)));
    return out;
  }

  const ringArb = addressesArb(3, 8).chain((addresses) => fc.tuple(
    fc.constant(addresses),
    fc.array(fc.integer({ min: 1, max: 3 }), { minLength: addresses.length, maxLength: addresses.length }),
    fc.integer({ min: 0, max: addresses.length - 1 }),
  ));

  // The exact properties: only the changed server's keys move, all of them. How many that is
  // depends on the ring: a server with weight w has 160*w points, so its share of the ring is its
  // weight share give or take ~1/sqrt(160*w) relative (8% for weight 1). The bound below is 30%
  // relative (about 4 standard deviations for weight 1, more for heavier servers) plus 0.01 for
  // sampling 10k keys; a fixed +0.05 failed now and then for weights like 2,2,1 (0.456 > 0.45).
  it('removing or adding one of n servers remaps exactly its keys, about its weight share of 10k keys, and never moves a key between two unchanged servers', async () => {
    await fc.assert(fc.asyncProperty(ringArb, async ([addresses, ws, changedIndex]) => {
      const weights = new Map(addresses.map((a, i) => [a, ws[i]!]));
      const changed = addresses[changedIndex]!;
      const rest = addresses.filter((a) => a !== changed);
      const total = ws.reduce((a, b) => a + b, 0);
      const share = weights.get(changed)! / total;
      const all = await mapping(addresses, weights);
      const without = await mapping(rest, weights);

      let moved = 0;
      for (const k of KEYS) {
        const a = all.get(k)!;
        const b = without.get(k)!;
        expect(a).not.toBe('-');
        expect(b).not.toBe('-');
        if (a !== b) {
          moved++;
          // Removal: only keys of the removed server move. Adding it back: keys only move onto it.
          expect(a).toBe(changed);
        }
      }
      expect(moved / KEYS.length).toBeLessThanOrEqual(share * 1.3 + 0.01);
      // And the removed server's keys did move (it owned some).
      expect(moved).toBe([...all.values()].filter((s) => s === changed).length);
    }), { numRuns: 20 });
  });

  it('a weight changed at runtime (admin API) rebuilds the ring as if configured so', async () => {
    const addresses = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
    const live = await upstream(addresses.map((address) => ({ address })), balance);
    const configured = await upstream(addresses.map((address, i) => ({ address, weight: i === 1 ? 4 : 1 })), balance);
    live.primary[1]!.setWeight(4);
    const keys = KEYS.slice(0, 2000);
    expect(keys.map((k) => pickOnce(live, req(k)))).toEqual(keys.map((k) => pickOnce(configured, req(k))));
  });

  it('an unavailable server moves only its own keys, spread over the others', async () => {
    await fc.assert(fc.asyncProperty(ringArb, async ([addresses, ws, downIndex]) => {
      const up = await upstream(addresses.map((address, i) => ({ address, weight: ws[i]! })), balance);
      const before = KEYS.slice(0, 3000).map((k) => pickOnce(up, req(k)));
      const down = up.primary[downIndex]!;
      down.down = true;
      const after = KEYS.slice(0, 3000).map((k) => pickOnce(up, req(k)));
      const receivers = new Set<string>();
      before.forEach((b, i) => {
        if (b !== down.address) expect(after[i]).toBe(b);
        else receivers.add(after[i]!);
      });
      expect(receivers.has(down.address)).toBe(false);
      expect(receivers.has('-')).toBe(false);
    }), { numRuns: 20 });
  });
});

describe('hash (modulo, nginx)', () => {
  it('an unavailable server moves only its own keys', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.integer({ min: 0, max: 5 }), async (weights, downIndex) => {
      const up = await upstream(serversOf(weights), { hash: '$arg_id' });
      const keys = Array.from({ length: 2000 }, (_, i) => `/?id=${i}`);
      const before = keys.map((k) => pickOnce(up, req(k)));
      const down = up.primary[downIndex % weights.length]!;
      down.down = true;
      const after = keys.map((k) => pickOnce(up, req(k)));
      before.forEach((b, i) => {
        if (b !== down.address) expect(after[i]).toBe(b);
        else expect([down.address, '-']).not.toContain(after[i]);
      });
    }), { numRuns: 30 });
  });

  it('spreads keys by weight', async () => {
    const weights = [3, 1, 1, 1];
    const up = await upstream(serversOf(weights), { hash: '$cookie_PHPSESSID' });
    const n = 12_000;
    const counts = count(Array.from({ length: n }, (_, i) => pickOnce(up, req('/', '127.0.0.1', { cookie: `a=1; PHPSESSID=s${i}x` }))));
    weights.forEach((w, i) => {
      expect(Math.abs((counts.get(`10.0.0.${i + 1}:80`) ?? 0) / n - w / 6)).toBeLessThan(0.03);
    });
  });
});

describe('ip_hash', () => {
  it('sends every address of one /24 to one server, for any weights', async () => {
    await fc.assert(fc.asyncProperty(
      weightsArb, fc.integer({ min: 1, max: 223 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }),
      async (weights, a, b, c) => {
        const up = await upstream(serversOf(weights), 'ip_hash');
        const names = new Set<string>();
        for (let d = 0; d < 256; d++) names.add(pickOnce(up, req('/', `${a}.${b}.${c}.${d}`)));
        names.add(pickOnce(up, req('/', `::ffff:${a}.${b}.${c}.7`)));
        expect(names.size).toBe(1);
      },
    ), { numRuns: 60 });
  });

  it('an unavailable server moves only its own clients', async () => {
    await fc.assert(fc.asyncProperty(
      weightsArb, fc.integer({ min: 0, max: 5 }),
      fc.array(fc.tuple(fc.integer({ min: 1, max: 223 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })), { minLength: 50, maxLength: 200 }),
      async (weights, downIndex, nets) => {
        const up = await upstream(serversOf(weights), 'ip_hash');
        const clients = nets.map(([a, b, c]) => `${a}.${b}.${c}.1`);
        const before = clients.map((ip) => pickOnce(up, req('/', ip)));
        const down = up.primary[downIndex % weights.length]!;
        down.down = true;
        const after = clients.map((ip) => pickOnce(up, req('/', ip)));
        before.forEach((b, i) => {
          if (b !== down.address) expect(after[i]).toBe(b);
          else expect([down.address, '-']).not.toContain(after[i]);
        });
      },
    ), { numRuns: 40 });
  });

  it('IPv6 clients hash on the whole address', async () => {
    const up = await upstream(serversOf([1, 1, 1, 1]), 'ip_hash');
    const names = new Set<string>();
    for (let i = 0; i < 200; i++) names.add(pickOnce(up, req('/', `2001:db8::${i.toString(16)}`)));
    expect(names.size).toBeGreaterThan(1);
    expect(pickOnce(up, req('/', '2001:db8::1'))).toBe(pickOnce(up, req('/', '2001:0db8:0:0:0:0:0:1')));
  });
});

describe('least_conn', () => {
  it('picks a server with the fewest active requests relative to weight', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.tuple(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 0, max: 30 })), { minLength: 2, maxLength: 6 }),
      async (servers) => {
        const up = await upstream(servers.map(([weight], i) => ({ address: `10.0.0.${i + 1}:80`, weight })), 'least_conn');
        up.primary.forEach((p, i) => { p.active = servers[i]![1]; });
        const p = up.select(req(), null, NOW)!;
        for (const q of up.primary) {
          // p.active/p.weight <= q.active/q.weight, before p was counted active
          expect((p.active - 1) * q.state.weight).toBeLessThanOrEqual(q.active * p.state.weight);
        }
      },
    ), { numRuns: 100 });
  });

  it('ties are broken by smooth weighted round robin: exact weight shares among tied servers', async () => {
    await fc.assert(fc.asyncProperty(weightsArb, fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 5 }), async (weights, load, cycles) => {
      const up = await upstream(serversOf(weights), 'least_conn');
      // active proportional to weight: every server ties
      up.primary.forEach((p, i) => { p.active = load * weights[i]!; });
      const total = weights.reduce((a, b) => a + b, 0);
      const counts = count(Array.from({ length: total * cycles }, () => pickOnce(up, req())));
      weights.forEach((w, i) => expect(counts.get(`10.0.0.${i + 1}:80`) ?? 0).toBe(w * cycles));
    }), { numRuns: 60 });
  });

  it('a tie among some servers only rotates among those', async () => {
    const up = await upstream(serversOf([1, 1, 1, 1]), 'least_conn');
    const [a, b, c, d] = up.primary as [Peer, Peer, Peer, Peer];
    a.active = 2; b.active = 1; c.active = 2; d.active = 1;
    const names = Array.from({ length: 6 }, () => pickOnce(up, req()));
    expect(names).toEqual([b.address, d.address, b.address, d.address, b.address, d.address]);
  });
});

describe('every policy: down, failed, maxConns, tried and backup', () => {
  const policies: unknown[] = [
    'round_robin', 'least_conn', 'ip_hash', 'random', { random: 'two', pick: 'least_conn' },
    { hash: '$request_uri' }, { hash: '$request_uri', consistent: true },
  ];

  it.each(policies.map((p) => [JSON.stringify(p), p]))('%s never picks a down, failed, full or tried server', async (_name, balance) => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.constantFrom('ok', 'down', 'failed', 'full', 'unhealthy', 'drain', 'maint', 'tried'), { minLength: 2, maxLength: 6 }),
      async (states) => {
        const up = await upstream(states.map((_, i) => ({ address: `10.0.0.${i + 1}:80`, maxConns: 2 })), balance);
        const tried = new Set<Peer>();
        up.primary.forEach((p, i) => {
          const s = states[i]!;
          if (s === 'down') p.down = true;
          if (s === 'failed') { p.state.passiveFails = 1; p.state.checked = NOW; }
          if (s === 'full') p.active = 2;
          if (s === 'unhealthy') p.state.healthy = false;
          if (s === 'drain' || s === 'maint') p.state.adminState = s;
          if (s === 'tried') tried.add(p);
        });
        const usable = up.primary.filter((_, i) => states[i] === 'ok');
        for (let k = 0; k < 30; k++) {
          const p = up.select(req(`/k${k}`, `10.1.${k}.1`), tried, NOW);
          if (usable.length === 0 && !up.single) expect(p).toBeNull();
          if (p !== null) {
            if (!up.single) expect(usable).toContain(p);
            up.release(p, false, NOW);
          }
        }
      },
    ), { numRuns: 40 });
  });

  it('least_conn uses backup servers only when no primary can serve', async () => {
    const up = await upstream([{ address: '10.0.0.1:80' }, { address: '10.0.0.2:80' }, { address: '10.0.0.3:80', backup: true }], 'least_conn');
    expect(new Set(Array.from({ length: 10 }, () => pickOnce(up, req())))).toEqual(new Set(['10.0.0.1:80', '10.0.0.2:80']));
    up.primary.forEach((p) => { p.down = true; });
    expect(pickOnce(up, req())).toBe('10.0.0.3:80');
  });
});
