import net from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { freePort, request, startBackend } from './helpers/net.js';
import { startLBWithLog } from './helpers/capture-log.js';
import { NGINX, startNginx } from './helpers/nginx.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'slb-errpage-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('errorPage (nginx error_page)', () => {
  it('serves the server\'s file for a 502 (backend down), a location\'s own page instead, a redirect, and a changed file on reload', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'down.html'), '<h1>down for maintenance</h1>');
    await writeFile(join(dir, 'api.json'), '{"error":"unavailable"}');
    const dead = await freePort();
    const port = await freePort();
    const raw = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      upstreams: { backend: { servers: [{ address: `127.0.0.1:${dead}` }] } },
      servers: [{
        listen: [`127.0.0.1:${port}`],
        errorPage: [{ codes: [502, 503, 504], file: join(dir, 'down.html') }, { codes: [404], redirect: 'https://example.com/missing' }],
        locations: [
          { path: '/', proxyPass: 'http://backend' },
          { path: '/api/', proxyPass: 'http://backend', errorPage: [{ codes: [502], file: join(dir, 'api.json'), response: 503 }] },
          { path: '/nopage', match: '=', proxyPass: 'http://backend', errorPage: [] },
        ],
        ...extra,
      }],
    });
    const run = await startLBWithLog(raw());
    cleanups.push(() => run.stop());
    let r = await request(`http://127.0.0.1:${port}/x`);
    expect(r.status).toBe(502);
    expect(r.headers['content-type']).toBe('text/html');
    expect(r.body).toBe('<h1>down for maintenance</h1>');
    r = await request(`http://127.0.0.1:${port}/api/x`);
    expect(r.status).toBe(503);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.body).toBe('{"error":"unavailable"}');
    r = await request(`http://127.0.0.1:${port}/nopage`);
    expect(r.status).toBe(502);
    expect(r.body).toContain('502 Bad Gateway');

    // A reload reads the file again.
    await writeFile(join(dir, 'down.html'), '<h1>back soon</h1>');
    await run.lb.reload(await loadConfig(run.configFor(raw()), '<test>'));
    r = await request(`http://127.0.0.1:${port}/x`);
    expect(r.body).toBe('<h1>back soon</h1>');
  });

  it('redirects with a URL page, for sessionlb\'s own 404', async () => {
    const port = await freePort();
    const run = await startLBWithLog({
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
      servers: [{
        listen: [`127.0.0.1:${port}`],
        errorPage: [{ codes: [404], redirect: 'https://example.com/missing' }],
        locations: [{ path: '/app/', proxyPass: 'http://backend' }],
      }],
    });
    cleanups.push(() => run.stop());
    const r = await request(`http://127.0.0.1:${port}/elsewhere`);
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe('https://example.com/missing');
  });

  it('refuses a missing file (naming it) and a "uri" that is not a local URI', async () => {
    const dir = await tempDir();
    const missing = join(dir, 'nope.html');
    const base = { upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } } };
    const server = (errorPage: unknown): Record<string, unknown> => ({
      ...base, servers: [{ listen: ['127.0.0.1:1'], errorPage, locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    });
    await expect(loadConfig(server([{ codes: [502], file: missing }]))).rejects.toThrow(/nope\.html: no such file/);
    await expect(loadConfig(server([{ codes: [404], uri: 'http://elsewhere/404.html' }]))).rejects.toThrow(/uri: must be a local URI/);
    await expect(loadConfig(server([{ codes: [404], uri: '/404.html', file: missing }]))).rejects.toThrow(/needs exactly one of/);
    await expect(loadConfig({ ...base, errorPage: [{ codes: [502], file: missing }], servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://backend' }] }] }))
      .rejects.toThrow(/errorPage/);
  });

  it('a reload with a missing file fails and keeps the page in use', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'down.html'), 'old page');
    const port = await freePort();
    const raw = (file: string): Record<string, unknown> => ({
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
      errorPage: [{ codes: [502], file }],
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    });
    const run = await startLBWithLog(raw(join(dir, 'down.html')));
    cleanups.push(() => run.stop());
    await expect(loadConfig(run.configFor(raw(join(dir, 'gone.html'))), '<test>')).rejects.toThrow(/gone\.html/);
    const r = await request(`http://127.0.0.1:${port}/`);
    expect(r.status).toBe(502);
    expect(r.body).toBe('old page');
  });
});

