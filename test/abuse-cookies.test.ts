/**
 * Issue 14, fault and abuse suite: hostile session cookies against sticky `learn`, `cookie` and
 * `hash` upstreams whose session store is a real memcached. Cookie values with spaces, CR/LF,
 * memcached commands (`\r\nflush_all\r\n`, raw and URL-encoded), 300-byte values, unicode, NUL,
 * many cookies of one name, empty ones; and a backend that sets hostile session ids itself.
 * Every request is answered (200 or 4xx; never a 5xx, never a dropped connection), sessionlb
 * keeps serving, and afterwards memcached's `stats` shows `cmd_flush 0` and every key it holds
 * is a hashed key (`sessionlb:` + 43 base64url characters): no client-provided text in any key.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { useScope } from './helpers/scope.js';
import { memcachedAvailable, memcachedCommand, startMemcached, type MemcachedProcess } from './helpers/memcached.js';
import { newSessionId } from './helpers/php.js';
import { headerValues, rawExchange, sleep, startRecordingBackend, statuses, type RecordedRequest, type RecordingBackend } from './helpers/raw-http.js';

const HAVE_MEMCACHED = memcachedAvailable();
if (!HAVE_MEMCACHED) console.warn('memcached is not installed: skipping the hostile cookie tests (.ci/run installs it)');

const scope = useScope();
const memcacheds: MemcachedProcess[] = [];
afterEach(async () => {
  await Promise.all(memcacheds.splice(0).map((m) => m.kill()));
});

const KEY_PATTERN = /^sessionlb:[A-Za-z0-9_-]{43}$/;
const VALID = (c: string): string => c.repeat(26); // PHP's alphabet, 26 characters: a valid id

/** Cookie header *values* (raw bytes, latin1), each sent as `Cookie: <value>` for cookie name NAME. */
function hostileCookies(name: string): string[] {
  const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
  return [
    `${name}=a b`,
    `${name}=x\r\nflush_all\r\n`, // CRLF ends the header line: "flush_all" is a line of its own
    `${name}=${VALID('a')}\r\nflush_all\r\nX-After: 1`,
    `${name}=x%0D%0Aflush_all%0D%0A`,
    `${name}=x%0d%0aset injected 0 0 1%0d%0aX`,
    `${name}=\\r\\nflush_all\\r\\n`, // the same, as literal backslashes
    `${name}=x\nflush_all`,
    `${name}=x\rflush_all`,
    `${name}=flush_all`,
    `${name}=flush_all noreply`,
    `${name}=${'a'.repeat(300)}`,
    `${name}=${'A'.repeat(300)}`, // PHP's alphabet, but longer than maxIdLength
    `${name}=${'B'.repeat(256)}`, // the longest valid id
    `${name}=${utf8('ünïcödé-session-id-123456')}`,
    `${name}=${utf8('セッション').repeat(6)}`,
    `${name}=${'\u0000'.repeat(30)}`,
    `${name}=${VALID('c')}\u0000`,
    `${name}=\t${VALID('d')}`,
    `${name}="${VALID('e')}"`,
    `${name}=`,
    name,
    '',
    `${name}=;${name}=;${name}=`,
    Array.from({ length: 50 }, () => `${name}=${newSessionId()}`).join('; '), // 50 different ids
    Array.from({ length: 50 }, () => `${name}=${VALID('f')}`).join('; '), // one id 50 times
    `${name}=${VALID('g')}; ${name} =${VALID('h')}; ${name}= ${VALID('i')}`,
    `${name}=flush,all,get,set,delete,stats-000000`, // commas and dashes are in PHP's alphabet: a valid id
    `${name}=${'z'.repeat(7000)}`, // a 7 KB cookie line
    `${name}=${VALID('j')};${'x'.repeat(100)}=${'y'.repeat(100)}`,
  ];
}

interface Outcome { cookie: string; status: number | null; text: string }

/** Sends `GET path` with the raw cookie line (or several Cookie lines) on a fresh connection; the first status or null. */
async function sendCookie(port: number, cookieLines: string[], path = '/'): Promise<Outcome> {
  const head = `GET ${path} HTTP/1.1\r\nHost: x\r\n${cookieLines.map((c) => `Cookie: ${c}\r\n`).join('')}Connection: close\r\n\r\n`;
  const res = await rawExchange(port, head, { timeoutMs: 5000 });
  return { cookie: cookieLines.join(' | '), status: statuses(res)[0] ?? null, text: res.text.slice(0, 200) };
}

