/**
 * Issue 2: the command line as users run it (`node dist/cli.js`): check like nginx -t,
 * graceful SIGTERM, --help / --version.
 */
import http from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, startBackend, type Backend } from './helpers/net.js';
import { CLI, canConnect, runCli, startProxyProcess, writeConfig, type RunningChild } from './helpers/child.js';
import { YOUNG_GENERATION_FLAG } from '../src/process/heap-tuning.js';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!().catch(() => undefined);
});

const good = {
  servers: [{ listen: ['127.0.0.1:8080'], serverName: ['www.example.com'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
  upstreams: { backend: { servers: [{ address: '127.0.0.1:8000', weight: 3 }, { address: '127.0.0.1:8001' }] } },
};

describe('sessionlb check', () => {
  it('prints "configuration OK" and exits 0 for a good file', async () => {
    const file = writeConfig(good);
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('configuration OK');
    expect(r.stderr).toBe('');
  });

  it('prints every problem as FILE: $.path: message and exits 1', async () => {
    const file = writeConfig({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://nosuch' }] }],
      upstreams: {
        backend: {
          servers: [{ address: '127.0.0.1:8000' }, { address: '127.0.0.1:8001', weight: 0 }, { address: '127.0.0.1:8002', wieght: 2 }],
          timeouts: { read: '10 seconds' },
        },
      },
    });
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).not.toContain('configuration OK');
    const lines = r.stderr.split('\n');
    expect(lines).toContain(`${file}: $.upstreams.backend.servers[1].weight: must be an integer >= 1`);
    expect(lines).toContain(`${file}: $.upstreams.backend.servers[2].wieght: unknown key`);
    expect(lines).toContain(`${file}: $.upstreams.backend.timeouts.read: must be a duration such as "500ms", "10s" or "1m"`);
    // The cross-reference problem is reported together with the shape problems.
    expect(lines.some((l) => l.startsWith(`${file}: $.servers[0].locations[0].proxyPass: no upstream named "nosuch"`))).toBe(true);
    expect(r.stderr).toContain('test failed (4 problems)');
  });

  it('reports unreadable files and invalid JSON with exit 1', async () => {
    const missing = await runCli(['check', '--config', '/nonexistent/sessionlb.json']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('/nonexistent/sessionlb.json: $: cannot read file');
    const file = writeConfig('{ "servers": [ }');
    const bad = await runCli(['check', '-c', file]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`${file}: $: invalid JSON`);
  });

  it('run refuses a bad file with the same messages and exit 1', async () => {
    const file = writeConfig({ servers: [{ listen: ['127.0.0.1:8080'], locations: [] }], upstreams: { b: { servers: [] } } });
    const r = await runCli(['run', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}: $.upstreams.b.servers: must list at least one server`);
  });
});

describe('--help, --version, bad usage', () => {
  it('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`sessionlb ${pkg.version}`);
  });

  it('--help lists the commands', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['run', 'check', 'demo', '--config']) expect(r.stdout).toContain(c);
  });

  it('an unknown command or option exits 2 with the usage', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
    const o = await runCli(['check', '--nope']);
    expect(o.code).toBe(2);
    expect(o.stderr).toContain('unknown option --nope');
  });
});

describe('graceful shutdown (SIGTERM)', () => {
  async function setup(backend: Backend, extra: Record<string, unknown> = {}): Promise<{ proxy: RunningChild; port: number }> {
    const port = await freePort();
    const file = writeConfig({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      ...extra,
    });
    const proxy = await startProxyProcess(file, port);
    cleanup.push(() => proxy.kill());
    return { proxy, port };
  }

  function get(port: number, path: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}${path}`, { agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      }).on('error', reject);
    });
  }

  it('a slow request in flight completes, new connections are refused, the process exits 0', async () => {
    let slowSeen = false;
    const slow = await startBackend('slow', (req, res) => {
      req.resume();
      if (req.url === '/warm') {
        res.end('warm');
        return;
      }
      slowSeen = true;
      setTimeout(() => { res.writeHead(200); res.end('finished'); }, 1000);
    });
    cleanup.push(() => slow.close());
    const { proxy, port } = await setup(slow, { keepaliveTimeout: '75s' });
    // An idle keep-alive client connection must not hold the shutdown for keepaliveTimeout.
    const idleAgent = new http.Agent({ keepAlive: true });
    cleanup.push(async () => idleAgent.destroy());
    await new Promise<void>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/warm`, { agent: idleAgent }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject);
    });
    const t0 = Date.now();
    const inFlight = get(port, '/slow');
    while (!slowSeen) await new Promise((r) => setTimeout(r, 10));
    process.kill(proxy.pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    expect(await canConnect(port)).toBe(false);
    expect(await inFlight).toEqual({ status: 200, body: 'finished' });
    const exit = await proxy.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('shutdownTimeout bounds the wait for a request that never ends; still exits 0', async () => {
    const hang = await startBackend('hang', (req) => { req.resume(); });
    cleanup.push(() => hang.close());
    const { proxy, port } = await setup(hang, { shutdownTimeout: '500ms' });
    const inFlight = get(port, '/hang').catch((err: Error) => err);
    while (hang.hits === 0) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    process.kill(proxy.pid, 'SIGTERM');
    const exit = await proxy.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await inFlight).toBeInstanceOf(Error); // the connection was closed on it
    expect(proxy.stderr()).not.toContain('did not stop in time');
  });

  it('SIGTERM while the workers are still starting: each of them stops (none is killed), exit 0', async () => {
    // Regression: a `stop` sent to a worker before it listened for messages was lost; the worker
    // started, served, and was killed shutdownTimeout + 5 s later.
    const port = await freePort();
    const file = writeConfig({
      workers: 2,
      shutdownTimeout: '500ms',
      pidFile: 'sessionlb.pid',
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', return: { code: 204 } }] }],
    });
    const pidFile = join(dirname(file), 'sessionlb.pid');
    const child = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    cleanup.push(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
    // The pid file is written right before the signal handlers are set and the workers forked.
    for (let i = 0; i < 2000 && !existsSync(pidFile) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(stderr).not.toContain('did not stop in time');
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');

  it('is multi-stage on a Node slim image, runs as "node", and starts the documented command', () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:\d+-(bookworm-|trixie-)?slim$/m);
    expect(dockerfile.match(/^FROM /gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^EXPOSE /m);
    // node's options first: the young-generation bound of src/process/heap-tuning.ts, as `npm start` passes it.
    expect(dockerfile).toContain(`CMD ["node", "${YOUNG_GENERATION_FLAG}", "dist/cli.js", "run", "--config", "/etc/sessionlb/config.json"]`);
    const scripts = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.start).toBe(`node ${YOUNG_GENERATION_FLAG} dist/cli.js run`);
    expect(scripts.demo).toBe(`node ${YOUNG_GENERATION_FLAG} dist/cli.js demo`);
  });

  it('its HEALTHCHECK command (node -e, no curl) passes against a live admin /healthz and fails without one', async () => {
    const m = /HEALTHCHECK[^\n]*\\\n\s*CMD \["node", "-e", (".*")\]$/m.exec(dockerfile);
    expect(m).not.toBeNull();
    const script = JSON.parse(m![1]!) as string;
    const { spawnSync } = await import('node:child_process');
    const probe = (url: string): number | null =>
      spawnSync(process.execPath, ['-e', script], { env: { ...process.env, SESSIONLB_HEALTHCHECK_URL: url }, timeout: 10_000 }).status;
    const backend = await startBackend('x');
    cleanup.push(() => backend.close());
    const port = await freePort();
    const adminPort = await freePort();
    const proxy = await startProxyProcess(writeConfig({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: `http://${backend.address}` }] }],
      admin: { listen: `127.0.0.1:${adminPort}` },
      workers: 1, // about the Dockerfile's probe: probed the moment the port listens (test/cluster.test.ts covers workers)
    }), port);
    cleanup.push(() => proxy.kill());
    expect(probe(`http://127.0.0.1:${adminPort}/healthz`)).toBe(0);
    expect(probe(`http://127.0.0.1:${adminPort}/nope`)).toBe(1);
    expect(probe(`http://127.0.0.1:${await freePort()}/healthz`)).toBe(1);
  });
});

