/**
 * import-nginx: limit_req / limit_conn (zones at the top level, rules at their level) and
 * error_page (URLs as redirects, local URIs as the files nginx would serve them from, the rest
 * as `uri` with a warning); nginx's refusals are errors with FILE:LINE.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../src/config/load.js';
import { formatConfigJson, formatDiagnostic, importNginx } from '../src/tools/import-nginx/import-nginx.js';
import { CLI, runCli } from './helpers/child.js';

const dir = mkdtempSync(join(tmpdir(), 'sessionlb-import-limits-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** A page directory that exists, so that pages mapped into it load. */
const www = join(dir, 'www');
mkdirSync(join(www, 'errors'), { recursive: true });
for (const f of ['maintenance.html', '50x.html', '404.html', 'errors/403.html']) writeFileSync(join(www, f), `<p>${f}</p>\n`);

const lines = (list: Array<{ line: number; message: string }>): string[] => list.map((d) => `${d.line}: ${d.message}`);
type Json = Record<string, unknown> & { servers: Array<Record<string, unknown> & { locations: Array<Record<string, unknown>> }> };

/** The PHP site: a per-IP rate limit on /api/ and a maintenance page for 502/503. */
const phpSite = (root: string): string => [
  'http {',                                                            // 1
  '  limit_req_zone $binary_remote_addr zone=perip:10m rate=10r/s;',  // 2
  '  upstream php { server 127.0.0.1:9000; }',                         // 3
  '  server {',                                                        // 4
  '    listen 8080;',                                                  // 5
  '    server_name example.com;',                                      // 6
  '    error_page 502 503 /maintenance.html;',                         // 7
  '    location / { proxy_pass http://php; }',                         // 8
  '    location /api/ {',                                              // 9
  '      limit_req zone=perip burst=20 nodelay;',                      // 10
  '      proxy_pass http://php;',                                      // 11
  '    }',                                                             // 12
  `    location = /maintenance.html { root ${root}; }`,                // 13
  '  }',
  '}',
].join('\n');

describe('import-nginx: the issue\'s PHP site (limit_req + error_page)', () => {
  it('maps the zone, the location\'s limit_req and the page file; the page\'s location is left out silently', async () => {
    const result = importNginx(phpSite('/srv/www'), 'php.conf');
    expect(result.errors).toEqual([]);
    const config = result.config as unknown as Json;
    expect(config.limitReqZones).toEqual({ perip: { key: '$binary_remote_addr', rate: '10r/s', size: '10m' } });
    expect(config.servers[0]!.errorPage).toEqual([{ codes: [502, 503], file: '/srv/www/maintenance.html' }]);
    expect(config.servers[0]!.locations).toEqual([
      { path: '/', proxyPass: 'http://php' },
      { path: '/api/', proxyPass: 'http://php', limitReq: { zone: 'perip', burst: 20, nodelay: true } },
    ]);
    // Nothing about location = /maintenance.html or its root: only that the file is not on this machine.
    expect(lines(result.warnings)).toEqual([
      '7: error_page 502 503 /maintenance.html: /srv/www/maintenance.html does not exist on this machine; written as it is (sessionlb reads it at load: check fails until it is there)',
    ]);
  });

  it('with the page on this machine: no warning, and the JSON loads (loadConfigText, as check does)', async () => {
    const result = importNginx(phpSite(www), join(dir, 'php.conf'));
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual([]);
    const config = await loadConfigText(formatConfigJson(result.config), join(dir, 'php.json'));
    const loc = config.servers[0]!.locations.find((l) => l.path === '/api/')!;
    expect(loc.errorPages?.get(503)).toMatchObject({ kind: 'file', file: join(www, 'maintenance.html') });
    expect(loc.errorPages?.get(503)).toMatchObject({ body: Buffer.from('<p>maintenance.html</p>\n') });
  });
});