/** A PHP-like backend: `/new` sets a fresh valid PHPSESSID; `/set/N` sets backendIds[N] (hostile ids from the application). */
function phpAnswer(backendIds: string[]): (r: RecordedRequest) => { status: number; headers?: Record<string, string>; body: string } {
  return (r) => {
    const m = /^\/set\/(\d+)$/.exec(r.target);
    if (m) return { status: 200, headers: { 'Set-Cookie': `PHPSESSID=${backendIds[Number(m[1])]}; path=/` }, body: 'set' };
    if (r.target === '/new') return { status: 200, headers: { 'Set-Cookie': `PHPSESSID=${newSessionId()}; path=/; HttpOnly` }, body: 'new' };
    return { status: 200, body: 'ok' };
  };
}

async function memcachedHoldsOnlyHashedKeys(m: MemcachedProcess): Promise<string[]> {
  const stats = await m.stats();
  expect(stats.cmd_flush, 'memcached cmd_flush').toBe('0');
  for (const s of ['incr_misses', 'incr_hits', 'decr_misses', 'decr_hits', 'cas_misses', 'cas_hits']) expect(stats[s], `memcached ${s}`).toBe('0');
  const keys = await m.keys();
  expect(keys.filter((k) => !KEY_PATTERN.test(k)), 'keys that are not hashed').toEqual([]);
  // stats cachedump agrees with the crawler (it lists up to 100 keys per slab class).
  const slabs = await memcachedCommand(m.port, 'stats items');
  for (const cls of new Set([...slabs.matchAll(/^STAT items:(\d+):number /gm)].map((x) => x[1]!))) {
    const dump = await memcachedCommand(m.port, `stats cachedump ${cls} 100`);
    for (const line of dump.split('\r\n')) {
      const k = /^ITEM (\S+) /.exec(line)?.[1];
      if (k !== undefined) expect(k).toMatch(KEY_PATTERN);
    }
  }
  expect(Number(stats.curr_items)).toBe(keys.length);
  return keys;
}

function backendNeverSawSessionlbCookie(backends: RecordingBackend[]): void {
  for (const be of backends) {
    for (const r of be.requests) {
      for (const c of headerValues(r, 'cookie')) expect(c, 'the SESSIONLB cookie reached the backend').not.toMatch(/(^|;)\s*SESSIONLB=/);
    }
  }
}

