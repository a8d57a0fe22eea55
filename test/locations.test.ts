/**
 * Locations as nginx orders them ("=", the longest prefix, "^~" stopping the regex search,
 * regexes in config order, else the longest prefix), the config rules of location modifiers,
 * `return` and the per-location proxy settings (nearest level wins).
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import type { LocationConfig } from '../src/config/model.js';
import { configProblems } from './helpers/config.js';
import { backtrackingRisk } from '../src/config/locations.js';
import { buildVirtualServer, matchLocation, ReturnRoute } from '../src/proxy/http/router.js';

type Loc = { path: string; match?: string; exact?: boolean; proxyPass?: string; return?: unknown; [k: string]: unknown };

function configWith(locations: Loc[], server: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    servers: [{ listen: ['127.0.0.1:8080'], ...server, locations }],
    upstreams: { app: { servers: [{ address: '127.0.0.1:9000' }] } },
    ...top,
  };
}

async function load(locations: Loc[], server: Record<string, unknown> = {}, top: Record<string, unknown> = {}) {
  return loadConfig(configWith(locations, server, top), 'test.json');
}

function problems(locations: Loc[], server: Record<string, unknown> = {}): Promise<string[]> {
  return configProblems(configWith(locations, server), 'test.json');
}

/** A router whose routes are the locations' labels (`name`). */
async function router(locations: Loc[]) {
  const config = await load(locations.map((l) => ({ proxyPass: 'http://app', ...l })));
  const vs = config.servers[0]!;
  const names = new Map<LocationConfig, string>();
  vs.locations.forEach((loc, i) => names.set(loc, `${locations[i]!.match ?? (locations[i]!.exact ? '=' : '')}${locations[i]!.path}`));
  const routes = buildVirtualServer(vs, (loc) => names.get(loc)!);
  return (path: string): string | null => {
    const r = matchLocation(routes, path);
    return r instanceof ReturnRoute ? `return ${r.ret.code}` : r;
  };
}