describe.skipIf(NGINX === null && process.env.CI !== 'true')('errorPage "uri" (nginx\'s internal redirect) against nginx', () => {
  it('the page comes through the location that takes the URI, with the error\'s status (or the rule\'s); GET without the body; once; no recursion', async () => {
    const seen: string[] = [];
    const pages = await startBackend('pages', (req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => { body += d.toString(); });
      req.on('end', () => {
        seen.push(`${req.method} ${req.url} ${req.headers['content-length'] ?? '-'} ${body.length}`);
        res.setHeader('Content-Type', 'text/html');
        res.end(`<p>page ${req.url} for ${String(req.headers['x-real-ip'] ?? '?')}</p>`);
      });
    });
    cleanups.push(() => pages.close());
    const dead = await freePort();
    const [nginxPort, lbPort] = [await freePort(), await freePort()];
    const nginx = await startNginx(nginxPort, `
      upstream dead { server 127.0.0.1:${dead}; }
      upstream pages { server ${pages.address}; }
      server {
        listen 127.0.0.1:${nginxPort};
        server_name site;
        error_page 502 /errors/502.html;
        error_page 404 =200 /errors/missing.html;
        location /errors/ { proxy_pass http://pages; proxy_set_header X-Real-IP $remote_addr; }
        location /app/ { proxy_pass http://dead; }
      }
      server {
        listen 127.0.0.1:${nginxPort};
        server_name loop;
        error_page 502 /errors/502.html;
        location / { proxy_pass http://dead; }
      }`);
    cleanups.push(() => nginx.stop());
    const run = await startLBWithLog({
      upstreams: { dead: { servers: [{ address: `127.0.0.1:${dead}` }] }, pages: { servers: [{ address: pages.address }] } },
      servers: [
        {
          listen: [`127.0.0.1:${lbPort}`], serverName: ['site'],
          errorPage: [{ codes: [502], uri: '/errors/502.html' }, { codes: [404], uri: '/errors/missing.html', response: 200 }],
          locations: [
            { path: '/errors/', proxyPass: 'http://pages' }, // X-Real-IP: sent by default
            { path: '/app/', proxyPass: 'http://dead' },
          ],
        },
        { listen: [`127.0.0.1:${lbPort}`], serverName: ['loop'], errorPage: [{ codes: [502], uri: '/errors/502.html' }], locations: [{ path: '/', proxyPass: 'http://dead' }] },
      ],
    });
    cleanups.push(() => run.stop());
    const ask = async (port: number, host: string, method: string, path: string, body?: string): Promise<{ status: number; body: string; type: unknown }> => {
      const r = await request(`http://127.0.0.1:${port}${path}`, { method, headers: { Host: host }, body });
      return { status: r.status, body: r.body, type: r.headers['content-type'] };
    };
    const cases: Array<[string, string, string, string | undefined]> = [
      ['site', 'GET', '/app/x', undefined],
      ['site', 'POST', '/app/form', 'a=1&b=2'],
      ['site', 'HEAD', '/app/x', undefined],
      ['site', 'GET', '/nowhere', undefined],
    ];
    for (const [host, method, path, body] of cases) {
      seen.length = 0;
      const theirs = await ask(nginxPort, host, method, path, body);
      const nginxSaw = [...seen];
      seen.length = 0;
      const ours = await ask(lbPort, host, method, path, body);
      expect(ours, `${method} ${path}`).toEqual(theirs);
      // The same method and URI; nginx also resends the client's body with that GET (it was read
      // already), sessionlb sends none (a documented difference).
      const requestLine = (l: string): string => l.split(' ').slice(0, 2).join(' ');
      expect(seen.map(requestLine), `${method} ${path}: what the pages backend got`).toEqual(nginxSaw.map(requestLine));
      expect(seen.every((l) => l.endsWith(' - 0'))).toBe(true);
    }
    // The page's own request failing: the built-in page (nginx: recursive_error_pages off).
    const theirs = await ask(nginxPort, 'loop', 'GET', '/x');
    const ours = await ask(lbPort, 'loop', 'GET', '/x');
    expect(ours.status).toBe(theirs.status);
    expect(ours.body).toContain('502 Bad Gateway');
    // One request each in the metrics (the page's request is not a client request).
    const metrics = await request(`http://127.0.0.1:${run.adminPort}/metrics`);
    const total = metrics.body.split('\n').filter((l) => l.startsWith('sessionlb_http_requests_total{'))
      .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    expect(total).toBe(cases.length + 1);
  });
});

describe('errorPage "uri" for an error that closes the connection', () => {
  it('a 413 page through a location reaches a client still uploading (its body is read and dropped after it, nginx\'s lingering close)', async () => {
    const pages = await startBackend('pages', (req, res) => { req.resume(); req.on('end', () => res.end('<p>too large page</p>')); });
    cleanups.push(() => pages.close());
    const run = await startLBWithLog({
      upstreams: { pages: { servers: [{ address: pages.address }] } },
      servers: [{ listen: [`127.0.0.1:${await freePort()}`], clientMaxBodySize: '1k', errorPage: [{ codes: [413], uri: '/errors/413.html' }], locations: [{ path: '/', proxyPass: 'http://pages' }] }],
    });
    cleanups.push(() => run.stop());
    const port = run.lb.addresses().values().next().value!;
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      outcomes.push(await new Promise<string>((done) => {
        const s = net.connect(port, '127.0.0.1');
        let got = '';
        let finished = false;
        const finish = (what: string): void => { if (!finished) { finished = true; s.destroy(); done(what); } };
        s.on('data', (d: Buffer) => { got += d.toString(); if (got.includes('</p>')) finish(got.split(' ').slice(0, 2).join(' ')); });
        s.on('error', (e: NodeJS.ErrnoException) => finish(`no page: ${e.code ?? e.message}`));
        s.on('end', () => finish(`no page: FIN after ${JSON.stringify(got.slice(0, 40))}`));
        // A client busy uploading 4 MB reads the answer only once its body is written.
        s.pause();
        s.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n');
        const chunk = Buffer.alloc(65536, 97);
        let sent = 0;
        const pump = (): void => {
          while (sent + chunk.length < 4_000_000) {
            sent += chunk.length;
            if (!s.write(chunk)) { s.once('drain', pump); return; }
          }
          s.write(Buffer.alloc(4_000_000 - sent, 97));
          s.resume();
        };
        setTimeout(pump, 20);
      }));
    }
    expect(outcomes).toEqual(['HTTP/1.1 413', 'HTTP/1.1 413', 'HTTP/1.1 413']);
  });
});

