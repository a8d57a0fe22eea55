/**
 * Issue 17: addHeader (nginx add_header, with `always` and its inheritance), proxyHideHeader
 * (proxy_hide_header) and ignoreInvalidHeaders (ignore_invalid_headers) on real backends, against
 * real nginx on a table of requests where it is installed; and the importer's mapping.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { NGINX, startNginx } from './helpers/nginx.js';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';
import type { BackendHandler } from './helpers/net.js';

const { cleanup, backend, lb } = useScope();
const skipNginx = NGINX === null && process.env.CI !== 'true';

/** 200 by default, 404 for paths with "404", 500 for "500"; X-Powered-By; the request header names it got in the body. */
const app: BackendHandler = (req, res) => {
  req.resume();
  const url = req.url ?? '/';
  const status = url.includes('404') ? 404 : url.includes('500') ? 500 : 200;
  const names: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) names.push(req.rawHeaders[i]!.toLowerCase());
  const body = JSON.stringify(names.sort());
  res.writeHead(status, { 'Content-Type': 'application/json', 'X-Powered-By': 'PHP/8.3', 'X-Secret': 's', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
};

const WATCHED = ['strict-transport-security', 'x-frame-options', 'x-loc', 'x-host', 'x-powered-by', 'x-secret', 'x-srv', 'x-always'];

interface Answer { status: number; headers: Record<string, string>; sent: string[] | null }

function ask(port: number, path: string, extra: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, headers: { Host: 'site.test', ...extra } }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        const headers: Record<string, string> = {};
        for (const h of WATCHED) if (res.headers[h] !== undefined) headers[h] = String(res.headers[h]);
        let sent: string[] | null = null;
        if ((res.headers['content-type'] ?? '').startsWith('application/json')) {
          sent = (JSON.parse(body) as string[]).filter((n) => n.startsWith('x-t'));
        }
        resolve({ status: res.statusCode ?? 0, headers, sent });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The same settings for nginx and sessionlb. */
function configs(appAddress: string, deadAddress: string, port: number, lbPort: number): { nginx: string; lb: Record<string, unknown> } {
  const nginx = `
upstream app { server ${appAddress}; }
upstream dead { server ${deadAddress}; }
server {
  listen 127.0.0.1:${port};
  server_name site.test;
  add_header Strict-Transport-Security "max-age=63072000";
  add_header X-Frame-Options DENY always;
  add_header X-Host "h=$host";
  proxy_hide_header X-Powered-By;
  location / { proxy_pass http://app; }
  location /own/ { add_header X-Loc own; proxy_pass http://app; }
  location /hide/ { proxy_hide_header X-Secret; proxy_pass http://app; }
  location /dead/ { proxy_pass http://dead; }
  location = /moved { return 301 /new; }
  location = /gone { return 410; }
  location /denied/ { deny all; proxy_pass http://app; }
}
server {
  listen 127.0.0.1:${port};
  server_name loose.test;
  ignore_invalid_headers off;
  underscores_in_headers on;
  location / { proxy_pass http://app; }
}
server {
  listen 127.0.0.1:${port};
  server_name redirect.test;
  add_header X-Srv redirect;
  add_header X-Always yes always;
  return 301 https://$host$request_uri;
}
server {
  listen 127.0.0.1:${port};
  server_name partial.test;
  add_header X-Srv partial;
  add_header X-Always yes always;
  location /only/ { proxy_pass http://app; }
}
`;
  const lbConfig = {
    upstreams: { app: { servers: [{ address: appAddress }] }, dead: { servers: [{ address: deadAddress }] } },
    servers: [
      {
        listen: [`127.0.0.1:${lbPort}`], serverName: ['site.test'], default: true,
        addHeader: { 'Strict-Transport-Security': 'max-age=63072000', 'X-Frame-Options': { value: 'DENY', always: true }, 'X-Host': 'h=$host' },
        proxyHideHeader: ['X-Powered-By'],
        locations: [
          { path: '/', proxyPass: 'http://app' },
          { path: '/own/', proxyPass: 'http://app', addHeader: { 'X-Loc': 'own' } },
          { path: '/hide/', proxyPass: 'http://app', proxyHideHeader: ['X-Secret'] },
          { path: '/dead/', proxyPass: 'http://dead' },
          { path: '/moved', match: '=', return: { code: 301, url: '/new' } },
          { path: '/gone', match: '=', return: { code: 410 } },
          { path: '/denied/', proxyPass: 'http://app', access: [{ deny: 'all' }] },
        ],
      },
      {
        listen: [`127.0.0.1:${lbPort}`], serverName: ['loose.test'], ignoreInvalidHeaders: false,
        locations: [{ path: '/', proxyPass: 'http://app' }],
      },
      {
        listen: [`127.0.0.1:${lbPort}`], serverName: ['redirect.test'],
        addHeader: { 'X-Srv': 'redirect', 'X-Always': { value: 'yes', always: true } },
        return: { code: 301, url: 'https://$host$request_uri' },
      },
      {
        listen: [`127.0.0.1:${lbPort}`], serverName: ['partial.test'],
        addHeader: { 'X-Srv': 'partial', 'X-Always': { value: 'yes', always: true } },
        locations: [{ path: '/only/', proxyPass: 'http://app' }],
      },
    ],
  };
  return { nginx, lb: lbConfig };
}

const PATHS = ['/', '/a404', '/a500', '/own/', '/own/404', '/hide/', '/dead/', '/moved', '/gone', '/denied/'];
/** Request header names: valid, with "_", with "." and others node's parser passes. */
const ODD_HEADERS = { 'X-Tok': '1', 'X-T_under': '1', 'X-T.dot': '1', 'X-T!bang': '1', 'X-T~tilde': '1' };

async function setUp(): Promise<{ lbPort: number }> {
  const a = await backend('app', app);
  const deadPort = await freePort();
  const lbPort = await freePort();
  const c = configs(a.address, `127.0.0.1:${deadPort}`, 0, lbPort);
  await lb(c.lb);
  return { lbPort };
}

describe('addHeader, proxyHideHeader, ignoreInvalidHeaders', () => {
  it('adds on 200 and redirects, not on an upstream 404 unless always; a location with its own loses the server\'s', async () => {
    const { lbPort } = await setUp();
    const ok = await ask(lbPort, '/');
    expect(ok.status).toBe(200);
    expect(ok.headers).toEqual({ 'strict-transport-security': 'max-age=63072000', 'x-frame-options': 'DENY', 'x-host': 'h=site.test', 'x-secret': 's' });
    const missing = await ask(lbPort, '/a404');
    expect(missing.status).toBe(404);
    expect(missing.headers).toEqual({ 'x-frame-options': 'DENY', 'x-secret': 's' });
    const own = await ask(lbPort, '/own/');
    expect(own.headers).toEqual({ 'x-loc': 'own', 'x-secret': 's' });
    const hide = await ask(lbPort, '/hide/');
    // proxyHideHeader of the location replaces the server's list: X-Powered-By passes again, X-Secret does not.
    expect(hide.headers).toMatchObject({ 'x-powered-by': 'PHP/8.3' });
    expect(hide.headers['x-secret']).toBeUndefined();
    const dead = await ask(lbPort, '/dead/');
    expect(dead.status).toBe(502);
    expect(dead.headers).toEqual({ 'x-frame-options': 'DENY' });
    const moved = await ask(lbPort, '/moved');
    expect(moved.status).toBe(301);
    expect(moved.headers).toEqual({ 'strict-transport-security': 'max-age=63072000', 'x-frame-options': 'DENY', 'x-host': 'h=site.test' });
    expect((await ask(lbPort, '/denied/')).headers).toEqual({ 'x-frame-options': 'DENY' });
    // No location chosen (a server-level return, a path no location takes): the server's own.
    expect((await ask(lbPort, '/x', { Host: 'redirect.test' })).headers).toEqual({ 'x-srv': 'redirect', 'x-always': 'yes' });
    const unmatched = await ask(lbPort, '/elsewhere', { Host: 'partial.test' });
    expect(unmatched.status).toBe(404);
    expect(unmatched.headers).toEqual({ 'x-always': 'yes' });
  });

  it('drops request header names nginx finds invalid unless ignoreInvalidHeaders is false', async () => {
    const { lbPort } = await setUp();
    const strict = await ask(lbPort, '/', ODD_HEADERS);
    expect(strict.sent).toEqual(['x-tok']);
    const loose = await new Promise<string[]>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: lbPort, path: '/', agent: false, headers: { Host: 'loose.test', ...ODD_HEADERS } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve((JSON.parse(body) as string[]).filter((n) => n.startsWith('x-t'))));
      });
      req.on('error', reject);
      req.end();
    });
    expect(loose).toEqual(['x-t!bang', 'x-t.dot', 'x-t_under', 'x-tok', 'x-t~tilde']);
  });

  it('refuses an unknown variable in addHeader', async () => {
    const port = await freePort();
    await expect(lb({
      servers: [{ listen: [`127.0.0.1:${port}`], addHeader: { 'X-A': '$nope' }, locations: [{ path: '/', return: { code: 204 } }] }],
    })).rejects.toThrow(/servers\[0\]\.addHeader\.X-A|unknown variable/);
  });
});

