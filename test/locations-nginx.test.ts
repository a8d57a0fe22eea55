/**
 * Issue 17: locations ("=", "^~", "~", "~*", prefixes) and `return` (server and location, with
 * variables) against real nginx: the same config in both, a table of requests, the same status,
 * Location, body of a returned text and backend. Then a location's own read timeout and nextUpstream.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { NGINX, startNginx } from './helpers/nginx.js';

const { cleanup, backend, lb } = useScope();

const skipNginx = NGINX === null && process.env.CI !== 'true';

interface Answer {
  status: number | 'closed';
  location: string | null;
  backend: string | null;
  /** The body of a text/plain `return` (the backends' and error pages' bodies are not compared). */
  text: string | null;
}

function ask(port: number, host: string, path: string): Promise<Answer> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, headers: { Host: host } }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        const norm = (s: string): string => s.replaceAll(String(port), 'PORT');
        const backendName = res.headers['x-backend'];
        resolve({
          status: res.statusCode ?? 0,
          location: res.headers.location === undefined ? null : norm(res.headers.location),
          backend: typeof backendName === 'string' ? backendName : null,
          text: backendName === undefined && (res.headers['content-type'] ?? '').startsWith('text/plain') ? norm(body) : null,
        });
      });
    });
    req.on('error', () => resolve({ status: 'closed', location: null, backend: null, text: null }));
    req.end();
  });
}

const UPSTREAMS = ['root', 'exact', 'images', 'statics', 'pics', 'php', 'api'];

/** [Host, path] */
const REQUESTS: Array<[string, string]> = [
  ['site.test', '/'],
  ['site.test', '/exact'],
  ['site.test', '/exact/'],
  ['site.test', '/exactly'],
  ['site.test', '/%65xact'],
  ['site.test', '//exact'],
  ['site.test', '/a/../exact'],
  ['site.test', '/images/a.png'],
  ['site.test', '/images/x.php'],
  ['site.test', '/images'],
  ['site.test', '/api?x=1'],
  ['site.test', '/static'],
  ['site.test', '/static/a.css'],
  ['site.test', '/static/a.PNG'],
  ['site.test', '/static/a.php'],
  ['site.test', '/static/a.PHP'],
  ['site.test', '/static/deep/b.php?x=1'],
  ['site.test', '/api/v1'],
  ['site.test', '/api/x.jpg'],
  ['site.test', '/api/x.JPG?size=2'],
  ['site.test', '/index.php'],
  ['site.test', '/index.php?x=.png'],
  ['site.test', '/img.GIF'],
  ['site.test', '/a%2Ephp'],
  ['site.test', '/static/x/../a.png'],
  ['site.test', '/maint'],
  ['site.test', '/moved'],
  ['site.test', '/moved?a=b'],
  ['site.test', '/go/x?y=1'],
  ['site.test', '/gone'],
  ['site.test', '/maint?k=v'],
  ['site.test', '/whoami'],
  ['site.test', '/sep/q?z=1'],
  ['site.test', '/close'],
  ['old.test', '/any/path?q=1'],
  ['old.test', '/exact'],
  ['OLD.test.', '/'],
];