describe('sessionlb run without --config', () => {
  it('says what to do and exits 2 instead of serving the demo layout without its backends (every request a 502)', async () => {
    const r = await runCli(['run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('sessionlb run --config FILE');
    expect(r.stderr).toContain('npm run demo');
    expect(r.stderr).toContain('config/examples/');
  });
});

describe('sessionlb demo', () => {
  /** A base port N with N..N+5 free (the demo with --port N binds all six). */
  async function sixFreePorts(): Promise<number> {
    for (;;) {
      const port = await freePort();
      const busy = await Promise.all([1, 2, 3, 4, 5].map((i) => canConnect(port + i)));
      if (!busy.includes(true)) return port;
    }
  }

  it('starts four backends behind sessionlb, rotating 3:1:1:1, and stops on SIGTERM with exit 0', async () => {
    // --port N moves every port the demo uses: balancer N, backends N+1..N+4, status page N+5.
    const port = await sixFreePorts();
    const { spawn } = await import('node:child_process');
    const { CLI } = await import('./helpers/child.js');
    const child = spawn(process.execPath, [CLI, 'demo', '--port', String(port)], { stdio: ['ignore', 'pipe', 'ignore'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanup.push(async () => { if (child.exitCode === null) { child.kill('SIGKILL'); await exited; } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const deadline = Date.now() + 15_000;
    while (!out.includes('balancer:') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(out).toContain(`http://127.0.0.1:${port}/`);
    const seq: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await new Promise<string>((resolve, reject) => {
        http.get(`http://127.0.0.1:${port}/`, { agent: false }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => { body += d.toString(); });
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });
      seq.push(/^backend-(\d)/.exec(r)?.[1] ?? r);
    }
    expect(seq.join(' ')).toBe('1 2 1 3 4 1');
    expect(out).toContain(`4 backends on 127.0.0.1:${port + 1}, ${port + 2}, ${port + 3}, ${port + 4}`);
    expect(out).toContain(`status:   http://127.0.0.1:${port + 5}/`);
    expect(await canConnect(port + 5)).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('a busy port ends the demo with one line that names it and says how to move every port', async () => {
    const net = await import('node:net');
    const port = await sixFreePorts();
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(port + 3, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const r = await runCli(['demo', '--port', String(port)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${port + 3}: address already in use`);
    expect(r.stderr).toContain('--port N');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('run: listen failures', () => {
  it('a port already in use is reported in one line and exits 1', async () => {
    const net = await import('node:net');
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const r = await runCli(['run', '--config', writeConfig({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:9' }] }],
    })]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`sessionlb: cannot listen on 127.0.0.1:${port}: address already in use`);
    expect(r.stderr).not.toContain('    at ');
  });
});
