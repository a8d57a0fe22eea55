/**
 * TLS session ticket keys shared by sessionlb instances through a REAL memcached process
 * (src/sessions/shared-ticket-keys.ts). Two SessionLB objects in this process, each with its own
 * listener, its own TicketKeys and its own memcached connection, stand for two instances behind DNS
 * round robin: the proof of sharing is a real TLS 1.3 resumption, a ticket issued by A (node's
 * client `session` event, which comes after the handshake) resumed on B (`isSessionReused()`).
 *
 * The negative control matters: the same resumption with different secrets (so different keys)
 * must NOT resume, and fails the "resumes on B" assertion (checked by hand once with sharing
 * disabled, see the commit message).
 */
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { TICKET_KEYS_RECORD } from '../src/sessions/shared-ticket-keys.js';
import { captureLog, waitFor, type LogRecord } from './helpers/capture-log.js';
import { MemcachedProcess, memcachedAvailable, memcachedCommand, startMemcached } from './helpers/memcached.js';
import { freePort, startBackend, type Backend } from './helpers/net.js';
import { TestPki } from './helpers/tls-certs.js';

const HAVE_MEMCACHED = memcachedAvailable();
if (!HAVE_MEMCACHED) console.warn('memcached is not installed: skipping the shared ticket key tests (.ci/run installs it)');

const SECRET = 'shared-secret-of-the-cluster-0123456789';
const RECORD = `sessionlb:${TICKET_KEYS_RECORD}`;

const pki = new TestPki();
const shop = pki.issue('shop.test');
const cert = pki.concat('shop-shared.pem', shop.cert, pki.intermediate.cert);
afterAll(() => pki.remove());

let lbs: SessionLB[] = [];
let memcacheds: MemcachedProcess[] = [];
let backends: Backend[] = [];
afterEach(async () => {
  await Promise.all(lbs.splice(0).map((lb) => lb.stop(1000)));
  await Promise.all(memcacheds.splice(0).map((m) => m.kill()));
  await Promise.all(backends.splice(0).map((b) => b.close().catch(() => undefined)));
});

interface Instance { lb: SessionLB; port: number; records: LogRecord[] }

async function instance(m: MemcachedProcess, backend: Backend, store: Record<string, unknown>, timing: { rotateMs?: number; pollMs?: number } = {}): Promise<Instance> {
  const port = await freePort();
  const config = await loadConfig({
    servers: [{
      listen: [`127.0.0.1:${port} ssl`], serverName: ['shop.test'], ssl: { certificate: cert, certificateKey: shop.key },
      locations: [{ path: '/', proxyPass: 'http://backend' }],
    }],
    upstreams: { backend: { servers: [{ address: backend.address }] } },
    sessionStore: { type: 'memcached', servers: [m.address], ...store },
  }, '<test>');
  const { log, records } = captureLog();
  const lb = new SessionLB(config, { log, ticketKeyTiming: timing });
  lbs.push(lb);
  await lb.start();
  return { lb, port, records };
}

interface Visit { reused: boolean; status: string; session: Buffer | null }

/**
 * One TLS 1.3 connection with `session` (a ticket from an earlier visit, or none) and one HTTP
 * request; resolves when the server has closed, with the ticket it issued (the `session` event
 * comes after the handshake, with the first data read).
 */
function visit(port: number, session?: Buffer | null): Promise<Visit> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | null = null;
    let reused = false;
    let data = '';
    const socket = tls.connect({
      host: '127.0.0.1', port, servername: 'shop.test', rejectUnauthorized: false, minVersion: 'TLSv1.3',
      session: session ?? undefined,
    }, () => {
      reused = socket.isSessionReused();
      socket.write('GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n');
    });
    socket.on('session', (s: Buffer) => { ticket ??= s; });
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => { data += d; });
    socket.on('error', reject);
    socket.on('close', () => resolve({ reused, status: data.slice(0, 12), session: ticket }));
  });
}

async function backend(): Promise<Backend> {
  const b = await startBackend('a');
  backends.push(b);
  return b;
}

/** The raw value of the record, read with a plain `get` on a socket (not through sessionlb). */
async function rawRecord(m: MemcachedProcess): Promise<string | null> {
  const text = await memcachedCommand(m.port, `get ${RECORD}`);
  const match = /^VALUE \S+ \d+ \d+\r\n([^\r]*)\r\n/.exec(text);
  return match ? match[1]! : null;
}

function syncCount(records: LogRecord[], fragment: string): number {
  return records.filter((r) => r.msg.includes(fragment)).length;
}