describe.skipIf(!HAVE_MEMCACHED)('hostile session cookies, memcached session store', () => {
  it.each([
    ['learn', { mode: 'learn', cookie: 'PHPSESSID', ttl: '24m' }, 'PHPSESSID'],
    ['cookie', { mode: 'cookie', cookieKey: 'abuse-test-cookie-key-0123456789' }, 'SESSIONLB'],
    ['hash', { mode: 'hash', cookie: 'PHPSESSID' }, 'PHPSESSID'],
  ] as const)('sticky %s: every hostile cookie is answered 200 or 4xx; memcached: cmd_flush 0, only hashed keys', async (mode, sticky, name) => {
    const m = await startMemcached();
    memcacheds.push(m);
    const backendIds = [
      'a b', 'x%0D%0Aflush_all%0D%0A', 'flush_all', 'x'.repeat(300), 'caf\xe9-session-id-000000000', '\\r\\nflush_all', '', 'deleted',
      'get,set,flush-all,delete-0000000', VALID('k'),
    ];
    const bs = [await startRecordingBackend(phpAnswer(backendIds)), await startRecordingBackend(phpAnswer(backendIds))];
    for (const b of bs) scope.cleanup.push(() => b.close());
    const lb = await scope.lb({
      sessionStore: { type: 'memcached', servers: [m.address], timeout: '1s', hashKey: 'abuse-test-hash-key-0123456789' },
      upstreams: { backend: { sticky, servers: bs.map((b) => ({ address: b.address })) } },
    }, { admin: false });

    const outcomes: Outcome[] = [];
    // Valid sessions first (so that memcached holds something to check), then the hostile ones.
    outcomes.push(await sendCookie(lb.port, [], '/new'));
    outcomes.push(await sendCookie(lb.port, [`PHPSESSID=${newSessionId()}`]));
    for (const c of hostileCookies(name)) outcomes.push(await sendCookie(lb.port, [c]));
    // The PHP cookie next to a hostile SESSIONLB (cookie mode) and vice versa.
    for (const c of hostileCookies(name === 'SESSIONLB' ? 'PHPSESSID' : 'SESSIONLB').slice(0, 12)) outcomes.push(await sendCookie(lb.port, [c]));
    // The cookie on 20 separate Cookie lines, same value and different values.
    outcomes.push(await sendCookie(lb.port, Array.from({ length: 20 }, () => `${name}=${VALID('m')}`)));
    outcomes.push(await sendCookie(lb.port, Array.from({ length: 20 }, () => `${name}=${newSessionId()}`)));
    // The application itself sets hostile session ids.
    for (let i = 0; i < backendIds.length; i++) outcomes.push(await sendCookie(lb.port, [], `/set/${i}`));

    const summary = outcomes.map((o) => `${o.status ?? 'no response'} ${JSON.stringify(o.cookie.slice(0, 60))}`);
    console.log(`sticky ${mode}: ${outcomes.length} requests, statuses ${JSON.stringify(Object.entries(outcomes.reduce<Record<string, number>>((a, o) => { a[String(o.status)] = (a[String(o.status)] ?? 0) + 1; return a; }, {})))}`);
    expect(outcomes.filter((o) => o.status === null || o.status >= 500 || o.status < 200).map((o) => `${o.status}: ${JSON.stringify(o.cookie.slice(0, 80))} -> ${JSON.stringify(o.text)}`), 'requests not answered 200/4xx').toEqual([]);
    expect(outcomes.filter((o) => o.status === 200).length, summary.join('\n')).toBeGreaterThanOrEqual(outcomes.length / 2);

    // Still serving.
    expect((await sendCookie(lb.port, [`PHPSESSID=${newSessionId()}`])).status).toBe(200);
    await sleep(300); // bindings and touches are written in the background
    const keys = await memcachedHoldsOnlyHashedKeys(m);
    const st = await m.stats();
    console.log(`sticky ${mode}: memcached keys ${keys.length}, cmd_get ${st.cmd_get}, cmd_set ${st.cmd_set}, cmd_touch ${st.cmd_touch}, cmd_flush ${st.cmd_flush}`);
    if (mode === 'learn') expect(keys.length, 'the valid sessions were bound in memcached').toBeGreaterThanOrEqual(2);
    if (mode === 'cookie') backendNeverSawSessionlbCookie(bs);
    for (const b of bs) expect(b.malformed).toEqual([]);
  });

  it('the memcached text protocol is never reachable through a session id: a flood of command-shaped ids leaves every item in place', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    // Items that a flush_all / delete would remove.
    for (let i = 0; i < 5; i++) await memcachedCommand(m.port, `set canary${i} 0 0 2\r\nok`, 'STORED\r\n');
    const bs = [await startRecordingBackend(phpAnswer([])), await startRecordingBackend(phpAnswer([]))];
    for (const b of bs) scope.cleanup.push(() => b.close());
    const lb = await scope.lb({
      sessionStore: { type: 'memcached', servers: [m.address], timeout: '1s', hashKey: 'abuse-test-hash-key-0123456789' },
      upstreams: { backend: { sticky: { mode: 'learn', cookie: 'PHPSESSID' }, servers: bs.map((b) => ({ address: b.address })) } },
    }, { admin: false });
    const commands = ['flush_all', 'flush_all 0', 'delete canary0', 'delete canary1 noreply', 'shutdown', 'verbosity 1', 'set canary2 0 0 1', 'incr canary3 1', 'touch canary4 1', 'gat 0 canary0', 'mn', 'ms canary0 2 T1'];
    const outcomes: Outcome[] = [];
    for (const cmd of commands) {
      for (const wrap of [(s: string) => `x\r\n${s}\r\n`, (s: string) => encodeURIComponent(`x\r\n${s}\r\n`), (s: string) => s.replace(/ /g, '%20'), (s: string) => `${VALID('a')} ${s}`]) {
        outcomes.push(await sendCookie(lb.port, [`PHPSESSID=${wrap(cmd)}`]));
      }
    }
    expect(outcomes.filter((o) => o.status === null || o.status >= 500).map((o) => `${o.status} ${JSON.stringify(o.cookie)}`)).toEqual([]);
    expect((await sendCookie(lb.port, [`PHPSESSID=${newSessionId()}`])).status).toBe(200);
    await sleep(300);
    for (let i = 0; i < 5; i++) expect(await m.get(`canary${i}`), `canary${i}`).toBe('ok');
    const stats = await m.stats();
    expect(stats.cmd_flush).toBe('0');
    expect(stats.cmd_touch).toBe('0'); // the one valid session was only just bound
    expect((await m.keys()).filter((k) => !k.startsWith('canary') && !KEY_PATTERN.test(k))).toEqual([]);
  });
});
