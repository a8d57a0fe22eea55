/**
 * Issue 4 integration tests: every balancing policy through the real proxy, in front of
 * real HTTP backends on loopback. Loops are bounded in count; timeouts are generous.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { tally, type BackendHandler } from './helpers/net.js';
import { useScope } from './helpers/scope.js';

const { backends, lb: lbWith } = useScope();

interface Result { status: number; backend: string }

/**
 * Sends `count` GETs with `concurrency` in flight over keep-alive; request i uses
 * path `/item/<i % keys>` and cookie PHPSESSID=s<i % keys>, so hash policies see `keys` keys.
 */
async function run(url: string, count: number, concurrency: number, keys = 50): Promise<Result[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const out: Result[] = new Array(count);
  let next = 0;
  const one = (i: number): Promise<Result> => new Promise((resolve) => {
    const k = i % keys;
    const req = http.get(`${url}/item/${k}`, { agent, headers: { Cookie: `PHPSESSID=s${k}` }, timeout: 20_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, backend: String(res.headers['x-backend'] ?? '') }));
      res.on('error', () => resolve({ status: 0, backend: '' }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, backend: err.message }));
  });
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      out[i] = await one(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return out;
}

/** A backend that answers after `delayMs` (its name in X-Backend). */
const delayed = (delayMs: number): BackendHandler => (req, res, b) => {
  req.resume();
  req.on('end', () => {
    setTimeout(() => {
      res.writeHead(200, { 'X-Backend': b.name, 'Content-Length': Buffer.byteLength(b.name) });
      res.end(b.name);
    }, delayMs);
  });
};

describe('least_conn under concurrent load', () => {
  it('a slow backend receives proportionally fewer requests', async () => {
    const fast = await backends(['fast1', 'fast2'], delayed(2));
    const [slow] = await backends(['slow'], delayed(150));
    const lb = await lbWith({
      upstreams: { backend: { balance: 'least_conn', servers: [...fast, slow!].map((b) => ({ address: b.address })) } },
    });
    const results = await run(lb.url, 300, 12);
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    const counts = tally(results.map((r) => r.backend));
    if (process.env.POLICY_TEST_VERBOSE) console.log('least_conn tally', counts);
    // Round robin would give each a third (100). With 12 in flight, the slow one holds
    // several requests at once and least_conn sends new ones to the fast servers.
    expect(counts.slow ?? 0).toBeLessThan(300 / 6);
    expect(counts.fast1 ?? 0).toBeGreaterThan(2 * (counts.slow ?? 0));
    expect(counts.fast2 ?? 0).toBeGreaterThan(2 * (counts.slow ?? 0));
  });

  it('round robin for comparison gives the slow backend its full third', async () => {
    const fast = await backends(['fast1', 'fast2'], delayed(2));
    const [slow] = await backends(['slow'], delayed(150));
    const lb = await lbWith({
      upstreams: { backend: { servers: [...fast, slow!].map((b) => ({ address: b.address })) } },
    });
    const results = await run(lb.url, 120, 12);
    expect(tally(results.map((r) => r.backend))).toEqual({ fast1: 40, fast2: 40, slow: 40 });
  });
});

describe('every policy with one backend killed', () => {
  const policies: Array<[string, unknown]> = [
    ['round_robin', 'round_robin'],
    ['least_conn', 'least_conn'],
    ['ip_hash', 'ip_hash'],
    ['hash $request_uri', { hash: '$request_uri' }],
    ['hash $cookie_PHPSESSID consistent', { hash: '$cookie_PHPSESSID', consistent: true }],
    ['random', 'random'],
    ['random two least_conn', { random: 'two', pick: 'least_conn' }],
  ];

  it.each(policies)('%s: no failed GETs, and the dead backend gets nothing', async (_name, balance) => {
    const bs = await backends(['a', 'b', 'c']);
    const lb = await lbWith({
      upstreams: { backend: { balance, servers: bs.map((b) => ({ address: b.address })) } },
    });
    const before = await run(lb.url, 60, 4);
    expect(before.filter((r) => r.status !== 200)).toEqual([]);
    // Kill the backend that served the most (for ip_hash: the only one this client uses).
    const counts = tally(before.map((r) => r.backend));
    const victimName = Object.entries(counts).sort((x, y) => y[1] - x[1])[0]![0];
    const victim = bs.find((b) => b.name === victimName)!;
    await victim.close();
    const hitsAtKill = victim.hits;

    const after = await run(lb.url, 90, 4);
    expect(after.filter((r) => r.status !== 200)).toEqual([]);
    expect(after.filter((r) => r.backend === victimName)).toEqual([]);
    expect(victim.hits).toBe(hitsAtKill);
    expect(new Set(after.map((r) => r.backend)).size).toBeGreaterThanOrEqual(1);
  });

  it('hash consistent: keys of the live backends stay where they were', async () => {
    const bs = await backends(['a', 'b', 'c']);
    const lb = await lbWith({
      upstreams: { backend: { balance: { hash: '$cookie_PHPSESSID', consistent: true }, servers: bs.map((b) => ({ address: b.address })) } },
    });
    const before = await run(lb.url, 60, 1, 60);
    const victim = bs[0]!;
    await victim.close();
    const after = await run(lb.url, 60, 1, 60);
    expect(after.filter((r) => r.status !== 200)).toEqual([]);
    before.forEach((r, i) => {
      if (r.backend !== victim.name) expect(after[i]!.backend).toBe(r.backend);
      else expect(after[i]!.backend).not.toBe(victim.name);
    });
  });
});