async function syncMetric(lb: SessionLB, result: string): Promise<number> {
  const text = await lb.observability.metrics.registry.metrics();
  const m = new RegExp(`^sessionlb_tls_ticket_key_sync_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

describe.skipIf(!HAVE_MEMCACHED)('TLS ticket keys shared through memcached', () => {
  it('two instances with the same hashKey use one key set: a ticket from A resumes on B; memcached holds it encrypted only', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const a = await instance(m, be, { hashKey: SECRET });
    const b = await instance(m, be, { hashKey: SECRET });
    expect(a.lb.ticketKeys.current.equals(b.lb.ticketKeys.current)).toBe(true);
    expect(await syncMetric(a.lb, 'published')).toBe(1);
    expect(await syncMetric(b.lb, 'adopted')).toBe(1);

    const first = await visit(a.port);
    expect(first.status).toBe('HTTP/1.1 200');
    expect(first.reused).toBe(false);
    expect(first.session).not.toBeNull();
    const onB = await visit(b.port, first.session);
    expect(onB.status).toBe('HTTP/1.1 200');
    expect(onB.reused).toBe(true);
    // And back: a ticket B made resumes on A.
    const fromB = await visit(b.port);
    expect(fromB.reused).toBe(false);
    expect((await visit(a.port, fromB.session)).reused).toBe(true);

    // The record: present, and no key in clear, in base64 or in hex, in the raw value.
    const raw = await rawRecord(m);
    expect(raw).not.toBeNull();
    const bytes = Buffer.from(raw!, 'latin1');
    const decoded = Buffer.from(raw!, 'base64');
    for (const key of a.lb.ticketKeys.keys()) {
      for (const form of [key.toString('base64'), key.toString('base64url'), key.toString('hex'), key.toString('hex').toUpperCase()]) {
        expect(raw!.includes(form)).toBe(false);
      }
      expect(bytes.includes(key)).toBe(false);
      expect(decoded.includes(key)).toBe(false);
      // Not even a 16-byte part of a key (name, HMAC or AES part).
      for (let i = 0; i < key.length; i += 16) expect(decoded.includes(key.subarray(i, i + 16))).toBe(false);
    }
    // Nor in a log line.
    const logged = JSON.stringify([...a.records, ...b.records]);
    for (const key of a.lb.ticketKeys.keys()) {
      expect(logged.includes(key.toString('base64'))).toBe(false);
      expect(logged.includes(key.toString('hex'))).toBe(false);
    }
  });

  it('with a different hashKey the record is not used: no resumption across, an error logged and counted', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const a = await instance(m, be, { hashKey: SECRET });
    const b = await instance(m, be, { hashKey: 'another-secret-entirely-0123456789' });
    expect(a.lb.ticketKeys.current.equals(b.lb.ticketKeys.current)).toBe(false);
    expect(await syncMetric(b.lb, 'rejected')).toBe(1);
    const errors = b.records.filter((r) => r.level >= 50 && r.msg.includes('does not decrypt'));
    expect(errors).toHaveLength(1);

    const first = await visit(a.port);
    expect(first.session).not.toBeNull();
    const onB = await visit(b.port, first.session);
    expect(onB.status).toBe('HTTP/1.1 200');
    expect(onB.reused).toBe(false);
    // The ticket is fine where it was made (so the failure on B is the keys).
    expect((await visit(a.port, first.session)).reused).toBe(true);
    // B did not overwrite A's record.
    const raw = await rawRecord(m);
    await b.lb.stop(1000);
    const c = await instance(m, be, { hashKey: SECRET });
    expect(c.lb.ticketKeys.current.equals(a.lb.ticketKeys.current)).toBe(true);
    expect(await rawRecord(m)).toBe(raw);
  });

  it('a record altered in memcached is never used: an instance with the right secret keeps its own keys, logs and counts it', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const a = await instance(m, be, { hashKey: SECRET });
    const raw = Buffer.from((await rawRecord(m))!, 'base64');
    raw[raw.length - 1]! ^= 0x01; // one bit of the ciphertext
    const altered = raw.toString('base64');
    expect(await memcachedCommand(m.port, `set ${RECORD} 0 0 ${altered.length}\r\n${altered}`, 'STORED\r\n')).toBe('STORED\r\n');
    const c = await instance(m, be, { hashKey: SECRET });
    expect(c.lb.ticketKeys.current.equals(a.lb.ticketKeys.current)).toBe(false);
    expect(await syncMetric(c.lb, 'rejected')).toBe(1);
    expect(c.records.filter((r) => r.level >= 50 && r.msg.includes('does not decrypt'))).toHaveLength(1);
    expect(await rawRecord(m)).toBe(altered); // not overwritten
    const first = await visit(c.port);
    expect((await visit(c.port, first.session)).reused).toBe(true); // resumption on its own keys goes on
  });

  it('a derived hashKey (no secret) shares nothing: a warning says what to set, no record is written', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const a = await instance(m, be, {});
    const b = await instance(m, be, {});
    expect(a.lb.ticketKeys.current.equals(b.lb.ticketKeys.current)).toBe(false);
    expect(syncCount(a.records, 'SESSIONLB_HASH_KEY')).toBeGreaterThanOrEqual(1);
    expect(a.records.some((r) => r.level === 40 && r.msg.startsWith('TLS ticket keys: not shared') && r.msg.includes('sessionStore.hashKey'))).toBe(true);
    expect(await rawRecord(m)).toBeNull();
    const first = await visit(a.port);
    expect((await visit(b.port, first.session)).reused).toBe(false);
  });

  it('a rotation made by one instance is adopted by the other; a ticket made after it resumes across', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const timing = { rotateMs: 1500, pollMs: 150 };
    const a = await instance(m, be, { hashKey: SECRET }, timing);
    const b = await instance(m, be, { hashKey: SECRET }, timing);
    const before = a.lb.ticketKeys.current;
    expect(b.lb.ticketKeys.current.equals(before)).toBe(true);
    // Every key each instance takes into use, in order: with one rotator per period (cas) both see the same sequence.
    const seen = { a: [] as string[], b: [] as string[] };
    a.lb.ticketKeys.onChange((k) => seen.a.push(k.toString('hex')));
    b.lb.ticketKeys.onChange((k) => seen.b.push(k.toString('hex')));

    expect(await waitFor(() => !a.lb.ticketKeys.current.equals(before) && !b.lb.ticketKeys.current.equals(before), 5_000)).toBe(true);
    // The same new set on both, the old key kept as previous.
    expect(await waitFor(() => a.lb.ticketKeys.current.equals(b.lb.ticketKeys.current), 2_000)).toBe(true);
    expect(a.lb.ticketKeys.previous!.equals(before) || a.lb.ticketKeys.previous!.equals(b.lb.ticketKeys.previous!)).toBe(true);
    // Exactly one instance rotated each time: the rotations counted over both are the rotations made.
    const rotated = (await syncMetric(a.lb, 'rotated')) + (await syncMetric(b.lb, 'rotated'));
    expect(rotated).toBeGreaterThanOrEqual(1);
    const adopted = (await syncMetric(a.lb, 'adopted')) + (await syncMetric(b.lb, 'adopted'));
    expect(adopted).toBeGreaterThanOrEqual(rotated); // the other instance adopted each (plus B's first adoption)

    // Two more periods, then the two sequences agree: no instance ever used a key the other did not.
    await new Promise((r) => setTimeout(r, 3_200));
    // (Each new key comes from exactly one `rotated`: read together, as a rotation may land meanwhile.)
    const agree = async (): Promise<boolean> => {
      const rotations = (await syncMetric(a.lb, 'rotated')) + (await syncMetric(b.lb, 'rotated'));
      return seen.a.length === seen.b.length && seen.a.every((k, i) => k === seen.b[i]) && rotations === seen.a.length;
    };
    expect(await waitFor(agree, 2_000)).toBe(true);
    expect(seen.a.length).toBeGreaterThanOrEqual(2);
    expect(new Set(seen.a).size).toBe(seen.a.length);
    expect(await syncMetric(a.lb, 'local_rotation') + await syncMetric(b.lb, 'local_rotation')).toBe(0);

    // Right after a rotation, both have the same key for a while: a ticket from one resumes on the other.
    let resumedAcross = false;
    for (let i = 0; i < 5 && !resumedAcross; i++) {
      const first = await visit(b.port);
      const onA = await visit(a.port, first.session);
      resumedAcross = onA.reused;
    }
    expect(resumedAcross).toBe(true);
  });

  it('memcached gone: both keep serving TLS and resuming locally; an instance starting meanwhile starts; sharing resumes when memcached is back', async () => {
    const m = await startMemcached();
    memcacheds.push(m);
    const be = await backend();
    const timing = { pollMs: 100 };
    const a = await instance(m, be, { hashKey: SECRET, timeout: '50ms', maxFails: 1, failTimeout: '200ms' }, timing);
    const b = await instance(m, be, { hashKey: SECRET, timeout: '50ms', maxFails: 1, failTimeout: '200ms' }, timing);
    const shared = a.lb.ticketKeys.current;
    await m.kill();

    expect(await waitFor(async () => (await syncMetric(a.lb, 'store_error')) > 0, 3_000)).toBe(true);
    for (const inst of [a, b]) {
      const first = await visit(inst.port);
      expect(first.status).toBe('HTTP/1.1 200');
      expect((await visit(inst.port, first.session)).reused).toBe(true);
    }
    // Keys in use kept: still across.
    expect(a.lb.ticketKeys.current.equals(shared)).toBe(true);
    expect((await visit(b.port, (await visit(a.port)).session)).reused).toBe(true);
    expect(a.records.filter((r) => r.msg.startsWith('TLS ticket keys: memcached unavailable'))).toHaveLength(1);

    // A third instance starts without memcached (bounded wait), with keys of its own.
    const startedAt = Date.now();
    const c = await instance(m, be, { hashKey: SECRET, timeout: '50ms', maxFails: 1, failTimeout: '200ms' }, timing);
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    const first = await visit(c.port);
    expect((await visit(c.port, first.session)).reused).toBe(true);

    // memcached back (empty, same port): the first instance to poll publishes its set, the others adopt it.
    await m.start();
    expect(await waitFor(() => a.lb.ticketKeys.current.equals(b.lb.ticketKeys.current) && b.lb.ticketKeys.current.equals(c.lb.ticketKeys.current), 8_000)).toBe(true);
    expect((await visit(c.port, (await visit(a.port)).session)).reused).toBe(true);
  });
});