describe('location order (nginx)', () => {
  const table: Loc[] = [
    { path: '/', },
    { path: '/exact', match: '=' },
    { path: '/old', exact: true },
    { path: '/images/', match: '^~' },
    { path: '/static/' },
    { path: '/static/deep/' },
    { path: '\\.(gif|jpg|png)$', match: '~*' },
    { path: '\\.php$', match: '~' },
    { path: '^/static/.*\\.php$', match: '~' },
    { path: '/api/' },
  ];
  const cases: Array<[string, string | null]> = [
    ['/exact', '=/exact'],
    ['/exact/more', '/'], // "=" only for the whole path
    ['/old', '=/old'],
    ['/images/a.png', '^~/images/'], // ^~ stops the regex search
    ['/images/x.php', '^~/images/'],
    ['/static/a.css', '/static/'],
    ['/static/a.PNG', '~*\\.(gif|jpg|png)$'], // case-insensitive
    ['/static/deep/a.php', '~\\.php$'], // regexes in config order: the first that matches
    ['/static/a.php', '~\\.php$'],
    ['/static/a.PHP', '/static/'], // "~" is case-sensitive
    ['/api/v1', '/api/'],
    ['/api/x.jpg', '~*\\.(gif|jpg|png)$'], // a regex beats the longest (plain) prefix
    ['/index.php', '~\\.php$'],
    ['/', '/'],
  ];
  it.each(cases)('%s -> %s', async (path, expected) => {
    const match = await router(table);
    expect(match(path)).toBe(expected);
  });

  it('the joined regex test (one scan for "no regex matches") agrees with trying each in order', async () => {
    const regexLocs: Loc[] = [
      { path: '\\.php$', match: '~' }, { path: '^/img/.*\\.(png|gif)$', match: '~*' }, { path: 'admin', match: '~' },
      { path: '^/API/v[0-9]+/', match: '~*' }, { path: '(x|y)z$', match: '~' },
    ];
    const table: Loc[] = [{ path: '/' }, { path: '/img/', match: '^~' }, { path: '/api/' }, ...regexLocs];
    const config = await load(table.map((l) => ({ proxyPass: 'http://app', ...l })));
    const routes = buildVirtualServer(config.servers[0]!, (loc) => loc.path);
    expect(routes.anyRegex).toHaveLength(2); // "" and "i"
    const reference = (path: string): string => {
      if (path.startsWith('/img/')) return '/img/';
      const re = config.servers[0]!.locations.find((l) => l.regex !== null && l.regex.test(path));
      return re !== undefined ? re.path : path.startsWith('/api/') ? '/api/' : '/';
    };
    const paths = ['/a.php', '/img/a.PNG', '/x/IMG/a.png', '/admin/x', '/API/V2/x', '/api/v2/x', '/api/v/x', '/xz', '/q', '/', '/a.PHP', '/yz?'];
    for (const p of paths) expect(matchLocation(routes, p), p).toBe(reference(p));
    // A backreference cannot be joined with other patterns: each is tried on its own.
    const withBackref = await load([{ path: '/', proxyPass: 'http://app' }, ...regexLocs.map((l) => ({ ...l, proxyPass: 'http://app' })),
      { path: '^/(a)\\1$', match: '~', proxyPass: 'http://app' }]);
    const r2 = buildVirtualServer(withBackref.servers[0]!, (loc) => loc.path);
    expect(r2.anyRegex).toBeNull();
    expect(matchLocation(r2, '/aa')).toBe('^/(a)\\1$');
  });

  it('without a prefix location, a path no regex matches is 404 (null)', async () => {
    const match = await router([{ path: '\\.php$', match: '~' }]);
    expect(match('/a.php')).toBe('~\\.php$');
    expect(match('/a.html')).toBeNull();
  });

  it('a server-level return comes before every location', async () => {
    const config = await load([{ path: '/', proxyPass: 'http://app' }], { return: { code: 301, url: 'https://$host$request_uri' } });
    const routes = buildVirtualServer(config.servers[0]!, () => 'proxied');
    const r = matchLocation(routes, '/anything');
    expect(r).toBeInstanceOf(ReturnRoute);
    expect((r as ReturnRoute).ret.code).toBe(301);
  });
});

