/**
 * Issue 17: import-nginx converts regex and `^~` locations, `return`, redirecting `rewrite`s and
 * per-location proxy timeouts; what it cannot keep is a warning with its line.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';

const PHP_SITE = [
  'upstream php { server 10.0.0.1:9000; }',                          // 1
  'upstream web { server 10.0.0.2:80; }',                            // 2
  'server { listen 80; server_name example.com; return 301 https://$host$request_uri; }', // 3
  'server { listen 8080; rewrite ^(.*)$ https://example.com$1 permanent; }',              // 4
  'server {',                                                        // 5
  '  listen 8443;',                                                  // 6
  '  server_name example.com;',                                      // 7
  '  proxy_read_timeout 30s;',                                       // 8
  '  location / { proxy_pass http://web; }',                         // 9
  '  location ~ \\.php$ { proxy_pass http://php; proxy_read_timeout 300s; }', // 10
  '  location ~* \\.(png|jpg)$ { proxy_pass http://web; }',          // 11
  '  location ^~ /static/ { proxy_pass http://web; }',               // 12
  '  location ~*\\.gif$ { proxy_pass http://web; }',                 // 13
  '  location = /health { return 200 "ok $host"; }',                 // 14
  '  location /old { rewrite ^ /new? permanent; }',                  // 15
  '  location /maint { return 503; }',                               // 16
  '  location /go { return https://example.org/; }',                 // 17
  '  location /x { rewrite ^/x/(.*)$ /y/$1 last; proxy_pass http://web; }', // 18
  '  location ~ ^/(a+)+$ { proxy_pass http://web; }',                // 19
  '  location /y { return 302 https://$request_id; }',               // 20
  '  location /z { rewrite ^ https://example.com/z? redirect; }',    // 21
  '  location /api { proxy_pass http://php; proxy_read_timeout 300s; }', // 22
  '}',
].join('\n');

describe('import-nginx: locations, return, rewrite (issue 17)', () => {
  it('converts regex and ^~ locations, returns and redirecting rewrites; warns with the line about the rest', async () => {
    const result = importNginx(PHP_SITE, 'site.conf');
    expect(result.errors).toEqual([]);
    const [redirect, oldHost, site] = result.config.servers!;
    expect(redirect!.return).toEqual({ code: 301, url: 'https://$host$request_uri' });
    expect(oldHost!.return).toEqual({ code: 301, url: 'https://example.com$request_uri' });
    expect(site!.locations).toEqual([
      { path: '/', proxyPass: 'http://web' },
      { path: '\\.php$', match: '~', proxyPass: 'http://php' },
      { path: '\\.(png|jpg)$', match: '~*', proxyPass: 'http://web' },
      { path: '/static/', match: '^~', proxyPass: 'http://web' },
      { path: '\\.gif$', match: '~*', proxyPass: 'http://web' },
      { path: '/health', exact: true, return: { code: 200, text: 'ok $host' } },
      { path: '/old', return: { code: 301, url: '/new' } },
      { path: '/maint', return: { code: 503 } },
      { path: '/go', return: { code: 302, url: 'https://example.org/' } },
      { path: '/x', proxyPass: 'http://web' },
      { path: '/z', return: { code: 302, url: 'https://example.com/z' } },
      { path: '/api', proxyPass: 'http://php' },
    ]);
    expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toEqual([
      expect.stringMatching(/^18: rewrite \^\/x\/\(\.\*\)\$ \/y\/\$1 last: only redirects .* not converted$/),
      expect.stringMatching(/^19: location ~ \^\/\(a\+\)\+\$: the regular expression has a repeated group .* not converted$/),
      expect.stringMatching(/^20: return 302 https:\/\/\$request_id: unknown variable "\$request_id".*; not converted$/),
      expect.stringMatching(/^20: location \/y has no proxy_pass or return/),
    ]);
    // The PHP timeout stays where nginx has it: on the upstream (first value), and /api agrees.
    expect(result.config.upstreams!.php!.timeouts).toEqual({ read: '300s' });
    expect(result.config.upstreams!.web!.timeouts).toEqual({ read: '30s' });
    const config = await loadConfig(result.config, 'site.json');
    const locs = config.servers[2]!.locations;
    expect(locs.find((l) => l.path === '\\.php$')!.timeouts.readMs).toBe(300_000);
    expect(locs.find((l) => l.path === '/')!.timeouts.readMs).toBe(30_000);
  });

  it('keeps a per-location timeout on the location when locations of one upstream differ', async () => {
    const result = importNginx([
      'upstream app { server 10.0.0.1:80; }',
      'server {',
      '  listen 8080;',
      '  location / { proxy_pass http://app; }',
      '  location ~ \\.php$ { proxy_pass http://app; proxy_read_timeout 300s; }',
      '}',
    ].join('\n'), 'app.conf');
    expect(result.warnings).toEqual([]);
    expect(result.config.upstreams!.app!.timeouts).toEqual({ read: '300s' });
    expect(result.config.servers![0]!.locations![0]).toEqual({ path: '/', proxyPass: 'http://app', timeouts: { read: '60s' } });
    const config = await loadConfig(result.config, 'app.json');
    expect(config.servers[0]!.locations.map((l) => l.timeouts.readMs)).toEqual([60_000, 300_000]);
  });

  it('does not convert a redirect whose query string nginx would append', () => {
    const result = importNginx('server { location /z { rewrite ^ https://example.com/z redirect; } }', 'q.conf');
    expect(result.warnings.map((w) => `${w.line}: ${w.message}`)).toEqual([
      expect.stringMatching(/^1: rewrite .*: nginx appends the request's query string to this URL, sessionlb's return does not; .*not converted$/),
      expect.stringMatching(/^1: location \/z has no proxy_pass or return/),
    ]);
  });

  it('refuses a URI part in a regex location, as nginx does', () => {
    const result = importNginx('upstream b { server 10.0.0.1:80; }\nserver { location ~ \\.php$ { proxy_pass http://b/x; } }', 'r.conf');
    expect(result.errors.map((e) => `${e.line}: ${e.message}`)).toEqual([
      '2: "proxy_pass" cannot have URI part in location given by regular expression (nginx refuses it too)',
    ]);
  });
});