describe.skipIf(skipNginx)('locations and return: the same answers as nginx', () => {
  it('answers a table of requests as nginx does', async () => {
    const backends = await Promise.all(UPSTREAMS.map((name) => backend(name)));
    const nginxPort = await freePort();
    const lbPort = await freePort();

    const nginxUpstreams = backends.map((b) => `upstream ${b.name} { server ${b.address}; }`).join('\n');
    const nginx = await startNginx(nginxPort, `
${nginxUpstreams}
server {
  listen 127.0.0.1:${nginxPort} default_server;
  server_name site.test;
  location / { proxy_pass http://root; }
  location = /exact { proxy_pass http://exact; }
  location ^~ /images/ { proxy_pass http://images; }
  location /static/ { proxy_pass http://statics; }
  location ~* \\.(gif|jpg|png)$ { proxy_pass http://pics; }
  location ~ \\.php$ { proxy_pass http://php; }
  location /api/ { proxy_pass http://api; }
  location = /moved { return 301 /new; }
  location /go/ { return 302 https://$host$request_uri; }
  location = /gone { return 410; }
  location = /maint { return 503 "down for $host $uri $args"; }
  location = /whoami { return 200 "$scheme $server_name $server_port $remote_addr"; }
  location /sep/ { return 307 $scheme://$host:$server_port/x$request_uri; }
  location = /close { return 444; }
}
server {
  listen 127.0.0.1:${nginxPort};
  server_name old.test;
  return 301 https://$host$request_uri;
  location / { proxy_pass http://root; }
}
`);
    cleanup.push(() => nginx.stop());

    const upstreams = Object.fromEntries(backends.map((b) => [b.name, { servers: [{ address: b.address }] }]));
    await lb({
      upstreams,
      servers: [
        {
          listen: [`127.0.0.1:${lbPort}`], default: true, serverName: ['site.test'],
          locations: [
            { path: '/', proxyPass: 'http://root' },
            { path: '/exact', match: '=', proxyPass: 'http://exact' },
            { path: '/images/', match: '^~', proxyPass: 'http://images' },
            { path: '/static/', proxyPass: 'http://statics' },
            { path: '\\.(gif|jpg|png)$', match: '~*', proxyPass: 'http://pics' },
            { path: '\\.php$', match: '~', proxyPass: 'http://php' },
            { path: '/api/', proxyPass: 'http://api' },
            { path: '/moved', match: '=', return: { code: 301, url: '/new' } },
            { path: '/go/', return: { code: 302, url: 'https://$host$request_uri' } },
            { path: '/gone', match: '=', return: { code: 410 } },
            { path: '/maint', match: '=', return: { code: 503, text: 'down for $host $uri $args' } },
            { path: '/whoami', match: '=', return: { code: 200, text: '$scheme $server_name $server_port $remote_addr' } },
            { path: '/sep/', return: { code: 307, url: '$scheme://$host:$server_port/x$request_uri' } },
            { path: '/close', match: '=', return: { code: 444 } },
          ],
        },
        {
          listen: [`127.0.0.1:${lbPort}`], serverName: ['old.test'],
          return: { code: 301, url: 'https://$host$request_uri' },
          locations: [{ path: '/', proxyPass: 'http://root' }],
        },
      ],
    });

    const differences: string[] = [];
    const rows: string[] = [];
    for (const [host, path] of REQUESTS) {
      const want = await ask(nginxPort, host, path);
      const got = await ask(lbPort, host, path);
      rows.push(`${host} ${path}: ${JSON.stringify(want)}`);
      if (JSON.stringify(want) !== JSON.stringify(got)) {
        differences.push(`${host} ${path}: nginx ${JSON.stringify(want)} sessionlb ${JSON.stringify(got)}`);
      }
    }
    expect(differences, rows.join('\n')).toEqual([]);
    // The table covers what it claims: every backend answered, and returns of each kind.
    const seen = new Set<string>();
    for (const [host, path] of REQUESTS) {
      const a = await ask(lbPort, host, path);
      if (a.backend !== null) seen.add(a.backend);
    }
    expect([...seen].sort()).toEqual([...UPSTREAMS].sort());
  });
});

describe('per-location proxy settings', () => {
  it('a backend slower than the upstream read timeout answers only through the location that allows it', async () => {
    const slow = await backend('slow', (req, res, b) => {
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { 'X-Backend': b.name, 'Content-Length': '2' });
        res.end('ok');
      }, 400);
    });
    const port = await freePort();
    await lb({
      upstreams: { app: { servers: [{ address: slow.address }], timeouts: { read: '150ms' } } },
      servers: [{
        listen: [`127.0.0.1:${port}`],
        locations: [
          { path: '/', proxyPass: 'http://app' },
          { path: '\\.php$', match: '~', proxyPass: 'http://app', timeouts: { read: '3s' } },
        ],
      }],
    });
    const viaPhp = await ask(port, 'x', '/index.php');
    expect(viaPhp).toMatchObject({ status: 200, backend: 'slow' });
    const plain = await ask(port, 'x', '/index.html');
    expect(plain.status).toBe(504);
    // A kept-alive connection from the slow location does not carry its timeout to the other.
    expect((await ask(port, 'x', '/again.html')).status).toBe(504);
  });

  it('a location\'s nextUpstream applies to the requests it routes, the upstream\'s elsewhere', async () => {
    const failing = await backend('failing', (req, res, b) => {
      req.resume();
      res.writeHead(503, { 'X-Backend': b.name, 'Content-Length': '0' });
      res.end();
    });
    const healthy = await backend('healthy');
    const port = await freePort();
    await lb({
      upstreams: { app: { servers: [{ address: failing.address, maxFails: 0 }, { address: healthy.address }] } },
      servers: [{
        listen: [`127.0.0.1:${port}`],
        locations: [
          { path: '/', proxyPass: 'http://app' },
          { path: '/retry/', proxyPass: 'http://app', nextUpstream: { on: ['error', 'timeout', 'http_503'] } },
        ],
      }],
    });
    const plain: Array<number | 'closed'> = [];
    const retried: Array<number | 'closed'> = [];
    for (let i = 0; i < 4; i++) plain.push((await ask(port, 'x', '/a')).status);
    for (let i = 0; i < 4; i++) retried.push((await ask(port, 'x', '/retry/a')).status);
    expect(plain.sort()).toEqual([200, 200, 503, 503]); // round robin, no retry on 503 (the upstream's default)
    expect(retried).toEqual([200, 200, 200, 200]);
  });
});