describe('sessionlb import-nginx (CLI) with error pages', () => {
  it('writes a page file that is not on this machine (a warning: it may be on the target only); a page a proxying location serves is a "uri" rule', async () => {
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: join(import.meta.dirname, '..') });
    const missing = join(dir, 'not-here');
    const site = join(dir, 'cli.conf');
    writeFileSync(site, phpSite(missing));
    const ok = await runCli(['import-nginx', site]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).servers[0].errorPage).toEqual([{ codes: [502, 503], file: join(missing, 'maintenance.html') }]);
    expect(ok.stderr).toContain(`${site}:7: warning: error_page 502 503 /maintenance.html: ${join(missing, 'maintenance.html')} does not exist on this machine`);
    const proxied = join(dir, 'cli-uri.conf');
    writeFileSync(proxied, pageServer('error_page 404 /app/404;'));
    const taken = await runCli(['import-nginx', proxied]);
    expect(taken.code).toBe(0);
    expect(JSON.parse(taken.stdout).servers[0].errorPage).toEqual([{ codes: [404], uri: '/app/404' }]);
    expect(taken.stderr).not.toContain('error_page');
  });
});

/** `body` inside a server with a proxied `/`, after the zones; the location /x is line 6. */
const inServer = (body: string, http = ''): string => [
  'http {',                                                              // 1
  '  limit_req_zone $binary_remote_addr zone=one:10m rate=10r/s;',      // 2
  '  limit_conn_zone $binary_remote_addr zone=addr:1m;',                // 3
  `  ${http}`,                                                           // 4
  '  server { listen 8080; location / { proxy_pass http://127.0.0.1:9001; }', // 5
  `    ${body}`,                                                         // 6
  '  }',
  '}',
].join('\n');