describe('maintenance switch (PUT /servers/{name}/maintenance)', () => {
  function put(adminPort: number, name: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    return request(`http://127.0.0.1:${adminPort}/servers/${encodeURIComponent(name)}/maintenance`, {
      method: 'PUT', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body),
    });
  }

  it('answers every request of that server with its 503 page, the backend gets nothing; off: traffic again; kept across reload and restart', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'maint.html'), '<h1>maintenance</h1>');
    let hits = 0;
    const backend = await startBackend('b', (req, res) => { hits++; req.resume(); res.end('b'); });
    cleanups.push(() => backend.close());
    const port = await freePort();
    const stateFile = join(dir, 'state.json');
    const raw: Record<string, unknown> = {
      stateFile,
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      servers: [
        { listen: [`127.0.0.1:${port}`], serverName: ['shop.example'], errorPage: [{ codes: [503], file: join(dir, 'maint.html') }], locations: [{ path: '/', proxyPass: 'http://backend' }] },
        { listen: [`127.0.0.1:${port}`], serverName: ['other.example'], locations: [{ path: '/', proxyPass: 'http://backend' }] },
      ],
    };
    const get = (host: string): Promise<{ status: number; body: string; headers: Record<string, unknown> }> =>
      request(`http://127.0.0.1:${port}/x`, { headers: { host } });
    let run = await startLBWithLog(raw);
    let stopped = false;
    cleanups.push(async () => { if (!stopped) await run.stop(); });

    expect((await get('shop.example')).body).toBe('b');
    expect((await put(run.adminPort, 'nope.example', { on: true })).status).toBe(404);
    expect((await put(run.adminPort, 'shop.example', { on: 'yes' })).status).toBe(400);
    let r = await put(run.adminPort, 'shop.example', { on: true });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ server: 'shop.example', maintenance: true });
    expect(run.records.some((x) => x.server === 'shop.example' && x.maintenance === true && x.client === '127.0.0.1')).toBe(true);
    hits = 0;
    const m = await get('shop.example');
    expect(m.status).toBe(503);
    expect(m.body).toBe('<h1>maintenance</h1>');
    expect(hits).toBe(0);
    // A WebSocket upgrade gets no tunnel either.
    const upgrade = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET /ws HTTP/1.1\r\nHost: shop.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => { text += d.toString(); });
      s.on('close', () => resolve(text));
      s.on('error', reject);
    });
    expect(upgrade).toMatch(/^HTTP\/1\.1 503 /);
    expect(hits).toBe(0);
    expect((await get('other.example')).body).toBe('b'); // only that server
    const status = JSON.parse((await request(`http://127.0.0.1:${run.adminPort}/status`)).body) as { servers: Record<string, unknown> };
    expect(status.servers).toEqual({ 'shop.example': { maintenance: true }, 'other.example': { maintenance: false } });

    // A reload keeps it.
    await run.lb.reload(await loadConfig(run.configFor(raw), '<test>'));
    expect((await get('shop.example')).status).toBe(503);
    // A restart with the stateFile keeps it.
    await run.lb.stop(2000);
    stopped = true;
    expect(JSON.parse(await readFile(stateFile, 'utf8'))).toMatchObject({ maintenance: ['shop.example'] });
    run = await startLBWithLog(raw);
    stopped = false;
    expect((await get('shop.example')).status).toBe(503);
    expect(hits).toBe(1); // other.example's

    r = await put(run.adminPort, 'shop.example', { on: false });
    expect(JSON.parse(r.body)).toEqual({ server: 'shop.example', maintenance: false });
    expect((await get('shop.example')).body).toBe('b');
    expect(hits).toBe(2);
  });

  it('without an errorPage for 503, the default page; the admin token applies', async () => {
    const backend = await startBackend('b');
    cleanups.push(() => backend.close());
    const run = await startLBWithLog({ admin: { token: 'secret-token-123' }, upstreams: { backend: { servers: [{ address: backend.address }] } } });
    cleanups.push(() => run.stop());
    expect((await put(run.adminPort, '_', { on: true })).status).toBe(401);
    expect((await put(run.adminPort, '_', { on: true }, { Authorization: 'Bearer secret-token-123' })).status).toBe(200);
    const r = await request(`${run.url}/`);
    expect(r.status).toBe(503);
    expect(r.body).toContain('503 Service Unavailable');
  });
});