describe.skipIf(skipNginx)('response headers: the same as nginx', () => {
  it('answers a table of requests with the same added, hidden and passed headers', async () => {
    const a = await backend('app', app);
    const deadPort = await freePort();
    const nginxPort = await freePort();
    const lbPort = await freePort();
    const c = configs(a.address, `127.0.0.1:${deadPort}`, nginxPort, lbPort);
    const nginx = await startNginx(nginxPort, c.nginx);
    cleanup.push(() => nginx.stop());
    await lb(c.lb);
    const differences: string[] = [];
    const rows: string[] = [];
    for (const host of ['site.test', 'loose.test', 'redirect.test', 'partial.test']) {
      for (const path of PATHS) {
        const want = await ask(nginxPort, path, { ...ODD_HEADERS, Host: host });
        const got = await ask(lbPort, path, { ...ODD_HEADERS, Host: host });
        rows.push(`${host} ${path}: ${JSON.stringify(want)}`);
        if (JSON.stringify(want) !== JSON.stringify(got)) differences.push(`${host} ${path}: nginx ${JSON.stringify(want)} sessionlb ${JSON.stringify(got)}`);
      }
    }
    expect(differences, rows.join('\n')).toEqual([]);
  });
});

describe('import-nginx: add_header, proxy_hide_header, ignore_invalid_headers', () => {
  it('maps them to the keys of their level', () => {
    const result = importNginx(`
http {
  add_header X-Top top;
  ignore_invalid_headers off;
  upstream app { server 127.0.0.1:8080; }
  server {
    listen 80;
    add_header Strict-Transport-Security "max-age=63072000" always;
    proxy_hide_header X-Powered-By;
    ignore_invalid_headers on;
    location / { proxy_pass http://app; }
    location /api/ { add_header X-Api $host; proxy_hide_header Server; proxy_pass http://app; }
    location /old { add_header X-Old 1; return 301 /new; }
  }
}`, '/etc/nginx/nginx.conf');
    const config = result.config as Record<string, any>;
    expect(config.addHeader).toEqual({ 'X-Top': 'top' });
    expect(config.ignoreInvalidHeaders).toBe(false);
    const server = config.servers[0];
    expect(server.addHeader).toEqual({ 'Strict-Transport-Security': { value: 'max-age=63072000', always: true } });
    expect(server.proxyHideHeader).toEqual(['X-Powered-By']);
    expect(server.ignoreInvalidHeaders).toBe(true);
    expect(server.locations[0].addHeader).toBeUndefined();
    expect(server.locations[1]).toMatchObject({ addHeader: { 'X-Api': '$host' }, proxyHideHeader: ['Server'] });
    expect(server.locations[2]).toMatchObject({ return: { code: 301, url: '/new' }, addHeader: { 'X-Old': '1' } });
  });
});