describe('import-nginx: limit_req and limit_conn', () => {
  const mapped: Array<[string, string, string, Record<string, unknown>, string[]]> = [
    // [name, location body (line 6), http line (4), expected keys on the top level/server/location, warnings]
    ['one limit_req at each level', 'limit_req zone=one; location /x { limit_req zone=one burst=5 delay=2; proxy_pass http://127.0.0.1:9001; }', 'limit_req zone=one burst=100;',
      { top: { zone: 'one', burst: 100 }, server: { zone: 'one' }, location: { zone: 'one', burst: 5, delay: 2 } }, []],
    ['several zones at one level: an array', 'location /x { limit_req zone=one burst=5; limit_req zone=two nodelay; proxy_pass http://127.0.0.1:9001; }', 'limit_req_zone $server_name zone=two:32k rate=30r/m;',
      { location: [{ zone: 'one', burst: 5 }, { zone: 'two', nodelay: true }] }, []],
    ['nodelay then delay=: the last counts, as in nginx', 'location /x { limit_req zone=one burst=9 nodelay delay=3; proxy_pass http://127.0.0.1:9001; }', '',
      { location: { zone: 'one', burst: 9, delay: 3 } }, []],
  ];
  it.each(mapped)('%s', async (_name, body, http, expected, warnings) => {
    const result = importNginx(inServer(body, http), join(dir, 'l.conf'));
    expect(result.errors).toEqual([]);
    expect(lines(result.warnings)).toEqual(warnings);
    const config = result.config as unknown as Json;
    const server = config.servers[0]!;
    const x = server.locations.find((l) => l.path === '/x');
    if ('top' in expected) expect(config.limitReq).toEqual(expected.top);
    if ('server' in expected) expect(server.limitReq).toEqual(expected.server);
    if ('location' in expected) expect(x!.limitReq).toEqual(expected.location);
    await loadConfigText(formatConfigJson(result.config), join(dir, 'l.json'));
  });

  it('maps limit_conn and the _status, _dry_run and _log_level directives at their level; the zones in order', async () => {
    const result = importNginx(inServer(
      'limit_conn addr 10; limit_conn_status 429; limit_req_dry_run on; location /x { limit_conn addr 1; limit_conn perserver 100; limit_req_log_level warn; limit_conn_log_level info; limit_conn_dry_run off; proxy_pass http://127.0.0.1:9001; }',
      'limit_conn_zone $server_name zone=perserver:10m; limit_req_status 429;',
    ), join(dir, 'c.conf'));
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual([]);
    const config = result.config as unknown as Json;
    expect(config.limitConnZones).toEqual({ addr: { key: '$binary_remote_addr', size: '1m' }, perserver: { key: '$server_name', size: '10m' } });
    expect(config.limitReqStatus).toBe(429);
    expect(config.servers[0]).toMatchObject({ limitConn: { zone: 'addr', conn: 10 }, limitConnStatus: 429, limitReqDryRun: true });
    expect(config.servers[0]!.locations[1]).toEqual({
      path: '/x', proxyPass: 'http://127.0.0.1:9001',
      limitConn: [{ zone: 'addr', conn: 1 }, { zone: 'perserver', conn: 100 }], limitReqLogLevel: 'warn', limitConnDryRun: false, limitConnLogLevel: 'info',
    });
    await loadConfigText(formatConfigJson(result.config), join(dir, 'c.json'));
  });

  const zones: Array<[string, string, Record<string, unknown> | null, string[]]> = [
    ['rate per minute', 'limit_req_zone $binary_remote_addr zone=z:10m rate=30r/m;', { key: '$binary_remote_addr', rate: '30r/m', size: '10m' }, []],
    ['rate without a unit: per second', 'limit_req_zone $remote_addr zone=z:64k rate=5;', { key: '$remote_addr', rate: '5r/s', size: '64k' }, []],
    ['no rate=: nginx\'s 1r/s, written out', 'limit_req_zone $binary_remote_addr zone=z:10m;', { key: '$binary_remote_addr', rate: '1r/s', size: '10m' },
      ['4: "limit_req_zone" without "rate=": nginx\'s default of 1 request per second is written as "rate": "1r/s"']],
    ['sync (nginx Plus): "shared" is not set, a warning says it is the equivalent', 'limit_req_zone $binary_remote_addr zone=z:10m rate=1r/s sync;', { key: '$binary_remote_addr', rate: '1r/s', size: '10m' },
      ['4: "limit_req_zone ... sync" (nginx Plus zone synchronisation): sessionlb\'s equivalent is "shared": true on the zone (counted in the sessionStore\'s memcached), which is not set by the import; add it if the limit must hold across instances']],
    ['a key with a variable sessionlb does not know: written, with a warning', 'limit_req_zone $request_id zone=z:10m rate=1r/s;', { key: '$request_id', rate: '1r/s', size: '10m' },
      [expect.stringMatching(/^4: "limit_req_zone" key "\$request_id": unknown variable "\$request_id" .*; written as it is, sessionlb's check will refuse it$/) as unknown as string]],
    ['a key of several variables', 'limit_req_zone "$binary_remote_addr:$http_x_api_key" zone=z:10m rate=1r/s;', { key: '$binary_remote_addr:$http_x_api_key', rate: '1r/s', size: '10m' }, []],
  ];
  it.each(zones)('limit_req_zone: %s', (_name, http, zone, warnings) => {
    const result = importNginx(inServer('', http), 'z.conf');
    expect(result.errors).toEqual([]);
    expect(lines(result.warnings)).toEqual(warnings);
    expect((result.config as Record<string, Record<string, unknown>>).limitReqZones!.z).toEqual(zone);
    expect((result.config as Record<string, unknown>).limitReqZones).not.toHaveProperty('z.shared');
  });

  const refused: Array<[string, string, string, string]> = [
    // [name, http line (4), server body (line 6), error]
    ['limit_req_zone without zone=', 'limit_req_zone $binary_remote_addr rate=1r/s;', '', '4: "limit_req_zone" must have "zone" parameter'],
    ['a zone without a size', 'limit_req_zone $binary_remote_addr zone=z rate=1r/s;', '', '4: "limit_req_zone": invalid zone size "zone=z"'],
    ['a zone below 32k', 'limit_conn_zone $binary_remote_addr zone=z:16k;', '', '4: "limit_conn_zone": zone "zone=z:16k" is too small (nginx wants at least 32k, 8 memory pages)'],
    ['a rate of 0', 'limit_req_zone $binary_remote_addr zone=z:1m rate=0r/s;', '', '4: "limit_req_zone": invalid rate "rate=0r/s" (a number of requests per second or minute: "10r/s", "30r/m")'],
    ['a rate per hour', 'limit_req_zone $binary_remote_addr zone=z:1m rate=10r/h;', '', '4: "limit_req_zone": invalid rate "rate=10r/h" (a number of requests per second or minute: "10r/s", "30r/m")'],
    ['an unknown parameter', 'limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s burst=5;', '', '4: "limit_req_zone": invalid parameter "burst=5"'],
    ['a zone defined twice', 'limit_req_zone $remote_addr zone=one:1m;', '', '4: "limit_req_zone": zone "one" is already defined (line 2); nginx refuses a second one'],
    ['limit_req_zone in a server', '', 'limit_req_zone $binary_remote_addr zone=s:1m rate=1r/s;', '6: "limit_req_zone" directive is not allowed here (server): nginx takes it in http only'],
    ['limit_req of an unknown zone', '', 'limit_req zone=nope;', '6: "limit_req": unknown limit_req_zone "nope" (no "limit_req_zone ... zone=nope:SIZE" in http)'],
    ['limit_req without zone=', '', 'limit_req burst=5;', '6: "limit_req" must have "zone" parameter'],
    ['burst=0', '', 'limit_req zone=one burst=0;', '6: "limit_req": invalid burst value "burst=0"'],
    ['the same zone twice at one level', '', 'limit_req zone=one; limit_req zone=one burst=2;', '6: "limit_req" directive is duplicate: zone "one" is already limited at this level'],
    ['limit_conn of an unknown zone', '', 'limit_conn nope 1;', '6: "limit_conn": unknown limit_conn_zone "nope" (no "limit_conn_zone ... zone=nope:SIZE" in http)'],
    ['limit_conn 0', '', 'limit_conn addr 0;', '6: "limit_conn": invalid number of connections "0"'],
    ['limit_conn over 65535', '', 'limit_conn addr 70000;', '6: "limit_conn": connection limit must be less 65536'],
    ['limit_req_status 200', '', 'limit_req_status 200;', '6: "limit_req_status": value must be between 400 and 599'],
    ['limit_conn_log_level debug', '', 'limit_conn_log_level debug;', '6: "limit_conn_log_level": must be one of info, notice, warn, error'],
    ['limit_req_dry_run yes', '', 'limit_req_dry_run yes;', '6: "limit_req_dry_run": must be "on" or "off"'],
  ];
  it.each(refused)('%s is an error with its line, as nginx refuses it', (_name, http, body, error) => {
    expect(lines(importNginx(inServer(body, http), 'e.conf').errors)).toEqual([error]);
  });

  it('limit_rate and limit_rate_after are warnings (no bandwidth limits); limit_except an error unless --allow-open', () => {
    const text = inServer('location /x { limit_rate 100k; limit_rate_after 1m; proxy_pass http://127.0.0.1:9001; }\n    location /w { limit_except GET { deny all; } proxy_pass http://127.0.0.1:9001; }');
    const strict = importNginx(text, 'r.conf');
    expect(lines(strict.warnings)).toEqual([
      '6: "limit_rate": bandwidth limits (limit_rate, limit_rate_after) are not supported by sessionlb; ignored',
      '6: "limit_rate_after": bandwidth limits (limit_rate, limit_rate_after) are not supported by sessionlb; ignored',
    ]);
    expect(lines(strict.errors)).toEqual([expect.stringMatching(/^7: "limit_except": method restrictions \(limit_except\) are not supported by sessionlb: .*refusing to convert/)]);
    const open = importNginx(text, 'r.conf', { allowOpen: true });
    expect(open.errors).toEqual([]);
    expect(lines(open.warnings)).toContainEqual(expect.stringMatching(/^7: "limit_except": .*\(--allow-open\)$/));
  });

  it('limit_req inside "if" goes with the "if", which is not converted (a warning, as for the other directives in an if)', () => {
    const result = importNginx(inServer('location /x { if ($http_x = "1") { limit_req zone=one; } proxy_pass http://127.0.0.1:9001; }'), 'i.conf');
    expect(result.errors).toEqual([]);
    expect(lines(result.warnings)).toEqual(['6: "if" block in location is not supported by sessionlb; ignored']);
    expect((result.config as unknown as Json).servers[0]!.locations[1]).not.toHaveProperty('limitReq');
  });
});

/** A server with `body` at line 4 (after a proxied `/app/` on line 3); `ROOT` in it: the page directory. */
const pageServer = (body: string, http = ''): string => [
  `http { ${http}`,                                                            // 1
  '  server { listen 8080;',                                                  // 2
  '    location /app/ { proxy_pass http://127.0.0.1:9001; }',                 // 3
  `    ${body.replaceAll('ROOT', www)}`,                                       // 4
  '  }',
  '}',
].join('\n');

describe('import-nginx: error_page', () => {
  const pages: Array<[string, string, unknown[], string[]]> = [
    // [name, server body (line 4), the server's errorPage, warnings]
    ['a URL: a 302 redirect', 'error_page 403 https://example.com/forbidden;', [{ codes: [403], redirect: 'https://example.com/forbidden' }], []],
    ['=301 URL: a 301', 'error_page 404 =301 http://example.com/;', [{ codes: [404], redirect: 'http://example.com/', response: 301 }], []],
    ['=200 URL: nginx redirects with 302', 'error_page 404 =200 http://example.com/;', [{ codes: [404], redirect: 'http://example.com/' }], []],
    ['location = URI with root', 'error_page 500 502 503 504 /50x.html; location = /50x.html { root /usr/share/nginx/html; }',
      [{ codes: [500, 502, 503, 504], file: '/usr/share/nginx/html/50x.html' }],
      ['4: error_page 500 502 503 504 /50x.html: /usr/share/nginx/html/50x.html does not exist on this machine; written as it is (sessionlb reads it at load: check fails until it is there)']],
    ['location = URI with the server\'s root and "internal" (a note, not an error)', 'root ROOT; error_page 502 /50x.html; location = /50x.html { internal; }',
      [{ codes: [502], file: join(www, '50x.html') }], []],
    ['no location matches: the server\'s root', 'root ROOT; error_page 404 /404.html;',
      [{ codes: [404], file: join(www, '404.html') }], []],
    ['=404 /URI: the response', 'root ROOT; error_page 410 =404 /404.html; location = /404.html { }', [{ codes: [410], file: join(www, '404.html'), response: 404 }], []],
    ['alias on location = URI: the file itself', `error_page 503 /down; location = /down { alias ${www}/maintenance.html; }`,
      [{ codes: [503], file: join(www, 'maintenance.html') }], []],
    ['alias on a prefix location: the alias and the rest of the URI', `error_page 403 /err/403.html; location ^~ /err/ { alias ${www}/errors/; }`,
      [{ codes: [403], file: join(www, 'errors/403.html') }],
      ['4: "alias" in location is not supported by sessionlb; ignored', '4: location ^~ /err/ has no proxy_pass or return; sessionlb locations proxy or return, so it is not converted (requests for it go to the next matching location)']],
    ['a regex location takes it before a prefix, as in nginx', 'error_page 404 /x/404.html; location /x/ { root /nope; } location ~ \\.html$ { proxy_pass http://127.0.0.1:9002; }',
      [{ codes: [404], uri: '/x/404.html' }],
      ['4: "root" in location is not supported by sessionlb; ignored', '4: location /x/ has no proxy_pass or return; sessionlb locations proxy or return, so it is not converted (requests for it go to the next matching location)']],
    ['a URI a proxied location serves: uri (sessionlb makes the internal redirect), no warning', 'error_page 404 /app/404;',
      [{ codes: [404], uri: '/app/404' }],
      []],
    ['"=" without a code: uri, with a warning', 'error_page 404 = /404.html;',
      [{ codes: [404], uri: '/404.html' }],
      ['4: error_page 404 = /404.html: "=" without a code answers with the status of whatever serves /404.html; it is written as "uri", which sessionlb answers with the original status']],
    ['=200 /URI: the file, with the response', 'root ROOT; error_page 404 =200 /404.html; location = /404.html { }',
      [{ codes: [404], file: join(www, '404.html'), response: 200 }],
      []],
    ['a relative root: uri, with a warning', 'error_page 502 /50x.html; location = /50x.html { root html; }',
      [{ codes: [502], uri: '/50x.html' }],
      ['4: "root" in location is not supported by sessionlb; ignored', '4: location = /50x.html has no proxy_pass or return; sessionlb locations proxy or return, so it is not converted (requests for it go to the next matching location)',
        '4: error_page 502 /50x.html: server (line 2), location = /50x.html (line 4): "root html" is relative to nginx\'s prefix (often /usr/share/nginx or /etc/nginx), which the import does not know, so it is written as "uri", which sessionlb serves only through a location that proxies: until then the error gets sessionlb\'s built-in page; write the page as "file" (or a "redirect")']],
    ['a named location: left out, with a warning', 'error_page 404 @fallback; location @fallback { proxy_pass http://127.0.0.1:9002; }',
      [],
      ['4: location @fallback: named locations are not supported by sessionlb; this location is not converted', '4: error_page 404 @fallback: named locations are not supported by sessionlb; this rule is not converted']],
  ];
  it.each(pages)('%s', (_name, body, errorPage, warnings) => {
    const result = importNginx(pageServer(body), join(dir, 'p.conf'));
    expect(result.errors).toEqual([]);
    expect(lines(result.warnings)).toEqual(warnings);
    expect((result.config as unknown as Json).servers[0]!.errorPage).toEqual(errorPage);
  });

  it('the files, redirects and uri rules load', async () => {
    const ok = importNginx(pageServer('root ROOT; error_page 502 503 /maintenance.html; error_page 403 /errors/403.html; error_page 404 https://example.com/; location /x { error_page 404 =404 /404.html; proxy_pass http://127.0.0.1:9002; }'), join(dir, 'ok.conf'));
    expect(ok.warnings).toEqual([]);
    const config = await loadConfigText(formatConfigJson(ok.config), join(dir, 'ok.json'));
    expect([...config.servers[0]!.locations[0]!.errorPages!.keys()]).toEqual([502, 503, 403, 404]);
    expect(config.servers[0]!.locations[1]!.errorPages!.get(404)).toMatchObject({ kind: 'file', status: 404, file: join(www, '404.html') });
    const uri = importNginx(pageServer('error_page 404 /app/404;'), join(dir, 'uri.conf'));
    const loaded = await loadConfigText(formatConfigJson(uri.config), join(dir, 'uri.json'));
    expect(loaded.servers[0]!.errorPages!.get(404)).toEqual({ kind: 'uri', uri: '/app/404', status: null });
  });

  it('refuses codes outside 300-599 and malformed "=" as nginx does, with FILE:LINE', () => {
    const result = importNginx(pageServer('error_page 200 /x.html; error_page 404 =x /x.html; error_page =404 /x.html; error_page /x.html;'), join(dir, 'bad.conf'));
    expect(result.errors.map((e) => formatDiagnostic(join(dir, 'bad.conf'), 'error', e))).toEqual([
      `${join(dir, 'bad.conf')}:4: error: "error_page": value "200" must be between 300 and 599`,
      `${join(dir, 'bad.conf')}:4: error: "error_page": invalid value "=x"`,
      `${join(dir, 'bad.conf')}:4: error: "error_page": invalid value "=404" (the codes come first)`,
      `${join(dir, 'bad.conf')}:4: error: invalid number of arguments in "error_page" directive`,
    ]);
  });

  it('http\'s error_page: the top-level key when it resolves alike in every server, else each inheriting server\'s own', () => {
    const same = importNginx([
      `http { root ${www}; error_page 502 /50x.html;`,
      '  server { listen 8080; location /app/ { proxy_pass http://127.0.0.1:9001; } }',
      '  server { listen 8081; location /app/ { proxy_pass http://127.0.0.1:9001; } location = /50x.html { } }',
      '}',
    ].join('\n'), join(dir, 'h.conf'));
    expect(same.errors).toEqual([]);
    expect(same.warnings).toEqual([]);
    expect((same.config as unknown as Json).errorPage).toEqual([{ codes: [502], file: join(www, '50x.html') }]);
    expect((same.config as unknown as Json).servers.map((s) => s.errorPage)).toEqual([undefined, undefined]);
    expect((same.config as unknown as Json).servers[1]!.locations).toHaveLength(1); // location = /50x.html: in the page

    const differ = importNginx([
      `http { root ${www}; error_page 502 /50x.html;`,
      '  server { listen 8080; location / { proxy_pass http://127.0.0.1:9001; } }',
      '  server { listen 8081; root /elsewhere; location / { proxy_pass http://127.0.0.1:9001; } location = /50x.html { root /srv; } }',
      '  server { listen 8082; error_page 404 https://example.com/; location / { proxy_pass http://127.0.0.1:9001; } }',
      '}',
    ].join('\n'), join(dir, 'd.conf'));
    expect(differ.errors).toEqual([]);
    const config = differ.config as unknown as Json;
    expect(config.errorPage).toBeUndefined();
    expect(config.servers.map((s) => s.errorPage)).toEqual([
      [{ codes: [502], uri: '/50x.html' }],
      [{ codes: [502], file: '/srv/50x.html' }],
      [{ codes: [404], redirect: 'https://example.com/' }],
    ]);
    expect(lines(differ.warnings)).toEqual([
      '1: "root" in http is not supported by sessionlb; ignored', // no page is served from it
      '1: error_page 502 /50x.html: /srv/50x.html does not exist on this machine; written as it is (sessionlb reads it at load: check fails until it is there)',
      '3: "root" in server is not supported by sessionlb; ignored',
    ]);
  });

  it('proxy_intercept_errors on with error_page in effect: a warning (sessionlb pages only its own errors); without error_page nothing', () => {
    const both = importNginx(pageServer('root ROOT; error_page 502 /50x.html; location /x { proxy_intercept_errors on; proxy_pass http://127.0.0.1:9002; }', 'proxy_intercept_errors off;'), join(dir, 'i.conf'));
    expect(lines(both.warnings)).toEqual([
      '4: "proxy_intercept_errors on": nginx also answers the upstream\'s own error statuses with the error_page rules (line 4); sessionlb\'s errorPage answers only the errors it makes itself, an upstream\'s pass unchanged; ignored',
    ]);
    const alone = importNginx(pageServer('location /x { proxy_intercept_errors on; proxy_pass http://127.0.0.1:9002; }'), join(dir, 'j.conf'));
    expect(alone.warnings).toEqual([]);
  });

  it('error_page in a location answered by return: a warning (a return\'s page is sessionlb\'s own)', () => {
    const result = importNginx(pageServer('location /m { error_page 503 /50x.html; return 503; }'), join(dir, 'm.conf'));
    expect(lines(result.warnings)).toEqual([
      '4: "error_page" in location /m, which answers with its return: sessionlb sends a return\'s status with its own page, not errorPage; not converted',
    ]);
  });
});
