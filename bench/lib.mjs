// Shared by the bench scripts: commands, free ports, and the processes they start (every one is
// recorded and killed by its PID, never by name).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (bench/..). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Absolute path of a command on PATH, or null. */
export function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** `which(cmd)`, else `fallback` when that file exists (Debian puts nginx in /usr/sbin, not on every PATH), else null. */
export function whichOr(cmd, fallback) {
  return which(cmd) ?? (existsSync(fallback) ? fallback : null);
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

export const TASKSET = process.env.BENCH_PIN === '0' ? null : which('taskset');
/** Pin proxy and load to different cores (taskset present, 2+ CPUs, BENCH_PIN not 0). */
export const PIN = TASKSET !== null && os.cpus().length >= 2;

export const children = new Set();

/** [command, args] that run `cmd args` on CPU `cpu` when pinning (taskset), else as they are. */
export function pinnedArgv(cmd, args, cpu) {
  return cpu !== null && PIN ? [TASKSET, ['-c', cpu, cmd, ...args]] : [cmd, args];
}

/** Starts a child (on CPU `cpu` when pinning), output appended to `logFile`; `child.exited` resolves with {code, signal}. */
export function startChild(cmd, args, { cpu = null, logFile, extraEnv } = {}) {
  const fd = logFile ? openSync(logFile, 'a') : 'ignore';
  const argv = pinnedArgv(cmd, args, cpu);
  const child = spawn(argv[0], argv[1], { stdio: ['ignore', fd, fd], env: extraEnv ? { ...process.env, ...extraEnv } : process.env });
  if (typeof fd === 'number') closeSync(fd);
  children.add(child);
  child.exited = new Promise((res) => child.once('exit', (code, signal) => { children.delete(child); res({ code, signal }); }));
  return child;
}

/** Signals a child and waits for it; SIGKILL after `graceMs`. */
export async function stopChild(child, signal = 'SIGTERM', graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try { process.kill(child.pid, signal); } catch { return; }
  const t = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
  await child.exited;
  clearTimeout(t);
}

/** SIGKILLs every child still running (on our own interruption). */
export function killAllNow() {
  for (const c of children) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `memcached` (path `cmd`) on a free loopback port with `memoryMiB` of cache, on CPU `cpu`
 * when pinning, log appended to `logFile`; resolves {port, child} once it accepts connections
 * (5 s at most).
 */
export async function startMemcached(cmd, { memoryMiB, cpu, logFile }) {
  const port = await freePort();
  const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-t', '1', '-m', String(memoryMiB), '-c', '1024'];
  if (process.getuid?.() === 0) args.push('-u', 'nobody');
  const child = startChild(cmd, args, { cpu, logFile });
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const ok = await new Promise((res) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); res(true); });
      s.on('error', () => res(false));
    });
    if (ok) return { port, child };
    await sleep(50);
  }
  throw new Error('memcached did not start');
}

/**
 * Waits until `GET path` on the port answers 200 (the whole chain is up); throws when `child` exits first or after `timeoutMs`.
 * `tls`: over HTTPS (the bench's self-signed certificate is not verified).
 */
export async function waitReady(port, { path = '/', child = null, headers = {}, timeoutMs = 15_000, tls = false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child !== null && (child.exitCode !== null || child.signalCode !== null)) throw new Error(`process exited early (${child.exitCode ?? child.signalCode})`);
    const status = await new Promise((res) => {
      const req = (tls ? https : http).get({ host: '127.0.0.1', port, path, agent: false, timeout: 1000, headers, ...(tls ? { rejectUnauthorized: false } : {}) }, (r) => { r.resume(); r.on('end', () => res(r.statusCode)); });
      req.on('error', (e) => res(e.message));
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
    if (status === 200) return;
    last = String(status);
    await sleep(100);
  }
  throw new Error(`port ${port} not ready: ${last}`);
}

/** `sessionlb check --config file` with the built CLI: {ok, output}. */
export function sessionlbCheck(file) {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'check', '--config', file], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
}
