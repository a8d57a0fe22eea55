/**
 * /metrics: exact counts, failure and retry reasons, bounded labels, derived server
 * gauges, the admin allow-list, one registry per instance, counters across reloads.
 * Real backends on loopback, sessionlb in-process.
 */
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, load, request, type BackendHandler } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { parseMetrics, scrape, scrapeUntil, series, sum } from './helpers/prom.js';
import { loadConfig } from '../src/config/load.js';
import { startDemoBackend } from '../src/tools/demo.js';
import { memcachedAvailable, startMemcached } from './helpers/memcached.js';

const { cleanup, backend, lb } = useScope();


/** Answers by path: /app/missing -> 404, /app/fail -> 500, anything else 200. */
const byPath: BackendHandler = (req, res, b) => {
  req.resume();
  const status = req.url?.startsWith('/app/missing') ? 404 : req.url?.startsWith('/app/fail') ? 500 : 200;
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(b.name) });
  res.end(b.name);
};

describe('/metrics', () => {
  it('counts every request exactly, by virtual server, upstream and status class', async () => {
    const a = await backend('a', byPath);
    const b = await backend('b', byPath);
    const port = await freePort();
    const r = await lb({
      servers: [{
        listen: [`127.0.0.1:${port}`], serverName: ['www.example.com'],
        locations: [{ path: '/app/', proxyPass: 'http://backend' }],
      }],
      upstreams: { backend: { servers: [{ address: a.address, weight: 3 }, { address: b.address }] } },
    });
    const base = `http://127.0.0.1:${port}`;
    const ok = await load(`${base}/app/ok`, 150, 8);
    const missing = await load(`${base}/app/missing`, 30, 4);
    const failed = await load(`${base}/app/fail`, 12, 4);
    const local = await load(`${base}/elsewhere`, 20, 4);
    expect(ok.every((x) => x.status === 200)).toBe(true);
    expect(missing.every((x) => x.status === 404)).toBe(true);
    expect(failed.every((x) => x.status === 500)).toBe(true);
    expect(local.every((x) => x.status === 404)).toBe(true);

    const total = 150 + 30 + 12 + 20;
    const s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= total);
    const req = (labels: Record<string, string>): number => sum(s, 'sessionlb_http_requests_total', labels);
    expect(req({ server: 'www.example.com', upstream: 'backend', code: '2xx' })).toBe(150);
    expect(req({ server: 'www.example.com', upstream: 'backend', code: '4xx' })).toBe(30);
    expect(req({ server: 'www.example.com', upstream: 'backend', code: '5xx' })).toBe(12);
    // No matching location: answered by sessionlb itself, counted without an upstream.
    expect(req({ server: 'www.example.com', upstream: '', code: '4xx' })).toBe(20);
    expect(req({})).toBe(total);

    // The latency histogram counts the same requests; its buckets are cumulative and end at +Inf = count.
    const count = sum(s, 'sessionlb_http_request_duration_seconds_count', { upstream: 'backend' });
    expect(count).toBe(192);
    const buckets = series(s, 'sessionlb_http_request_duration_seconds_bucket', { upstream: 'backend' });
    expect(buckets.map((x) => x.labels.le)).toEqual(['0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '+Inf']);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    expect(buckets.at(-1)!.value).toBe(192);

    // Attempts per upstream server: every proxied request was one attempt, split 3:1 by weight.
    const attempts = (server: string, code: string): number => sum(s, 'sessionlb_upstream_requests_total', { upstream: 'backend', server, code });
    expect(attempts(a.address, '2xx') + attempts(b.address, '2xx')).toBe(150);
    expect(attempts(a.address, '4xx') + attempts(b.address, '4xx')).toBe(30);
    expect(attempts(a.address, '5xx') + attempts(b.address, '5xx')).toBe(12);
    expect(attempts(a.address, '2xx') + attempts(a.address, '4xx') + attempts(a.address, '5xx')).toBe(a.hits);
    expect(attempts(b.address, '2xx') + attempts(b.address, '4xx') + attempts(b.address, '5xx')).toBe(b.hits);
    expect(a.hits).toBe(144);
    expect(b.hits).toBe(48);
    expect(sum(s, 'sessionlb_upstream_response_seconds_count', { upstream: 'backend' })).toBe(192);
    // A 500 not listed in nextUpstream.on is passed through: not a failure, no retry.
    expect(sum(s, 'sessionlb_upstream_failures_total')).toBe(0);
    expect(sum(s, 'sessionlb_upstream_retries_total')).toBe(0);

    // Prometheus conventions and prom-client's default process metrics.
    expect(series(s, 'process_cpu_user_seconds_total').length).toBe(1);
    expect(series(s, 'nodejs_heap_size_used_bytes').length).toBe(1);
    expect(sum(s, 'sessionlb_config_reloads_total', { result: 'success' })).toBe(0);
    expect(sum(s, 'sessionlb_config_last_reload_success_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 120);
  });

  it('counts upstream failures and retries with their reasons', async () => {
    const good = await backend('good');
    const refusedPort = await freePort(); // nothing listens here
    const reset = await backend('reset', (req) => { req.socket.destroy(); });
    const unavailable = await backend('unavailable', (req, res) => {
      req.resume();
      res.writeHead(503, { 'Content-Length': 0 });
      res.end();
    });
    const r = await lb({
      upstreams: {
        backend: {
          // maxFails 0: failures never take a server out, so every round goes through each of them.
          servers: [
            { address: `127.0.0.1:${refusedPort}`, maxFails: 0 },
            { address: reset.address, maxFails: 0 },
            { address: unavailable.address, maxFails: 0 },
            { address: good.address, maxFails: 0 },
          ],
          nextUpstream: { on: ['error', 'timeout', 'http_503'] },
        },
      },
    });
    const N = 40;
    const res = await load(r.url + '/x', N, 4);
    expect(res.every((x) => x.status === 200)).toBe(true);
    expect(good.hits).toBe(N);

    const s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= N);
    expect(sum(s, 'sessionlb_http_requests_total', { upstream: 'backend', code: '2xx' })).toBe(N);
    const failures = (server: string, reason: string): number => sum(s, 'sessionlb_upstream_failures_total', { upstream: 'backend', server, reason });
    const refused = failures(`127.0.0.1:${refusedPort}`, 'refused');
    const resets = failures(reset.address, 'reset');
    const http5xx = failures(unavailable.address, 'http_5xx');
    expect(refused).toBeGreaterThan(0);
    expect(resets).toBe(reset.hits);
    expect(http5xx).toBe(unavailable.hits);
    expect(http5xx).toBeGreaterThan(0);
    // Each failure led to exactly one retry (a good server was always left), with the same reason.
    const retries = (reason: string): number => sum(s, 'sessionlb_upstream_retries_total', { upstream: 'backend', reason });
    expect(retries('refused')).toBe(refused);
    expect(retries('reset')).toBe(resets);
    expect(retries('http_5xx')).toBe(http5xx);
    expect(sum(s, 'sessionlb_upstream_failures_total')).toBe(refused + resets + http5xx);
    // Failed connections count as attempts in the 5xx class (nginx logs 502 for them).
    expect(sum(s, 'sessionlb_upstream_requests_total', { server: `127.0.0.1:${refusedPort}`, code: '5xx' })).toBe(refused);
    expect(sum(s, 'sessionlb_upstream_requests_total', { server: good.address, code: '2xx' })).toBe(N);
  });

  it('counts timeouts', async () => {
    const good = await backend('good');
    const silent = await backend('silent', (req) => { req.resume(); /* never answers */ });
    const r = await lb({
      upstreams: {
        backend: {
          servers: [{ address: silent.address, maxFails: 0 }, { address: good.address, maxFails: 0 }],
          timeouts: { read: '200ms' },
        },
      },
    });
    for (let i = 0; i < 2; i++) expect((await request(r.url + '/')).status).toBe(200);
    const s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 2);
    expect(sum(s, 'sessionlb_upstream_failures_total', { server: silent.address, reason: 'timeout' })).toBe(silent.hits);
    expect(sum(s, 'sessionlb_upstream_retries_total', { reason: 'timeout' })).toBe(silent.hits);
    expect(silent.hits).toBeGreaterThan(0);
  });

  it('never uses a path, query, client address or session id as a label value', async () => {
    const a = await backend('a');
    const r = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } } });
    const agent = new http.Agent({ keepAlive: true });
    const marks: string[] = [];
    const first = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const mark = `zq${Math.random().toString(36).slice(2, 10)}`;
        marks.push(mark);
        await request(`${r.url}/p/${mark}?q=${mark}`, {
          agent,
          headers: { Cookie: `PHPSESSID=${mark}sess0123456789abcdef`, 'X-Forwarded-For': `10.9.${i % 250}.7`, 'User-Agent': mark },
        });
      }
    };
    await first(10);
    const s1 = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 10);
    await first(60);
    const s2 = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 70);
    agent.destroy();
    const own = (x: typeof s1): typeof s1 => x.filter((v) => v.name.startsWith('sessionlb_'));
    // The set of series does not grow with distinct requests.
    expect(own(s2).length).toBe(own(s1).length);
    const labelNames = new Set(own(s2).flatMap((v) => Object.keys(v.labels)));
    for (const n of labelNames) expect(['server', 'upstream', 'code', 'reason', 'state', 'result', 'op', 'le']).toContain(n);
    const text = (await request(`http://127.0.0.1:${r.adminPort}/metrics`)).body;
    for (const m of marks) expect(text).not.toContain(m);
    expect(text).not.toContain('10.9.');
  });

  it('derives server up, state, effective weight and active connections at scrape time', async () => {
    const release: Array<() => void> = [];
    const slow = await backend('slow', (req, res) => {
      req.resume();
      release.push(() => { res.writeHead(200, { 'Content-Length': 2 }); res.end('ok'); });
    });
    const down = await backend('down');
    const r = await lb({
      upstreams: { backend: { servers: [{ address: slow.address, weight: 5 }, { address: down.address, down: true, weight: 2 }] } },
    });
    const pending = [0, 1, 2].map(() => request(r.url + '/'));
    const until = Date.now() + 5000;
    while (release.length < 3 && Date.now() < until) await new Promise((x) => setTimeout(x, 10));
    const s = await scrape(r.adminPort);
    expect(sum(s, 'sessionlb_upstream_active_connections', { server: slow.address })).toBe(3);
    expect(sum(s, 'sessionlb_downstream_connections')).toBeGreaterThanOrEqual(3);
    expect(sum(s, 'sessionlb_upstream_server_up', { server: slow.address })).toBe(1);
    expect(sum(s, 'sessionlb_upstream_server_up', { server: down.address })).toBe(0);
    expect(sum(s, 'sessionlb_upstream_server_state', { server: down.address, state: 'down' })).toBe(1);
    expect(sum(s, 'sessionlb_upstream_server_state', { server: down.address })).toBe(1);
    expect(sum(s, 'sessionlb_upstream_server_state', { server: slow.address, state: 'up' })).toBe(1);
    expect(series(s, 'sessionlb_upstream_server_state', { server: slow.address }).length).toBe(6);
    expect(sum(s, 'sessionlb_upstream_server_weight', { server: slow.address })).toBe(5);
    for (const f of release) f();
    await Promise.all(pending);
    const after = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_upstream_active_connections') === 0);
    expect(sum(after, 'sessionlb_upstream_active_connections')).toBe(0);
  });

  it('obeys admin.allow (403) and the admin token (401)', async () => {
    const a = await backend('a');
    const port = await freePort();
    const adminPort = await freePort();
    await lb({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}`, allow: ['10.0.0.0/8'] },
    });
    expect((await request(`http://127.0.0.1:${adminPort}/metrics`)).status).toBe(403);
    expect((await request(`http://127.0.0.1:${port}/`)).status).toBe(200); // the proxy itself is not restricted

    const port2 = await freePort();
    const admin2 = await freePort();
    await lb({
      servers: [{ listen: [`127.0.0.1:${port2}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
      admin: { listen: `127.0.0.1:${admin2}`, token: 'sekrit-token-123' },
    });
    expect((await request(`http://127.0.0.1:${admin2}/metrics`)).status).toBe(401);
    const ok = await request(`http://127.0.0.1:${admin2}/metrics`, { headers: { Authorization: 'Bearer sekrit-token-123' } });
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(parseMetrics(ok.body).length).toBeGreaterThan(10);
  });

  it('keeps one registry per instance and keeps counting across a reload', async () => {
    const a = await backend('a');
    const b = await backend('b');
    const one = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } } });
    const two = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } } });
    await load(one.url + '/', 25, 4);
    await load(two.url + '/', 5, 2);
    expect(sum(await scrapeUntil(one.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 25), 'sessionlb_http_requests_total')).toBe(25);
    expect(sum(await scrapeUntil(two.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 5), 'sessionlb_http_requests_total')).toBe(5);

    // Reload `one` with a second server: the counters go on from where they were.
    const raw = {
      servers: [{ listen: [`127.0.0.1:${one.port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }, { address: b.address }] } },
      admin: { listen: `127.0.0.1:${one.adminPort}` },
    };
    await one.lb.reload(await loadConfig(raw, '<test>'));
    await load(one.url + '/', 10, 2);
    const s = await scrapeUntil(one.adminPort, (x) => sum(x, 'sessionlb_http_requests_total') >= 35);
    expect(sum(s, 'sessionlb_http_requests_total', { code: '2xx' })).toBe(35);
    expect(sum(s, 'sessionlb_upstream_requests_total', { server: a.address })).toBe(25 + a.hits - 30);
    expect(sum(s, 'sessionlb_upstream_requests_total', { server: b.address })).toBe(b.hits);
    expect(series(s, 'sessionlb_upstream_server_up').length).toBe(2);
  });

  it('serves every metric that deploy/grafana/sessionlb.json and deploy/sessionlb-rules.yml use', async () => {
    const a = await backend('a');
    const r = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } } });
    const text = (await request(`http://127.0.0.1:${r.adminPort}/metrics`)).body;
    const served = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const root = join(import.meta.dirname, '..');
    for (const file of ['deploy/grafana/sessionlb.json', 'deploy/sessionlb-rules.yml']) {
      const used = new Set([...(await readFile(join(root, file), 'utf8')).matchAll(/\b((?:sessionlb|process|nodejs)_[a-z0-9_]+)/g)]
        .map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')));
      expect(used.size).toBeGreaterThan(3);
      for (const name of used) expect(served, `${file} uses ${name}`).toContain(name);
    }
  });
});

describe('/metrics: sticky sessions, session store, health checks, reloads', () => {
  it.skipIf(!memcachedAvailable())('counts sticky lookups, rebinds, store calls and the circuit breaker (real memcached)', async () => {
    const mc = await startMemcached();
    cleanup.push(() => mc.kill());
    const ports = [await freePort(), await freePort()];
    const servers = await Promise.all(ports.map((p, i) => startDemoBackend(`php-${i + 1}`, p)));
    cleanup.push(async () => { for (const x of servers) { x.close(); x.closeAllConnections(); } });
    const r = await lb({
      sessionStore: { type: 'memcached', servers: [mc.address], timeout: '100ms', maxFails: 2, failTimeout: '30s', hashKey: 'metrics-test-hash-key-0123' },
      upstreams: { backend: { sticky: { mode: 'learn', cookie: 'PHPSESSID' }, servers: ports.map((p) => ({ address: `127.0.0.1:${p}` })) } },
    });
    const first = await request(r.url + '/');
    const cookie = first.headers['set-cookie']![0]!.split(';')[0]!;
    const bound = first.headers['x-backend'];
    for (let i = 0; i < 10; i++) {
      const res = await request(r.url + '/', { headers: { Cookie: cookie } });
      expect(res.headers['x-backend']).toBe(bound);
    }
    await request(r.url + '/', { headers: { Cookie: 'PHPSESSID=not a valid id!' } });
    let s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_sticky_lookups_total') >= 11);
    const lookups = (result: string): number => sum(s, 'sessionlb_sticky_lookups_total', { upstream: 'backend', result });
    expect(lookups('local_hit') + lookups('store_hit')).toBe(10);
    expect(lookups('invalid_id')).toBe(1);
    expect(sum(s, 'sessionlb_sticky_lookups_total')).toBe(11);
    expect(sum(s, 'sessionlb_session_store_seconds_count', { op: 'set' })).toBeGreaterThanOrEqual(1);
    expect(sum(s, 'sessionlb_session_store_errors_total')).toBe(0);
    expect(sum(s, 'sessionlb_session_store_circuit_open')).toBe(0);

    // The bound server goes into maintenance: the session moves, counted with the reason.
    const boundPort = ports[Number(String(bound).slice(-1)) - 1]!;
    const put = await request(`http://127.0.0.1:${r.adminPort}/upstreams/backend/servers/127.0.0.1%3A${boundPort}`, {
      method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: '{"state":"maint"}',
    });
    expect(put.status).toBe(200);
    expect((await request(r.url + '/', { headers: { Cookie: cookie } })).headers['x-backend']).not.toBe(bound);
    s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_sticky_rebinds_total') >= 1);
    expect(sum(s, 'sessionlb_sticky_rebinds_total', { upstream: 'backend', reason: 'maint' })).toBe(1);
    expect(sum(s, 'sessionlb_sticky_rebinds_total')).toBe(1);

    // memcached gone: store calls fail, are counted, and the circuit breaker opens; requests still succeed.
    await mc.kill();
    for (let i = 0; i < 30 && sum(await scrape(r.adminPort), 'sessionlb_session_store_circuit_open') === 0; i++) {
      const res = await request(r.url + '/', { headers: { Cookie: `PHPSESSID=unknownsession${String(i).padStart(12, '0')}` } });
      expect(res.status).toBe(200);
    }
    s = await scrape(r.adminPort);
    expect(sum(s, 'sessionlb_session_store_circuit_open')).toBe(1);
    expect(sum(s, 'sessionlb_session_store_errors_total')).toBeGreaterThanOrEqual(2);
    expect(sum(s, 'sessionlb_sticky_lookups_total', { result: 'store_error' })).toBeGreaterThanOrEqual(1);
  });

  it('counts health probes by result', async () => {
    const healthy = await backend('healthy');
    const sick = await backend('sick', (req, res) => {
      req.resume();
      res.writeHead(req.url === '/health' ? 500 : 200, { 'Content-Length': 0 });
      res.end();
    });
    const r = await lb({
      upstreams: {
        backend: {
          healthCheck: { path: '/health', interval: '50ms', timeout: '1s', fails: 1, passes: 1 },
          servers: [{ address: healthy.address }, { address: sick.address }],
        },
      },
    });
    const s = await scrapeUntil(r.adminPort, (x) => sum(x, 'sessionlb_health_checks_total', { server: sick.address, result: 'fail' }) >= 3
      && sum(x, 'sessionlb_health_checks_total', { server: healthy.address, result: 'pass' }) >= 3);
    expect(sum(s, 'sessionlb_health_checks_total', { upstream: 'backend', server: sick.address, result: 'fail' })).toBeGreaterThanOrEqual(3);
    expect(sum(s, 'sessionlb_health_checks_total', { server: sick.address, result: 'pass' })).toBe(0);
    expect(sum(s, 'sessionlb_health_checks_total', { server: healthy.address, result: 'pass' })).toBeGreaterThanOrEqual(3);
    expect(sum(s, 'sessionlb_upstream_server_state', { server: sick.address, state: 'unhealthy' })).toBe(1);
    expect(sum(s, 'sessionlb_upstream_server_up', { server: sick.address })).toBe(0);
  });

  it('counts reloads from the config file by result', async () => {
    const a = await backend('a');
    const port = await freePort();
    const adminPort = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-metrics-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'lb.json');
    const raw = {
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}` },
    };
    await writeFile(file, JSON.stringify(raw));
    const r = await lb(raw);
    const before = sum(await scrape(adminPort), 'sessionlb_config_last_reload_success_timestamp_seconds');
    await new Promise((x) => setTimeout(x, 20));
    expect(await r.lb.reloadFromFile(file)).toBe(true);
    await writeFile(file, JSON.stringify({ ...raw, upstreams: { backend: { servers: [{ address: a.address, weight: 0 }] } } }));
    expect(await r.lb.reloadFromFile(file)).toBe(false);
    const s = await scrape(adminPort);
    expect(sum(s, 'sessionlb_config_reloads_total', { result: 'success' })).toBe(1);
    expect(sum(s, 'sessionlb_config_reloads_total', { result: 'failure' })).toBe(1);
    expect(sum(s, 'sessionlb_config_last_reload_success_timestamp_seconds')).toBeGreaterThan(before);
  });
});
