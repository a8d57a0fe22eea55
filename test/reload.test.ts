import http from 'node:http';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { freePort, request, startBackend, type Backend } from './helpers/net.js';
import { startLBWithLog, waitFor } from './helpers/capture-log.js';

const CLI = join(import.meta.dirname, '..', 'dist', 'cli.js');
const run = promisify(execFile);

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test builds)`);
});

/** Backends that answer after a short delay, so requests are in flight while reloads happen. */
async function slowBackend(name: string, delayMs = 2): Promise<Backend> {
  return startBackend(name, (req, res) => {
    req.resume();
    req.on('end', () => setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': name.length });
      res.end(name);
    }, delayMs));
  });
}

interface Child {
  proc: ChildProcess;
  stderr: string[];
  exited: Promise<number | null>;
}

function startCli(args: string[]): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const stderr: string[] = [];
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL'); // by its pid: only the process this test started
      await exited;
    }
  });
  return { proc, stderr, exited };
}

async function status(adminPort: number): Promise<{ reloads: { success: number; failure: number }; upstreams: Record<string, { servers: Array<Record<string, unknown>> }> }> {
  const r = await request(`http://127.0.0.1:${adminPort}/status`);
  return JSON.parse(r.body);
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sessionlb-reload-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('hot reload', () => {
  it('3,000 keep-alive GETs from 20 clients while the CLI reloads 10 times on SIGHUP: none fails, remaining servers keep their state', async () => {
    const a = await slowBackend('a');
    const b = await slowBackend('b');
    const c = await slowBackend('c');
    cleanups.push(() => a.close(), () => b.close(), () => c.close());
    const dir = await tempDir();
    const file = join(dir, 'tmp.json');
    const port = await freePort();
    const adminPort = await freePort();
    const config = (servers: Array<Record<string, unknown>>, extra: Record<string, unknown> = {}) => JSON.stringify({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers, keepalive: 16, healthCheck: { type: 'tcp', interval: '200ms' }, ...extra } },
      admin: { listen: `127.0.0.1:${adminPort}` },
      shutdownTimeout: '5s',
    });
    await writeFile(file, config([{ address: a.address }, { address: b.address }]));
    const child = startCli(['run', '--config', file]);
    expect(await waitFor(async () => (await request(`http://127.0.0.1:${adminPort}/healthz`).catch(() => null))?.status === 200, 15_000)).toBe(true);

    // Runtime state to preserve: a's weight set through the admin API.
    const put = await request(`http://127.0.0.1:${adminPort}/upstreams/backend/servers/${encodeURIComponent(a.address)}`, {
      method: 'PUT', body: JSON.stringify({ weight: 2 }),
    });
    expect(put.status).toBe(200);

    const variants: Array<{ text: string; valid: boolean }> = [
      { text: config([{ address: a.address }, { address: b.address }], { keepalive: 8 }), valid: true },
      { text: config([{ address: a.address }, { address: b.address }, { address: c.address }]), valid: true }, // add c
      { text: config([{ address: a.address }, { address: b.address }, { address: c.address, weight: 2 }]), valid: true },
      { text: config([{ address: a.address }, { address: b.address }]), valid: true }, // remove c
      { text: config([{ address: a.address }, { address: b.address, weight: 0 }]), valid: false }, // invalid
      { text: config([{ address: a.address }, { address: b.address }, { address: c.address }]), valid: true }, // add c again
      { text: config([{ address: a.address }, { address: b.address }], { keepaliveTimeout: '30s' }), valid: true }, // remove c
      { text: config([{ address: b.address }, { address: a.address }]), valid: true }, // order changed
      { text: config([{ address: a.address }, { address: b.address }, { address: c.address }]), valid: true },
      { text: config([{ address: a.address }, { address: b.address }]), valid: true },
    ];

    const total = 3000;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    const statuses: number[] = [];
    const failures: string[] = [];
    let next = 0;
    const client = async (): Promise<void> => {
      while (next < total) {
        next++;
        try {
          const r = await request(`http://127.0.0.1:${port}/x`, { agent });
          statuses.push(r.status);
          if (r.status !== 200) failures.push(`${r.status} ${r.body.slice(0, 80)}`);
        } catch (err) {
          statuses.push(0);
          failures.push((err as Error).message);
        }
      }
    };
    const reloads = async (): Promise<number[]> => {
      const doneAt: number[] = [];
      for (const [i, v] of variants.entries()) {
        await writeFile(file, v.text);
        child.proc.kill('SIGHUP');
        const ok = await waitFor(async () => {
          const s = await status(adminPort);
          return s.reloads.success + s.reloads.failure === i + 1;
        }, 15_000);
        expect(ok).toBe(true);
        doneAt.push(statuses.length);
      }
      return doneAt;
    };
    const [doneAt] = await Promise.all([reloads(), ...Array.from({ length: 20 }, client)]);
    agent.destroy();

    if (failures.length > 0) {
      // Show why: the balancer's warnings and errors.
      console.log(child.stderr.join('').split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(0, 8).join('\n'));
    }
    expect(failures).toEqual([]);
    expect(statuses.length).toBe(total);
    // Every reload happened while requests were flowing (typically all 10 are done by request ~700).
    // (On a loaded machine the first reload may finish before the first answer: the later ones overlap.)
    expect(doneAt[doneAt.length - 1]).toBeGreaterThan(0);
    expect(doneAt[doneAt.length - 1]).toBeLessThan(total);
    const s = await status(adminPort);
    expect(s.reloads).toMatchObject({ success: 9, failure: 1 });
    const servers = s.upstreams.backend!.servers;
    expect(servers.map((x) => x.address).sort()).toEqual([a.address, b.address].sort());
    const entryA = servers.find((x) => x.address === a.address)!;
    expect(entryA).toMatchObject({ weight: 2, configWeight: 1, state: 'up', lastProbe: { ok: true } });
    // Counters carried over every reload (a TCP check sends no HTTP): each remaining server counted every request it got.
    expect(a.hits + b.hits + c.hits).toBe(total);
    expect(entryA.requests).toBe(a.hits);
    expect(servers.find((x) => x.address === b.address)!.requests).toBe(b.hits);

    const log = child.stderr.join('');
    expect(log).toMatch(/must be an integer >= 1/); // the invalid file's problem is logged
    expect(log).toMatch(/reload failed; still serving the previous configuration/);

    child.proc.kill('SIGTERM');
    expect(await child.exited).toBe(0);
  });

  it('`sessionlb reload` signals the pid in pidFile; the pid file is removed at stop; --watch reloads on change', async () => {
    const a = await slowBackend('a', 0);
    const b = await slowBackend('b', 0);
    cleanups.push(() => a.close(), () => b.close());
    const dir = await tempDir();
    const file = join(dir, 'lb.json');
    const pidFile = join(dir, 'sessionlb.pid');
    const port = await freePort();
    const adminPort = await freePort();
    const config = (servers: string[]) => JSON.stringify({
      pidFile: 'sessionlb.pid', // relative: to the config file's directory, not the cwd
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: servers.map((address) => ({ address })) } },
      admin: { listen: `127.0.0.1:${adminPort}` },
    });
    await writeFile(file, config([a.address]));
    const child = startCli(['run', '--config', file, '--watch']);
    expect(await waitFor(async () => (await request(`http://127.0.0.1:${adminPort}/healthz`).catch(() => null))?.status === 200, 15_000)).toBe(true);
    expect((await readFile(pidFile, 'utf8')).trim()).toBe(String(child.proc.pid));

    const out = await run(process.execPath, [CLI, 'reload', '--config', file]);
    expect(out.stdout).toMatch(new RegExp(`sent SIGHUP to pid ${child.proc.pid}`));
    const diag = (): string => child.stderr.join('').slice(-3000);
    expect(await waitFor(async () => (await status(adminPort)).reloads.success >= 1, 15_000), diag()).toBe(true);

    // --watch: the file changes, the new server appears without a signal.
    const before = (await status(adminPort)).reloads.success;
    await writeFile(file, config([a.address, b.address]));
    // `workers` defaults to one per CPU: the primary switches first, then counts the reload once
    // every worker has reloaded too, so wait for the count, then look at the servers.
    expect(await waitFor(async () => (await status(adminPort)).reloads.success > before, 15_000), diag()).toBe(true);
    expect((await status(adminPort)).upstreams.backend!.servers.length).toBe(2);

    // An invalid file: `sessionlb reload` refuses to signal and says why.
    await writeFile(join(dir, 'bad.json'), '{"servers": [], "pidFile": "x"}');
    const bad = await run(process.execPath, [CLI, 'reload', '--config', join(dir, 'bad.json')]).catch((err: { code: number; stderr: string }) => err);
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stderr: string }).stderr).toMatch(/must list at least one server/);

    child.proc.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
    const gone = await run(process.execPath, [CLI, 'reload', '--config', file]).catch((err: { code: number; stderr: string }) => err);
    expect((gone as { code: number }).code).toBe(1);
    expect((gone as { stderr: string }).stderr).toMatch(/cannot read pid file/);
  });

  it('reload keeps health, failure and slow-start state of remaining servers, probes added servers and stops probing removed ones', async () => {
    const healthy = { b: true };
    const mk = (name: string) => startBackend(name, (req, res) => {
      req.resume();
      if (req.url === '/health' && name === 'b' && !healthy.b) res.writeHead(500);
      res.end(name);
    });
    const a = await mk('a');
    const b = await mk('b');
    const c = await mk('c');
    cleanups.push(() => a.close(), () => b.close(), () => c.close());
    const hc = { path: '/health', interval: '50ms', fails: 1, passes: 1, mandatory: true };
    const raw = (servers: Array<Record<string, unknown>>) => ({ upstreams: { backend: { servers, healthCheck: hc } } });
    const lb = await startLBWithLog(raw([{ address: a.address }, { address: b.address, slowStart: '1h' }]));
    cleanups.push(() => lb.stop());
    const up = () => lb.lb.upstreams.get('backend')!;
    expect(await waitFor(() => up().find(a.address)!.state.healthy && up().find(b.address)!.state.healthy)).toBe(true);
    healthy.b = false;
    expect(await waitFor(() => !up().find(b.address)!.state.healthy)).toBe(true);
    const peerA = up().find(a.address)!;
    peerA.state.passiveFails = 1; // a passive failure in progress
    peerA.state.requests = 42;

    await lb.lb.reload(await loadConfig(lb.configFor(raw([{ address: a.address }, { address: b.address, slowStart: '1h' }, { address: c.address }])), '<test>'));
    expect(up().find(a.address)).not.toBe(peerA); // a new Peer object...
    expect(up().find(a.address)!.state).toMatchObject({ passiveFails: 1, requests: 42, healthy: true }); // ...with the old state
    expect(up().find(b.address)!.state.healthy).toBe(false); // still unhealthy: not reset by the reload
    expect(up().find(c.address)!.state.healthy).toBe(false); // added with a mandatory check: waits for its first probe
    expect(lb.lb.health.size).toBe(3);
    expect(await waitFor(() => up().find(c.address)!.state.healthy)).toBe(true);

    healthy.b = true;
    expect(await waitFor(() => up().find(b.address)!.state.healthy)).toBe(true);
    const from = up().find(b.address)!.state.slowStartFrom;
    expect(from).toBeGreaterThan(0);
    await lb.lb.reload(await loadConfig(lb.configFor(raw([{ address: a.address }, { address: b.address, slowStart: '1h' }])), '<test>'));
    expect(up().find(b.address)!.state.slowStartFrom).toBe(from); // still ramping after the reload
    expect(up().find(b.address)!.currentMaxWeight(Date.now())).toBeLessThan(0.1);
    expect(lb.lb.health.size).toBe(2);
    const probesOfC = c.hits;
    await new Promise((r) => setTimeout(r, 300));
    expect(c.hits).toBe(probesOfC); // removed: no more probes
  });

  it('a reload that moves the listener binds the new address, closes the old one, and keeps server state', async () => {
    const a = await slowBackend('a', 0);
    cleanups.push(() => a.close());
    const lb = await startLBWithLog({ upstreams: { backend: { servers: [{ address: a.address }] } } });
    cleanups.push(() => lb.stop());
    expect((await request(`${lb.url}/`)).body).toBe('a');
    expect((await request(`http://127.0.0.1:${lb.adminPort}/upstreams/backend/servers/${encodeURIComponent(a.address)}`, {
      method: 'PUT', body: '{"weight": 3}',
    })).status).toBe(200);
    const newPort = await freePort();
    const moved = lb.configFor({
      servers: [{ listen: [`127.0.0.1:${newPort}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
    });
    await lb.lb.reload(await loadConfig(moved, '<test>'));
    expect([...lb.lb.addresses().keys()]).toEqual([`127.0.0.1:${newPort}`]);
    expect((await request(`http://127.0.0.1:${newPort}/`)).body).toBe('a');
    await expect(request(`${lb.url}/`)).rejects.toThrow(/ECONNREFUSED/);
    expect(lb.lb.upstreams.get('backend')!.find(a.address)!.state).toMatchObject({ weight: 3, requests: 2 });
  });

  it('a reload that cannot bind changes nothing, the session store included: bound sessions stay; the same reload once the address is free switches the store', async () => {
    const a = await slowBackend('a', 0);
    const b = await slowBackend('b', 0);
    cleanups.push(() => a.close(), () => b.close());
    const upstreams = { backend: { sticky: { mode: 'learn' }, servers: [{ address: a.address }, { address: b.address }] } };
    const lb = await startLBWithLog({ upstreams });
    cleanups.push(() => lb.stop());
    const store = lb.lb.sessions.store;
    // Bind a session to b (the server that answers an unknown id gets it).
    let bound = '';
    for (let i = 0; i < 4 && bound === ''; i++) {
      const cookie = `PHPSESSID=reloadfailsessionid0000${i}`;
      if ((await request(`${lb.url}/`, { headers: { cookie } })).body === 'b') bound = cookie;
    }
    expect((await request(`${lb.url}/`, { headers: { cookie: bound } })).body).toBe('b');
    // The new config changes sessionStore and adds a listen address that is taken.
    const busy = http.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => busy.close(() => r())));
    const busyPort = (busy.address() as { port: number }).port;
    const next = lb.configFor({
      sessionStore: { type: 'memory', keyPrefix: 'other:' },
      servers: [{ listen: [lb.url.replace('http://', ''), `127.0.0.1:${busyPort}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams,
    });
    await expect(lb.lb.reload(await loadConfig(next, '<test>'))).rejects.toThrow(/EADDRINUSE|in use/);
    expect(lb.lb.sessions.store).toBe(store);
    for (let i = 0; i < 6; i++) expect((await request(`${lb.url}/`, { headers: { cookie: bound } })).body).toBe('b');
    // Once the address is free the same reload goes through, with a new (empty) store.
    await new Promise<void>((r) => busy.close(() => r()));
    await lb.lb.reload(await loadConfig(next, '<test>'));
    expect(lb.lb.sessions.store).not.toBe(store);
  });
});
