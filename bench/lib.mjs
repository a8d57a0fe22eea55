// Shared by the bench scripts: commands, free ports, and the processes they start (every one is
// recorded and killed by its PID, never by name).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

/** Absolute path of a command on PATH, or null. */
export function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
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

/** Starts a child (on CPU `cpu` when pinning), output appended to `logFile`; `child.exited` resolves with {code, signal}. */
export function startChild(cmd, args, { cpu = null, logFile, extraEnv } = {}) {
  const fd = logFile ? openSync(logFile, 'a') : 'ignore';
  const argv = cpu !== null && PIN ? [TASKSET, ['-c', cpu, cmd, ...args]] : [cmd, args];
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