describe('location config', () => {
  it('compiles regexes once, at load', async () => {
    const config = await load([{ path: '\\.PHP$', match: '~*', proxyPass: 'http://app' }]);
    const loc = config.servers[0]!.locations[0]!;
    expect(loc.regex).toBeInstanceOf(RegExp);
    expect(loc.regex!.flags).toBe('i');
    expect(loc.match).toBe('~*');
  });

  it('reports an invalid regex, a bad prefix, a URI in a regex location and nested locations with their JSON paths', async () => {
    expect(await problems([
      { path: '(unclosed', match: '~', proxyPass: 'http://app' },
      { path: 'nope', proxyPass: 'http://app' },
      { path: '\\.php$', match: '~', proxyPass: 'http://app/x' },
      { path: '/a', proxyPass: 'http://app', locations: [{ path: '/a/b', proxyPass: 'http://app' }] },
      { path: '/b', exact: true, match: '~', proxyPass: 'http://app' },
    ])).toEqual([
      '$.servers[0].locations[1].path: must be a path starting with "/"',
    ]);
    expect(await problems([
      { path: '(unclosed', match: '~', proxyPass: 'http://app' },
      { path: '\\.php$', match: '~', proxyPass: 'http://app/x' },
      { path: '/a', proxyPass: 'http://app', locations: [{ path: '/a/b', proxyPass: 'http://app' }] },
      { path: '/b', exact: true, match: '~', proxyPass: 'http://app' },
    ])).toEqual([
      expect.stringMatching(/^\$\.servers\[0\]\.locations\[0\]\.path: is not a valid regular expression: /),
      '$.servers[0].locations[1].proxyPass: cannot have a URI part in a regular expression location (nginx refuses it too): write "http://name" alone',
      '$.servers[0].locations[2].locations: nested locations are not supported: write each as a location of the server',
      '$.servers[0].locations[3].exact: conflicts with "match": "~" (write one of them)',
    ]);
  });

  it('refuses patterns with catastrophic backtracking', async () => {
    expect(await problems([{ path: '^/(a+)+$', match: '~', proxyPass: 'http://app' }]))
      .toEqual([expect.stringContaining('$.servers[0].locations[0].path: has a repeated group that itself repeats')]);
    expect(backtrackingRisk('(\\w*)*x')).not.toBeNull();
    expect(backtrackingRisk('((ab)+c)*')).not.toBeNull();
    expect(backtrackingRisk('(a|b){2,}')).toBeNull();
    expect(backtrackingRisk('^/(.*)/(.*)\\.php$')).toBeNull();
    expect(backtrackingRisk('[(a+)]+')).toBeNull();
    expect(backtrackingRisk('\\(a+\\)+')).toBeNull();
  });

  it('"^~" and a plain prefix of the same path are duplicates; "=" and a prefix are not', async () => {
    expect(await problems([
      { path: '/a', proxyPass: 'http://app' },
      { path: '/a', match: '^~', proxyPass: 'http://app' },
      { path: '/a', match: '=', proxyPass: 'http://app' },
    ])).toEqual(['$.servers[0].locations[1].path: duplicate location "/a"']);
  });

  it('checks return: url with redirects, text otherwise, known variables', async () => {
    expect(await problems([
      { path: '/a', return: { code: 301 } },
      { path: '/b', return: { code: 200, url: 'http://x/' } },
      { path: '/c', return: { code: 302, url: 'https://$hots/' } },
      { path: '/d', return: { code: 444, text: 'x' } },
      { path: '/e' },
      { path: '/f', return: { code: 301, url: '/x' }, proxyPass: 'http://app' },
    ])).toEqual([
      '$.servers[0].locations[0].return.url: is required with code 301 (the redirect target)',
      '$.servers[0].locations[1].return.url: goes only with a redirect code (301, 302, 303, 307, 308); use "text" for a body',
      expect.stringContaining('$.servers[0].locations[2].return.url: unknown variable "$hots"'),
      '$.servers[0].locations[3].return.text: 444 closes the connection without a response: no "text"',
      '$.servers[0].locations[4].proxyPass: is required (or "return")',
      '$.servers[0].locations[5].proxyPass: does not go with "return" (nginx answers with the return)',
    ]);
  });

  it('resolves timeouts, nextUpstream and proxySetHeader to the nearest level, key by key', async () => {
    const config = await loadConfig({
      servers: [{
        listen: ['127.0.0.1:8080'],
        timeouts: { connect: '5s' },
        proxySetHeader: { 'X-Server': 'yes' },
        locations: [
          { path: '/', proxyPass: 'http://app' },
          { path: '\\.php$', match: '~', proxyPass: 'http://app', timeouts: { read: '300s' }, nextUpstream: { tries: 1 }, proxySetHeader: { 'X-Loc': '1' } },
        ],
      }],
      upstreams: { app: { servers: [{ address: '127.0.0.1:9000' }, { address: '127.0.0.1:9001' }], timeouts: { read: '10s', send: '7s' } } },
    }, 'test.json');
    const [plain, php] = config.servers[0]!.locations;
    expect(plain!.timeouts).toEqual({ connectMs: 5000, sendMs: 7000, readMs: 10_000 });
    expect(php!.timeouts).toEqual({ connectMs: 5000, sendMs: 7000, readMs: 300_000 });
    expect(plain!.nextUpstream).toBe(config.upstreams.get('app')!.nextUpstream);
    expect(php!.nextUpstream.tries).toBe(1);
    expect([...php!.nextUpstream.on]).toEqual(['error', 'timeout']);
    expect([...plain!.setHeaders]).toEqual([['x-server', 'yes']]);
    expect([...php!.setHeaders]).toEqual([['x-loc', '1']]); // a level that sets any replaces its parent's
  });
});
